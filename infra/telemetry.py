"""Observability plumbing: JSON logs, the request-id context, OpenTelemetry spans, Prometheus metrics."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import msgspec
from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_tracer = trace.get_tracer("csm")

EVENTS_APPENDED = Counter("csm_events_appended_total", "Events durably appended to the event store")
COMMIT_SECONDS = Histogram("csm_eventstore_commit_seconds", "Time to commit one group of appends",
                           buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0))
COMMIT_BATCH = Histogram("csm_eventstore_commit_batch_events", "Events per group commit",
                         buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000))
COMMANDS = Counter("csm_commands_total", "Commands handled", ["command", "outcome"])
# Read-model gauges are computed at scrape time from the views (api/metrics.py), not kept here: kept gauges
# would be per process in a multi-worker server (api/workers.py).
EXPIRY_WINDOWS_DAYS = (7, 30, 90)
HTTP_REQUESTS = Counter("csm_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_SECONDS = Histogram("csm_http_request_seconds", "HTTP request latency", ["method", "route"],
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
# What the alerting rules in deploy/prometheus/ watch (docs/operations.md, "Alerts and what to do"). Labels are
# small fixed sets (outcomes, error codes, permissions); a tenant or CA is named only by the CRL gauge, and
# api/metrics.py shows that one per tenant and CA only to a scrape that presents the token.
RENEWALS = Counter("csm_renewals_total", "Scheduled renewals by outcome (renewed, failed)", ["outcome"])
LOGINS = Counter("csm_logins_total", "Token requests by grant type and outcome (ok, or the refusal's code)",
                 ["grant", "outcome"])
LOGIN_GRANTS = ("password", "refresh_token", "client_credentials")  # the grant label's values, and "other"
ACCESS_DENIED = Counter("csm_access_denied_total", "403s to authenticated callers, by the permission refused",
                        ["permission"])
ACME_VALIDATIONS = Counter("csm_acme_validations_total", "ACME challenge results recorded (valid, invalid, expired)",
                           ["outcome"])
WEBHOOK_FAILURES = Counter("csm_webhook_deliveries_failed_total",
                           "Webhook deliveries whose last attempt failed (reported once each)")
CHECKPOINTS = Counter("csm_audit_checkpoints_total", "Audit checkpoint runs by outcome (sealed, failed)", ["outcome"])
CRL_PUBLICATION_FAILURES = Counter("csm_crl_publication_failures_total",
                                   "CRL publications of the revocation scheduler that failed (one per CA and pass)")
# Set by the revocation scheduler in the process that runs it (the primary); per tenant x CA, collapsed to the
# earliest one by api/metrics.py for a scrape without the token. "livemin": a stopped process's values are dropped.
CRL_NEXT_UPDATE = Gauge("csm_crl_next_update_timestamp_seconds", "nextUpdate of the CA's current CRL (Unix time)",
                        ["tenant", "ca"], multiprocess_mode="livemin")
# Background jobs (infra/jobs.py's middleware, in whichever process runs the worker: `csm worker`, or the API's
# in-process one): each attempt by queue, actor and outcome (ok; retried: it failed and will run again; failed: for
# good; skipped: its message was too old to run).
JOBS = Counter("csm_jobs_total", "Background job attempts by queue, actor and outcome (ok, retried, failed, skipped)",
               ["queue", "actor", "outcome"])
JOB_SECONDS = Histogram("csm_job_seconds", "Time one background job attempt took", ["queue"],
                        buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))
# `csm projector`'s feeds (infra/distributed.py): a task that stopped on a broker or store error and started again
PROJECTOR_RESTARTS = Counter("csm_projector_restarts_total", "Projector tasks restarted after an error "
                             "(projections: the Kafka feed; outbox: the relay)", ["task"])


def projection_gauges(rows: list[dict]) -> list[Metric]:
    """Position, lag and rebuilding per projection, from ``ProjectionRunner.status()`` rows: computed on every scrape
    (by /metrics and by `csm projector --metrics-port`), never kept."""
    position = GaugeMetricFamily("csm_projection_position", "Last global position applied", labels=["projection"])
    lag = GaugeMetricFamily("csm_projection_lag_events", "Events not yet applied", labels=["projection"])
    rebuilding = GaugeMetricFamily("csm_projection_rebuilding", "1 while the read model is rebuilt from the log "
                                   "(its projector's version changed); reads of it answer 503", labels=["projection"])
    for row in rows:
        position.add_metric([row["name"]], row["position"])
        lag.add_metric([row["name"]], row["lag"])
        rebuilding.add_metric([row["name"]], int(row["rebuilding"]))
    return [position, lag, rebuilding]


def tracing_configured() -> bool:
    """True once an SDK tracer provider is installed (the default records nothing)."""
    return not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def record_login(grant_type: str | None, outcome: str) -> None:
    """One token request in ``csm_logins_total``: ``outcome`` is "ok" or the refusal's code ("rate_limited" when
    the rate limiter answered it); a grant type that is not one of ours is "other" (the label set stays small)."""
    LOGINS.labels(grant_type if grant_type in LOGIN_GRANTS else "other", outcome).inc()


def record_commit(events: int, seconds: float) -> None:
    EVENTS_APPENDED.inc(events)
    COMMIT_SECONDS.observe(seconds)
    COMMIT_BATCH.observe(events)


@contextmanager
def span(name: str, **attributes: object) -> Iterator[trace.Span]:
    """An OpenTelemetry span carrying the request id, so traces join logs and events.

    Without an SDK tracer provider nothing would be recorded: the span is then skipped (opening a
    no-op one cost about 3 % of a read's CPU).
    """
    if not tracing_configured():
        yield trace.INVALID_SPAN
        return
    with _tracer.start_as_current_span(name) as current:
        request_id = request_id_var.get()
        if request_id:
            current.set_attribute("csm.request_id", request_id)
        for key, value in attributes.items():
            if value is not None:
                current.set_attribute(f"csm.{key}", value if isinstance(value, (str, int, float, bool)) else str(value))
        yield current


# msgspec writes a log line in about a third of json.dumps's time (one line per request); str() for the rest
_encode_log = msgspec.json.Encoder(enc_hook=str).encode


# Terminal colour and cursor sequences (CSI), which have no place in a structured record
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


def _plain(value: object) -> object:
    return _ANSI.sub("", value) if isinstance(value, str) and "\x1b" in value else value


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the request id and any ``extra`` fields, free of ANSI escape codes."""

    # uvicorn adds ``color_message``, a copy of the message coloured for a terminal
    _reserved = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _plain(record.getMessage()),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
        for key, value in vars(record).items():
            if key not in self._reserved and not key.startswith("_"):
                entry[key] = _plain(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        try:
            return _encode_log(entry).decode()
        except (TypeError, ValueError, OverflowError):  # something msgspec cannot write even as str: as before
            return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
