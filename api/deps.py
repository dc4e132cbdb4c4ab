"""Request plumbing shared by controllers: the runtime, read-model connections, command context, read-your-writes."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import threading
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, QueryParameter

from api.problems import ApiProblem
from commands.authz import Principal
from commands.runtime import CommandContext, CommandResult
from infra import telemetry
from infra.bootstrap import Runtime

T = TypeVar("T")
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,254}")  # 1-255 printable ASCII, not starting blank

IdempotencyKey = Annotated[str | None, HeaderParameter(name="Idempotency-Key", required=False,
                                                       description="makes a retried request return the first result")]
MinPosition = Annotated[int | None, QueryParameter(ge=0, required=False,
                                                   description="wait until the read models include this position")]
Caller = NamedDependency[Principal]  # authenticated by api.auth.bearer_guard on every /v1 route
# Every ?tenant_id of every route: one declaration, so that an empty one is a 400 (rule min_length) everywhere,
# never an empty list (a filter on no tenant) on one route and the caller's own tenant on another.
TenantQuery = Annotated[str | None, QueryParameter(
    min_length=1, max_length=63, required=False,
    description="a tenant id, never empty (default: the caller's own tenant; for a platform-wide caller, "
                "every tenant on a list or search, the platform's own users, service accounts and webhooks)")]


class ReadModels:
    """One read connection to the views database per worker thread, each closed at shutdown."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._local = threading.local()
        self._all: list[tuple[sqlite3.Connection, threading.Lock]] = []
        self._lock = threading.Lock()

    def _mine(self) -> tuple[sqlite3.Connection, threading.Lock]:
        mine = getattr(self._local, "conn", None)
        if mine is None:
            mine = self._local.conn = (self.runtime.runner.connection(), threading.Lock())
            with self._lock:
                self._all.append(mine)
        return mine

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(conn, *args, **kwargs)`` with this thread's connection (call it from a worker thread)."""
        conn, lock = self._mine()
        with lock:  # only close() contends: it must not close a connection mid-query
            return fn(conn, *args, **kwargs)

    async def query(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """The same, on a worker thread."""
        return await asyncio.to_thread(self.run, fn, *args, **kwargs)

    async def inline(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """The same, on the event loop's own thread: for a query that is a few index lookups."""
        return self.run(fn, *args, **kwargs)

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn, lock in conns:
            with lock:
                conn.close()


def runtime_of(state: State) -> Runtime:
    return state.runtime


def read_models_of(state: State) -> ReadModels:
    return state.read_models


def command_context(principal: Principal, idempotency_key: str | None = None) -> CommandContext:
    """The request's metadata as the command side wants it (the request id becomes the correlation id)."""
    if idempotency_key is not None and not IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise ApiProblem(400, "invalid_header", "Idempotency-Key must be 1-255 printable ASCII characters",
                         field="Idempotency-Key", rule="format")
    return CommandContext(principal=principal, correlation_id=telemetry.request_id_var.get(),
                          idempotency_key=idempotency_key)


async def read_your_writes(request: Request, min_position: int | None) -> None:
    """Wait (bounded) until every read model has applied ``min_position``; 503 if it does not in time."""
    if not min_position:
        return
    runtime = runtime_of(request.app.state)
    head = await runtime.store.head_position()
    if min_position > head:  # it will not be written within any wait: refuse at once instead of holding a worker
        raise ApiProblem(400, "validation_failed", f"position {min_position} has not been written (the last is "
                         f"{head})", field="min_position", rule="maximum")
    timeout = runtime.settings.read_your_writes_timeout
    if not await runtime.runner.wait_for(min_position, timeout):
        raise ApiProblem(503, "projection-lagging",
                         f"the read models have not reached position {min_position} yet; retry shortly",
                         field="min_position", rule="lagging", headers={"Retry-After": "1"},
                         position=runtime.runner.position)


async def find_row(request: Request, fn: Callable[..., T | None], *args: Any, field: str = "id") -> T | None:
    """``fn(conn, *args)`` (a lookup by key) on the read models; when it finds nothing while they lag the log, wait (bounded) for
    them to reach the log's head and ask once more, so that a 404 is never about something just written.

    If they are still behind when the wait ends, the answer is 503 projection-lagging (retry), not a 404 for
    something that may exist.
    """
    models, runtime = read_models_of(request.app.state), runtime_of(request.app.state)
    # Where the read models stood *before* the lookup: read after it, the tail could have applied the head in
    # between, and a lookup made just before that would pass for an answer from the head (a 404 for a
    # certificate issued a moment before: seen once in a few dozen loaded test runs).
    projected = runtime.runner.position
    row = await models.inline(fn, *args)  # a lookup by key: on the event loop, cheaper than a thread hop
    if row is None:
        head = await runtime.store.head_position()
        if projected < head:
            if not await runtime.runner.wait_for(head, runtime.settings.read_your_writes_timeout):
                raise ApiProblem(503, "projection-lagging",
                                 f"the read models have not reached position {head} yet, so whether this exists "
                                 "is not known; retry shortly", field=field, rule="lagging",
                                 headers={"Retry-After": "1"}, position=runtime.runner.position)
            row = await models.inline(fn, *args)
    return row


async def execute(request: Request, handler, command: msgspec.Struct, principal: Principal,
                  idempotency_key: str | None = None) -> CommandResult:
    """Run one command handler with the request's context, counting the outcome."""
    ctx = command_context(principal, idempotency_key)
    name = type(command).__name__
    services = runtime_of(request.app.state).services
    # Retries of one request (same principal and Idempotency-Key) arriving together take turns here, so the later
    # ones find the first's result instead of each making a key and a certificate that cannot land.
    turn = services.locks(principal.id, f"idempotency-key:{idempotency_key}") if idempotency_key \
        else contextlib.nullcontext()
    try:
        async with turn:
            result = await handler(command, ctx, services)
    except Exception:
        telemetry.COMMANDS.labels(name, "refused").inc()
        raise
    telemetry.COMMANDS.labels(name, "replayed" if result.replayed else "ok").inc()
    return result


def decoded_cursor(decode: Callable[[str], T], cursor: str | None) -> T | None:
    """A list's opaque ``cursor`` decoded by its read model's ``decode``; 400 naming ``cursor`` if it is not one."""
    try:
        return decode(cursor) if cursor else None
    except ValueError as exc:
        raise ApiProblem(400, "validation_failed", str(exc), field="cursor", rule="format") from None


def page_position(after, cursor):
    """Where a list resumes: ``cursor``, the previous page's ``next_cursor`` (every list answers one, and takes it
    back under that name), or ``after``, the older name some lists had; both only when they agree."""
    if cursor is not None and after is not None and after != cursor:
        raise ApiProblem(400, "validation_failed", "give cursor (the previous page's next_cursor) or after, not both",
                         field="cursor", rule="conflict")
    return cursor if cursor is not None else after
