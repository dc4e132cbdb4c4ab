"""Runs the API under uvicorn, graceful shutdown: one process, or a multi-worker supervisor (api/workers.py)."""

from __future__ import annotations

import dataclasses
import importlib.util
import signal
import socket

import uvicorn

from api.app import create_app
from infra.bootstrap import freeze_startup_heap
from infra.config import Settings
from infra.telemetry import configure_logging

GRACEFUL_SHUTDOWN_SECONDS = 10


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _http_protocol() -> type | str:
    """httptools with each response in one write (api/http_protocol.py), or h11 if httptools is missing."""
    if not _available("httptools"):
        return "h11"
    from api.http_protocol import OneWriteHttpToolsProtocol

    return OneWriteHttpToolsProtocol


def build_server(settings: Settings, app=None) -> uvicorn.Server:
    """A uvicorn server for ``app`` (default: ``create_app(settings)``) bound to settings.host:port; HTTPS with
    ``CSM_TLS_CERT_FILE`` and ``CSM_TLS_KEY_FILE``."""
    if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
        raise ValueError("CSM_TLS_CERT_FILE and CSM_TLS_KEY_FILE go together")
    config = uvicorn.Config(
        app or create_app(settings),
        host=settings.host,
        port=settings.port,
        workers=1,
        # The standard event loop, not uvloop: under load uvloop left half of 1,000 new connections in the
        # kernel's accept queue for seconds (saturated p99 2.8-5.4 s and wrk timeouts, against 0.6 s with this
        # loop; bench/narrative.md), and uvloop's open reports of answers reaching the wrong request under load
        # (MagicStack/uvloop#645) are not a risk a certificate authority takes for about 8 % less CPU per read.
        loop="asyncio",
        http=_http_protocol(),
        lifespan="on",
        proxy_headers=False,
        server_header=False,
        access_log=False,  # the app writes its own access log, without headers or bodies
        log_config=None,  # keep the JSON logging configured by configure_logging
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,  # open SSE streams must not block shutdown
        ssl_certfile=str(settings.tls_cert_file) if settings.tls_cert_file else None,
        ssl_keyfile=str(settings.tls_key_file) if settings.tls_key_file else None,
    )
    return uvicorn.Server(config)


def listen(settings: Settings) -> tuple[Settings, socket.socket | None]:
    """For port 0, bind now and put the port the kernel chose into the settings: the CRL, OCSP and CA-issuer URLs
    written into certificates are made from them (``Settings.base_url``), and must not name port 0."""
    if settings.port != 0:
        return settings, None
    from api.workers import bind

    sock = bind(settings.host, 0)
    return dataclasses.replace(settings, port=sock.getsockname()[1]), sock


def serve(settings: Settings, sock: socket.socket | None = None) -> int:
    """Serve until SIGINT/SIGTERM; the final audit checkpoint is written at shutdown. Returns the exit status.

    With ``settings.workers`` > 1 (and the SQLite store), a supervisor runs a primary process and that many
    HTTP workers (api/workers.py); otherwise this one process does everything. ``sock``: already bound
    (``listen``), else bound here from settings.host and settings.port.
    """
    configure_logging(settings.log_level)
    if settings.workers > 1 and settings.store == "sqlite":
        from api.workers import supervise

        return supervise(settings, sock)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, restores the handlers it found, then raises the same signal
    # again so that the default action ends the process (status -15 for a clean stop). Handlers that do nothing
    # let that second signal pass: a clean shutdown exits 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _already_handled)
    server = build_server(settings)
    freeze_startup_heap()  # the modules and the app; the runtime opens in the app's lifespan
    server.run(sockets=[sock] if sock is not None else None)
    return 0


def _already_handled(signum: int, frame: object) -> None:
    """The signal uvicorn raises again after its graceful shutdown, or one that arrives after it: nothing left to do."""
