"""Tampering with the SQLite file is detected: each explicit case, then any random single tamper.

Every case starts from a store with several tenants' streams and two signed checkpoints,
written through the real command handlers, then edits the file behind the service's back
(as someone with write access to the disk would) and runs the verifier and the CLI.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from commands.authz import SYSTEM
from commands.runtime import CommandContext
from commands.tenants import (CreateTenant, RenameTenant, ResumeTenant, SetTenantQuotas, SuspendTenant,
                              create_tenant, rename_tenant, resume_tenant, set_tenant_quotas, suspend_tenant)
from domain.audit import LEDGER_STREAM
from domain.chain import canonical_bytes, chain_hash, heads_root
from domain.tenant import Quotas
from domain.verification import VerifyReport
from infra.bootstrap import initialise, verify_store
from infra.config import Settings
from infra.eventstore.sqlite import SQLiteEventStore

CTX = CommandContext(principal=SYSTEM)
CLI_MISSING = importlib.util.find_spec("cli.main") is None
CSM = Path(sys.executable).parent / "csm"


# the store under attack ----------------------------------------------------------------------

@dataclass
class Row:
    position: int
    tenant_id: str
    stream_id: str
    version: int
    type: str


@dataclass
class Store:
    settings: Settings

    @property
    def db(self) -> Path:
        return self.settings.events_db

    def rows(self) -> list[Row]:
        with closing(sqlite3.connect(self.db)) as conn:
            return [Row(*r) for r in conn.execute(
                "SELECT position, tenant_id, stream_id, version, type FROM events ORDER BY position")]

    def stream(self, stream_id: str) -> list[Row]:
        return [r for r in self.rows() if r.stream_id == stream_id]

    def checkpoints(self) -> list[Row]:
        return [r for r in self.rows() if r.type == "audit.checkpoint"]

    def execute(self, sql: str, *params) -> None:
        with closing(sqlite3.connect(self.db)) as conn:
            conn.execute(sql, params)
            conn.commit()

    def body(self, position: int) -> bytes:
        with closing(sqlite3.connect(self.db)) as conn:
            return conn.execute("SELECT body FROM events WHERE position = ?", (position,)).fetchone()[0]

    def rewrite(self, position: int, edit, *, rehash: bool = True) -> None:
        """Edit an event's decoded body. With ``rehash``, do what a careful forger would: recompute its
        hash and re-chain every later event of its stream, so the stream's own chain verifies."""
        with closing(sqlite3.connect(self.db)) as conn:
            tenant_id, stream_id, version, body = conn.execute(
                "SELECT tenant_id, stream_id, version, body FROM events WHERE position = ?", (position,)).fetchone()
            later = conn.execute("SELECT position, body FROM events WHERE tenant_id = ? AND stream_id = ? AND version > ?"
                                 " ORDER BY version", (tenant_id, stream_id, version)).fetchall()
            data = json.loads(body)
            assert canonical_bytes(data) == body  # re-encoding reproduces the stored bytes exactly
            edit(data)
            body = canonical_bytes(data)
            if not rehash:
                conn.execute("UPDATE events SET body = ? WHERE position = ?", (body, position))
            else:
                prev = chain_hash(data["prev_hash"], body)
                conn.execute("UPDATE events SET body = ?, hash = ? WHERE position = ?", (body, prev, position))
                for later_position, later_body in later:
                    data = json.loads(later_body)
                    data["prev_hash"] = prev
                    body = canonical_bytes(data)
                    prev = chain_hash(prev, body)
                    conn.execute("UPDATE events SET body = ?, hash = ? WHERE position = ?", (body, prev, later_position))
            conn.commit()

    def swap_positions(self, a: int, b: int) -> None:
        with closing(sqlite3.connect(self.db)) as conn:
            conn.execute("UPDATE events SET position = -1 WHERE position = ?", (a,))
            conn.execute("UPDATE events SET position = ? WHERE position = ?", (a, b))
            conn.execute("UPDATE events SET position = ? WHERE position = -1", (b,))
            conn.commit()

    def verify(self) -> VerifyReport:
        store = SQLiteEventStore(self.db)  # a fresh reader, as `csm audit verify` would open it
        return verify_store(self.settings, store)


