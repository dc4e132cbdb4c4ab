"""The `csm` command line, run as operators run it: the installed console script, in a subprocess.

Each test has its own data directory (``--data-dir``), so the module is safe under xdist.
"""

from __future__ import annotations

import asyncio
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

import msgspec
import pytest
from click.testing import CliRunner
from metrics_files import assert_run, read_metrics_file

from commands.authz import Principal
from commands.runtime import CommandContext
from commands.tenants import (CreateTenant, RenameTenant, ResumeTenant, SuspendTenant, create_tenant, rename_tenant,
                              resume_tenant, suspend_tenant)
from domain.chain import canonical_bytes, chain_hash, genesis_hash
from projections.registry import all_projectors
from infra.bootstrap import initialise
from infra.config import Settings

CONSOLE_SCRIPT = Path(sys.executable).parent / "csm"
CSM = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "cli.main"]
TOKEN_RE = re.compile(r"^csm_[0-9a-f]{16}_[A-Za-z0-9_-]{32,}$")
VIEW_TABLES = ("tenants", "audit_log", "api_tokens", "projection_checkpoints")


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSM_")}
    env["COLUMNS"] = "200"
    return env


def csm(data_dir: Path, *args: str, expect: int | None = 0, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``csm --data-dir DATA_DIR ARGS…``; check the exit status unless ``expect`` is None."""
    run = subprocess.run([*CSM, "--data-dir", str(data_dir), *args], capture_output=True, text=True,
                         timeout=timeout, env=clean_env(), cwd=data_dir.parent)
    if expect is not None:
        assert run.returncode == expect, f"exit {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert "Traceback" not in run.stderr, run.stderr
    return run


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def initialised(data_dir) -> Path:
    csm(data_dir, "init")
    return data_dir


def snapshot_views(data_dir: Path) -> dict[str, list[tuple]]:
    with closing(sqlite3.connect(data_dir / "views.db")) as conn:
        return {table: conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall() for table in VIEW_TABLES}


# init, version, uninitialised directories -----------------------------------------------------

def test_init_is_idempotent_and_names_the_trust_anchor(data_dir):
    first = csm(data_dir, "init")
    anchor = data_dir / "keys" / "audit-keys.pub.json"
    assert str(anchor) in first.stdout and str(data_dir) in first.stdout
    assert anchor.exists() and (data_dir / "events.db").exists()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    keys_before = anchor.read_bytes()
    second = csm(data_dir, "init")
    assert "ready" in second.stdout
    assert anchor.read_bytes() == keys_before
    report = json.loads(csm(data_dir, "audit", "verify", "--json").stdout)
    assert report["ok"] and report["events"] == 1  # one key registration, not two


def test_version(tmp_path):
    assert re.fullmatch(r"csm \S+\n", csm(tmp_path / "unused", "version").stdout)
    assert csm(tmp_path / "unused", "--version").stdout.startswith("csm ")


@pytest.mark.parametrize("args", [("tenant", "list"), ("tenant", "create", "acme", "--name", "Acme"),
                                  ("admin", "create-token", "--name", "x"), ("audit", "verify"),
                                  ("audit", "checkpoint"), ("events", "export"), ("projections", "status"),
                                  ("projections", "rebuild", "tenants"), ("backup", "somewhere")])
def test_an_uninitialised_data_dir_is_a_one_line_usage_error(data_dir, args):
    run = csm(data_dir, *args, expect=2)
    assert run.stderr.startswith("error: ") and "not initialised" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert not (data_dir / "keys").exists(), "a failed command must not create audit keys"


def test_a_store_without_its_keys_is_refused_rather_than_given_new_ones(initialised):
    for path in (initialised / "keys").iterdir():
        path.unlink()
    run = csm(initialised, "tenant", "create", "acme", "--name", "Acme", expect=2)
    assert "audit keys are missing" in run.stderr
    assert not list((initialised / "keys").iterdir())


def lock_unwritable(data_dir: Path) -> str:
    """Make ``data_dir``'s lock file impossible to open for writing: by permissions (0444, its directory 0555) for an
    ordinary user; as root, whom permissions do not stop (and no read-only mount is available here), by putting a
    directory where the lock file goes, which no process can open for writing either. The OS's words for it."""
    lock = data_dir / "run" / "data-dir.lock"
    if os.geteuid() != 0:
        lock.chmod(0o444)
        lock.parent.chmod(0o555)
        return "Permission denied"
    lock.unlink()
    lock.mkdir()
    return "Is a directory"


def test_a_data_dir_whose_lock_cannot_be_written_is_one_clear_line_naming_it(initialised):
    """Every command that uses the directory holds its lock, so one that cannot write it says so in one line, naming
    the lock, the directory and what to do, and does nothing. `csm audit verify` too, in a directory it may write
    (only the lock cannot be): a server may write there, so it verifies under the lock. A directory it cannot write
    at all is verified read-only (tests/e2e/test_cli_verify_readonly.py)."""
    lock, why = initialised / "run" / "data-dir.lock", lock_unwritable(initialised)
    try:
        for args in (("tenant", "create", "acme", "--name", "Acme"), ("tenant", "list"), ("audit", "verify")):
            run = csm(initialised, *args, expect=2)
            assert run.stderr.strip().splitlines() == [
                f"error: cannot write the data-directory lock {lock} ({why}): csm commands hold it while they use "
                f"{initialised}. Run csm as a user who may write there, or make it writable (csm audit verify needs "
                "neither where it cannot write the directory itself); nothing was done"], args
    finally:
        lock.parent.chmod(0o700)
        if lock.is_dir():
            lock.rmdir()
        else:
            lock.chmod(0o600)
    assert "acme" not in csm(initialised, "tenant", "list").stdout  # the refused create wrote nothing


# tokens -----------------------------------------------------------------------------------------

def test_create_token_prints_only_the_token_on_stdout(initialised):
    run = csm(initialised, "admin", "create-token", "--name", "deploy bot")
    lines = run.stdout.splitlines()
    assert len(lines) == 1 and TOKEN_RE.match(lines[0]), run.stdout
    token_id = lines[0].split("_")[1]
    assert token_id in run.stderr and "shown once" in run.stderr and "expires" in run.stderr
    secret = lines[0].split("_", 2)[2]
    exported = csm(initialised, "events", "export").stdout
    assert secret not in exported, "a token's secret must never enter an event"
    issued = [json.loads(line) for line in exported.splitlines() if '"api_token.issued"' in line]
    assert len(issued) == 1
    event = issued[0]
    assert event["payload"]["token_id"] == token_id and event["payload"]["roles"] == ["platform-admin"]
    assert event["actor"]["principal"].startswith("cli:") and event["actor"]["auth_method"] == "local-cli"


def test_create_token_with_roles_tenant_and_expiry(initialised):
    csm(initialised, "tenant", "create", "acme", "--name", "Acme")
    run = csm(initialised, "admin", "create-token", "--name", "acme admin", "--role", "tenant-admin",
              "--role", "auditor", "--tenant", "acme", "--expires-in-days", "7")
    assert TOKEN_RE.match(run.stdout.strip())
    event = [json.loads(line) for line in csm(initialised, "events", "export").stdout.splitlines()][-1]
    assert event["payload"]["roles"] == ["auditor", "tenant-admin"]
    assert event["payload"]["scope_tenant_id"] == "acme" and event["tenant_id"] == "acme"


def test_create_token_refuses_an_unknown_role(initialised):
    run = csm(initialised, "admin", "create-token", "--name", "x", "--role", "god", expect=2)
    assert "god" in run.stderr and run.stdout == ""


# tenants ----------------------------------------------------------------------------------------

def test_tenant_lifecycle_through_the_cli(initialised):
    created = csm(initialised, "tenant", "create", "acme", "--name", "Acme Corp")
    assert "created tenant acme" in created.stdout and "version 1" in created.stdout
    csm(initialised, "tenant", "create", "globex", "--name", "Globex")
    table = csm(initialised, "tenant", "list").stdout
    assert "acme" in table and "Acme Corp" in table and "globex" in table and "2 tenant(s)" in table
    listed = json.loads(csm(initialised, "tenant", "list", "--json").stdout)
    assert [t["tenant_id"] for t in listed] == ["acme", "globex"]
    assert all(t["status"] == "active" and t["version"] == 1 for t in listed)

    csm(initialised, "tenant", "rename", "acme", "--name", "Acme Industries")
    csm(initialised, "tenant", "suspend", "acme", "--reason", "unpaid invoice")
    shown = json.loads(csm(initialised, "tenant", "show", "acme", "--json").stdout)
    assert (shown["name"], shown["status"], shown["version"]) == ("Acme Industries", "suspended", 3)
    assert [t["tenant_id"] for t in json.loads(csm(initialised, "tenant", "list", "--status", "suspended",
                                                   "--json").stdout)] == ["acme"]
    csm(initialised, "tenant", "resume", "acme", "--reason", "paid")
    text = csm(initialised, "tenant", "show", "acme").stdout
    assert re.search(r"status:\s+active", text) and re.search(r"version:\s+4", text)


@pytest.mark.parametrize("args, code, field", [
    (("tenant", "create", "acme", "--name", "Again"), "tenant_exists", "tenant_id"),
    (("tenant", "create", "Not Valid!", "--name", "x"), "invalid_input", "tenant_id"),
    (("tenant", "create", "okay", "--name", ""), "invalid_input", "name"),
    (("tenant", "show", "nobody"), "tenant_not_found", "tenant_id"),
    (("tenant", "rename", "nobody", "--name", "X"), "tenant_not_found", "tenant_id"),
    (("tenant", "resume", "acme", "--reason", "r"), "tenant_not_suspended", "tenant_id"),
])
def test_domain_errors_are_one_clear_line_with_exit_1(initialised, args, code, field):
    csm(initialised, "tenant", "create", "acme", "--name", "Acme")
    run = csm(initialised, *args, expect=1)
    assert run.stdout == ""
    assert run.stderr.startswith(f"error: {code}: ") and run.stderr.rstrip().endswith(f"(field: {field})"), \
        run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_a_missing_option_is_a_usage_error(initialised):
    run = csm(initialised, "tenant", "create", "acme", expect=2)
    assert "--name" in run.stderr


# audit ------------------------------------------------------------------------------------------

def seed(data_dir: Path) -> None:
    """Positions: 1 key registration, 2 the token's service account, 3 its key recorded on the account, 4 the key,
    5 tenant acme created, 6 globex, 7 acme renamed."""
    csm(data_dir, "init")
    csm(data_dir, "admin", "create-token", "--name", "ops")
    csm(data_dir, "tenant", "create", "acme", "--name", "Acme")
    csm(data_dir, "tenant", "create", "globex", "--name", "Globex")
    csm(data_dir, "tenant", "rename", "acme", "--name", "Acme Two")


def test_audit_verify_passes_on_a_clean_store_and_names_the_first_broken_link_after_tampering(data_dir):
    seed(data_dir)
    assert "wrote 1 checkpoint(s)" in csm(data_dir, "audit", "checkpoint").stdout
    prom = data_dir.parent / "textfile" / "csm_audit_verify.prom"  # node_exporter's textfile-collector directory
    prom.parent.mkdir()
    clean = csm(data_dir, "audit", "verify", "--metrics-file", str(prom))
    assert "result:" in clean.stdout and "OK" in clean.stdout
    assert_run(read_metrics_file(prom), "audit_verify", success=True, problems=0, unsealed_events=0,
               events=int(re.search(r"events:\s+(\d+)", clean.stdout).group(1)))
    assert re.search(r"checkpoints:\s+1", clean.stdout) and re.search(r"unsealed events:\s+0", clean.stdout)
    assert re.search(r"trust anchor:\s+configured audit keys", clean.stdout)
    report = json.loads(csm(data_dir, "audit", "verify", "--json").stdout)
    assert report["ok"] and report["first_problem"] is None and report["checkpoints"] == 1

    with closing(sqlite3.connect(data_dir / "events.db")) as conn:
        assert conn.execute("SELECT stream_id FROM events WHERE position = 5").fetchone() == ("tenant-acme",)
        conn.execute("UPDATE events SET body = replace(body, 'x', 'y') WHERE position = 5")
        conn.commit()

    broken = csm(data_dir, "audit", "verify", "--metrics-file", str(prom), expect=1)
    assert "FAILED" in broken.stdout
    assert_run(read_metrics_file(prom), "audit_verify", success=False, problems=1)  # what CsmAuditVerifyFailed reads
    first = broken.stdout.split("first broken link:")[1]
    assert re.search(r"stream:\s+tenant-acme", first) and re.search(r"tenant:\s+acme", first)
    assert re.search(r"version:\s+1", first) and re.search(r"position:\s+5", first)
    assert re.search(r"kind:\s+hash_mismatch", first)
    failed = json.loads(csm(data_dir, "audit", "verify", "--json", expect=1).stdout)
    assert not failed["ok"]
    assert failed["first_problem"]["position"] == 5 and failed["first_problem"]["stream_id"] == "tenant-acme"
    assert len(failed["problems"]) == 1 and "further" not in broken.stdout

    with closing(sqlite3.connect(data_dir / "events.db")) as conn:  # a second edit: listed after the first
        conn.execute("UPDATE events SET body = replace(body, 'Acme Two', 'Acme 2wo') WHERE position = 7")
        conn.commit()
    again = csm(data_dir, "audit", "verify", expect=1)
    problems = json.loads(csm(data_dir, "audit", "verify", "--json", "--quiet", expect=1).stdout)["problems"]
    assert [(p["kind"], p["position"]) for p in problems] == [("hash_mismatch", 5), ("hash_mismatch", 7)]
    assert re.search(r"position:\s+5", again.stdout.split("first broken link:")[1])
    assert "and 1 further problem(s)" in again.stdout
    assert "hash_mismatch at position 7, stream tenant-acme v2, tenant acme" in again.stdout


def test_audit_verify_counts_unsealed_events_and_reports_a_truncated_tail(data_dir):
    seed(data_dir)
    report = json.loads(csm(data_dir, "audit", "verify", "--json", "-q").stdout)
    assert report["ok"] and report["checkpoints"] == 0 and report["unsealed_events"] == 6
    with closing(sqlite3.connect(data_dir / "events.db")) as conn:
        conn.execute("DELETE FROM events WHERE position = (SELECT max(position) FROM events)")
        conn.commit()
    run = csm(data_dir, "audit", "verify", expect=1)
    assert re.search(r"kind:\s+truncated", run.stdout)


def test_audit_verify_of_a_file_that_is_not_a_database_is_exit_2(initialised):
    (initialised / "events.db").write_bytes(b"this is not sqlite" * 100)
    for suffix in ("-wal", "-shm"):
        (initialised / f"events.db{suffix}").unlink(missing_ok=True)
    prom = initialised / "verify.prom"
    run = csm(initialised, "audit", "verify", "--metrics-file", str(prom), expect=2)
    assert run.stderr.startswith("error: ")
    values = read_metrics_file(prom)  # nothing was verified: a failed run, and nothing counted
    assert_run(values, "audit_verify", success=False)
    assert "csm_audit_verify_events" not in values
    missing = csm(initialised, "audit", "verify", "--metrics-file", str(initialised / "no" / "such.prom"), expect=2)
    assert "--metrics-file" in missing.stderr and "is not a directory" in missing.stderr


# events export ----------------------------------------------------------------------------------

def test_events_export_is_one_verifiable_json_line_per_event(data_dir, tmp_path):
    seed(data_dir)
    lines = csm(data_dir, "events", "export").stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["global_position"] for e in events] == list(range(1, len(events) + 1)) and len(events) == 7
    heads: dict[tuple[str, str], str] = {}
    for event in events:  # any reader can re-derive every hash from the exported lines alone
        assert re.fullmatch(r"[0-9a-f]{96}", event["hash"])
        key = (event["tenant_id"], event["stream_id"])
        assert event["prev_hash"] == heads.get(key, genesis_hash(*key))
        body = canonical_bytes({k: v for k, v in event.items() if k != "hash"})
        assert chain_hash(event["prev_hash"], body) == event["hash"]
        heads[key] = event["hash"]

    out = tmp_path / "events.jsonl"
    run = csm(data_dir, "events", "export", "--out", str(out))
    assert run.stdout == "" and "exported 7 event(s)" in run.stderr
    assert out.read_text().splitlines() == lines
    after = csm(data_dir, "events", "export", "--after", "3").stdout.splitlines()
    assert after == lines[3:]
    assert csm(data_dir, "events", "export", "--after", "99").stdout == ""


