"""`/metrics` for the processes that serve no API: `csm projector` and `csm worker` (``--metrics-port``).

A small HTTP server on its own thread: ``GET /metrics`` answers the Prometheus text format, anything else 404.
Bound to 127.0.0.1 unless told otherwise. With ``CSM_METRICS_TOKEN_FILE`` (the API's scrape token, the same file)
a scrape must present it as a bearer token, compared as the API compares it (SHA-256, constant time), else 401.
What it exposes: this process's kept metrics (infra.telemetry; the job counts of a worker) and the collectors it is
given (a projector's positions, lag and batch counts, computed per scrape).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import socket
import threading
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric

from infra import telemetry

log = logging.getLogger(__name__)
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
MAX_AUTHORIZATION = 16_384
REQUEST_TIMEOUT = 10.0  # seconds a connection may take to send its request (a scrape sends it at once)
MAX_CONNECTIONS = 32  # connections served at once; more are closed unread (Prometheus opens one per scrape)


class Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


class _Scrape:
    def __init__(self, extra: list[Collector]) -> None:
        self.extra = extra

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
        for collector in self.extra:
            yield from collector.collect()


# name (exposed with "_total"), help, the ProjectionRunner.counts key
PROJECTOR_COUNTERS = (
    ("csm_projector_batches", "Batches of events this projector committed to the read models", "batches"),
    ("csm_projector_events_applied", "Events in the batches this projector committed", "events"),
    ("csm_projector_batch_failures", "Batches that failed (rolled back, retried)", "failed_batches"),
)


class ProjectorMetrics:
    """A projector's read models as /metrics shows them (position, lag, rebuilding per projection, from the views
    and the store's head), and what its tail did: batches and events committed, batches that failed."""

    def __init__(self, runner) -> None:
        self.runner = runner

    def collect(self) -> Iterator[Metric]:
        yield from telemetry.projection_gauges(self.runner.status())
        counts = dict(self.runner.counts)
        for name, documentation, key in PROJECTOR_COUNTERS:
            yield CounterMetricFamily(name, documentation, value=counts[key])


def _handler(scrape: _Scrape, token_digest: bytes | None, request_timeout: float) -> type[BaseHTTPRequestHandler]:
    class MetricsHandler(BaseHTTPRequestHandler):
        server_version = "csm-metrics"
        sys_version = ""
        timeout = request_timeout  # the socket's: a client sending nothing (slowloris) is dropped, its thread ends

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.split("?", 1)[0] != "/metrics":
                return self._answer(404, b"not found\n")
            if token_digest is not None and not self._authorised():
                return self._answer(401, b"a bearer token is needed (CSM_METRICS_TOKEN_FILE)\n",
                                    {"WWW-Authenticate": 'Bearer realm="csm", error="invalid_token"'})
            try:
                body = generate_latest(scrape)
            except Exception:  # a read model that cannot be read: the scrape fails, the process goes on
                log.exception("metrics scrape failed")
                return self._answer(500, b"the scrape failed; see the log\n")
            self._answer(200, body, content_type=TEXT_FORMAT)

        def _authorised(self) -> bool:
            scheme, _, token = self.headers.get("Authorization", "").partition(" ")
            token = token.strip()
            presented = hashlib.sha256(token.encode()).digest()
            good_shape = scheme.lower() == "bearer" and 0 < len(token) <= MAX_AUTHORIZATION
            return hmac.compare_digest(presented, token_digest) and good_shape

        def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None,
                    content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            for name, value in {"Content-Type": content_type, "Content-Length": str(len(body)),
                                "Cache-Control": "no-store", **(headers or {})}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
            pass  # a scrape every 15 s is no news; failures are logged above

    return MetricsHandler


class _Bounded(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` at once: one more is closed without a thread."""

    daemon_threads = True
    max_connections = MAX_CONNECTIONS

    def server_activate(self) -> None:
        self._slots = threading.BoundedSemaphore(self.max_connections)
        super().server_activate()

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _ServerV6(_Bounded):
    address_family = socket.AF_INET6


class MetricsServer:
    """Serves /metrics on ``host``:``port`` (0: any free port; ``address`` says which) until ``stop``."""

    def __init__(self, host: str, port: int, *, token: str | None, collectors: list[Collector] | None = None,
                 request_timeout: float = REQUEST_TIMEOUT, max_connections: int = MAX_CONNECTIONS) -> None:
        digest = None if token is None else hashlib.sha256(token.encode()).digest()
        server_class = type("MetricsHttpServer", (_ServerV6 if ":" in host else _Bounded,),
                            {"max_connections": max_connections})
        self._server = server_class((host, port), _handler(_Scrape(collectors or []), digest, request_timeout))
        self._thread = threading.Thread(target=self._server.serve_forever, name="csm-metrics", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