async def _write_history(settings: Settings, final_unsealed: bool = True) -> None:
    """Three tenants' streams interleaved, two checkpoints, then a few unsealed events."""
    rt = initialise(settings)
    try:
        s = rt.services
        for tenant_id in ("acme", "globex", "initech"):
            await create_tenant(CreateTenant(tenant_id=tenant_id, name=tenant_id.title()), CTX, s)
        await rename_tenant(RenameTenant(tenant_id="acme", name="Acme Corp"), CTX, s)
        await set_tenant_quotas(SetTenantQuotas(tenant_id="globex", quotas=Quotas(max_cas=2)), CTX, s)
        await suspend_tenant(SuspendTenant(tenant_id="acme", reason="unpaid invoice"), CTX, s)
        await rename_tenant(RenameTenant(tenant_id="initech", name="Initech \u00e9\u00e8 \u65e5\u672c"), CTX, s)
        assert rt.checkpointer.seal_all() == 1
        await resume_tenant(ResumeTenant(tenant_id="acme", reason="paid"), CTX, s)
        await rename_tenant(RenameTenant(tenant_id="globex", name="Globex Inc"), CTX, s)
        await create_tenant(CreateTenant(tenant_id="umbrella", name="Umbrella"), CTX, s)
        await rename_tenant(RenameTenant(tenant_id="acme", name="Acme Holdings"), CTX, s)
        assert rt.checkpointer.seal_all() == 1
        if final_unsealed:
            await rename_tenant(RenameTenant(tenant_id="umbrella", name="Umbrella Corp"), CTX, s)
            await rename_tenant(RenameTenant(tenant_id="acme", name="Acme Group"), CTX, s)
    finally:
        rt.close()


_TEMPLATE: Path | None = None


def _template() -> Path:
    """Build the history once per session; every test gets its own copy of the data directory."""
    global _TEMPLATE
    if _TEMPLATE is None:
        directory = Path(tempfile.mkdtemp(prefix="csm-tamper-template-")) / "data"
        asyncio.run(_write_history(Settings(data_dir=directory)))
        with closing(sqlite3.connect(directory / "events.db")) as conn:  # fold the WAL into the main file
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        _TEMPLATE = directory
    return _TEMPLATE


def fresh_store(directory: Path) -> Store:
    shutil.copytree(_template(), directory, ignore=shutil.ignore_patterns("*-wal", "*-shm"))
    return Store(Settings(data_dir=directory))


@pytest.fixture
def store(tmp_path) -> Store:
    s = fresh_store(tmp_path / "data")
    report = s.verify()
    assert report.ok and report.checkpoints == 2 and report.unsealed_events == 2, report
    return s


def assert_detected(report: VerifyReport, kind: str, *, position: int | None = None, stream_id: str | None = None,
                    version: int | None = None) -> None:
    """Not ok, and the first problem is of ``kind`` at the given place."""
    assert not report.ok
    first = report.first_problem
    assert first is not None and first == report.problems[0]
    assert first.kind == kind, report.problems
    if position is not None:
        assert first.position == position, first
    if stream_id is not None:
        assert first.stream_id == stream_id, first
    if version is not None:
        assert first.version == version, first


def has_problem(report: VerifyReport, kind: str, **where) -> bool:
    return any(p.kind == kind and all(getattr(p, k) == v for k, v in where.items()) for p in report.problems)


def assert_cli_flags(store: Store, *names: str) -> None:
    """`csm --data-dir DIR audit verify` exits 1 and its output names the damaged stream(s)."""
    if CLI_MISSING:
        return
    run = subprocess.run([str(CSM), "--data-dir", str(store.settings.data_dir), "audit", "verify"],
                         capture_output=True, text=True, timeout=60)
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    for name in names:
        assert name in output, output


# the explicit cases -------------------------------------------------------------------------

@pytest.mark.skipif(CLI_MISSING, reason="cli.main is not importable yet: the CLI checks in this module are skipped")
def test_the_cli_is_there_to_check():
    assert CSM.exists(), f"{CSM} is not installed: pip install -e '.[test]'"


