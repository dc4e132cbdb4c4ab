"""The /metrics resource: Prometheus exposition of every registered metric."""

from __future__ import annotations

import asyncio

from litestar import Controller, Request, Response, get
from prometheus_client import generate_latest

from api.deps import read_models_of, runtime_of
from infra import telemetry
from projections import certificates as certificates_model

TEXT_FORMAT = "text/plain; version=0.0.4"  # Litestar appends "; charset=utf-8"


def _refresh_projection_gauges(request: Request) -> None:
    for row in runtime_of(request.app.state).runner.status():
        telemetry.PROJECTION_POSITION.labels(row["name"]).set(row["position"])
        telemetry.PROJECTION_LAG.labels(row["name"]).set(row["lag"])


async def _refresh_expiry_gauges(request: Request) -> None:
    """Counts per tenant x CA, recomputed on every scrape; a pair with nothing expiring any more disappears."""
    now = runtime_of(request.app.state).services.clock.now()
    rows = await read_models_of(request.app.state).query(certificates_model.expiring_counts, now,
                                                         telemetry.EXPIRY_WINDOWS_DAYS)
    gauge = telemetry.CERTIFICATES_EXPIRING
    gauge.clear()
    for tenant_id, ca_id, days, count in rows:
        gauge.labels(tenant_id, ca_id, f"{days}d").set(count)


class MetricsController(Controller):
    path = "/metrics"
    tags = ["health"]

    @get("/", summary="Prometheus metrics (text format 0.0.4)", media_type=TEXT_FORMAT)
    async def metrics(self, request: Request) -> Response[bytes]:
        await asyncio.to_thread(_refresh_projection_gauges, request)
        await _refresh_expiry_gauges(request)
        return Response(generate_latest(), media_type=TEXT_FORMAT)
