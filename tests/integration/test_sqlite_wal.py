"""Several processes opening one new SQLite file at once all get it in WAL mode (projections/sqlite_wal.py).

A bare ``PRAGMA journal_mode = WAL`` answered "database is locked" to a few in every hundred such
opens, busy_timeout or not (seen in CI as a key vault that failed to open when six processes started together).
"""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest
from process_race import start_together

from projections.sqlite_wal import use_wal

PROCESSES, ROUNDS = 8, 30


def _open_and_write(path: str, start, results) -> None:
    start.wait()
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 30000")
        use_wal(conn)
        conn.execute("CREATE TABLE IF NOT EXISTS opened (pid INTEGER)")
        conn.execute("INSERT INTO opened VALUES (1)")
        results.put(conn.execute("PRAGMA journal_mode").fetchone()[0])
        conn.close()
    except Exception as exc:  # reported to the test, not lost in a child's stderr
        results.put(repr(exc))


def test_processes_opening_a_new_file_together_all_get_wal(tmp_path: Path):
    context = multiprocessing.get_context("fork")  # cheap enough to race 240 opens
    for round_ in range(ROUNDS):
        path = str(tmp_path / f"race-{round_}.db")
        outcomes = start_together(context, _open_and_write, (path,), PROCESSES)
        assert outcomes == ["wal"] * PROCESSES, f"round {round_}: {outcomes}"
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT count(*) FROM opened").fetchone()[0] == PROCESSES


def test_other_errors_are_not_retried(tmp_path: Path):
    conn = sqlite3.connect(tmp_path / "x.db")
    conn.close()
    with pytest.raises(sqlite3.ProgrammingError):
        use_wal(conn)  # a closed connection: raised at once, not retried for 30 s
