"""A rebuild (shadow tables, query-only indexes built after the load, then the swap) leaves exactly what following
the log event by event leaves: the same rows, and the same indexes.

The log is the store benchmark's certificate history (bench/certificate_history.py): tenants, CAs, certificates
issued, revoked and renewed as the commands record them.
"""

from __future__ import annotations

import contextlib
import io
import re
import sqlite3
from pathlib import Path

import pytest

from infra.eventstore.sqlite import SQLiteEventStore
from projections.registry import all_projectors
from projections.runner import ProjectionRunner

REBUILT = ("certificates", "audit_log")


@pytest.fixture(scope="module")
def history(bench, tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("history")
    with contextlib.redirect_stdout(io.StringIO()):
        bench.phases.main(["certificate-dataset", "--dir", str(data), "--events", "1500", "--writers", "16",
                           "--tenants", "2", "--pem-pool", "6", "--seal-every", "1000"])
    return data


def snapshot(views: Path) -> tuple[dict, set]:
    """Every row of the rebuilt projections' tables, and their indexes' definitions (without the index tag)."""
    tables = [table for p in all_projectors() if p.name in REBUILT for table in p.tables]
    with contextlib.closing(sqlite3.connect(views)) as conn:
        rows = {table: sorted(map(repr, conn.execute(f"SELECT * FROM {table}").fetchall())) for table in tables}
        indexes = {re.sub(r"ix_(\w+?)_[0-9a-f]*_", r"ix_\1_", sql).replace('"', "") for (sql,) in conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN "
            f"({', '.join('?' * len(tables))})", tables)}
    return rows, indexes


def test_a_rebuild_equals_following_the_log(history, tmp_path):
    with SQLiteEventStore(history / "events.db") as store:
        followed = ProjectionRunner(store, tmp_path / "followed.db", all_projectors()).open()
        try:
            while followed.catch_up_once():
                pass
        finally:
            followed.close()
        rebuilt = ProjectionRunner(store, tmp_path / "rebuilt.db", all_projectors()).open()
        try:
            for name in REBUILT:
                assert rebuilt.rebuild(name)["events"] == store.head_position_sync()
        finally:
            rebuilt.close()
    rows, indexes = snapshot(tmp_path / "rebuilt.db")
    expected_rows, expected_indexes = snapshot(tmp_path / "followed.db")
    assert rows["certificates"] and rows["certificate_counts"] and rows["audit_log"]
    assert rows == expected_rows
    assert indexes == expected_indexes and any("_renew_at" in sql for sql in indexes)
