"""The /metrics resource: Prometheus exposition of every registered metric, and read-model gauges.

Counters and histograms are kept by each process; in a multi-worker server
(``PROMETHEUS_MULTIPROC_DIR`` set by api/workers.py) they are summed across the primary and
every worker. The read-model gauges (projection position and lag, certificates expiring per
tenant x CA x window) are computed from the views on every scrape, whichever process answers.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

from litestar import Controller, Request, Response, get
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from api.deps import read_models_of, runtime_of
from infra import telemetry
from projections import certificates as certificates_model
from projections.runner import ProjectionRebuilding

TEXT_FORMAT = "text/plain; version=0.0.4"  # Litestar appends "; charset=utf-8"


def _projection_gauges(request: Request) -> list[Metric]:
    position = GaugeMetricFamily("csm_projection_position", "Last global position applied", labels=["projection"])
    lag = GaugeMetricFamily("csm_projection_lag_events", "Events not yet applied", labels=["projection"])
    rebuilding = GaugeMetricFamily("csm_projection_rebuilding", "1 while the read model is rebuilt from the log "
                                   "(its projector's version changed); reads of it answer 503", labels=["projection"])
    for row in runtime_of(request.app.state).runner.status():
        position.add_metric([row["name"]], row["position"])
        lag.add_metric([row["name"]], row["lag"])
        rebuilding.add_metric([row["name"]], int(row["rebuilding"]))
    return [position, lag, rebuilding]


async def _expiry_gauges(request: Request) -> list[Metric]:
    """Counts per tenant x CA, recomputed on every scrape; a pair with nothing expiring any more disappears."""
    now = runtime_of(request.app.state).services.clock.now()
    try:
        rows = await read_models_of(request.app.state).query(certificates_model.expiring_counts, now,
                                                             telemetry.EXPIRY_WINDOWS_DAYS)
    except ProjectionRebuilding:  # no counts until it is rebuilt; the scrape goes on (csm_projection_rebuilding)
        rows = []
    gauge = GaugeMetricFamily("csm_certificates_expiring", "Issued, not renewed certificates expiring within the "
                              "window", labels=["tenant", "ca", "within"])
    for tenant_id, ca_id, days, count in rows:
        gauge.add_metric([tenant_id, ca_id, f"{days}d"], count)
    return [gauge]


class _Scrape:
    """What one scrape exposes: the kept metrics (this process's, or every process's) and the computed ones."""

    def __init__(self, computed: list[Metric]) -> None:
        self.computed = computed

    def collect(self) -> Iterator[Metric]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client.multiprocess import MultiProcessCollector

            yield from MultiProcessCollector(None).collect()
        else:
            yield from REGISTRY.collect()
        yield from self.computed


class MetricsController(Controller):
    path = "/metrics"
    tags = ["health"]

    @get("/", summary="Prometheus metrics (text format 0.0.4)", media_type=TEXT_FORMAT)
    async def metrics(self, request: Request) -> Response[bytes]:
        computed = await asyncio.to_thread(_projection_gauges, request)
        computed += await _expiry_gauges(request)
        return Response(generate_latest(_Scrape(computed)), media_type=TEXT_FORMAT)
