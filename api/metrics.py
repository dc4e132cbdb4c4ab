"""The /metrics resource: Prometheus exposition of every registered metric, and read-model gauges.

Counters and histograms are kept by each process; in a multi-worker server
(``PROMETHEUS_MULTIPROC_DIR`` set by api/workers.py) they are summed across the primary and
every worker. The read-model gauges (projection position and lag, certificates expiring per
window, and per tenant x CA when the scrape presents the token) and the readiness checks are computed on every
scrape, whichever process answers.

Who may scrape: without ``CSM_METRICS_TOKEN_FILE`` anyone who reaches the port, and nothing names a tenant or a
CA (route labels are templates; the expiry gauge is summed per window, the CRL gauge is the earliest lapse of all).
With it, a scrape must present the token as a bearer token (401 otherwise), and those two are per tenant and CA.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from collections import Counter
from collections.abc import Iterator

from litestar import Controller, Request, Response, get
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from api.auth import bearer_token, invalid_token
from api.deps import read_models_of, runtime_of
from api.health import hsm_available, kek_available
from infra import telemetry
from infra.config import Settings, read_metrics_token
from projections import certificate_queries as certificates_model
from projections.views_db import ProjectionRebuilding

TEXT_FORMAT = "text/plain; version=0.0.4"  # Litestar appends "; charset=utf-8"
CRL_GAUGE = "csm_crl_next_update_timestamp_seconds"


def _projection_gauges(request: Request) -> list[Metric]:
    return telemetry.projection_gauges(runtime_of(request.app.state).runner.status())


async def _expiry_gauges(request: Request, per_tenant: bool) -> list[Metric]:
    """Counts per window (and tenant x CA when ``per_tenant``), recomputed on every scrape; a series with nothing
    expiring any more disappears."""
    now = runtime_of(request.app.state).services.clock.now()
    try:
        rows = await read_models_of(request.app.state).query(certificates_model.expiring_counts, now,
                                                             telemetry.EXPIRY_WINDOWS_DAYS)
    except ProjectionRebuilding:  # no counts until it is rebuilt; the scrape goes on (csm_projection_rebuilding)
        rows = []
    help_text = "Issued, not renewed certificates expiring within the window"
    if per_tenant:
        gauge = GaugeMetricFamily("csm_certificates_expiring", help_text, labels=["tenant", "ca", "within"])
        for tenant_id, ca_id, days, count in rows:
            gauge.add_metric([tenant_id, ca_id, f"{days}d"], count)
        return [gauge]
    totals: Counter[int] = Counter()
    for _tenant_id, _ca_id, days, count in rows:
        totals[days] += count
    gauge = GaugeMetricFamily("csm_certificates_expiring", help_text, labels=["within"])
    for days in sorted(totals):
        gauge.add_metric([f"{days}d"], totals[days])
    return [gauge]


async def _readiness_gauge(request: Request) -> list[Metric]:
    """What /health/ready checks, one series each (1 passes): the alerts name the failing part."""
    runtime = runtime_of(request.app.state)
    gauge = GaugeMetricFamily("csm_readiness_check", "1 while this readiness check of /health/ready passes",
                              labels=["check"])
    for check, ok in (("store_writable", runtime.store.writable()), ("kek_available", await kek_available(runtime.keys)),
                      ("hsm_available", await hsm_available(request))):
        gauge.add_metric([check], int(ok))
    return [gauge]


def _earliest_crl_lapse(metric: Metric) -> Metric:
    """``csm_crl_next_update_timestamp_seconds`` for a scrape without the token: one series, no tenant or CA."""
    earliest = GaugeMetricFamily(metric.name, metric.documentation)
    values = [sample.value for sample in metric.samples]
    if values:
        earliest.add_metric([], min(values))
    return earliest


def scrape_token_digest(settings: Settings) -> bytes | None:
    """What ``create_app`` keeps of the scrape token: its SHA-256, compared in constant time (None: no token)."""
    token = read_metrics_token(settings)
    return None if token is None else hashlib.sha256(token.encode()).digest()


def _per_tenant(request: Request) -> bool:
    """Whether this scrape may see tenants and CAs: only with a scrape token configured, and then it must present it
    (a 401 otherwise, before anything is computed)."""
    expected = request.app.state.metrics_token_digest
    if expected is None:
        return False
    presented = hashlib.sha256(bearer_token(request).encode()).digest()
    if not hmac.compare_digest(presented, expected):
        raise invalid_token()
    return True


class _Scrape:
    """What one scrape exposes: the kept metrics (this process's, or every process's) and the computed ones."""

    def __init__(self, computed: list[Metric], per_tenant: bool) -> None:
        self.computed = computed
        self.per_tenant = per_tenant

    def collect(self) -> Iterator[Metric]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client.multiprocess import MultiProcessCollector

            kept = MultiProcessCollector(None).collect()
        else:
            kept = REGISTRY.collect()
        for metric in kept:
            if metric.name == CRL_GAUGE and not self.per_tenant:
                metric = _earliest_crl_lapse(metric)
            yield metric
        yield from self.computed


class MetricsController(Controller):
    path = "/metrics"
    tags = ["health"]

    @get("/", summary="Prometheus metrics (text format 0.0.4); with CSM_METRICS_TOKEN_FILE set, a bearer token",
         media_type=TEXT_FORMAT)
    async def metrics(self, request: Request) -> Response[bytes]:
        per_tenant = _per_tenant(request)
        computed = await asyncio.to_thread(_projection_gauges, request)
        computed += await _expiry_gauges(request, per_tenant)
        computed += await _readiness_gauge(request)
        return Response(generate_latest(_Scrape(computed, per_tenant)), media_type=TEXT_FORMAT)