# projections ------------------------------------------------------------------------------------

def test_projections_status_and_an_unknown_rebuild(data_dir):
    seed(data_dir)
    status = json.loads(csm(data_dir, "projections", "status", "--json").stdout)
    assert sorted(row["name"] for row in status) == sorted(p.name for p in all_projectors())
    assert all(row["head"] == 7 and row["lag"] == row["head"] - row["position"] and not row["stale"]
               for row in status)
    table = csm(data_dir, "projections", "status").stdout
    for word in ("name", "position", "head", "lag", "version", "tenants", "audit_log"):
        assert word in table

    with closing(sqlite3.connect(data_dir / "views.db")) as conn:  # as if the code's projector moved on
        conn.execute("UPDATE projection_checkpoints SET version = 7 WHERE name = 'tenants'")
        conn.commit()
    assert "stale" in csm(data_dir, "projections", "status").stdout
    with closing(sqlite3.connect(data_dir / "views.db")) as conn:  # as a server leaves it while it rebuilds it
        conn.execute("UPDATE projection_checkpoints SET version = 0 WHERE name = 'tenants'")
        conn.commit()
    assert "rebuilding" in csm(data_dir, "projections", "status").stdout

    # `csm init` (as `make run` starts with) empties a changed read model instead of rebuilding it before the
    # server starts; a command that reads it rebuilds it first
    with closing(sqlite3.connect(data_dir / "views.db")) as conn:
        conn.execute("UPDATE projection_checkpoints SET version = 7 WHERE name = 'tenants'")
        conn.commit()
    csm(data_dir, "init")
    with closing(sqlite3.connect(data_dir / "views.db")) as conn:
        assert conn.execute("SELECT version FROM projection_checkpoints WHERE name = 'tenants'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM tenants").fetchone()[0] == 0
    assert [t["tenant_id"] for t in json.loads(csm(data_dir, "tenant", "list", "--json").stdout)] == ["acme", "globex"]
    assert all(not row["stale"] for row in json.loads(csm(data_dir, "projections", "status", "--json").stdout))

    run = csm(data_dir, "projections", "rebuild", "nonesuch", expect=2)
    assert "unknown projection 'nonesuch'" in run.stderr
    assert ", ".join(sorted(p.name for p in all_projectors())) in run.stderr


