"""The link between HTTP worker processes and the primary process of a multi-worker ``csm serve``.

SQLite has one writer at a time. With several HTTP workers (``CSM_WORKERS``), one process, the
primary, owns the event store's writer thread (group commit, hash chain, witness), the
projection runner, the checkpointer and the schedulers; workers read ``events.db`` and
``views.db`` directly (WAL readers) and send every append to the primary over a Unix socket
(``data_dir/run/primary.sock``, mode 0600 in a 0700 directory).

Frames are a 4-byte big-endian length and a msgspec JSON body (JSON, as the store writes:
an event's payload means the same on both sides). A worker sends calls, each with an id; the
primary answers each, in any order, and pushes ``Progress`` (the log's head, the read
models' position, whether the store can commit) whenever either moves, so workers learn of
appends and projections at once instead of polling. The in-memory rate limiter runs in the
primary too (one set of buckets for every worker), unless Redis shares them, and so does the
ledger of quota reservations (commands/quotas.py): a worker's command takes, lands and releases its
reservation there, so every worker's commands count against each other's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import struct
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from commands.ports import AppendRequest, AppendResult, CountedUsage
from commands.quotas import QuotaLedger, Reservation, StaleCount
from commands.runtime import rfc3339
from commands.waits import wait_set
from domain.errors import IdempotencyKeyReused, QuotaExceeded, WrongExpectedVersion
from domain.tenant import Quotas, Usage
from infra.eventstore.group_commit import StoreUnavailable

log = logging.getLogger(__name__)

MAX_FRAME = 64 * 1024 * 1024  # an append of 8,192 events of a few KiB each fits
_LENGTH = struct.Struct(">I")
RECONNECT_SECONDS = 0.2


class AppendCall(msgspec.Struct, tag="append", kw_only=True):
    id: int
    request: AppendRequest


class RateCall(msgspec.Struct, tag="rate", kw_only=True):
    id: int
    key: str
    limit: int
    period: float


class QuotaTake(msgspec.Struct, tag="quota_take", kw_only=True):
    """QuotaLedger.take in the primary's ledger; ``key`` names the reservation in later frames."""

    id: int
    key: str
    tenant_id: str
    adding: Usage
    day: str
    counted: CountedUsage
    bounds: Quotas
    now: str


class QuotaSettle(msgspec.Struct, tag="quota_settle", kw_only=True):
    id: int
    tenant_id: str
    seconds: float


class QuotaLanded(msgspec.Struct, tag="quota_landed", kw_only=True):
    """Where the reservation's event was appended (0: nowhere). Not answered."""

    key: str
    position: int


class QuotaRelease(msgspec.Struct, tag="quota_release", kw_only=True):
    """The reservation's command appended nothing. Not answered."""

    key: str


class Answer(msgspec.Struct, tag="answer", kw_only=True, omit_defaults=True):
    """The answer to call ``id``: a result, or the error the primary raised (by kind, with its arguments)."""

    id: int
    result: Any = None
    # wrong_expected_version | idempotency_key_reused | unavailable | invalid | quota_exceeded | stale_count
    error: str | None = None
    args: list[Any] = []


class Progress(msgspec.Struct, tag="progress", kw_only=True):
    head: int  # the last global position committed
    projected: int  # the position every read model has applied
    writable: bool  # the store's last commit succeeded


Frame = AppendCall | RateCall | QuotaTake | QuotaSettle | QuotaLanded | QuotaRelease | Answer | Progress
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Frame).decode
_append_result = msgspec.json.Decoder(AppendResult)


def frame(message: msgspec.Struct) -> bytes:
    body = _encode(message)
    return _LENGTH.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    (size,) = _LENGTH.unpack(await reader.readexactly(4))
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is over the limit")
    return _decode(await reader.readexactly(size))


def error_of(exc: BaseException) -> tuple[str, list[Any]]:
    """How a call's failure crosses the link (the worker raises the same exception again)."""
    if isinstance(exc, QuotaExceeded):
        return "quota_exceeded", [exc.field.removeprefix("quotas."), exc.detail, exc.status,
                                  getattr(exc, "retry_after_seconds", None)]
    if isinstance(exc, StaleCount):
        return "stale_count", list(exc.args)
    if isinstance(exc, WrongExpectedVersion):
        return "wrong_expected_version", [exc.stream_id, exc.expected, exc.actual]
    if isinstance(exc, IdempotencyKeyReused):
        return "idempotency_key_reused", [exc.key]
    if isinstance(exc, ValueError):
        return "invalid", [str(exc)]
    return "unavailable", [str(exc) or type(exc).__name__]