def test_the_untouched_store_verifies_and_so_does_the_cli(store):
    report = store.verify()
    assert report.ok and report.first_problem is None and report.trust_anchor == "configured audit keys"
    assert report.streams == 5 and report.events == len(store.rows())
    if not CLI_MISSING:
        run = subprocess.run([str(CSM), "--data-dir", str(store.settings.data_dir), "audit", "verify"],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr


def test_an_edited_payload_is_detected_at_that_event(store):
    target = store.stream("tenant-acme")[1]  # the rename
    store.rewrite(target.position, lambda d: d["payload"].update(new_name="Evil Corp"), rehash=False)
    assert_detected(store.verify(), "hash_mismatch", position=target.position, stream_id="tenant-acme", version=2)
    assert_cli_flags(store, "tenant-acme")


def test_an_edited_payload_with_a_forged_chain_is_caught_by_the_checkpoint(store):
    target = store.stream("tenant-globex")[1]  # quotas set, sealed by checkpoint 1
    store.rewrite(target.position, lambda d: d["payload"]["quotas"].update(max_cas=1000))
    first_checkpoint = store.checkpoints()[0]
    report = store.verify()
    # globex's head at checkpoint 1 is the edited event: the signed head no longer matches
    assert_detected(report, "checkpoint_heads", position=first_checkpoint.position, stream_id="tenant-globex",
                    version=2)
    assert has_problem(report, "checkpoint_heads", position=store.checkpoints()[1].position, stream_id="tenant-globex")
    assert not any(p.kind in ("hash_mismatch", "broken_link") for p in report.problems)  # the forged chain holds
    assert_cli_flags(store, "tenant-globex")


def test_a_deleted_event_in_the_middle_of_a_stream(store):
    acme = store.stream("tenant-acme")
    gone, after = acme[2], acme[3]  # v3 (suspended); v4 follows in the next checkpoint's window
    store.execute("DELETE FROM events WHERE position = ?", gone.position)
    report = store.verify()
    assert_detected(report, "missing_events", position=gone.position)
    assert str(gone.position) in report.first_problem.detail
    assert has_problem(report, "version_gap", stream_id="tenant-acme", version=4, position=after.position)
    assert has_problem(report, "broken_link", stream_id="tenant-acme", position=after.position)
    assert_cli_flags(store, "tenant-acme")


def test_events_reordered_within_a_stream(store):
    acme = store.stream("tenant-acme")
    a, b = acme[1], acme[2]
    store.swap_positions(a.position, b.position)
    report = store.verify()
    assert_detected(report, "row_does_not_match_body", position=a.position, stream_id="tenant-acme",
                    version=b.version)
    assert has_problem(report, "version_gap", stream_id="tenant-acme", position=a.position)
    assert_cli_flags(store, "tenant-acme")


def test_events_reordered_across_streams(store):
    acme, globex = store.stream("tenant-acme")[1], store.stream("tenant-globex")[1]
    store.swap_positions(acme.position, globex.position)
    first, second = sorted([acme, globex], key=lambda r: r.position)
    report = store.verify()
    assert_detected(report, "row_does_not_match_body", position=first.position, stream_id=second.stream_id)
    assert has_problem(report, "row_does_not_match_body", position=second.position, stream_id=first.stream_id)
    assert_cli_flags(store, "tenant-acme", "tenant-globex")


def test_a_truncated_tail_including_the_last_checkpoint(store):
    last_checkpoint = store.checkpoints()[-1]
    store.execute("DELETE FROM events WHERE position >= ?", last_checkpoint.position)
    report = store.verify()
    assert_detected(report, "truncated", position=last_checkpoint.position)
    assert any(str(last_checkpoint.position) in p.detail and "checkpoint" in p.detail for p in report.problems)
    assert_cli_flags(store, "truncated")


def test_a_truncated_unsealed_tail_is_caught_by_the_witness(store):
    last_checkpoint = store.checkpoints()[-1]
    removed = [r for r in store.rows() if r.position > last_checkpoint.position]
    assert {r.stream_id for r in removed} == {"tenant-umbrella", "tenant-acme"}
    store.execute("DELETE FROM events WHERE position > ?", last_checkpoint.position)
    report = store.verify()
    assert_detected(report, "truncated", position=last_checkpoint.position + 1)
    assert str(removed[-1].position) in report.first_problem.detail
    assert_cli_flags(store, "truncated")


def test_a_truncated_tail_with_its_witness_deleted_is_reported_and_a_kept_copy_shows_the_cut(store, tmp_path):
    """Whoever can cut the log can delete the witness beside it: that is a problem in itself, and a copy of the
    witness (and of the trust anchor) kept elsewhere still shows the cut."""
    kept_witness, kept_anchor = tmp_path / "witness-copy.json", tmp_path / "anchor-copy.json"
    shutil.copy(store.settings.witness_file, kept_witness)
    shutil.copy(store.settings.keys_dir / "audit-keys.pub.json", kept_anchor)
    last_checkpoint = store.checkpoints()[-1]
    store.execute("DELETE FROM events WHERE position > ?", last_checkpoint.position)
    store.settings.witness_file.unlink()
    report = store.verify()
    assert_detected(report, "witness_missing")
    assert not has_problem(report, "truncated")  # nothing left here to show it
    assert_cli_flags(store, "witness_missing")
    if CLI_MISSING:
        return
    run = subprocess.run([str(CSM), "--data-dir", str(store.settings.data_dir), "audit", "verify", "--json", "-q",
                          "--witness", str(kept_witness), "--anchor", str(kept_anchor)],
                         capture_output=True, text=True, timeout=60)
    found = json.loads(run.stdout)
    assert run.returncode == 1 and [p["kind"] for p in found["problems"]] == ["truncated"], run.stdout + run.stderr
    assert (found["witness"], found["trust_anchor"]) == (str(kept_witness), f"anchor file {kept_anchor}")


def test_an_anchor_kept_elsewhere_catches_audit_keys_replaced_in_the_data_directory(store, tmp_path):
    kept_anchor = tmp_path / "anchor-copy.json"
    shutil.copy(store.settings.keys_dir / "audit-keys.pub.json", kept_anchor)
    other = json.loads(kept_anchor.read_text())
    other[0]["key_id"] = "someone-elses-key"
    forged_anchor = tmp_path / "forged.json"
    forged_anchor.write_text(json.dumps(other))
    if CLI_MISSING:
        return
    def verify(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(CSM), "--data-dir", str(store.settings.data_dir), "audit", "verify", "-q", *args],
                              capture_output=True, text=True, timeout=60)
    assert verify("--anchor", str(kept_anchor)).returncode == 0
    assert "checkpoint_signature" in verify("--anchor", str(forged_anchor)).stdout
    (tmp_path / "not-an-anchor.json").write_text("{}")
    refused = verify("--anchor", str(tmp_path / "not-an-anchor.json"))
    assert refused.returncode == 2 and "is not an audit trust anchor" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_deleted_whole_stream_is_caught_by_the_checkpoint_that_sealed_it(store):
    initech = store.stream("tenant-initech")
    store.execute("DELETE FROM events WHERE stream_id = ?", "tenant-initech")
    report = store.verify()
    assert_detected(report, "missing_events", position=initech[0].position)
    assert has_problem(report, "checkpoint_heads", stream_id="tenant-initech", version=2,
                       position=store.checkpoints()[0].position)
    assert_cli_flags(store, "tenant-initech")


