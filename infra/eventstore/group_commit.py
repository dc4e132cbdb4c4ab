"""What both event stores share about an append: the group-commit queue and its writer thread, how one append is
checked against the stream heads and chained into rows, and how its caller is answered."""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import NamedTuple

import msgspec

from commands.ports import AppendRequest, AppendResult
from domain.chain import chain_hash
from domain.errors import IdempotencyKeyReused, WrongExpectedVersion
from domain.events import EventEnvelope

_STOP = object()
_encoder = msgspec.json.Encoder(order="sorted")

Head = tuple[int, str]  # a stream's (version, hash); version 0 and the genesis value for a stream not yet written
Key = tuple[str, str]  # (tenant_id, stream_id)


class StoreUnavailable(Exception):
    """The store could not commit (disk full, I/O error, unreachable, closed)."""


class RawRecord(NamedTuple):
    """A stored row as it is on disk, for verification: no decoding, no trust."""

    position: int
    tenant_id: str
    stream_id: str
    version: int
    body: bytes
    hash: str


class Pending:
    """A queued append and how to answer it: an asyncio future on its loop, or a thread future."""

    __slots__ = ("request", "future", "loop")

    def __init__(self, request: AppendRequest, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.request = request
        self.loop = loop
        self.future: asyncio.Future | concurrent.futures.Future = (
            loop.create_future() if loop is not None else concurrent.futures.Future())


class GroupCommitWriter:
    """One writer thread draining every queued append, up to ``max_batch_events`` events, into one ``commit``.

    ``commit(batch)`` runs on the writer thread and answers every append of the batch (see ``answer``).
    """

    def __init__(self, commit: Callable[[list[Pending]], None], *, max_batch_events: int, name: str) -> None:
        self._commit, self.max_batch_events, self._name = commit, max_batch_events, name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is not None or self._stopped:
            # a second writer thread on the one queue: stop() would stop one and wait for ever on the other
            raise RuntimeError("this event store was opened before; make a new one to open it again")
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Commit what is queued, then end the thread (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()

    def alive(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    def submit(self, request: AppendRequest, loop: asyncio.AbstractEventLoop | None) -> Pending:
        if self._stopped or self._thread is None:
            raise StoreUnavailable("event store is not open")
        if not request.events:
            raise ValueError("an append needs at least one event")
        pending = Pending(request, loop)
        self._queue.put(pending)
        return pending

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is _STOP:
                break
            batch, size = [item], len(item.request.events)
            while size < self.max_batch_events:  # group commit: everything queued shares one commit
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
                size += len(item.request.events)
            self._commit(batch)


def answer(batch: list[Pending], outcomes: list) -> None:
    """Answer every caller of ``batch`` (an AppendResult or an exception each); one wake-up per event loop, not one
    per append."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for pending, outcome in zip(batch, outcomes):
        if pending.loop is None:
            if isinstance(outcome, BaseException):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)
        else:
            by_loop.setdefault(pending.loop, []).append((pending.future, outcome))
    for loop, answers in by_loop.items():
        try:
            loop.call_soon_threadsafe(_set_all, answers)
        except RuntimeError:  # the caller's loop is gone; the events are stored regardless
            pass


def _set_all(answers: list) -> None:
    for future, outcome in answers:
        if future.done():  # the caller was cancelled; the append happened all the same
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class Prepared(NamedTuple):
    """An append found valid: its answer, its rows (``chained_rows``), and its idempotency claim, if it has a key:
    (scope, key, fingerprint), to store beside the rows."""

    result: AppendResult
    rows: list[tuple]
    claim: tuple[str, str, str] | None


def prepare(request: AppendRequest, position: int, heads: dict[Key, Head], claimed: dict,
            stored_head: Callable[[Key], Head],
            stored_idempotency: Callable[[str, str], tuple[str, AppendResult] | None]
            ) -> Prepared | AppendResult | BaseException:
    """Check one append against the heads this batch has seen and build its rows placed after ``position``.

    ``heads`` (the batch's view of each stream's head) and ``claimed`` (idempotency keys the batch has taken) are
    updated only when the append is valid; heads missing from ``heads`` come from ``stored_head``. Answers a
    replayed result for a key already used with the same fingerprint, and the refusal (an exception, not raised:
    a bad append fails alone and the batch goes on) when the key or the expected version does not fit.
    """
    try:
        idem = None
        if request.idempotency_key is not None:
            idem = (request.idempotency_scope or "", request.idempotency_key)
            prior = claimed.get(idem) or stored_idempotency(*idem)
            if prior is not None:
                fingerprint, result = prior
                if fingerprint != (request.fingerprint or ""):
                    return IdempotencyKeyReused(request.idempotency_key)
                return msgspec.structs.replace(result, replayed=True)
        key = (request.tenant_id, request.stream_id)
        version, prev = heads.get(key) or stored_head(key)
        if version != request.expected_version:
            return WrongExpectedVersion(request.stream_id, request.expected_version, version)
        rows = chained_rows(request, position, version, prev)
        heads[key] = (rows[-1][3], rows[-1][8])
        result = AppendResult(stream_id=request.stream_id, version=rows[-1][3], first_position=rows[0][0],
                              global_position=rows[-1][0])
        if idem is None:
            return Prepared(result, rows, None)
        claimed[idem] = (request.fingerprint or "", result)
        return Prepared(result, rows, (*idem, request.fingerprint or ""))
    except Exception as exc:  # a bad request fails alone, the batch goes on
        return exc


EVENT_COLUMNS = ("position", "tenant_id", "stream_id", "version", "stream_type", "type", "occurred_at", "body",
                 "hash")


def chained_rows(request: AppendRequest, position: int, version: int, prev: str) -> list[tuple]:
    """The rows (``EVENT_COLUMNS``) of ``request``'s events placed after ``position`` and stream ``version``.

    Each body is the canonical envelope (position included) and each hash chains from the one
    before, starting at ``prev``: every store builds its rows here, so all chain alike.
    """
    rows = []
    for new in request.events:
        position += 1
        version += 1
        envelope = EventEnvelope(
            event_id=new.event_id, stream_id=request.stream_id, stream_type=request.stream_type,
            version=version, global_position=position, tenant_id=request.tenant_id, type=new.type,
            schema_version=new.schema_version, occurred_at=new.occurred_at, actor=new.actor,
            correlation_id=new.correlation_id, causation_id=new.causation_id, payload=new.payload,
            prev_hash=prev,
        )
        body = _encoder.encode(envelope)
        prev = chain_hash(prev, body)
        rows.append((position, request.tenant_id, request.stream_id, version, request.stream_type,
                     new.type, new.occurred_at, body, prev))
    return rows
