"""`csm backup` / `csm restore`: consistent online copies, hashed manifests, verified restores."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path

import pytest

from commands.authz import Principal
from commands.runtime import CommandContext
from commands.tenants import CreateTenant, create_tenant
from infra.bootstrap import open_runtime
from infra.config import Settings
from infra.webhooks.log import DeliveryLog

CONSOLE_SCRIPT = Path(sys.executable).parent / "csm"
CSM = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "cli.main"]


def csm(data_dir: Path, *args: str, expect: int | None = 0) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSM_")}
    run = subprocess.run([*CSM, "--data-dir", str(data_dir), *args], capture_output=True, text=True, timeout=120,
                         env=env, cwd=data_dir.parent)
    if expect is not None:
        assert run.returncode == expect, f"exit {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert "Traceback" not in run.stderr, run.stderr
    return run


def tenants(data_dir: Path) -> list[dict]:
    return json.loads(csm(data_dir, "tenant", "list", "--json").stdout)


@pytest.fixture
def source(tmp_path) -> Path:
    data = tmp_path / "source"
    csm(data, "init")
    csm(data, "admin", "create-token", "--name", "ops")
    for tenant in ("acme", "globex", "initech"):
        csm(data, "tenant", "create", tenant, "--name", tenant.title())
    csm(data, "audit", "checkpoint")
    csm(data, "tenant", "suspend", "globex", "--reason", "unsealed when backed up")
    return data


def test_backup_then_restore_into_a_new_dir_verifies_and_serves_the_same_data(source, tmp_path):
    backup = tmp_path / "backup"
    with closing(sqlite3.connect(source / "events.db")) as conn:
        head = conn.execute("SELECT max(position) FROM events").fetchone()[0]
    run = csm(source, "backup", str(backup))
    assert f"backed up {head} events" in run.stdout
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["head_position"] == head and manifest["format"] == "csm-backup"
    assert set(manifest["files"]) >= {"events.db", "views.db", "audit-witness.json", "keys/audit-keys.pub.json",
                                      "keys/audit-ed25519.pem", "keys/audit-ml-dsa-65.pem"}
    for name, entry in manifest["files"].items():
        path = backup / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    assert stat.S_IMODE((backup / "manifest.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(backup.stat().st_mode) == 0o700 and stat.S_IMODE((backup / "keys").stat().st_mode) == 0o700
    assert not (backup / "events.db-wal").exists()
    with closing(sqlite3.connect(backup / "events.db")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"

    target = tmp_path / "restored"
    restored = csm(target, "restore", str(backup))
    assert "restored" in restored.stdout and "OK" in restored.stdout
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    for path in target.rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path
    assert json.loads(csm(target, "audit", "verify", "--json").stdout)["ok"]
    assert tenants(target) == tenants(source)
    csm(target, "tenant", "create", "umbrella", "--name", "Umbrella")  # the restored store takes writes
    assert json.loads(csm(target, "audit", "verify", "--json").stdout)["ok"]


def test_restore_refuses_a_dir_with_events_unless_forced_and_then_keeps_the_old_files(source, tmp_path):
    backup = tmp_path / "backup"
    csm(source, "backup", str(backup))
    target = tmp_path / "other"
    csm(target, "init")
    csm(target, "tenant", "create", "other", "--name", "Other")
    refused = csm(target, "restore", str(backup), expect=2)
    assert refused.stderr.startswith("error: ") and "already holds 2 events" in refused.stderr
    assert "--force" in refused.stderr
    assert [t["tenant_id"] for t in tenants(target)] == ["other"]

    forced = csm(target, "restore", "--force", str(backup))
    assert "OK" in forced.stdout and "moved to" in forced.stdout
    assert [t["tenant_id"] for t in tenants(target)] == ["acme", "globex", "initech"]
    aside = [p for p in target.iterdir() if p.name.startswith(".pre-restore-")]
    assert len(aside) == 1 and (aside[0] / "events.db").exists() and (aside[0] / "keys").is_dir()


@pytest.mark.parametrize("damage", ["events.db", "keys/audit-ed25519.pem", "missing views.db", "manifest"])
def test_restore_refuses_a_tampered_backup(source, tmp_path, damage):
    backup = tmp_path / "backup"
    csm(source, "backup", str(backup))
    if damage == "events.db":
        with closing(sqlite3.connect(backup / "events.db")) as conn:
            conn.execute("UPDATE events SET body = replace(body, 'Acme', 'Acne') WHERE stream_id = 'tenant-acme'")
            conn.commit()
    elif damage == "keys/audit-ed25519.pem":
        (backup / damage).write_bytes((backup / damage).read_bytes().replace(b"\n", b"\n\n", 1))
    elif damage == "missing views.db":
        (backup / "views.db").unlink()
    else:
        manifest = json.loads((backup / "manifest.json").read_text())
        manifest["files"]["../escape"] = {"sha256": "0" * 64, "bytes": 0}
        (backup / "manifest.json").write_text(json.dumps(manifest))
    target = tmp_path / "restored"
    run = csm(target, "restore", str(backup), expect=1)
    assert run.stderr.startswith("error: ") and len(run.stderr.strip().splitlines()) == 1
    if damage != "manifest":
        assert "fails its manifest" in run.stderr and damage.removeprefix("missing ") in run.stderr
    assert not (target / "events.db").exists()


def test_backup_refuses_a_non_empty_destination_and_a_dir_that_is_not_a_backup(source, tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "something").write_text("mine")
    assert "not empty" in csm(source, "backup", str(occupied), expect=2).stderr
    assert (occupied / "something").read_text() == "mine"
    assert "not a csm backup" in csm(tmp_path / "x", "restore", str(occupied), expect=2).stderr
    assert "outside the data directory" in csm(source, "backup", str(source / "inside"), expect=2).stderr


@pytest.mark.slow
def test_an_online_backup_taken_while_the_service_writes_restores_to_a_verified_store(source, tmp_path):
    """A writer appends and projects continuously; the backup must still be one consistent moment."""
    stop = threading.Event()
    written: list[int] = []
    ctx = CommandContext(principal=Principal(id="test:writer", auth_method="test",
                                             roles=frozenset({"platform-admin"})))

    def writer() -> None:
        async def go() -> None:
            runtime = open_runtime(Settings(data_dir=source))
            try:
                batch = 0
                while not stop.is_set() or batch < 3:
                    await asyncio.gather(*(create_tenant(CreateTenant(tenant_id=f"busy-{batch:04d}-{i:02d}",
                                                                      name="Busy"), ctx, runtime.services)
                                           for i in range(25)))
                    runtime.runner.catch_up_once()
                    if batch % 5 == 0:
                        runtime.checkpointer.seal_all()
                    batch += 1
                written.append(batch)
            finally:
                runtime.close()

        asyncio.run(go())

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        backups = []
        for n in range(3):
            backups.append(tmp_path / f"backup-{n}")
            csm(source, "backup", str(backups[-1]))
    finally:
        stop.set()
        thread.join(60)
    assert written and written[0] >= 3
    for n, backup in enumerate(backups):
        target = tmp_path / f"restored-{n}"
        run = csm(target, "restore", str(backup))
        assert "OK" in run.stdout, run.stdout
        with closing(sqlite3.connect(target / "events.db")) as conn:
            head = conn.execute("SELECT max(position) FROM events").fetchone()[0]
            created = conn.execute("SELECT count(*) FROM events WHERE type = 'tenant.created'").fetchone()[0]
        with closing(sqlite3.connect(target / "views.db")) as conn:
            positions = [row[0] for row in conn.execute("SELECT position FROM projection_checkpoints")]
        assert max(positions) <= head, "a read model in the backup is ahead of its event log"
        assert len(tenants(target)) == created  # the read model catches up from where it was


def _dispatch(data_dir: Path) -> int:
    """Run the webhook dispatcher over the whole log, as a server does, and return its saved checkpoint."""
    runtime = open_runtime(Settings(data_dir=data_dir))
    try:
        runtime.runner.catch_up_once()
        dispatcher = runtime.webhook_dispatcher()
        try:
            while dispatcher.dispatch_once():
                pass
            dispatcher.save()
        finally:
            dispatcher.close()
        return runtime.webhooks.deliveries.checkpoint()
    finally:
        runtime.close()


def test_the_webhook_delivery_log_and_its_checkpoint_travel_with_the_backup(source, tmp_path):
    created = csm(source, "webhook", "create", "--tenant", "acme", "--url", "https://hooks.example.com/csm")
    webhook_id = created.stderr.split()[1]
    csm(source, "tenant", "create", "hooli", "--name", "Hooli")  # an event after the subscription
    checkpoint = _dispatch(source)
    with closing(sqlite3.connect(source / "events.db")) as conn:
        assert checkpoint == conn.execute("SELECT max(position) FROM events").fetchone()[0] > 0
    log = DeliveryLog(source / "webhooks.db")  # a delivery, as the dispatcher records one for a revocation
    log.record_dispatch([("delivery-1", "acme", webhook_id, "event-1", "certificate.revoked", checkpoint, b"{}")],
                        checkpoint)
    log.close()

    backup = tmp_path / "backup"
    csm(source, "backup", str(backup))
    manifest = json.loads((backup / "manifest.json").read_text())
    copied = hashlib.sha256((backup / "webhooks.db").read_bytes()).hexdigest()
    assert manifest["files"]["webhooks.db"]["sha256"] == copied
    assert not (backup / "webhooks.db-wal").exists()

    target = tmp_path / "other"  # a data directory with a delivery log of its own
    csm(target, "init")
    csm(target, "tenant", "create", "other", "--name", "Other")
    own = DeliveryLog(target / "webhooks.db")
    own.record_dispatch([("theirs", "other", "hook", "event-9", "certificate.revoked", 2, b"{}")], 2)
    own.close()
    restored = csm(target, "restore", "--force", str(backup))
    assert "OK" in restored.stdout and "webhooks.db" not in restored.stdout
    aside = next(p for p in target.iterdir() if p.name.startswith(".pre-restore-"))
    moved = DeliveryLog(aside / "webhooks.db")
    assert moved.get("theirs") is not None and moved.checkpoint() == 2  # kept, not deleted
    moved.close()
    log = DeliveryLog(target / "webhooks.db")
    try:
        assert log.checkpoint() == checkpoint and log.get("theirs") is None
        assert log.get("delivery-1")["webhook_id"] == webhook_id
    finally:
        log.close()
    assert _dispatch(target) == checkpoint  # the dispatcher resumes where it was: nothing is sent again


def test_a_backup_without_a_delivery_log_still_restores(source, tmp_path):
    backup = tmp_path / "backup"
    csm(source, "backup", str(backup))
    (backup / "webhooks.db").unlink()  # as csm backup wrote it before it copied the delivery log
    manifest = json.loads((backup / "manifest.json").read_text())
    del manifest["files"]["webhooks.db"]
    (backup / "manifest.json").write_text(json.dumps(manifest))
    target = tmp_path / "other"
    csm(target, "init")
    assert (target / "webhooks.db").exists()
    restored = csm(target, "restore", "--force", str(backup))
    assert "OK" in restored.stdout and "has no webhooks.db" in restored.stdout
    assert not (target / "webhooks.db").exists()
    aside = next(p for p in target.iterdir() if p.name.startswith(".pre-restore-"))
    assert (aside / "webhooks.db").exists()


def test_a_restore_names_the_revocations_written_after_the_backup_so_none_is_silently_undone(source, tmp_path):
    csm(source, "tenant", "resume", "globex", "--reason", "paid")
    root = csm(source, "ca", "create-root", "--tenant", "acme", "--name", "Root", "--cn", "Acme Root",
               "--algorithm", "ecdsa-p384").stdout.split()[3]
    issued = csm(source, "cert", "issue", "--tenant", "acme", "--ca", root, "--cn", "n1.acme.internal",
                 "--dns", "n1.acme.internal", "--json")
    certificate_id = json.loads(issued.stdout)["certificate_id"]
    backup = tmp_path / "backup"
    csm(source, "backup", str(backup))
    csm(source, "cert", "revoke", certificate_id, "--reason", "key_compromise")
    restored = csm(source, "restore", "--force", str(backup))
    assert "OK" in restored.stdout and "1 revocation(s)" in restored.stdout, restored.stdout
    assert f"csm cert revoke {certificate_id} --reason key_compromise" in restored.stdout
    lost_number = int(re.search(r"CRLs up to number (\d+) were published", restored.stdout).group(1))
    aside = next(p for p in source.iterdir() if p.name.startswith(".pre-restore-"))
    [lost] = [json.loads(line) for line in (aside / "lost-revocations.jsonl").read_text().splitlines()]
    assert (lost["certificate_id"], lost["reason"]) == (certificate_id, "key_compromise")
    again = csm(source, "restore", "--force", str(backup))  # the log moved aside now is the backup's own
    assert "warning" not in again.stdout
    redone = csm(source, "cert", "revoke", certificate_id, "--reason", "key_compromise").stdout
    [number] = [int(n) for n in re.findall(rf"CRL (\d+) of CA {root}", redone)]
    assert number > lost_number  # the restored CA does not number a different list as one relying parties hold
