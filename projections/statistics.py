"""The query planner's statistics of the views database (``sqlite_stat1``, what ``ANALYZE`` writes), kept by the
process that writes it: after a rebuild swaps a read model in, when the database has none, and now and then.

Without statistics SQLite guesses every index equally selective per column, so on a tenant of a hundred thousand
certificates it may walk the tenant's whole expiry index where a key's index finds two rows: the queries are
written to be right without them (see docs/architecture.md, "Query plans"), and the statistics are kept for what
the planner decides beyond that. ``PRAGMA analysis_limit`` samples each index's first rows only, so an ANALYZE
costs about as much on any size of database.

A connection reads the statistics when it loads the schema, not when another connection writes them (only the
first ANALYZE, which creates sqlite_stat1, changes the schema): so every ANALYZE here commits together with a schema
change (a rebuild's swap, or ``_RELOAD``'s create and drop), which makes every connection, in every process (the
HTTP workers' included), load the schema and the new statistics, and prepare its cached statements again, at its
next statement.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable

log = logging.getLogger(__name__)

ANALYSIS_LIMIT = 1000  # rows sampled per index: ANALYZE of the whole views database in tens of milliseconds
REFRESH_SECONDS = 6 * 3600.0  # how often the tail's process analyzes again: the shape of the data changes slowly
GROWTH_FLOOR = 1000  # events: a young database is analyzed again once it has doubled and grown by this much
# a schema change with no effect, so that every connection reloads the schema and with it the statistics
_RELOAD = ("CREATE TABLE IF NOT EXISTS statistics_reload (x)", "DROP TABLE statistics_reload")


def has_statistics(conn: sqlite3.Connection) -> bool:
    """Whether ANALYZE ever ran on this database (``sqlite_stat1`` exists and has a row)."""
    if conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_stat1'").fetchone() is None:
        return False
    return conn.execute("SELECT 1 FROM sqlite_stat1 LIMIT 1").fetchone() is not None


def analyze_statements(tables: Iterable[str] | None = None) -> list[str]:
    """The statements that analyze ``tables`` (every table if None), sampling ANALYSIS_LIMIT rows of each index."""
    targets = [f"ANALYZE {table}" for table in tables] if tables is not None else ["ANALYZE"]
    return [f"PRAGMA analysis_limit = {ANALYSIS_LIMIT}", *targets]


def analyze(conn: sqlite3.Connection, tables: Iterable[str] | None = None) -> None:
    """Analyze ``tables`` (every table if None) in one write transaction that every connection sees: a
    connection in autocommit mode only, such as the tail's between batches."""
    statements = analyze_statements(tables)
    conn.execute(statements[0])  # a pragma: outside the transaction
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in statements[1:]:
            conn.execute(statement)
        for statement in _RELOAD:
            conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def forget_statistics(conn: sqlite3.Connection, tables: Iterable[str]) -> None:
    """Remove ``tables``' statistics (a renamed table's stay under its old name), in the caller's transaction."""
    if conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_stat1'").fetchone() is not None:
        conn.executemany("DELETE FROM sqlite_stat1 WHERE tbl = ?", [(table,) for table in tables])


def drop_statistics(conn: sqlite3.Connection) -> None:
    """Forget every statistic (benchmarks and tests compare plans without them)."""
    if conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_stat1'").fetchone() is not None:
        conn.execute("DELETE FROM sqlite_stat1")
        conn.execute("ANALYZE sqlite_schema")  # this connection reloads them now; others when the schema changes


class Statistics:
    """When the tail's process analyzes the views database, asked after each batch it commits (so an ANALYZE never
    waits for one, nor one for it): at once if it was never analyzed; again whenever the log has doubled since the
    last time (statistics of a young database say little of the grown one: log2 of the log's length ANALYZEs in
    all); and every ``interval`` seconds."""

    def __init__(self, interval: float = REFRESH_SECONDS) -> None:
        self.interval = interval
        self.next_at: float | None = None  # time.monotonic() of the next ANALYZE; None: not looked yet
        self.position = 0  # the log's position at the last ANALYZE

    def refresh(self, conn: sqlite3.Connection, position: int) -> bool:
        """Analyze if due; True if it did. ``position``: how far the read models are now."""
        now = time.monotonic()
        if self.next_at is None:
            self.next_at, self.position = now + self.interval, position
            if has_statistics(conn):
                return False
        elif now < self.next_at and position < 2 * self.position + GROWTH_FLOOR:
            return False
        self.next_at, self.position = now + self.interval, position
        try:
            analyze(conn)
        except sqlite3.OperationalError:  # busy past the timeout: the views are written, this waits for next time
            log.warning("ANALYZE of the views database failed; planning with the statistics it had", exc_info=True)
            return False
        return True
