"""The /v1/events/stream resource: the event log as Server-Sent Events, resumable with Last-Event-ID, for as long
as the caller's credential holds."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from typing import Annotated

import msgspec
from litestar import Controller, Request, get
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from api.auth import authenticate
from api.deps import Caller, runtime_of
from api.problems import QUERY_ERRORS, ApiProblem
from commands.authz import Forbidden, Principal, authorize, visible_tenants
from domain.events import EventEnvelope

KEEPALIVE_SECONDS = 15.0
RECHECK_SECONDS = 1.0  # at most this long between two checks of the caller's credential while events flow
BUFFER = 256
_STOP = object()
_encoder = msgspec.json.Encoder()


def _resume_from(after: int | None, last_event_id: str | None, head: int) -> int:
    """``Last-Event-ID`` (a reconnecting client) wins over ``?after``; neither means live events only.

    A position past the head is refused: no stream ever sent it (the log was restored from a backup, or it is another
    service's), and streaming after it would skip, silently, every event written until the log reached it.
    """
    if last_event_id is not None:
        if not last_event_id.strip().isdigit():
            raise ApiProblem(400, "invalid_header", "Last-Event-ID must be a global position (a whole number)",
                             field="Last-Event-ID", rule="format")
        start, field = int(last_event_id), "Last-Event-ID"
    elif after is None:
        return head
    else:
        start, field = after, "after"
    if start > head:
        raise ApiProblem(400, "validation_failed", f"position {start} has not been written (the last is {head}); "
                         "read again from a position at or below it", field=field, rule="maximum")
    return start


async def _pump(source: AsyncIterator[EventEnvelope], queue: asyncio.Queue) -> None:
    try:
        async for envelope in source:
            await queue.put(envelope)
    finally:
        await queue.put(_STOP)


class _Credential:
    """The stream's caller, held to the same rules as a request for as long as the stream is open.

    The bearer token is authenticated again (``api.auth.authenticate``, the guard's own check) as events pass when
    the last check is ``sse_recheck`` seconds old, and on every idle wake; the stream ends at the credential's
    expiry. A revoked or expired key, a disabled user or ended sessions, a role taken away: each ends
    the stream with the reason, as the next request would be refused.
    """

    def __init__(self, request: Request, caller: Principal, scope: str | None) -> None:
        self.request, self.caller, self.scope = request, caller, scope
        self.services = runtime_of(request.app.state).services  # its clock is read at each use (tests move it)
        self.interval = getattr(request.app.state, "sse_recheck", RECHECK_SECONDS)
        self.checked = time.monotonic()  # the guard has just authenticated it

    def seconds_left(self) -> float:
        if self.caller.expires_at is None:
            return math.inf
        return max(0.0, (self.caller.expires_at - self.services.clock.now()).total_seconds())

    async def lapsed(self, due: bool) -> str | None:
        """Why the stream must end now, or None; checks again only when ``due`` or the last check is old."""
        if self.seconds_left() <= 0:
            return "token_expired"
        if not due and time.monotonic() - self.checked < self.interval:
            return None
        self.checked = time.monotonic()
        try:
            current = await authenticate(self.request)
        except ApiProblem:
            return "credential_revoked"
        try:
            authorize(current, "events:stream", current.tenant_id)
        except Forbidden:
            return "permission_revoked"
        return None if visible_tenants(current) == self.scope else "permission_revoked"


_ENDINGS = {"token_expired": "the credential has expired",
            "credential_revoked": "the credential was revoked, or its user or service account disabled, or its user "
                                  "signed out everywhere",
            "permission_revoked": "the credential no longer grants events:stream here"}


def _end(reason: str) -> ServerSentEventMessage:
    """The last message of a stream whose credential lapsed: no id, so a reconnect resumes after the last event."""
    return ServerSentEventMessage(event="end", data=_encoder.encode({"reason": reason,
                                                                     "detail": _ENDINGS[reason]}).decode())


async def _messages(request: Request, after: int, caller: Principal) -> AsyncIterator[ServerSentEventMessage]:
    """Events from the store's subscription, filtered to the caller's scope, with a comment when idle; ends with
    ``event: end`` once the caller's credential no longer holds."""
    scope = visible_tenants(caller)
    credential = _Credential(request, caller, scope)
    keepalive = getattr(request.app.state, "sse_keepalive", KEEPALIVE_SECONDS)
    queue: asyncio.Queue = asyncio.Queue(BUFFER)
    pump = asyncio.create_task(_pump(runtime_of(request.app.state).store.subscribe(after), queue))
    try:
        yield ServerSentEventMessage(data=None, comment=f"stream after position {after}", retry=2000)
        while True:
            try:  # not asyncio.wait_for: on 3.11 it can swallow a cancellation (infra/eventstore/wakeups.py)
                async with asyncio.timeout(min(keepalive, credential.seconds_left())):
                    envelope = await queue.get()
            except TimeoutError:
                envelope = None
            if envelope is _STOP:
                return
            # Checked for other tenants' events too: a stream they keep busy still ends at once when it should.
            reason = await credential.lapsed(due=envelope is None)
            if reason is not None:
                yield _end(reason)
                return
            if envelope is None:
                yield ServerSentEventMessage(data=None, comment="keep-alive")
            elif scope is None or envelope.tenant_id == scope:
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
        return ServerSentEvent(_messages(request, start, principal))