def populate(settings: Settings, tenants: int) -> int:
    """~2 events per tenant through the real command handlers, concurrently; returns the head position."""
    ctx = CommandContext(principal=Principal(id="test:populate", auth_method="test",
                                             roles=frozenset({"platform-admin"})))

    async def go() -> int:
        runtime = initialise(settings)
        try:
            ids = [f"tenant-{i:05d}" for i in range(tenants)]
            for step in (lambda t: create_tenant(CreateTenant(tenant_id=t, name=f"Tenant {t}"), ctx, runtime.services),
                         lambda t: rename_tenant(RenameTenant(tenant_id=t, name=f"Renamed {t}"), ctx,
                                                 runtime.services)):
                for start in range(0, len(ids), 250):
                    await asyncio.gather(*(step(t) for t in ids[start:start + 250]))
            for t in ids[::5]:
                await suspend_tenant(SuspendTenant(tenant_id=t, reason="test"), ctx, runtime.services)
            for t in ids[::10]:
                await resume_tenant(ResumeTenant(tenant_id=t, reason="test"), ctx, runtime.services)
            return runtime.store.head_position_sync()
        finally:
            runtime.close()

    return asyncio.run(go())


@pytest.mark.slow
def test_rebuild_replays_2000_events_into_identical_read_models(data_dir):
    head = populate(Settings(data_dir=data_dir), 900)
    assert head >= 2000
    csm(data_dir, "tenant", "list", "--json")  # catches every read model up
    before = snapshot_views(data_dir)
    assert len(before["tenants"]) == 900 and len(before["audit_log"]) == head
    assert {row[0]: row[1] for row in before["projection_checkpoints"]} == dict.fromkeys(
        (p.name for p in all_projectors()), head)

    for name in ("tenants", "audit_log", "api_tokens"):
        run = csm(data_dir, "projections", "rebuild", name)
        assert re.search(rf"rebuilt {name}: {head:,} events in [0-9.]+ s \([0-9,]+ events/s\)", run.stdout), \
            run.stdout
        assert "rebuilding" in run.stderr  # the progress bar
    after = snapshot_views(data_dir)
    for table in ("tenants", "audit_log", "api_tokens"):
        assert after[table] == before[table], table
    status = json.loads(csm(data_dir, "projections", "status", "--json").stdout)
    assert all(row["position"] == head and row["lag"] == 0 for row in status)
    assert json.loads(csm(data_dir, "tenant", "show", "tenant-00010", "--json").stdout)["status"] == "active"
    assert json.loads(csm(data_dir, "tenant", "show", "tenant-00005", "--json").stdout)["status"] == "suspended"


