"""The /v1/events/stream resource: the event log as Server-Sent Events, resumable with Last-Event-ID."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

import msgspec
from litestar import Controller, Request, get
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from api.deps import Caller, runtime_of
from api.problems import QUERY_ERRORS, ApiProblem
from commands.authz import authorize, visible_tenants
from domain.events import EventEnvelope

KEEPALIVE_SECONDS = 15.0
BUFFER = 256
_STOP = object()
_encoder = msgspec.json.Encoder()


def _resume_from(after: int | None, last_event_id: str | None, head: int) -> int:
    """``Last-Event-ID`` (a reconnecting client) wins over ``?after``; neither means live events only."""
    if last_event_id is not None:
        if not last_event_id.strip().isdigit():
            raise ApiProblem(400, "invalid_header", "Last-Event-ID must be a global position (a whole number)",
                             field="Last-Event-ID", rule="format")
        return int(last_event_id)
    return head if after is None else after


async def _pump(source: AsyncIterator[EventEnvelope], queue: asyncio.Queue) -> None:
    try:
        async for envelope in source:
            await queue.put(envelope)
    finally:
        await queue.put(_STOP)


async def _messages(request: Request, after: int, scope: str | None) -> AsyncIterator[ServerSentEventMessage]:
    """Events from the store's subscription, filtered to ``scope``, with a comment when idle."""
    keepalive = getattr(request.app.state, "sse_keepalive", KEEPALIVE_SECONDS)
    queue: asyncio.Queue = asyncio.Queue(BUFFER)
    pump = asyncio.create_task(_pump(runtime_of(request.app.state).store.subscribe(after), queue))
    try:
        yield ServerSentEventMessage(data=None, comment=f"stream after position {after}", retry=2000)
        while True:
            try:  # not asyncio.wait_for: on 3.11 it can swallow a cancellation (infra/eventstore/wakeups.py)
                async with asyncio.timeout(keepalive):
                    envelope = await queue.get()
            except TimeoutError:
                yield ServerSentEventMessage(data=None, comment="keep-alive")
                continue
            if envelope is _STOP:
                return
            if scope is None or envelope.tenant_id == scope:
                yield ServerSentEventMessage(id=envelope.global_position, event=envelope.type,
                                             data=_encoder.encode(envelope).decode())
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump


class EventStreamController(Controller):
    path = "/events"
    tags = ["events"]

    @get("/stream", summary="Subscribe to events (SSE: id = global position, event = type, data = envelope)",
         responses=QUERY_ERRORS)
    async def stream(self, request: Request, principal: Caller,
                     after: Annotated[int | None, QueryParameter(ge=0, required=False)] = None,
                     last_event_id: Annotated[str | None, HeaderParameter(name="Last-Event-ID", required=False)] = None,
                     ) -> ServerSentEvent:
        authorize(principal, "events:stream", principal.tenant_id)
        store = runtime_of(request.app.state).store
        start = _resume_from(after, last_event_id, await store.head_position())
        return ServerSentEvent(_messages(request, start, visible_tenants(principal)))
