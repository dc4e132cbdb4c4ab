"""What a projector is: tables it owns (DDL templates) and how one event changes them.

Table and index names are templates (``{tenants}``, ``{ix}``) so the same projector can
build into shadow tables during a rebuild and be swapped in atomically.
"""

from __future__ import annotations

import sqlite3
from typing import ClassVar

from domain.events import EventEnvelope


class Projector:
    """Subclasses set ``name``, ``version``, ``tables``, ``ddl`` and implement ``apply``."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    tables: ClassVar[tuple[str, ...]]
    ddl: ClassVar[tuple[str, ...]]

    def __init__(self, suffix: str = "", index_tag: str = "") -> None:
        self.suffix = suffix
        self.names = {table: f"{table}{suffix}" for table in self.tables}
        self._index_tag = index_tag

    def bound(self, suffix: str, index_tag: str) -> Projector:
        return type(self)(suffix, index_tag)

    def t(self, table: str) -> str:
        return self.names[table]

    def create(self, conn: sqlite3.Connection) -> None:
        for statement in self.ddl:
            conn.execute(statement.format(ix=f"ix_{self.name}_{self._index_tag}", **self.names))

    def drop(self, conn: sqlite3.Connection) -> None:
        for table in self.names.values():
            conn.execute(f"DROP TABLE IF EXISTS {table}")

    def apply(self, conn: sqlite3.Connection, event: EventEnvelope) -> None:
        raise NotImplementedError
