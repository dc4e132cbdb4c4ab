"""The embedded event store: SQLite in WAL mode, one writer thread, group commit.

Every append goes through a single writer thread that drains all queued requests into one
``BEGIN IMMEDIATE … COMMIT`` transaction with ``synchronous=FULL``, so concurrent appends
share one fsync and every acknowledged append is on disk. Expected versions are checked
against the stored heads inside the write lock, so several processes (the server and the
CLI) may write safely. Positions are assigned here, contiguous from 1, and are part of the
hashed body, so any deletion or reordering is visible to the verifier.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import itertools
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

import msgspec
from opentelemetry import trace
from opentelemetry.trace import get_current_span as _get_current_span

from commands.ports import AppendRequest, AppendResult
from commands.waits import wait_set
from domain.chain import chain_hash, genesis_hash
from domain.errors import IdempotencyKeyReused, WrongExpectedVersion
from domain.events import EventEnvelope
from infra import telemetry
from infra.audit.witness import release_witness, write_witness
from infra.eventstore.wakeups import AppendWakeups
from projections.sqlite_wal import use_wal

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position    INTEGER PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    stream_id   TEXT NOT NULL,
    version     INTEGER NOT NULL,
    stream_type TEXT NOT NULL,
    type        TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    body        BLOB NOT NULL,
    hash        TEXT NOT NULL,
    UNIQUE (tenant_id, stream_id, version)
);
CREATE TABLE IF NOT EXISTS idempotency (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    result      BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
"""

_STOP = object()
_envelope_decoder = msgspec.json.Decoder(EventEnvelope)
_result_decoder = msgspec.json.Decoder(AppendResult)
_encoder = msgspec.json.Encoder(order="sorted")
_tracer = trace.get_tracer("csm.eventstore")
_json_decode = msgspec.json.Decoder(list[tuple[str, str, int, str]]).decode


class StoreUnavailable(Exception):
    """The store could not commit (disk full, I/O error, closed)."""


class RawRecord(NamedTuple):
    """A stored row as it is on disk, for verification: no decoding, no trust."""

    position: int
    tenant_id: str
    stream_id: str
    version: int
    body: bytes
    hash: str


