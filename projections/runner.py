"""The projection runner: tails the event log and folds it into the read-model database.

Each batch of events and every projector's checkpoint commit in one SQLite transaction, so a
read model is never ahead of or behind its checkpoint. ``rebuild`` replays the whole log
into shadow tables and swaps them in atomically, while the live tail keeps running.

A projector whose code version differs from the version its tables were built by is *rebuilding*
until a rebuild swaps it in. A server does not wait for that (``open(rebuild="background")`` and
``rebuild_pending``): it serves at once, the tail keeps the other read models current, and a read of
a rebuilding one is refused with ``ProjectionRebuilding`` by the views connection itself
(``ViewsConnection``), whoever reads: the API, quota counts, schedulers, webhook deliveries.

Creating and emptying the projectors' tables is ``views_db``'s; telling readers where the read models stand
(``wait_for``, ``listening``) is ``read_position``'s; replaying one into shadow tables is ``rebuild``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from commands.waits import wait_set
from domain.chain import chain_hash, envelope_body
from domain.events import EventEnvelope
from projections.base import Projector
from projections import rebuild
from projections.read_position import ReadPosition
from projections.statistics import Statistics
from projections.views_db import CHECKPOINT_ROWS, RebuildGuard, connect_views, create_missing, empty_for_rebuild

log = logging.getLogger(__name__)
T = TypeVar("T")
# The tail starts a batch at most this often. An idle log's next append is folded in at once; under a steady
# stream of group commits (hundreds a second) a batch gathers several, and the views commit, its checkpoints
# and the hot index pages it rewrites are paid once for them: about a quarter of the tail's CPU, for at most
# this much more read-your-writes wait while the log is that busy.
MIN_BATCH_INTERVAL = 0.005

REBUILD_MODES = ("now", "background", "observe")
PROGRESS_LOG_SECONDS = 10.0  # a background rebuild logs where it is this often


class EventSource(Protocol):
    """What the runner needs of the event store."""

    def read_all_sync(self, after_position: int, limit: int = 1000) -> list[EventEnvelope]: ...

    def head_position_sync(self) -> int: ...

    async def wait_for_append(self, timeout: float) -> None: ...

    def listening(self, event: asyncio.Event | None = None) -> contextlib.AbstractContextManager[asyncio.Event]:
        """An event set at every append this process makes while the block runs."""
        ...


class DeliveredFeed(Protocol):
    """Batches of events from a bus (infra/bus/consumer.py), acknowledged once applied."""

    async def next_batch(self) -> list[EventEnvelope]: ...

    async def acknowledge(self) -> None: ...

    async def rewind(self) -> None: ...


def _intact(event: EventEnvelope) -> bool:
    """True when the event's hash recomputes from its body: a bus message is a copy, not the record."""
    return event.hash == chain_hash(event.prev_hash, envelope_body(event))


