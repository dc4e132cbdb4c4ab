"""The outermost ASGI layer: request id, server span, metrics, access log and security headers for every request.

It wraps Litestar's whole handler (routing included), so unknown routes and 405s get the
same treatment as matched ones; route-level middleware would never see those.
"""

from __future__ import annotations

import contextvars
import logging
import random
import re
import time
import uuid
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from infra import telemetry

access_log = logging.getLogger("api.access")
request_path_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_path", default="")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
UNMATCHED = "<unmatched>"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
# The browser UI (api/webui.py) loads its own scripts, styles and API calls and nothing else: no inline script or
# style, no other origin, no framing, no <base>, forms posting only here.
UI_PREFIX = "/ui"
UI_CSP = (b"default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; object-src 'none'; "
          b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def request_id_from(scope: Scope) -> str:
    """The client's X-Request-ID if it is well-formed, else a fresh UUID."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return str(uuid.UUID(int=_ids.getrandbits(128), version=4))


# Request ids need to be unique, not secret: a generator seeded once per process from the OS, not a
# getrandom() system call per request as uuid4() makes (about 8 % of a read's CPU here).
_ids = random.Random()


def _response_headers(headers: list, request_id: str, path: str) -> list:
    names = {name.lower() for name, _ in headers}
    policy = SECURITY_HEADERS
    if path == UI_PREFIX or path.startswith(UI_PREFIX + "/"):
        policy = tuple((name, UI_CSP if name == b"content-security-policy" else value) for name, value in policy)
    extra = [(name, value) for name, value in policy if name not in names]
    extra.append((b"x-request-id", request_id.encode()))
    if path.startswith("/v1"):
        headers = [(name, value) for name, value in headers if name.lower() != b"cache-control"]
        extra.append((b"cache-control", b"no-store"))
    return [*headers, *extra]


class RequestContext:
    """ASGI middleware; ``wrap(app)`` puts it around any ASGI callable."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        token = telemetry.request_id_var.set(request_id)
        path_token = request_path_var.set(scope["path"])
        started = time.perf_counter()
        state: dict[str, Any] = {"status": 500}
        try:
            if telemetry.tracing_configured():
                with telemetry.span("http.request", method=scope["method"], path=scope["path"]) as span:
                    await self.app(scope, receive, self._sender(send, state, request_id, scope["path"]))
                    span.set_attribute("http.route", scope.get("path_template") or UNMATCHED)
                    span.set_attribute("http.status_code", state["status"])
            else:  # no SDK tracer provider: telemetry.span would yield a span that records nothing
                await self.app(scope, receive, self._sender(send, state, request_id, scope["path"]))
        finally:
            self._record(scope, state["status"], time.perf_counter() - started, request_id)
            telemetry.request_id_var.reset(token)
            request_path_var.reset(path_token)

    @staticmethod
    def _sender(send: Send, state: dict, request_id: str, path: str) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                message["headers"] = _response_headers(list(message.get("headers", [])), request_id, path)
            await send(message)

        return wrapped

    @staticmethod
    def _record(scope: Scope, status: int, seconds: float, request_id: str) -> None:
        route = scope.get("path_template") or UNMATCHED
        method = scope["method"] if scope["method"] in METHODS else "OTHER"
        telemetry.HTTP_REQUESTS.labels(method, route, str(status)).inc()
        telemetry.HTTP_SECONDS.labels(method, route).observe(seconds)
        access_log.info("%s %s %s", method, scope["path"], status,
                        extra={"method": method, "path": scope["path"], "route": route, "status": status,
                               "duration_ms": round(seconds * 1000, 3), "request_id": request_id})
