"""WAL mode for the service's SQLite files, set safely when several processes open a file at once.

Every SQLite file here (the event log, read models, key vault, artifacts) runs in WAL mode. Lives in
projections/ because the read models are the lowest layer that opens a file; infra/ uses it too.
"""

from __future__ import annotations

import sqlite3
import time

WAL_TIMEOUT_SECONDS = 30.0  # as long as the busy_timeout every connection here sets


def use_wal(conn: sqlite3.Connection, timeout: float = WAL_TIMEOUT_SECONDS) -> None:
    """``PRAGMA journal_mode = WAL``, retried while another connection holds the lock it needs.

    Switching the journal mode takes an exclusive lock, and SQLite answers SQLITE_BUSY at once,
    without waiting in the busy handler, when another process is switching or writing the same
    file: six processes opening a new key vault together saw "database is locked". Retried with
    a growing pause (5 ms to 100 ms) until ``timeout``; any other error is raised at once.
    """
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            return
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) \
                    or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)