# the process itself -----------------------------------------------------------------------------

def test_commands_in_process_leave_no_threads_behind(tmp_path):
    from cli.main import csm as cli

    before = set(threading.enumerate())
    runner = CliRunner()
    data = str(tmp_path / "data")
    for args in (["init"], ["admin", "create-token", "--name", "t"], ["tenant", "create", "acme", "--name", "A"],
                 ["tenant", "list"], ["tenant", "show", "acme"], ["audit", "checkpoint"], ["audit", "verify"],
                 ["events", "export", "--out", str(tmp_path / "e.jsonl")], ["projections", "status"],
                 ["projections", "rebuild", "tenants"], ["backup", str(tmp_path / "bk")]):
        result = runner.invoke(cli, ["--data-dir", data, *args], catch_exceptions=False)
        assert result.exit_code == 0, (args, result.output)
        leftover = [t for t in set(threading.enumerate()) - before if t.is_alive()]
        assert not leftover, (args, leftover)
    result = runner.invoke(cli, ["--data-dir", data, "tenant", "create", "acme", "--name", "A"])
    assert result.exit_code == 1 and "tenant_exists" in result.stderr
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]


def test_the_module_runs_as_a_script(tmp_path):
    run = subprocess.run([sys.executable, "-m", "cli.main", "--help"], capture_output=True, text=True,
                         timeout=60, env=clean_env())
    assert run.returncode == 0 and "audit" in run.stdout and "backup" in run.stdout