def raise_answer(answer: Answer) -> None:
    if answer.error == "quota_exceeded":
        quota, detail, status, retry_after = answer.args
        raise QuotaExceeded(quota, detail, status=status, retry_after_seconds=retry_after)
    if answer.error == "stale_count":
        raise StaleCount(*answer.args)
    if answer.error == "wrong_expected_version":
        raise WrongExpectedVersion(*answer.args)
    if answer.error == "idempotency_key_reused":
        raise IdempotencyKeyReused(*answer.args)
    if answer.error == "invalid":
        raise ValueError(*answer.args)
    raise StoreUnavailable(*answer.args)


class LinkServer:
    """In the primary: answers appends, rate-limit hits and quota reservations, and pushes progress to every worker."""

    def __init__(self, path: Path, store: Any, runner: Any, rate_hit: Callable | None = None,
                 quotas: QuotaLedger | None = None) -> None:
        self.path = path
        self.store = store
        self.runner = runner
        # async (key, limit, period) -> (allowed, remaining, reset_after, retry_after): the primary's limiter
        self.rate_hit = rate_hit
        self.quotas = quotas  # the primary's own ledger: its commands and every worker's hold reservations there
        self._reservations: dict[asyncio.StreamWriter, dict[str, tuple[str, Reservation]]] = {}  # per worker, by key
        self._clients: set[asyncio.StreamWriter] = set()
        self._calls: set[asyncio.Task] = set()  # appends and hits being answered
        self._server: asyncio.AbstractServer | None = None
        self._pusher: asyncio.Task | None = None
        self._last: Progress | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a socket left by a primary that did not stop cleanly
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old)
        self._pusher = asyncio.create_task(self._push_progress(), name="link-progress")

    async def wait_idle(self, timeout: float) -> None:
        """Wait (bounded) until every worker has hung up: workers stopping on their own finish their requests."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._clients:
                    await asyncio.sleep(0.05)

    async def stop(self, timeout: float = 10.0) -> None:
        """No new workers; answer the calls already received (bounded), then hang up on everyone."""
        if self._server is not None:
            self._server.close()
        if self._calls:
            await asyncio.wait(list(self._calls), timeout=timeout)
        if self._pusher is not None:
            self._pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pusher
        if self._server is not None:
            for writer in list(self._clients):
                with contextlib.suppress(Exception):
                    await writer.drain()
                writer.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _progress(self) -> Progress:
        return Progress(head=self.store.recent_head(), projected=self.runner.position,
                        writable=self.store.writable())

    async def _push_progress(self) -> None:
        """After every commit and every projection batch, tell every worker where the log and views stand."""
        changed = asyncio.Event()  # set by a commit and by a projection batch alike
        with self.store.listening(changed), self.runner.listening(changed):
            while True:
                changed.clear()
                progress = self._progress()
                if progress != self._last:
                    self._last = progress
                    data = frame(progress)
                    for writer in list(self._clients):
                        writer.write(data)
                await wait_set(changed, 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        self._reservations[writer] = {}
        writer.write(frame(self._last or self._progress()))
        calls = self._calls
        try:
            while True:
                try:
                    message = await read_frame(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if isinstance(message, QuotaLanded | QuotaRelease):  # in order, before any later call of its
                    self._settle(writer, message)
                    continue
                task = asyncio.create_task(self._answer(message, writer))
                calls.add(task)
                task.add_done_callback(calls.discard)
        except (ValueError, msgspec.DecodeError) as exc:
            log.error("dropping a worker link that sent a bad frame", extra={"error": repr(exc)})
        finally:
            self._clients.discard(writer)
            # a worker gone with commands in flight: their units are free again (it appends nothing more)
            for tenant_id, reservation in self._reservations.pop(writer, {}).values():
                if self.quotas is not None:
                    self.quotas.release(tenant_id, reservation)
            writer.close()

    def _settle(self, writer: asyncio.StreamWriter, message: QuotaLanded | QuotaRelease) -> None:
        held = self._reservations.get(writer, {}).pop(message.key, None)
        if held is None or self.quotas is None:
            return
        tenant_id, reservation = held
        if isinstance(message, QuotaLanded) and message.position:
            reservation.land(message.position)  # held until a count includes it
        else:
            self.quotas.release(tenant_id, reservation)

    async def _take(self, message: QuotaTake, writer: asyncio.StreamWriter) -> bool:
        if self.quotas is None:
            raise StoreUnavailable("the primary process keeps no quota ledger")
        held = self._reservations.get(writer)
        if held is None:  # the worker hung up before this call was answered: nobody would ever release it
            raise StoreUnavailable("the worker's link is closed")
        reservation = Reservation(adding=message.adding, day=message.day)
        await self.quotas.take(message.tenant_id, reservation, message.counted, message.bounds,
                               datetime.fromisoformat(message.now))  # no await inside: held at once
        held[message.key] = (message.tenant_id, reservation)
        return True

    async def _answer(self, message: Frame, writer: asyncio.StreamWriter) -> None:
        if isinstance(message, QuotaTake | QuotaSettle):
            try:
                if isinstance(message, QuotaTake):
                    result = await self._take(message, writer)
                elif self.quotas is None:
                    result = False
                else:
                    result = await self.quotas.settle(message.tenant_id, message.seconds)
                answer = Answer(id=message.id, result=result)
            except Exception as exc:
                kind, args = error_of(exc)
                answer = Answer(id=message.id, error=kind, args=args)
        elif isinstance(message, AppendCall):
            try:
                answer = Answer(id=message.id, result=await self.store.append(message.request))
            except Exception as exc:
                kind, args = error_of(exc)
                answer = Answer(id=message.id, error=kind, args=args)
        elif isinstance(message, RateCall) and self.rate_hit is not None:
            answer = Answer(id=message.id, result=list(await self.rate_hit(message.key, message.limit,
                                                                           message.period)))
        else:
            return
        if not writer.is_closing():
            writer.write(frame(answer))


class LinkClient:
    """In a worker: one connection to the primary, reconnected if it drops; calls are multiplexed on it."""

    def __init__(self, path: Path, on_progress: Callable[[Progress], None]) -> None:
        self.path = path
        self.on_progress = on_progress
        self.progress: Progress | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self, timeout: float = 30.0) -> None:
        self._task = asyncio.create_task(self._run(), name="primary-link")
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def _run(self) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.path))
            except OSError:
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            self._writer = writer
            self._connected.set()
            try:
                while True:
                    message = await read_frame(reader)
                    if isinstance(message, Progress):
                        self.progress = message
                        self.on_progress(message)
                    elif isinstance(message, Answer):
                        future = self._pending.pop(message.id, None)
                        if future is not None and not future.done():
                            future.set_result(message)
            except (asyncio.IncompleteReadError, ConnectionError, ValueError, msgspec.DecodeError) as exc:
                log.warning("link to the primary process lost; reconnecting", extra={"error": repr(exc)})
            finally:
                self._connected.clear()
                self._writer = None
                writer.close()
                pending, self._pending = self._pending, {}
                for future in pending.values():
                    if not future.done():
                        future.set_exception(StoreUnavailable("the primary process is not reachable"))
            await asyncio.sleep(RECONNECT_SECONDS)

    async def call(self, make: Callable[[int], msgspec.Struct]) -> Answer:
        writer = self._writer
        if writer is None or writer.is_closing():
            raise StoreUnavailable("the primary process is not reachable")
        call_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        writer.write(frame(make(call_id)))
        return await future

    async def append(self, request: AppendRequest) -> AppendResult:
        answer = await self.call(lambda call_id: AppendCall(id=call_id, request=request))
        if answer.error is not None:
            raise_answer(answer)
        return msgspec.convert(answer.result, AppendResult)

    def send(self, message: msgspec.Struct) -> None:
        """A frame that is not answered; dropped if the primary is not reachable (it has forgotten everything then)."""
        writer = self._writer
        if writer is not None and not writer.is_closing():
            writer.write(frame(message))

    async def rate_hit(self, key: str, limit: int, period: float) -> list:
        answer = await self.call(lambda call_id: RateCall(id=call_id, key=key, limit=limit, period=period))
        if answer.error is not None or not isinstance(answer.result, list):
            raise RuntimeError("the primary process has no rate limiter")
        return answer.result


class LinkedQuotaLedger:
    """In a worker: the ``commands.quotas.Ledger`` whose reservations the primary holds, with every other worker's."""

    def __init__(self, link: LinkClient) -> None:
        self.link = link
        self._keys = itertools.count(1)
        self._prefix = f"{os.getpid()}-"

    async def take(self, tenant_id: str, reservation: Reservation, counted: CountedUsage, bounds: Quotas,
                   now: datetime) -> None:
        key = f"{self._prefix}{next(self._keys)}"
        answer = await self.link.call(lambda call_id: QuotaTake(
            id=call_id, key=key, tenant_id=tenant_id, adding=reservation.adding, day=reservation.day,
            counted=counted, bounds=bounds, now=rfc3339(now)))
        if answer.error is not None:
            raise_answer(answer)
        reservation.key = key
        reservation.on_landed = lambda r: self.link.send(QuotaLanded(key=key, position=r.position or 0))

    async def settle(self, tenant_id: str, seconds: float) -> bool:
        answer = await self.link.call(lambda call_id: QuotaSettle(id=call_id, tenant_id=tenant_id, seconds=seconds))
        if answer.error is not None:
            raise_answer(answer)
        return bool(answer.result)

    def release(self, tenant_id: str, reservation: Reservation) -> None:
        reservation.settled.set()
        if reservation.key is not None and reservation.position is None:  # landed at 0: the primary knows already
            self.link.send(QuotaRelease(key=reservation.key))