class _Pending:
    """A queued append and how to answer it: an asyncio future on its loop, or a thread future."""

    __slots__ = ("request", "future", "loop")

    def __init__(self, request: AppendRequest, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.request = request
        self.loop = loop
        self.future: asyncio.Future | concurrent.futures.Future = (
            loop.create_future() if loop is not None else concurrent.futures.Future())


def connect(path: Path, *, readonly: bool = False, immutable: bool = False) -> sqlite3.Connection:
    """A connection with the pragmas every user of the store's file must share.

    ``readonly`` opens the file without write access and leaves its journal mode alone (a backup's stays
    ``delete``, so its manifest's SHA-256 still matches). ``immutable`` also tells SQLite that nothing changes the
    file while it is open, so it takes no locks and needs no ``-shm`` beside it: the one way to read a WAL-mode
    file in a directory this process cannot write. Call ``check_immutable`` first.
    """
    if readonly or immutable:
        uri = f"{Path(path).absolute().as_uri()}?mode=ro{'&immutable=1' if immutable else ''}"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    if not (readonly or immutable):
        use_wal(conn)
    conn.execute("PRAGMA synchronous = FULL")
    return conn


class ImmutableUnsafe(Exception):
    """The file cannot be read as immutable: a journal beside it holds changes that reading would ignore."""


def check_immutable(path: Path) -> None:
    """Refuse (ImmutableUnsafe) to read ``path`` as immutable while a ``-wal`` or ``-journal`` beside it has
    content: SQLite would ignore those pages (committed events, or half a transaction), and a process may still
    be writing them. An empty one (left by a reader) holds nothing."""
    for suffix, what in (("-wal", "write-ahead log"), ("-journal", "rollback journal")):
        side = path.with_name(path.name + suffix)
        try:
            size = side.stat().st_size
        except FileNotFoundError:
            continue
        if size:
            raise ImmutableUnsafe(
                f"{side} holds {size:,} bytes of {what} that are not in {path.name} yet: a read-only verification "
                f"(SQLite's immutable mode, as {path.parent} cannot be written by this process) would ignore them, "
                "and a process may still be writing there. Copy the directory somewhere writable and verify the copy")


def _create_private_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


class SQLiteEventStore:
    """Event store on one SQLite file. Use as ``with SQLiteEventStore(path) as store``."""

    HEADS_CACHE_SIZE = 16_384  # stream heads the writer keeps between batches (about 0.4 KiB each)
    WAL_AUTOCHECKPOINT = 4096  # pages (16 MiB at SQLite's default 4 KiB page size)

    def __init__(self, path: Path | str, *, max_batch_events: int = 8192, poll_interval: float = 0.5,
                 witness_path: Path | str | None = None, read_only: bool = False, immutable: bool = False) -> None:
        """``read_only``: a store to read, never opened (no writer): its connections are ``mode=ro``;
        ``immutable``: read-only too, for a file nothing writes (see ``connect``)."""
        self.path = Path(path)
        self.read_only, self.immutable = read_only or immutable, immutable
        self.max_batch_events = max_batch_events
        self.poll_interval = poll_interval
        self.witness_path = Path(witness_path) if witness_path else None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._local = threading.local()
        self._wakeups = AppendWakeups()
        self._closed = False
        self.last_commit_error: str | None = None
        self._heads: dict[tuple[str, str], tuple[int, str]] = {}  # writer thread only
        self._heads_mark: tuple[int, str] | None = None  # (position, hash) of the last row when valid
        self._committed = 0  # the last position this store's writer committed (see ``recent_head``)
        self._head_read, self._head_read_at = 0, float("-inf")  # the head last read from the file, and when

    # lifecycle ----------------------------------------------------------------------
    def open(self) -> SQLiteEventStore:
        if self.read_only:
            raise RuntimeError("a read-only event store is not opened for appends: read from it directly")
        if self._writer is not None or self._closed:
            # a second writer thread on the one queue: close() would stop one and wait for ever on the other
            raise RuntimeError("this event store was opened before; make a new SQLiteEventStore to open it again")
        _create_private_file(self.path)
        conn = connect(self.path)
        conn.executescript(SCHEMA)
        conn.close()
        self._writer = threading.Thread(target=self._run_writer, name="csm-eventstore-writer", daemon=True)
        self._writer.start()
        return self

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._queue.put(_STOP)
            self._writer.join()
        if self.witness_path is not None:
            release_witness(self.witness_path)

    def __enter__(self) -> SQLiteEventStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # writes -------------------------------------------------------------------------
    def _submit(self, request: AppendRequest, loop: asyncio.AbstractEventLoop | None) -> _Pending:
        if self._closed or self._writer is None:
            raise StoreUnavailable("event store is not open")
        if not request.events:
            raise ValueError("an append needs at least one event")
        pending = _Pending(request, loop)
        self._queue.put(pending)
        return pending

    async def append(self, request: AppendRequest) -> AppendResult:
        """Append and return once the events are durable (fsynced).

        The append gets its own span only inside a trace that is being recorded (an HTTP
        request, say): opening an OpenTelemetry span costs more than the rest of an append's
        work on this thread, so untraced callers skip it. Every commit has its own span.
        """
        if _get_current_span().is_recording():
            with telemetry.span("eventstore.append", stream_id=request.stream_id, events=len(request.events)):
                return await self._submit(request, asyncio.get_running_loop()).future
        return await self._submit(request, asyncio.get_running_loop()).future

    def append_blocking(self, request: AppendRequest) -> AppendResult:
        """The same, for callers without an event loop (CLI, threads)."""
        return self._submit(request, None).future.result()

    def _run_writer(self) -> None:
        conn = connect(self.path)
        # Checkpoint the WAL into the database every WAL_AUTOCHECKPOINT pages instead of 1000: a
        # group commit dirties about one index page per stream it touches, so at 1000 nearly every
        # other commit paid for a checkpoint that rewrote the same hot pages. Durability does not
        # depend on it: every commit's WAL frames are fsynced (synchronous=FULL) before it returns.
        conn.execute(f"PRAGMA wal_autocheckpoint = {self.WAL_AUTOCHECKPOINT}")
        try:
            stop = False
            while not stop:
                item = self._queue.get()
                if item is _STOP:
                    break
                batch = [item]
                size = len(item.request.events)
                while size < self.max_batch_events:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                        break
                    batch.append(item)
                    size += len(item.request.events)
                self._commit_batch(conn, batch)
        finally:
            conn.close()

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        outcomes, rows = self._commit_fast(conn, batch) or self._commit_locked(conn, batch)
        if rows:
            self._committed = rows[-1][0]
            self._write_witness(rows)
            seconds = time.perf_counter() - started
            telemetry.record_commit(len(rows), seconds)
            if telemetry.tracing_configured():
                _commit_span(len(batch), len(rows), rows[-1][0], seconds)
        self._resolve(batch, outcomes)
        if rows:
            self._notify()

    def _commit_fast(self, conn: sqlite3.Connection, batch: list[_Pending]) -> tuple[list, list] | None:
        """The common case in one statement: every stream's head is cached, every append is valid.

        The batch is prepared against the cached heads, then written by a single INSERT in
        autocommit mode (synchronous=FULL: it returns after the WAL is fsynced) whose WHERE
        clause checks, under the write lock it takes, that the log still ends at the row the
        cache was valid for. If anyone else wrote, it inserts nothing and the batch goes the
        locked way, as does any batch with an idempotency key. Heads the cache lacks are read
        first, or presumed new for appends that expect version 0. Appends refused against
        these heads (a wrong expected version) are answered only once that check has passed.

        One statement instead of BEGIN, SELECT, INSERT and COMMIT matters because the writer
        re-takes the GIL after each, and waits for the busy event loop thread every time.
        """
        mark, cache = self._heads_mark, self._heads
        if mark is None:
            return None
        position = mark[0]
        heads: dict[tuple[str, str], tuple[int, str]] = {}
        presumed: set[tuple[str, str]] = set()  # streams taken to be new, on no evidence but the request
        outcomes: list[AppendResult] = []
        rows: list[tuple] = []
        wanted = set()  # uncached streams that should exist: their heads are read (no lock needed, see below)
        events = 0
        for pending in batch:
            request = pending.request
            if request.idempotency_key is not None:
                return None
            if request.expected_version != 0:
                wanted.add((request.tenant_id, request.stream_id))
            events += len(request.events)
        if events > _INSERT_MAX_ROWS:  # more than one INSERT statement: not atomic without BEGIN … COMMIT
            return None
        wanted = {key for key in wanted if key not in cache}  # not ``-= cache.keys()``: that walks the whole cache
        if wanted:
            # Read outside the write lock, then check the log still ends at the mark: if it does,
            # nothing was committed since the cache was last right, so these reads were right too.
            try:
                heads.update(self._stored_heads(conn, wanted))
                last = conn.execute("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1").fetchone()
            except Exception:
                last = None
            if (tuple(last) if last else (0, "")) != mark:
                cache.clear()
                return None
        for pending in batch:
            request = pending.request
            key = (request.tenant_id, request.stream_id)
            if key not in cache and key not in heads:
                # expected version 0 and unknown: a new stream, presumably. UNIQUE (tenant_id,
                # stream_id, version) refuses version 1 of a stream that exists after all, and
                # the INSERT then writes nothing.
                heads[key] = (0, genesis_hash(*key))
                presumed.add(key)
            outcome = self._prepare(conn, request, position, heads, {})
            if not isinstance(outcome, tuple):  # refused against the cached heads: true if the cache is
                if isinstance(outcome, WrongExpectedVersion) and key in presumed:
                    return None  # ... but a presumed-new stream's head is no evidence to refuse on
                outcomes.append(outcome)  # (the cache is checked below, with the INSERT or on its own)
                continue
            result, new_rows, _ = outcome
            rows.extend(new_rows)
            outcomes.append(result)
            position = result.global_position
        if not rows:  # every append was refused: the refusals stand if the log still ends at the mark
            try:
                last = conn.execute("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1").fetchone()
            except Exception:  # the locked way decides (and reports a broken store)
                last = None
                mark = None
            if (tuple(last) if last else (0, "")) != mark:
                cache.clear()
                self._heads_mark = None
                return None
            return outcomes, rows
        self._heads_mark = None  # valid again only once this batch has committed
        try:
            size, params = _padded(rows, len(_EVENT_COLUMNS))
            params += (mark[0], mark[0], mark[1])
            inserted = conn.execute(_insert_sql("events", _EVENT_COLUMNS, size, True), params).rowcount
        except sqlite3.IntegrityError:  # a "new" stream existed: nothing was written, the locked way decides
            cache.clear()
            return None
        except Exception as exc:  # nothing was written (the statement is atomic): the locked way decides
            log.warning("event store fast commit failed; retrying under the lock", extra={"error": repr(exc)})
            cache.clear()
            return None
        if inserted != len(rows):  # the log moved on under us: another writer committed
            cache.clear()
            return None
        self.last_commit_error = None
        for key in presumed:  # keep what was cached, read or written; a presumed-new stream that no
            if not heads[key][0]:  # append wrote stays unknown
                del heads[key]
        self._remember_heads(heads, (rows[-1][0], rows[-1][8]))
        return outcomes, rows

    def _commit_locked(self, conn: sqlite3.Connection, batch: list[_Pending]) -> tuple[list, list]:
        """Validate every append against the stored rows inside BEGIN IMMEDIATE, write, COMMIT."""
        outcomes: list[AppendResult | BaseException] = []
        rows: list[tuple] = []
        idempotency_rows: list[tuple] = []
        cache = self._heads
        try:
            conn.execute("BEGIN IMMEDIATE")
            last = conn.execute("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1").fetchone()
            position, mark = (last[0], last[1]) if last else (0, "")
            if self._heads_mark != (position, mark):  # another writer committed since our last batch
                cache.clear()
            self._heads_mark = None  # valid again only once this batch has committed
            # this batch's view of the heads: the cache, then one query for every stream it lacks
            heads: dict[tuple[str, str], tuple[int, str]] = {}
            missing = {key for p in batch if (key := (p.request.tenant_id, p.request.stream_id)) not in cache}
            if missing:
                heads.update(self._stored_heads(conn, missing))
            claimed: dict[tuple[str, str], tuple[str, AppendResult]] = {}
            for pending in batch:
                outcome = self._prepare(conn, pending.request, position, heads, claimed)
                if isinstance(outcome, tuple):
                    result, new_rows, idem_row = outcome
                    rows.extend(new_rows)
                    position = result.global_position
                    if idem_row:
                        idempotency_rows.append(idem_row)
                    outcomes.append(result)
                else:
                    outcomes.append(outcome)
            if rows:
                _insert_many(conn, "events", _EVENT_COLUMNS, rows)
            if idempotency_rows:
                _insert_many(conn, "idempotency", _IDEMPOTENCY_COLUMNS, idempotency_rows)
            conn.execute("COMMIT")
            self.last_commit_error = None
            self._remember_heads(heads, (rows[-1][0], rows[-1][8]) if rows else (position, mark))
        except Exception as exc:  # the whole batch failed: nothing was written
            log.error("event store commit failed", extra={"error": repr(exc)})
            self.last_commit_error = repr(exc)
            cache.clear()
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = StoreUnavailable(f"commit failed: {exc}")
            outcomes = [failure] * len(batch)
            rows = []
        return outcomes, rows

    @staticmethod
    def _resolve(batch: list[_Pending], outcomes: list) -> None:
        """Answer every caller; one wake-up per event loop, not one per append."""
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

    def _prepare(self, conn, request: AppendRequest, position: int, heads: dict, claimed: dict):
        """Validate one request and build its rows, touching nothing shared until it is valid."""
        try:
            idem = None
            if request.idempotency_key is not None:
                idem = (request.idempotency_scope or "", request.idempotency_key)
                prior = claimed.get(idem) or self._stored_idempotency(conn, *idem)
                if prior is not None:
                    fingerprint, result = prior
                    if fingerprint != (request.fingerprint or ""):
                        return IdempotencyKeyReused(request.idempotency_key)
                    return msgspec.structs.replace(result, replayed=True)
            key = (request.tenant_id, request.stream_id)
            head = heads.get(key) or self._heads.get(key) or self._stored_head(conn, *key)
            version, prev = head
            if version != request.expected_version:
                return WrongExpectedVersion(request.stream_id, request.expected_version, version)
            new_rows = chained_rows(request, position, version, prev)
            position, version, prev = new_rows[-1][0], new_rows[-1][3], new_rows[-1][8]
            heads[key] = (version, prev)
            result = AppendResult(stream_id=request.stream_id, version=version,
                                  first_position=new_rows[0][0], global_position=position)
            idem_row = None
            if idem is not None:
                claimed[idem] = (request.fingerprint or "", result)
                idem_row = (*idem, request.fingerprint or "", _encoder.encode(result), new_rows[0][6])
            return result, new_rows, idem_row
        except Exception as exc:  # a bad request fails alone, the batch goes on
            return exc

    def _remember_heads(self, heads: dict, mark: tuple[int, str]) -> None:
        """Keep the heads this commit read or wrote, valid while the log ends at ``mark``.

        Only the writer thread touches the cache. It is checked against the last stored
        row (position and hash) inside the write lock of every batch, so an append by
        another process empties it and heads are read from the table again.
        """
        cache = self._heads
        cache.update(heads)
        if len(cache) > self.HEADS_CACHE_SIZE:  # forget the half that was first cached
            for key in list(itertools.islice(cache, len(cache) - self.HEADS_CACHE_SIZE // 2)):
                del cache[key]
        self._heads_mark = mark

    @staticmethod
    def _stored_heads(conn, keys: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, str]]:
        """The heads of many streams, 512 per query (an index lookup each); genesis if absent.

        The query returns one JSON array rather than a row per stream: sqlite3 releases and
        re-takes the GIL for every row it steps to, and the writer waits for it each time.
        """
        found: dict[tuple[str, str], tuple[int, str]] = {}
        keys_list = list(keys)
        for start in range(0, len(keys_list), 512):
            size, params = _padded(keys_list[start:start + 512], 2)  # NULL keys match nothing
            found.update(((t, s), (v, h)) for t, s, v, h in
                         _json_decode(conn.execute(_heads_sql(size), params).fetchone()[0]))
        for key in keys_list:
            if key not in found:
                found[key] = (0, genesis_hash(*key))
        return found

    @staticmethod
    def _stored_head(conn, tenant_id: str, stream_id: str) -> tuple[int, str]:
        row = conn.execute(
            "SELECT version, hash FROM events WHERE tenant_id = ? AND stream_id = ? ORDER BY version DESC LIMIT 1",
            (tenant_id, stream_id)).fetchone()
        return (row[0], row[1]) if row else (0, genesis_hash(tenant_id, stream_id))

    @staticmethod
    def _stored_idempotency(conn, scope: str, key: str) -> tuple[str, AppendResult] | None:
        row = conn.execute("SELECT fingerprint, result FROM idempotency WHERE scope = ? AND key = ?",
                           (scope, key)).fetchone()
        return (row[0], _result_decoder.decode(row[1])) if row else None

    def _write_witness(self, rows: list[tuple]) -> None:
        """Record the high-water position (and any checkpoint) outside the database.

        Written after the commit, so it never runs ahead of the store; the verifier uses it
        to detect a truncated tail. Best effort: failing to write it loses no data.
        """
        if self.witness_path is not None:
            write_witness(self.witness_path, rows)

    # notifications ------------------------------------------------------------------
    def _notify(self) -> None:
        self._wakeups.notify()

    async def wait_for_append(self, timeout: float) -> None:
        """Return when anything is appended (by this process), or after ``timeout``."""
        await self._wakeups.wait(timeout)

    def listening(self, event: asyncio.Event | None = None):
        """``event`` (or a new one), set at every commit by this process while the block runs."""
        return self._wakeups.listening(event)

    # reads --------------------------------------------------------------------------
    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path, readonly=self.read_only, immutable=self.immutable)
        return conn

    @staticmethod
    def _decode(body: bytes, hash_: str) -> EventEnvelope:
        return msgspec.structs.replace(_envelope_decoder.decode(body), hash=hash_)

    def read_stream_sync(self, tenant_id: str, stream_id: str, from_version: int = 1) -> list[EventEnvelope]:
        rows = self._reader().execute(
            "SELECT body, hash FROM events WHERE tenant_id = ? AND stream_id = ? AND version >= ? ORDER BY version",
            (tenant_id, stream_id, from_version)).fetchall()
        return [self._decode(body, h) for body, h in rows]

    async def read_stream(self, tenant_id: str, stream_id: str, from_version: int = 1) -> list[EventEnvelope]:
        return self.read_stream_sync(tenant_id, stream_id, from_version)

    def read_all_sync(self, after_position: int, limit: int = 1000) -> list[EventEnvelope]:
        rows = self._reader().execute(
            "SELECT body, hash FROM events WHERE position > ? ORDER BY position LIMIT ?",
            (after_position, limit)).fetchall()
        return [self._decode(body, h) for body, h in rows]

    async def read_all(self, after_position: int, limit: int = 1000) -> list[EventEnvelope]:
        return self.read_all_sync(after_position, limit)

    def read_positions_sync(self, positions: list[int]) -> list[EventEnvelope]:
        if not positions:
            return []
        marks = ",".join("?" * len(positions))
        rows = self._reader().execute(
            f"SELECT body, hash FROM events WHERE position IN ({marks}) ORDER BY position", positions).fetchall()
        return [self._decode(body, h) for body, h in rows]

    def read_raw(self, after_position: int, limit: int = 10000) -> list[RawRecord]:
        rows = self._reader().execute(
            "SELECT position, tenant_id, stream_id, version, body, hash FROM events"
            " WHERE position > ? ORDER BY position LIMIT ?", (after_position, limit)).fetchall()
        return [RawRecord._make(row) for row in rows]

    def head_position_sync(self) -> int:
        return self._reader().execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]

    async def head_position(self) -> int:
        return self.head_position_sync()

    def recent_head(self, max_age: float = 1.0) -> int:
        """The log's head: this process's commits at once, other processes' within ``max_age`` seconds.

        For the primary's progress pushes, after every commit and projection batch: querying the file
        each time was most of its event loop's work. The file is read at most every ``max_age``
        seconds, for appends by other processes (the CLI). One thread (the event loop) calls it.
        """
        now = time.monotonic()
        if now - self._head_read_at >= max_age:
            self._head_read, self._head_read_at = self.head_position_sync(), now
        return max(self._head_read, self._committed)

    def stream_version_sync(self, tenant_id: str, stream_id: str) -> int:
        return self._stored_head(self._reader(), tenant_id, stream_id)[0]

    async def idempotent_result(self, scope: str, key: str, fingerprint: str) -> AppendResult | None:
        prior = self._stored_idempotency(self._reader(), scope, key)
        if prior is None:
            return None
        if prior[0] != fingerprint:
            raise IdempotencyKeyReused(key)
        return msgspec.structs.replace(prior[1], replayed=True)

    async def subscribe(self, after_position: int, batch: int = 500) -> AsyncIterator[EventEnvelope]:
        """Every event after ``after_position``, then live ones as they are appended.

        The wake-up is armed before each read, so an append between the read and the wait
        is never missed; appends by other processes are seen within ``poll_interval``.
        """
        position = after_position
        with self._wakeups.listening() as appended:
            while True:
                appended.clear()
                events = self.read_all_sync(position, batch)
                if events:
                    for envelope in events:
                        yield envelope
                    position = events[-1].global_position
                    continue
                await wait_set(appended, self.poll_interval)

    def writable(self) -> bool:
        """True when the writer is alive and its last commit succeeded."""
        return bool(self._writer and self._writer.is_alive() and self.last_commit_error is None)