def test_a_deleted_stream_with_the_gaps_closed_up_is_still_caught(store):
    """A careful forger renumbers every later event so no position is missing, and re-chains them."""
    doomed = {r.position for r in store.stream("tenant-umbrella")}
    assert len(doomed) == 2
    for position in sorted(doomed, reverse=True):
        store.execute("DELETE FROM events WHERE position = ?", position)
        for row in [r for r in store.rows() if r.position > position]:
            store.execute("UPDATE events SET position = ? WHERE position = ?", row.position - 1, row.position)
            store.rewrite(row.position - 1, lambda d: d.update(global_position=d["global_position"] - 1))
    report = store.verify()
    assert not report.ok
    assert has_problem(report, "checkpoint_heads", stream_id="tenant-umbrella")
    assert_cli_flags(store, "tenant-umbrella")


def test_an_edited_checkpoint_payload(store):
    checkpoint = store.checkpoints()[0]
    store.rewrite(checkpoint.position, lambda d: d["payload"].update(to_position=d["payload"]["to_position"] - 1),
                  rehash=False)
    assert_detected(store.verify(), "hash_mismatch", position=checkpoint.position, stream_id=LEDGER_STREAM,
                    version=checkpoint.version)
    assert_cli_flags(store, LEDGER_STREAM)


def test_an_edited_checkpoint_with_a_forged_ledger_chain(store):
    """Drop a stream from what checkpoint 1 commits to, recompute its Merkle root and re-chain the ledger."""
    checkpoint = store.checkpoints()[0]

    def forge(data: dict) -> None:
        heads = [h for h in data["payload"]["heads"] if h[1] != "tenant-initech"]
        data["payload"]["heads"] = heads
        data["payload"]["merkle_root"] = heads_root([tuple(h) for h in heads])

    store.rewrite(checkpoint.position, forge)
    report = store.verify()
    assert_detected(report, "checkpoint_heads", position=checkpoint.position, stream_id="tenant-initech")
    assert has_problem(report, "checkpoint_signature", position=checkpoint.position, stream_id=LEDGER_STREAM)
    assert_cli_flags(store, LEDGER_STREAM)


