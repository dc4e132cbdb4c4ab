"""The embedded event store: SQLite in WAL mode, one writer thread, group commit.

Every append goes through a single writer thread (``group_commit``) that drains all queued requests into one
transaction with ``synchronous=FULL`` (``sqlite_commit``), so concurrent appends
share one fsync and every acknowledged append is on disk. Expected versions are checked
against the stored heads inside the write lock, so several processes (the server and the
CLI) may write safely. Positions are assigned here, contiguous from 1, and are part of the
hashed body, so any deletion or reordering is visible to the verifier.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
from opentelemetry.trace import get_current_span as _get_current_span

from commands.ports import AppendRequest, AppendResult
from commands.waits import wait_set
from domain.errors import IdempotencyKeyReused
from domain.events import EventEnvelope
from infra import telemetry
from infra.audit.witness import release_witness
from infra.eventstore.group_commit import GroupCommitWriter, RawRecord
from infra.eventstore.sqlite_commit import SQLiteCommitter, stored_head, stored_idempotency
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

_envelope_decoder = msgspec.json.Decoder(EventEnvelope)


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

    def __init__(self, path: Path | str, *, max_batch_events: int = 8192, poll_interval: float = 0.5,
                 witness_path: Path | str | None = None, read_only: bool = False, immutable: bool = False) -> None:
        """``read_only``: a store to read, never opened (no writer): its connections are ``mode=ro``;
        ``immutable``: read-only too, for a file nothing writes (see ``connect``)."""
        self.path = Path(path)
        self.read_only, self.immutable = read_only or immutable, immutable
        self.poll_interval = poll_interval
        self.witness_path = Path(witness_path) if witness_path else None
        self._writer = GroupCommitWriter(self._commit, max_batch_events=max_batch_events,
                                         name="csm-eventstore-writer")
        self._committer: SQLiteCommitter | None = None  # made by open(), used by the writer thread only
        self._local = threading.local()
        self._wakeups = AppendWakeups()
        self._closed = False
        self._head_read, self._head_read_at = 0, float("-inf")  # the head last read from the file, and when

    # lifecycle ----------------------------------------------------------------------
    def open(self) -> SQLiteEventStore:
        if self.read_only:
            raise RuntimeError("a read-only event store is not opened for appends: read from it directly")
        if self._writer.started or self._closed:
            # a second writer thread on the one queue: close() would stop one and wait for ever on the other
            raise RuntimeError("this event store was opened before; make a new SQLiteEventStore to open it again")
        _create_private_file(self.path)
        conn = connect(self.path)
        conn.executescript(SCHEMA)
        self._committer = SQLiteCommitter(conn, witness_path=self.witness_path, notify=self._wakeups.notify)
        self._writer.start()
        return self

    def _commit(self, batch: list) -> None:
        self._committer.commit_batch(batch)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.stop()
        if self._committer is not None:
            self._committer.conn.close()
        if self.witness_path is not None:
            release_witness(self.witness_path)

    def __enter__(self) -> SQLiteEventStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # writes -------------------------------------------------------------------------
    async def append(self, request: AppendRequest) -> AppendResult:
        """Append and return once the events are durable (fsynced).

        The append gets its own span only inside a trace that is being recorded (an HTTP
        request, say): opening an OpenTelemetry span costs more than the rest of an append's
        work on this thread, so untraced callers skip it. Every commit has its own span.
        """
        if _get_current_span().is_recording():
            with telemetry.span("eventstore.append", stream_id=request.stream_id, events=len(request.events)):
                return await self._writer.submit(request, asyncio.get_running_loop()).future
        return await self._writer.submit(request, asyncio.get_running_loop()).future

    def append_blocking(self, request: AppendRequest) -> AppendResult:
        """The same, for callers without an event loop (CLI, threads)."""
        return self._writer.submit(request, None).future.result()

    @property
    def last_commit_error(self) -> str | None:
        """Why the last commit failed (None once one succeeds)."""
        return self._committer.last_commit_error if self._committer else None

    @last_commit_error.setter
    def last_commit_error(self, value: str | None) -> None:
        if self._committer is not None:
            self._committer.last_commit_error = value

    # notifications ------------------------------------------------------------------
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
        return max(self._head_read, self._committer.last_position if self._committer else 0)

    def stream_version_sync(self, tenant_id: str, stream_id: str) -> int:
        return stored_head(self._reader(), tenant_id, stream_id)[0]

    async def idempotent_result(self, scope: str, key: str, fingerprint: str) -> AppendResult | None:
        prior = stored_idempotency(self._reader(), scope, key)
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
        return self._writer.alive() and self.last_commit_error is None