_INSERT_MAX_ROWS = 2048  # rows per INSERT statement: 2048 x 9 parameters, under SQLite's limit of 32766
_EVENT_COLUMNS = ("position", "tenant_id", "stream_id", "version", "stream_type", "type", "occurred_at", "body",
                  "hash")
_IDEMPOTENCY_COLUMNS = ("scope", "key", "fingerprint", "result", "created_at")
_LOG_ENDS_AT = (" AND (SELECT coalesce(max(position), 0) FROM events) = ?"
                " AND coalesce((SELECT hash FROM events WHERE position = ?), '') = ?")


@functools.lru_cache(maxsize=None)
def _insert_sql(table: str, columns: tuple[str, ...], rows: int, validated: bool) -> str:
    """``INSERT … SELECT * FROM (VALUES …) WHERE column1 IS NOT NULL``, for ``rows`` rows.

    Row counts are rounded up to a power of two and the rest padded with NULL rows, which the
    WHERE clause drops, so the writer uses a dozen statements that stay compiled in sqlite3's
    statement cache instead of compiling (and caching, at up to megabytes each) one per batch
    size. ``validated`` adds the check that the log still ends at a given (position, hash).
    """
    values = ",".join(["(" + ",".join("?" * len(columns)) + ")"] * rows)
    return (f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM (VALUES {values}) WHERE column1 IS NOT NULL"
            + (_LOG_ENDS_AT if validated else ""))


