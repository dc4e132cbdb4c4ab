"""Rebuilding one read model from the log: replay it into shadow tables, then swap them in, in one transaction.

One rebuild at a time across processes (they share the shadow tables' names): a server's background rebuild,
`csm projections rebuild`, a CLI command rebuilding before it reads. The live tail keeps running in between the
bulk phase's batches; the swap phase catches up with it under the write lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from domain.events import EventEnvelope
from projections.base import Projector
from projections.statistics import analyze_statements, forget_statistics
from projections.views_db import CHECKPOINTS, EMPTIED, RebuildGuard, connect_views, rebuild_lock_path

SHADOW = "__shadow"
LOCK_POLL_SECONDS = 0.2  # how often a rebuild waiting for another's lock looks again


class LogReader(Protocol):
    def read_all_sync(self, after_position: int, limit: int = 1000) -> list[EventEnvelope]: ...

    def head_position_sync(self) -> int: ...


@contextlib.contextmanager
def _rebuild_lock(views_path: Path, closing: threading.Event) -> Iterator[None]:
    with open(rebuild_lock_path(views_path), "a") as lock:
        while True:  # polled, not blocking: a server stopping while its rebuild waits here must not wait on
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if closing.wait(LOCK_POLL_SECONDS):
                    raise RuntimeError("the runner closed while its rebuild waited for another") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def rebuild(views_path: Path, projector: Projector, source: LogReader, guard: RebuildGuard, *, batch: int,
            closing: threading.Event, only_if_rebuilding: bool = False,
            progress: Callable[[int, int], None] | None = None) -> dict | None:
    """Replay the whole log into ``projector``'s shadow tables and swap them in; its figures, or None when
    ``only_if_rebuilding`` and another process rebuilt it while this one waited for the lock. Stops (RuntimeError)
    at its next batch once ``closing`` is set."""
    tag = secrets.token_hex(4)
    shadow = projector.bound(SHADOW, tag)
    with _rebuild_lock(views_path, closing):
        conn = connect_views(views_path)
        try:
            conn.execute(CHECKPOINTS)
            if only_if_rebuilding and projector.name not in guard.look(conn):
                return None
            return _replay_and_swap(conn, projector, shadow, tag, source, batch=batch, closing=closing,
                                    progress=progress, guard=guard)
        finally:
            conn.close()


def _replay_and_swap(conn: sqlite3.Connection, projector: Projector, shadow: Projector, tag: str,
                     source: LogReader, *, batch: int, closing: threading.Event,
                     progress: Callable[[int, int], None] | None, guard: RebuildGuard) -> dict:
    name = projector.name
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    shadow.drop(conn)
    shadow.create(conn, deferred=False)  # the query-only indexes are built once the rows are in
    conn.execute("COMMIT")
    head = source.head_position_sync()
    position, applied = _bulk(conn, name, shadow, source, head, batch=batch, closing=closing, progress=progress)
    for statement in shadow.deferred_statements():  # one transaction each: the live tail gets in between
        conn.execute(statement)
    analyzing = analyze_statements(projector.bound("", "").t(table) for table in projector.tables)
    conn.execute(analyzing[0])
    conn.execute("BEGIN IMMEDIATE")  # swap phase: catch the tail up and swap atomically
    try:
        while events := source.read_all_sync(position, batch * 5):
            for event in events:
                shadow.apply(conn, event)
            position = events[-1].global_position
            applied += len(events)
        live = projector.bound("", "")
        live.drop(conn)
        for table in shadow.tables:
            conn.execute(f"ALTER TABLE {shadow.t(table)} RENAME TO {live.t(table)}")
        # the swapped-in tables' statistics, committed with the swap, so every connection loads them with the new
        # schema (projections/statistics.py); a rename leaves a table's earlier statistics under the old name
        forget_statistics(conn, [shadow.t(table) for table in shadow.tables])
        for statement in analyzing[1:]:
            conn.execute(statement)
        conn.execute("INSERT OR REPLACE INTO projection_checkpoints VALUES (?, ?, ?, ?, ?)",
                     (name, position, shadow.version, tag, time.time()))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    guard.look(conn)
    if progress:
        progress(position, position)
    seconds = time.perf_counter() - started
    return {"name": name, "events": applied, "position": position, "seconds": seconds,
            "events_per_second": applied / seconds if seconds else 0.0}


def _bulk(conn: sqlite3.Connection, name: str, shadow: Projector, source: LogReader, head: int, *, batch: int,
          closing: threading.Event, progress: Callable[[int, int], None] | None) -> tuple[int, int]:
    """The bulk phase: batches in their own transactions, the live tail unaffected; (position, events applied)."""
    position = applied = 0
    while True:
        if closing.is_set():
            raise RuntimeError(f"rebuild of {name} stopped: the runner is closing")
        events = source.read_all_sync(position, batch * 5)
        if not events or position >= head:
            return position, applied
        conn.execute("BEGIN")
        for event in events:
            shadow.apply(conn, event)
        position = events[-1].global_position
        # an emptied read model's checkpoint shows how far its rebuild has come, to every process (status,
        # metrics); nothing reads it as the read model's position while it is EMPTIED
        conn.execute("UPDATE projection_checkpoints SET position = ?, updated_at = ? WHERE name = ? AND version = ?",
                     (position, time.time(), name, EMPTIED))
        conn.execute("COMMIT")
        applied += len(events)
        if progress:
            progress(position, max(head, position))
