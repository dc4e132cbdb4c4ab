"""What a projector is: tables it owns (DDL templates) and how one event changes them.

Table and index names are templates (``{tenants}``, ``{ix}``) so the same projector can
build into shadow tables during a rebuild and be swapped in atomically. A rebuild makes the indexes in
``deferred`` (those only queries use, never ``apply``) after it has loaded the rows: building an index once
over sorted keys costs a fraction of keeping it up to date row by row.
"""

from __future__ import annotations

import sqlite3
from typing import ClassVar

from domain.events import EventEnvelope


class Projector:
    """Subclasses set ``name``, ``version``, ``tables``, ``ddl`` (and ``deferred``) and implement ``apply``."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    tables: ClassVar[tuple[str, ...]]
    ddl: ClassVar[tuple[str, ...]]
    deferred: ClassVar[tuple[str, ...]] = ()  # CREATE INDEX statements that ``apply`` never reads through
    # DROP INDEX IF EXISTS statements for indexes an earlier release made and this one does not: run on opening tables
    # built by this version, so removing an index needs no rebuild (tables built by another version are rebuilt)
    retired: ClassVar[tuple[str, ...]] = ()

    def __init__(self, suffix: str = "", index_tag: str = "") -> None:
        self.suffix = suffix
        self.names = {table: f"{table}{suffix}" for table in self.tables}
        self._index_tag = index_tag

    def bound(self, suffix: str, index_tag: str) -> Projector:
        return type(self)(suffix, index_tag)

    def t(self, table: str) -> str:
        return self.names[table]

    def create(self, conn: sqlite3.Connection, *, deferred: bool = True) -> None:
        """The tables and their indexes; without ``deferred``, only those ``apply`` needs (a rebuild's load)."""
        for statement in self.ddl + (self.deferred if deferred else ()):
            conn.execute(self._bind(statement))

    def retire(self, conn: sqlite3.Connection) -> None:
        for statement in self.retired:
            conn.execute(self._bind(statement))

    def deferred_statements(self) -> list[str]:
        """The ``deferred`` indexes' statements, bound to this projector's tables."""
        return [self._bind(statement) for statement in self.deferred]

    def _bind(self, statement: str) -> str:
        return statement.format(ix=f"ix_{self.name}_{self._index_tag}", **self.names)

    def drop(self, conn: sqlite3.Connection) -> None:
        for table in self.names.values():
            conn.execute(f"DROP TABLE IF EXISTS {table}")

    def apply(self, conn: sqlite3.Connection, event: EventEnvelope) -> None:
        raise NotImplementedError