@functools.lru_cache(maxsize=None)
def _heads_sql(keys: int) -> str:
    """The last (version, hash) of each of ``keys`` (tenant_id, stream_id) pairs, as one JSON array."""
    return ("SELECT json_group_array(json_array(w.column1, w.column2, e.version, e.hash)) FROM (VALUES "
            + ",".join(["(?,?)"] * keys) + ") AS w"
            " JOIN events AS e ON e.position = (SELECT position FROM events WHERE tenant_id = w.column1"
            " AND stream_id = w.column2 ORDER BY version DESC LIMIT 1)")


def _padded(rows: list[tuple], width: int) -> tuple[int, list]:
    """The statement size for ``rows`` (the next power of two) and its parameters, NULL-padded."""
    size = 1 << (len(rows) - 1).bit_length()
    params = [value for row in rows for value in row]
    params.extend([None] * (width * (size - len(rows))))
    return size, params


def _insert_many(conn: sqlite3.Connection, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Insert rows with multi-row ``VALUES`` statements (2048 rows each at most), not ``executemany``.

    ``executemany`` releases and re-takes the GIL around every row's ``sqlite3_step``; while
    the event loop thread is busy each re-take waits for it to yield, which made inserting a
    batch far slower than SQLite's own work. One statement re-takes it once.
    """
    for start in range(0, len(rows), _INSERT_MAX_ROWS):
        size, params = _padded(rows[start:start + _INSERT_MAX_ROWS], len(columns))
        conn.execute(_insert_sql(table, columns, size, False), params)




def _commit_span(appends: int, events: int, last_position: int, seconds: float) -> None:
    """One span per group commit, from the writer thread (no parent: a commit serves many requests)."""
    end = time.time_ns()
    span = _tracer.start_span("eventstore.commit", start_time=end - int(seconds * 1e9), attributes={
        "csm.appends": appends, "csm.events": events, "csm.last_position": last_position})
    span.end(end_time=end)


def _set_all(answers: list) -> None:
    for future, outcome in answers:
        if future.done():  # the caller was cancelled; the append happened all the same
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def chained_rows(request: AppendRequest, position: int, version: int, prev: str) -> list[tuple]:
    """The rows (``_EVENT_COLUMNS``) of ``request``'s events placed after ``position`` and stream ``version``.

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
