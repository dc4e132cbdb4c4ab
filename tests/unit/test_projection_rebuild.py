"""A rebuild (shadow tables, query-only indexes built after the load, then the swap) leaves exactly what following
the log event by event leaves: the same rows, and the same indexes. A read model whose projector's version changed
is rebuilt in the background while the others serve, and refused to readers until it is swapped in.

The log is the store benchmark's certificate history (bench/certificate_history.py): tenants, CAs, certificates
issued, revoked and renewed as the commands record them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import re
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from commands.ports import AppendRequest
from infra.eventstore.sqlite import SQLiteEventStore
from projections import certificate_queries as certificates
from projections.certificates import CertificatesProjector
from projections.registry import all_projectors
from projections.runner import ProjectionRunner
from projections.views_db import EMPTIED, ProjectionRebuilding, rebuild_lock_path

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


def follow(store, views: Path) -> None:
    """Build ``views`` by following the log event by event, as a server's tail does."""
    runner = ProjectionRunner(store, views, all_projectors()).open()
    try:
        while runner.catch_up_once():
            pass
    finally:
        runner.close()


def test_a_rebuild_equals_following_the_log(history, tmp_path):
    with SQLiteEventStore(history / "events.db") as store:
        follow(store, tmp_path / "followed.db")
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
    assert indexes == expected_indexes and any("_renewal" in sql for sql in indexes)


# A projector whose version changed: served around, rebuilt in the background, swapped in -----------------

class CertificatesNext(CertificatesProjector):
    """The certificates projector as the next release would ship it: same tables, a new version."""

    version = CertificatesProjector.version + 1


def projectors(*, bumped: bool) -> list:
    return [CertificatesNext() if bumped and p.name == "certificates" else p for p in all_projectors()]


def checkpoint(views: Path, name: str) -> tuple[int, int]:
    with contextlib.closing(sqlite3.connect(views)) as conn:
        return conn.execute("SELECT position, version FROM projection_checkpoints WHERE name = ?", (name,)).fetchone()