@pytest.mark.parametrize("forgery", ["garbage", "other_checkpoint", "removed"])
def test_an_edited_checkpoint_signature(store, forgery):
    first, second = store.checkpoints()
    other = json.loads(store.body(second.position))["payload"]["signatures"]

    def forge(data: dict) -> None:
        signatures = data["payload"]["signatures"]
        key_id = sorted(signatures)[0]
        if forgery == "garbage":
            raw = bytearray(base64.b64decode(signatures[key_id]))
            raw[10] ^= 0x01
            signatures[key_id] = base64.b64encode(bytes(raw)).decode()
        elif forgery == "other_checkpoint":  # a genuine signature, over another statement
            signatures[key_id] = other[key_id]
        else:
            del signatures[key_id]

    store.rewrite(first.position, forge)
    report = store.verify()
    assert_detected(report, "checkpoint_signature", position=first.position, stream_id=LEDGER_STREAM,
                    version=first.version)
    assert "checkpoint 1" in report.first_problem.detail
    assert_cli_flags(store, LEDGER_STREAM)


# any single random tamper ------------------------------------------------------------------

TAMPERS = ["body_byte", "hash", "version", "delete", "swap", "tenant_id", "stream_id", "delete_checkpoint",
           "checkpoint_signature", "truncate"]


def apply_tamper(store: Store, kind: str, data: st.DataObject) -> None:
    rows = store.rows()
    row = data.draw(st.sampled_from(rows), label="row")
    if kind == "body_byte":
        body = bytearray(store.body(row.position))
        index = data.draw(st.integers(0, len(body) - 1), label="index")
        new = data.draw(st.integers(0, 255).filter(lambda b: b != body[index]), label="byte")
        body[index] = new
        store.execute("UPDATE events SET body = ? WHERE position = ?", bytes(body), row.position)
    elif kind == "hash":
        new = data.draw(st.text("0123456789abcdef", min_size=96, max_size=96), label="hash")
        store.execute("UPDATE events SET hash = ? WHERE position = ? AND hash != ?", new, row.position, new)
    elif kind == "version":
        delta = data.draw(st.integers(-3, 3).filter(bool), label="delta")
        store.execute("UPDATE OR IGNORE events SET version = version + ? WHERE position = ?", delta, row.position)
        if [r.version for r in store.rows() if r.position == row.position] == [row.version]:
            store.execute("UPDATE events SET version = version + 1000 WHERE position = ?", row.position)
    elif kind == "delete":
        store.execute("DELETE FROM events WHERE position = ?", row.position)
    elif kind == "swap":
        other = data.draw(st.sampled_from([r for r in rows if r.position != row.position]), label="other")
        store.swap_positions(row.position, other.position)
    elif kind in ("tenant_id", "stream_id"):
        new = data.draw(st.text(min_size=1, max_size=8).filter(lambda t: t != getattr(row, kind)), label="value")
        store.execute(f"UPDATE events SET {kind} = ? WHERE position = ?", new, row.position)
    elif kind == "delete_checkpoint":
        checkpoint = data.draw(st.sampled_from(store.checkpoints()), label="checkpoint")
        store.execute("DELETE FROM events WHERE position = ?", checkpoint.position)
    elif kind == "checkpoint_signature":
        checkpoint = data.draw(st.sampled_from(store.checkpoints()), label="checkpoint")
        rehash = data.draw(st.booleans(), label="rehash")
        flip = data.draw(st.integers(0, 40), label="flip")

        def forge(d: dict) -> None:
            key_id = sorted(d["payload"]["signatures"])[flip % 2]
            raw = bytearray(base64.b64decode(d["payload"]["signatures"][key_id]))
            raw[flip] ^= 0x80
            d["payload"]["signatures"][key_id] = base64.b64encode(bytes(raw)).decode()

        store.rewrite(checkpoint.position, forge, rehash=rehash)
    elif kind == "truncate":
        k = data.draw(st.integers(1, len(rows) - 1), label="k")
        store.execute("DELETE FROM events WHERE position > ?", rows[-1 - k].position)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(TAMPERS), data=st.data())
def test_any_single_tamper_is_detected(kind, data):
    with tempfile.TemporaryDirectory(prefix="csm-tamper-") as directory:
        store = fresh_store(Path(directory) / "data")
        apply_tamper(store, kind, data)
        report = store.verify()
        assert not report.ok, (kind, report)
        assert report.first_problem is not None