def test_the_report_json_is_a_verify_report(data_dir):
    from domain.verification import VerifyReport

    seed(data_dir)
    report = msgspec.json.decode(csm(data_dir, "audit", "verify", "--json").stdout, type=VerifyReport)
    assert report.ok and report.events == 7


def test_a_metrics_port_that_cannot_be_served_stops_the_projector_and_the_worker_before_they_run(initialised):
    """--metrics-port: a port in use, or a scrape token file that is not one, is exit 2 naming it."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        redis = {"CSM_JOBS": "redis", "CSM_REDIS_URL": "redis://127.0.0.1:1"}  # not reached: the port fails first
        for command, env in (("projector", {}), ("worker", redis)):
            run = subprocess.run([*CSM, "--data-dir", str(initialised), command, "--metrics-port", port], timeout=60,
                                 capture_output=True, text=True, env={**clean_env(), **env})
            assert run.returncode == 2, run.stderr
            assert f"--metrics-port: cannot listen on 127.0.0.1:{port}" in run.stderr, run.stderr
    short = initialised.parent / "short-token"
    short.write_text("too short\n")
    run = subprocess.run([*CSM, "--data-dir", str(initialised), "projector", "--metrics-port", "0"], timeout=60,
                         capture_output=True, text=True, env={**clean_env(), "CSM_METRICS_TOKEN_FILE": str(short)})
    assert run.returncode == 2 and "CSM_METRICS_TOKEN_FILE" in run.stderr, run.stderr
