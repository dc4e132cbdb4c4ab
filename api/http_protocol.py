"""The HTTP/1.1 protocol the server runs: uvicorn's httptools protocol, each response in one write.

uvicorn writes a response's status line and headers, then its body, as two ``transport.write`` calls.
On a socket with TCP_NODELAY (asyncio sets it on every accepted TCP socket) that is two ``send`` system
calls and two TCP segments per answer, and the client reads twice. Here a response that declares its
Content-Length has its head held back and sent with the first body write: one ``send``.

Only the order of bytes matters to HTTP, and it is kept: a held head is written before anything else,
at the next write, when the body message has been handled (whatever happened in it), or when the cycle
closes the connection. Streaming responses (no Content-Length, such as the event stream) are not held:
their client should see the headers before the first event. ``100 Continue`` is never held.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle


class _OneWrite:
    """A response cycle's view of the transport: holds a response head until its body comes."""

    __slots__ = ("_transport", "_held", "_holding")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._holding = False

    def write(self, data: bytes) -> None:
        if self._holding:
            self._holding = False
            self._held = (self._held or b"") + bytes(data)
            return
        if self._held is not None:
            data, self._held = self._held + data, None
        self._transport.write(data)

    def hold_next(self) -> None:
        self._holding = True

    def stop_holding(self) -> None:
        self._holding = False

    def flush(self) -> None:
        self._holding = False
        if self._held is not None:
            held, self._held = self._held, None
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...: the transport's own
        return getattr(self._transport, name)


def _declares_length(message: dict) -> bool:
    return any(name.lower() == b"content-length" for name, _ in message.get("headers", ()))


def _one_write(app: Any, transport: _OneWrite) -> Any:
    """``app`` with its ``send`` holding a response head that declares its length until the first body write.

    A wrapper of the app, not of the cycle's ``send`` stored on the cycle: that made every cycle a reference
    cycle (cycle -> send -> cycle), freed only by the garbage collector, whose full passes over that much
    garbage stalled the event loop (paced reads' p99 went from 2-3 ms to 70-110 ms).
    """
    async def call(scope: Any, receive: Any, send: Any) -> None:
        async def send_once(message: Any) -> None:
            if message["type"] == "http.response.start":
                if _declares_length(message):
                    transport.hold_next()
                try:
                    await send(message)
                finally:
                    transport.stop_holding()  # nothing more is held than the head it wrote, if it did
                return
            try:
                await send(message)
            finally:
                transport.flush()

        await app(scope, receive, send_once)

    return call


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; every response with a Content-Length leaves in one write."""

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        transport = _OneWrite(self.transport)
        cycle.transport = transport  # type: ignore[assignment]
        super()._start_asgi_task(cycle, _one_write(app, transport))