@contextlib.contextmanager
def rebuild_lock_held(views: Path):
    """Holds the lock every rebuild takes (projections.rebuild._rebuild_lock): a rebuild waits until the block ends."""
    with open(rebuild_lock_path(views), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture
def followed(history, tmp_path) -> Path:
    """A copy of the history's data directory, with views built by following its log (this code's versions)."""
    data = tmp_path / "data"
    shutil.copytree(history, data)
    with SQLiteEventStore(data / "events.db") as store:
        follow(store, data / "views.db")
    return data


def append_tenants(bench, store, count: int, first: int = 0) -> None:
    for i in range(first, first + count):
        tenant_id, stream_id = f"late-{i:04d}", f"tenant-late-{i:04d}"
        store.append_blocking(AppendRequest(tenant_id=tenant_id, stream_id=stream_id, stream_type="tenant",
                                            expected_version=0, events=[bench.phases.tenant_event(tenant_id, 0, "late")]))


async def test_a_server_serves_while_a_changed_read_model_rebuilds_and_then_swaps_it_in(bench, followed):
    views = followed / "views.db"
    expected_rows, expected_indexes = snapshot(views)
    with SQLiteEventStore(followed / "events.db") as store:
        head = store.head_position_sync()
        runner = ProjectionRunner(store, views, projectors(bumped=True), poll_interval=0.05)
        with rebuild_lock_held(views):
            runner.open(rebuild="background")  # returns at once: nothing is rebuilt here
            assert runner.rebuilding == {"certificates"}
            assert checkpoint(views, "certificates") == (0, EMPTIED)  # emptied, so no code reads the old tables
            assert runner.position == head  # the others stand at the head: read-your-writes is not held back
            reader = runner.connection()
            with pytest.raises(ProjectionRebuilding) as refused:
                certificates.search(reader, None)
            assert refused.value.names == ("certificates",) and "being rebuilt" in str(refused.value)
            for sql in ("SELECT count(*) FROM certificate_counts",  # any table it owns, counted or joined
                        "SELECT count(*) FROM audit_log a JOIN certificate_names n ON n.tenant_id = a.tenant_id"):
                with pytest.raises(ProjectionRebuilding):
                    reader.execute(sql)
            assert reader.execute("SELECT count(*) FROM audit_log").fetchone()[0] > 0  # the others answer
            # an HTTP worker's runner only observes; the same refusal
            observer = ProjectionRunner(store, views, projectors(bumped=True)).open(rebuild="observe")
            assert observer.rebuilding == {"certificates"}

            tail = asyncio.create_task(runner.run())
            rebuild = asyncio.create_task(runner.rebuild_pending())
            append_tenants(bench, store, 20)  # the tail keeps the others current while the rebuild waits
            assert await runner.wait_for(head + 20, 10)
            assert reader.execute("SELECT count(*) FROM tenants WHERE tenant_id LIKE 'late-%'").fetchone()[0] == 20
            assert not rebuild.done() and checkpoint(views, "certificates") == (0, EMPTIED)
        await asyncio.wait_for(rebuild, 60)  # the lock is free: the rebuild runs, then swaps
        append_tenants(bench, store, 5, first=20)
        assert await runner.wait_for(head + 25, 10)
        tail.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tail
        assert runner.rebuilding == frozenset()
        assert checkpoint(views, "certificates") == (head + 25, CertificatesNext.version)
        # the connection made during the rebuild reads it now, and so does the observer's
        assert certificates.search(reader, None)
        assert observer.connection().execute("SELECT count(*) FROM certificates").fetchone()[0] > 0
        assert observer.rebuilding == frozenset()
        reader.close()
        observer.close()
        runner.close()
    rows, indexes = snapshot(views)
    assert rows["certificates"] == expected_rows["certificates"]
    assert rows == {**expected_rows, "audit_log": rows["audit_log"]}  # audit_log also has the 25 late events
    assert indexes == expected_indexes


def test_older_code_after_an_interrupted_background_rebuild_rebuilds_for_itself(followed):
    views = followed / "views.db"
    expected_rows, _ = snapshot(views)
    with SQLiteEventStore(followed / "events.db") as store:
        emptied = ProjectionRunner(store, views, projectors(bumped=True)).open(rebuild="background")
        emptied.close()  # stopped before its rebuild: the tables are empty, marked EMPTIED
        assert checkpoint(views, "certificates")[1] == EMPTIED
        with sqlite3.connect(views) as conn:
            assert conn.execute("SELECT count(*) FROM certificates").fetchone()[0] == 0
        # the previous release (a rollback) does not take the empty tables for its own: it rebuilds them first
        older = ProjectionRunner(store, views, all_projectors()).open(rebuild="now")
        assert older.rebuilding == frozenset()
        older.close()
        assert checkpoint(views, "certificates") == (store.head_position_sync(), CertificatesProjector.version)
    assert snapshot(views)[0] == expected_rows


def test_a_command_line_waits_for_a_rebuild_in_progress_instead_of_racing_it(followed):
    """Two rebuilds would share the shadow tables' names: the second waits for the lock, then finds nothing to do."""
    views = followed / "views.db"
    with SQLiteEventStore(followed / "events.db") as store:
        ProjectionRunner(store, views, projectors(bumped=True)).open(rebuild="background").close()
        opened = []
        with rebuild_lock_held(views):
            cli = threading.Thread(target=lambda: opened.append(
                ProjectionRunner(store, views, projectors(bumped=True)).open(rebuild="now")))
            cli.start()
            cli.join(0.5)
            assert cli.is_alive() and checkpoint(views, "certificates")[1] == EMPTIED  # waiting for the lock
        cli.join(60)
        assert opened and opened[0].rebuilding == frozenset()
        opened[0].close()
        assert checkpoint(views, "certificates") == (store.head_position_sync(), CertificatesNext.version)


def test_open_refuses_an_unknown_rebuild_mode(tmp_path):
    with SQLiteEventStore(tmp_path / "events.db") as store, pytest.raises(ValueError, match="rebuild must be one of"):
        ProjectionRunner(store, tmp_path / "views.db", all_projectors()).open(rebuild="later")


def test_an_index_retired_since_the_tables_were_built_is_dropped_on_opening_them(followed):
    """(tenant_id, ca_id) was indexed on its own up to this release; the unique serial index has it as its prefix."""
    views = followed / "views.db"
    with contextlib.closing(sqlite3.connect(views)) as conn:
        tag = conn.execute("SELECT index_tag FROM projection_checkpoints WHERE name = 'certificates'").fetchone()[0]
        conn.execute(f"CREATE INDEX ix_certificates_{tag}_ca ON certificates (tenant_id, ca_id)")  # as 4 made it
        conn.commit()
    with SQLiteEventStore(followed / "events.db") as store:
        ProjectionRunner(store, views, all_projectors()).open().close()
    with contextlib.closing(sqlite3.connect(views)) as conn:
        names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'certificates' "
                                                  "AND type = 'index'")}
        assert f"ix_certificates_{tag}_ca" not in names and f"ix_certificates_{tag}_serial" in names
        tenant_id, ca_id = conn.execute("SELECT tenant_id, ca_id FROM certificates LIMIT 1").fetchone()
        # a CA's certificates (what _untrust updates) are still found through an index, not a scan (a count, which
        # the fingerprint index covers, this database's statistics of a few rows scan it: the update reads rows)
        plan = " ".join(row[-1] for row in conn.execute(
            "EXPLAIN QUERY PLAN UPDATE certificates SET status = 'revoked', revoked_at = ? WHERE tenant_id = ? "
            "AND status != 'revoked' AND ca_id IN (SELECT ?)", ("2026-01-01T00:00:00Z", tenant_id, ca_id)))
        assert f"INDEX ix_certificates_{tag}_serial" in plan, plan


def test_an_emptied_read_models_checkpoint_shows_its_rebuilds_progress_to_every_process(followed):
    views = followed / "views.db"
    seen = []
    with SQLiteEventStore(followed / "events.db") as store:
        runner = ProjectionRunner(store, views, projectors(bumped=True), batch=100).open(rebuild="background")
        try:
            runner._rebuild("certificates", only_if_rebuilding=True,
                            progress=lambda position, head: seen.append((position, *checkpoint(views, "certificates"))))
        finally:
            runner.close()
        head = store.head_position_sync()
    # after each batch (500 events here), another connection reads where the rebuild stands, still EMPTIED
    assert len(seen) > 2 and all(at == position and version == EMPTIED for position, at, version in seen[:-1])
    assert [position for position, _, _ in seen] == sorted(position for position, _, _ in seen)
    assert seen[-1][0] == head and checkpoint(views, "certificates") == (head, CertificatesNext.version)