class ProjectionRunner:
    def __init__(self, source: EventSource, views_path: Path | str, projectors: list[Projector], *,
                 batch: int = 2000, poll_interval: float = 0.5) -> None:
        self.source = source
        self.views_path = Path(views_path)
        self.projectors = {p.name: p for p in projectors}
        self.guard = RebuildGuard(projectors)
        self.batch = batch
        self.poll_interval = poll_interval
        self.read_position = ReadPosition()  # ``position``, and who waits for it
        self._progress_logged: dict[str, float] = {}  # when a background rebuild last logged its progress
        self._conn: sqlite3.Connection | None = None
        self._batch_lock = threading.Lock()  # close() waits for a batch still running in a worker thread
        self._closing = threading.Event()  # a rebuild running in a thread stops at its next batch
        self._thread: ThreadPoolExecutor | None = None  # the tail's own thread (see ``_off_loop``)
        self._last_batch = 0.0  # time.monotonic() when ``run`` last started a batch
        self.following = False  # a tail (run, run_delivered, follow_checkpoints) moves ``position`` on its own
        # what this process's tail did: batches and events committed to the views, batches that failed (retried);
        # `csm projector --metrics-port` exposes them (infra/metrics_server.py)
        self.counts = {"batches": 0, "events": 0, "failed_batches": 0}
        self.statistics = Statistics()  # the query planner's, kept by the process that writes the views

    @property
    def position(self) -> int:
        """Where the read models stand: the position every one but a rebuilding one has applied."""
        return self.read_position.value

    @position.setter
    def position(self, value: int) -> None:
        self.read_position.value = value

    @property
    def rebuilding(self) -> frozenset[str]:
        """Projections whose tables were not built by this code: read models with no answer until rebuilt."""
        return self.guard.rebuilding

    # setup --------------------------------------------------------------------------
    def open(self, rebuild: str = "now") -> ProjectionRunner:
        """Open the views database, creating any projection's tables it lacks.

        ``rebuild`` says what this process does with a rebuilding projection (one whose code version changed):
        "now" rebuilds it before returning (CLI commands, which run no tail); "background" empties it at once
        and leaves the rebuild to ``rebuild_pending`` (the process that runs the projections: a server, or
        `csm projector`), so it serves meanwhile; "observe" leaves it alone to whichever process runs them (an
        HTTP worker of a multi-worker server, an API process whose projections `csm projector` runs).
        """
        if rebuild not in REBUILD_MODES:
            raise ValueError(f"rebuild must be one of {', '.join(REBUILD_MODES)}, not {rebuild!r}")
        conn = self._conn = connect_views(self.views_path)
        create_missing(conn, self.projectors.values())
        for name in sorted(self.guard.look(conn)):
            if rebuild == "now":
                log.info("projection version changed: rebuilding", extra={"projection": name})
                self._rebuild(name, only_if_rebuilding=True)
            elif rebuild == "background":
                self._empty(conn, name)
        self.position = self._checkpoints(conn)
        return self

    def _empty(self, conn: sqlite3.Connection, name: str) -> None:
        """Serve without a rebuilding projection until ``rebuild_pending`` swaps the rebuilt one in: its tables are
        emptied and its reads refused meanwhile (``views_db.empty_for_rebuild``)."""
        projector = self.projectors[name]
        version = empty_for_rebuild(conn, projector)
        if version is not None:
            log.info("projection version changed: serving without it until it is rebuilt",
                     extra={"projection": name, "version": version, "code_version": projector.version})

    async def rebuild_pending(self) -> None:
        """Rebuild the rebuilding projections one after another, then return; the tail serves the others meanwhile.

        Each rebuild runs on a thread of its own (``rebuild``: the live tail gets in between its batches). One that
        fails is logged and tried again a little later; ``close`` stops one in progress at its next batch.
        """
        while pending := sorted(self.rebuilding):
            name = pending[0]
            log.info("rebuilding projection in the background", extra={"projection": name})
            try:
                result = await asyncio.to_thread(self._rebuild, name, only_if_rebuilding=True,
                                                 progress=functools.partial(self._note_progress, name))
            except asyncio.CancelledError:
                raise
            except Exception:
                if self._closing.is_set():
                    return
                log.exception("rebuilding projection %s failed; will retry", name)
                await asyncio.sleep(5.0)
                continue
            finally:
                self._progress_logged.pop(name, None)
            if result is not None:
                log.info("projection rebuilt and swapped in", extra={
                    "projection": name, "events": result["events"], "position": result["position"],
                    "seconds": round(result["seconds"], 1), "events_per_second": round(result["events_per_second"])})
            await self.read_position.announce()

    def _note_progress(self, name: str, position: int, head: int) -> None:
        """A rebuild's progress (a rebuild thread calls it after each batch), logged about every PROGRESS_LOG_SECONDS."""
        now = time.monotonic()
        if now - self._progress_logged.get(name, 0.0) >= PROGRESS_LOG_SECONDS:
            log.info("rebuilding projection", extra={"projection": name, "position": position, "head": head})
            self._progress_logged[name] = now

    def close(self) -> None:
        self._closing.set()
        with self._batch_lock:  # a cancelled run() leaves its batch running in its thread; never close under it
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        if self._thread is not None:
            self._thread.shutdown(wait=False)
            self._thread = None

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the tail's own thread, not the event loop's shared pool: queries, signing and the
        schedulers use that pool, and a tail that had to wait there for a free thread kept read-your-writes
        waiting with it."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="csm-projections")
        return await asyncio.get_running_loop().run_in_executor(self._thread, functools.partial(fn, *args))

    def connection(self) -> sqlite3.Connection:
        """A read connection to the views database for this thread's queries; it refuses to read a rebuilding read
        model (ProjectionRebuilding)."""
        return self.guard.connect(self.views_path)

    def _checkpoints(self, conn: sqlite3.Connection) -> int:
        """Where the read models stand: the lowest checkpoint but a rebuilding projection's (noting which those are)."""
        return self._lowest(conn.execute(CHECKPOINT_ROWS).fetchall())

    def _lowest(self, rows: list[tuple[str, int, int]]) -> int:
        """The lowest of these checkpoint rows but a rebuilding projection's (noting which those are)."""
        rebuilding = self.guard.note(rows)
        return min((position for name, position, _ in rows if name not in rebuilding), default=0)

    # tailing ------------------------------------------------------------------------
    def catch_up_once(self) -> int:
        """Apply the next batch of events to every projector behind them. Returns events read."""
        with self._batch_lock:
            return self._catch_up_once()

    def _catch_up_once(self) -> int:
        conn = self._conn
        assert conn is not None, "runner not open"
        start = self._checkpoints(conn)
        events = self.source.read_all_sync(start, self.batch)
        if not events:
            self.position = start  # another process (the CLI) may have applied them
            return 0
        return self._apply(conn, events)

    def _apply(self, conn: sqlite3.Connection, events: list[EventEnvelope]) -> int:
        """Fold ``events`` (contiguous, in log order) into every projector behind them, checkpoints included."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = conn.execute(CHECKPOINT_ROWS).fetchall()
            checkpoints = {name: (position, version) for name, position, version in rows}
            last, advanced = events[-1].global_position, []
            for name, projector in self.projectors.items():
                done, version = checkpoints.get(name, (0, projector.version))
                if version != projector.version:
                    continue  # rebuilding: its rebuild swaps it in, and its checkpoint with it
                for event in events:
                    if event.global_position > done:
                        projector.apply(conn, event)
                if last > done:
                    advanced.append(name)
            if advanced:  # one statement for every checkpoint the batch moved (all to its last event)
                conn.execute("UPDATE projection_checkpoints SET position = ?, updated_at = ? WHERE name IN "
                             f"({','.join('?' * len(advanced))})", (last, time.time(), *advanced))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.counts["batches"] += 1
        self.counts["events"] += len(events)
        # the checkpoints as committed: read in the transaction, which held the write lock, and moved by it
        moved = set(advanced)
        self.position = self._lowest([(name, last if name in moved else position, version)
                                      for name, position, version in rows])
        self.statistics.refresh(conn, self.position)
        return len(events)

    def apply_delivered(self, events: list[EventEnvelope]) -> int:
        """Apply events delivered by a bus (Kafka): at least once, possibly out of order or with gaps.

        Events at or below a projector's checkpoint are skipped (checked inside the same
        transaction that writes the views), so a redelivery has no effect. A batch that does not
        continue the log exactly (a gap, or an event whose hash does not recompute) is not
        trusted: the missing range is read from the store instead, the authority. Returns the
        number of events applied.
        """
        with self._batch_lock:
            conn = self._conn
            assert conn is not None, "runner not open"
            start = self._checkpoints(conn)
            fresh = sorted({e.global_position: e for e in events if (e.global_position or 0) > start}.values(),
                           key=lambda e: e.global_position)
            if not fresh:
                self.position = start
                return 0
            contiguous = all(e.global_position == start + i for i, e in enumerate(fresh, start=1))
            if contiguous and all(_intact(e) for e in fresh):
                return self._apply(conn, fresh)
            applied, target = 0, fresh[-1].global_position
            while self.position < target:  # fill the gap from the store
                batch = self._catch_up_once()
                if not batch:
                    break
                applied += batch
            return applied

    async def run_delivered(self, feed: DeliveredFeed) -> None:
        """Follow a bus instead of the store's log: apply each delivered batch, then acknowledge it.

        The acknowledgement (a Kafka offset commit) comes after the views commit, so a crash in
        between redelivers events that the checkpoints then skip: at least once in delivery,
        exactly once in effect.
        """
        self._follow()
        while True:
            events = await feed.next_batch()
            before = self.position
            try:
                applied = await self._off_loop(self.apply_delivered, events) if events else 0
            except asyncio.CancelledError:
                raise
            except Exception:
                self.counts["failed_batches"] += 1
                log.exception("projection batch from the bus failed; retrying")
                await feed.rewind()
                await asyncio.sleep(1.0)
                continue
            await feed.acknowledge()
            if applied or self.position != before:
                await self.read_position.announce()

    async def follow_checkpoints(self) -> None:
        """Apply nothing: follow the checkpoints another process (``csm projector``) commits.

        For an API process whose read models are written elsewhere: ``position`` and
        ``wait_for`` (read-your-writes) then track that process's progress.
        """
        self._follow()
        conn = connect_views(self.views_path)
        try:
            while True:
                position = await self._off_loop(self._checkpoints, conn)
                if position != self.position:
                    await self.advance(position)
                await self.source.wait_for_append(self.poll_interval)
        finally:
            conn.close()

    async def run(self) -> None:
        """Follow the log for ever; cancel the task to stop.

        ``appended`` is armed before each batch, so an append made while it runs is not missed. A batch
        shorter than the limit read to the log's end: then the tail waits for the next append (or
        ``poll_interval``, for other processes' appends) rather than read again at once, which cost a
        second, empty pass after every group commit. Batches start at least ``MIN_BATCH_INTERVAL`` apart.
        """
        self._follow()
        with self.source.listening() as appended:
            while True:
                before = self.position
                appended.clear()
                try:
                    applied = await self._off_loop(self.catch_up_once)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.counts["failed_batches"] += 1
                    log.exception("projection batch failed; retrying")
                    await asyncio.sleep(1.0)
                    continue
                if applied or self.position != before:
                    await self.read_position.announce()
                if applied < self.batch:
                    await wait_set(appended, self.poll_interval)
                    # under a steady stream of commits, fold several into one batch (see MIN_BATCH_INTERVAL)
                    await asyncio.sleep(max(0.0, self._last_batch + MIN_BATCH_INTERVAL - time.monotonic()))
                self._last_batch = time.monotonic()

    def _follow(self) -> None:
        """A tail starts: ``position`` moves by itself from now on, and ``wait_for`` callers (some may have called
        before the tail started) are woken through the condition made here."""
        self.following = True
        self.read_position.condition()

    async def wait_for(self, position: int, timeout: float) -> bool:
        """Wait (bounded) until every read model has applied ``position``."""
        return await self.read_position.wait_for(position, timeout)

    async def reach(self, position: int, timeout: float) -> bool:
        """Whether every read model has applied ``position``: a runner another process moves (``following``) waits
        for it (bounded); one that applies the events itself catches up to it, on a thread."""
        if self.following:
            return await self.wait_for(position, timeout)
        return await asyncio.to_thread(self._catch_up_to, position)

    def _catch_up_to(self, position: int) -> bool:
        while self.position < position:
            if not self.catch_up_once():
                break
        return self.position >= position

    async def advance(self, position: int) -> None:
        """Take ``position`` as where the read models stand (another process applies them) and announce it."""
        if position != self.position:
            self.position = position
            await self.read_position.announce()

    def listening(self, event: asyncio.Event) -> contextlib.AbstractContextManager[asyncio.Event]:
        """Set ``event`` whenever the position moves while the block runs (same event loop only)."""
        return self.read_position.listening(event)

    # inspection ---------------------------------------------------------------------
    def status(self) -> list[dict]:
        conn = connect_views(self.views_path)  # the tail's connection may be mid-batch in its thread
        head = self.source.head_position_sync()
        rows = conn.execute("SELECT name, position, version, updated_at FROM projection_checkpoints"
                            " ORDER BY name").fetchall()
        conn.close()
        rebuilding = self.guard.note((name, position, version) for name, position, version, _ in rows)
        return [{"name": name, "position": position, "head": head, "lag": max(head - position, 0),
                 "version": version, "code_version": self.projectors[name].version if name in self.projectors else None,
                 "rebuilding": name in rebuilding,
                 "updated_at": updated_at} for name, position, version, updated_at in rows]

    # rebuild ------------------------------------------------------------------------
    def rebuild(self, name: str, progress: Callable[[int, int], None] | None = None) -> dict:
        """Replay the whole log into shadow tables, then swap them in, in one transaction."""
        if name not in self.projectors:
            raise KeyError(f"unknown projection {name!r}; known: {', '.join(sorted(self.projectors))}")
        return self._rebuild(name, progress=progress)

    def _rebuild(self, name: str, *, only_if_rebuilding: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> dict | None:
        return rebuild.rebuild(self.views_path, self.projectors[name], self.source, self.guard, batch=self.batch,
                               closing=self._closing, only_if_rebuilding=only_if_rebuilding, progress=progress)
