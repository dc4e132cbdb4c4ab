"""The read-model database file (``views.db``): its connections, the projectors' tables and checkpoints as a process
opening it finds them (created where missing, emptied for a background rebuild), and the guard that refuses reads
of a read model being rebuilt (``ProjectionRebuilding``) whoever reads: the API, quota counts, schedulers, webhook
deliveries."""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from projections.base import Projector
from projections.sqlite_wal import use_wal

CHECKPOINTS = """CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name TEXT PRIMARY KEY, position INTEGER NOT NULL, version INTEGER NOT NULL,
    index_tag TEXT NOT NULL, updated_at REAL NOT NULL)"""
CHECKPOINT_ROWS = "SELECT name, position, version FROM projection_checkpoints"  # what RebuildGuard.note takes
# A checkpoint's version while its tables are emptied for a background rebuild: no projector's (they start at 1),
# so any code, this version's or an older one, sees the tables as not built by it and rebuilds them.
EMPTIED = 0


class ProjectionRebuilding(Exception):
    """A read of a read model that is being rebuilt from the log: it has no answer until the rebuild swaps it in."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = tuple(sorted(names))
        super().__init__(f"the read model{'s' if len(self.names) != 1 else ''} {', '.join(self.names)} "
                         f"{'is' if len(self.names) == 1 else 'are'} being rebuilt from the event log; retry shortly")


class RebuildGuard:
    """Which projectors are rebuilding, told from their checkpoints: those whose stored version is not the code's."""

    def __init__(self, projectors: Iterable[Projector]) -> None:
        projectors = list(projectors)
        self.versions = {p.name: p.version for p in projectors}
        self.owners = {table: p.name for p in projectors for table in p.tables}  # live table -> projector
        self.rebuilding: frozenset[str] = frozenset()

    def note(self, rows: Iterable[tuple]) -> frozenset[str]:
        """Take ``(name, position, version)`` checkpoint rows as they now stand; returns the rebuilding names."""
        self.rebuilding = frozenset(name for name, _, version in rows
                                    if name in self.versions and version != self.versions[name])
        return self.rebuilding

    def look(self, conn: sqlite3.Connection) -> frozenset[str]:
        return self.note(conn.execute(CHECKPOINT_ROWS).fetchall())

    def connect(self, path: Path) -> sqlite3.Connection:
        """A read connection that refuses, with ProjectionRebuilding, to read a rebuilding read model."""
        conn = connect_views(path, factory=ViewsConnection)
        conn.guard = self
        try:
            rebuilding = self.look(conn)
        except sqlite3.OperationalError:  # no checkpoints table yet: nothing was ever built, nothing rebuilds
            rebuilding = frozenset()
        if rebuilding:  # only then: the set only shrinks while this code runs, and an authorizer costs each compile
            conn.set_authorizer(conn.authorize)
        return conn


class ViewsConnection(sqlite3.Connection):
    """A views connection whose statements may not read a rebuilding read model's tables.

    SQLite asks the authorizer about every table a statement reads while it compiles it (a cached
    statement is not compiled again, and a swap, being a schema change, recompiles them all). A table
    of a rebuilding projector is denied; ``execute`` then looks at the checkpoints again and, if the
    rebuild has meanwhile swapped it in, runs the statement, else raises ProjectionRebuilding instead
    of SQLite's "not authorized". (SQLite 3.40 reports no read of a table joined ``USING (column)`` whose
    columns are otherwise unread, as in ``count(*)`` over such a join: the read models' queries join with ``ON``.)
    """

    guard: RebuildGuard
    denied: str | None = None

    def authorize(self, action: int, table: str | None, column: str | None, database: str | None,
                  trigger: str | None) -> int:
        if action == sqlite3.SQLITE_READ and self.guard.rebuilding:
            owner = self.guard.owners.get(table or "")
            if owner is not None and owner in self.guard.rebuilding:
                self.denied = owner
                return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        self.denied = None
        try:
            return super().execute(sql, parameters)
        except sqlite3.DatabaseError:
            denied = self.denied
            if denied is None:
                raise
        if denied in self.guard.look(self):
            raise ProjectionRebuilding(self.guard.rebuilding) from None
        return super().execute(sql, parameters)


def rebuild_lock_path(views: Path) -> Path:
    """The file whose lock one rebuild at a time holds, beside the views database."""
    return views.with_name(views.name + ".rebuild-lock")


def connect_views(path: Path, factory: type[sqlite3.Connection] = sqlite3.Connection) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, factory=factory)
    conn.execute("PRAGMA busy_timeout = 30000")
    use_wal(conn)
    conn.execute("PRAGMA synchronous = NORMAL")  # read models are rebuildable from the store
    return conn


def create_missing(conn: sqlite3.Connection, projectors: Iterable[Projector]) -> None:
    """Create the checkpoints table, and each projector's tables and checkpoint where it has none; a retired
    projector whose tables this code built retires them."""
    conn.execute(CHECKPOINTS)
    for projector in projectors:
        name = projector.name
        row = conn.execute("SELECT version, index_tag FROM projection_checkpoints WHERE name = ?",
                           (name,)).fetchone()
        if row is None:
            tag = secrets.token_hex(4)
            conn.execute("BEGIN IMMEDIATE")
            projector.bound("", tag).create(conn)
            conn.execute("INSERT INTO projection_checkpoints VALUES (?, 0, ?, ?, ?)",
                         (name, projector.version, tag, time.time()))
            conn.execute("COMMIT")
        elif row[0] == projector.version and projector.retired:
            projector.bound("", row[1]).retire(conn)


def empty_for_rebuild(conn: sqlite3.Connection, projector: Projector) -> int | None:
    """Replace a rebuilding projection's tables, built by other code, with empty ones of this code's shape, marked
    EMPTIED: until its rebuild swaps the rebuilt ones in, reads are refused, never answered from them. Returns the
    version that built the tables it replaced; None if another process had already emptied or rebuilt them."""
    name = projector.name
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("SELECT version FROM projection_checkpoints WHERE name = ?", (name,)).fetchone()[0]
        emptied = version not in (EMPTIED, projector.version)  # another process may have emptied or rebuilt it
        if emptied:
            tag = secrets.token_hex(4)
            live = projector.bound("", tag)
            live.drop(conn)
            live.create(conn)
            conn.execute("UPDATE projection_checkpoints SET position = 0, version = ?, index_tag = ?, "
                         "updated_at = ? WHERE name = ?", (EMPTIED, tag, time.time(), name))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return version if emptied else None
