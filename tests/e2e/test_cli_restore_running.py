"""`csm restore` refuses a data directory that a running `csm serve`, `csm projector`, backup or one-off command uses."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest
from test_cli_serve import CSM, csm, env, free_port, stopped, wait_until_live

from infra.data_lock import RUN_DIR, exclusive

httpx = pytest.importorskip("httpx")


@pytest.fixture
def backup(tmp_path) -> Path:
    source = tmp_path / "source"
    csm(source, "init")
    csm(source, "tenant", "create", "initech", "--name", "Initech")
    csm(source, "backup", str(tmp_path / "backup"))
    return tmp_path / "backup"


def _untouched(data: Path) -> None:
    """A refused restore moved nothing aside and left no staging directory behind."""
    assert not [p.name for p in data.iterdir() if p.name.startswith((".pre-restore-", ".restore-"))]
    assert (data / "events.db").exists() and (data / "keys").is_dir()


def _refused(data: Path, backup: Path) -> str:
    run = csm(data, "restore", "--force", str(backup), expect=2)
    assert run.stderr.startswith("error: ") and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "in use by a running csm process" in run.stderr and "nothing was restored" in run.stderr
    _untouched(data)
    return run.stderr


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"], ids=["one-process", "two-workers"])
def test_restore_refuses_while_serve_runs_and_a_backup_beside_it_still_works(tmp_path, backup, workers):
    pytest.importorskip("api.server", reason="api.server is not importable: csm serve has nothing to run")
    data = tmp_path / "data"
    port = free_port()
    server = subprocess.Popen([*CSM, "--data-dir", str(data), "serve", "--port", str(port)],
                              env={**env(), "CSM_WORKERS": workers},
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_live(server, base)
        token = csm(data, "admin", "create-token", "--name", "e2e").stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        assert f"pid {server.pid}" in _refused(data, backup)  # the serving process is named

        created = httpx.post(f"{base}/v1/tenants", json={"tenant_id": "acme", "name": "Acme"}, headers=headers,
                             timeout=10)
        assert created.status_code == 201, created.text  # into the data directory's own events.db
        assert "backed up" in csm(data, "backup", str(tmp_path / "online")).stdout  # still safe beside it
        _refused(data, backup)
    finally:
        stderr = stopped(server)
    assert server.returncode == 0 and "Traceback" not in stderr, stderr
    report = json.loads(csm(data, "audit", "verify", "--json").stdout)
    assert report["ok"], report
    assert "acme" in [t["tenant_id"] for t in json.loads(csm(data, "tenant", "list", "--json").stdout)]

    restored = csm(data, "restore", "--force", str(backup))  # stopped: the restore goes ahead
    assert "OK" in restored.stdout and "moved to" in restored.stdout
    assert [t["tenant_id"] for t in json.loads(csm(data, "tenant", "list", "--json").stdout)] == ["initech"]
    online = tmp_path / "online-restored"
    assert "OK" in csm(online, "restore", str(tmp_path / "online")).stdout


@pytest.mark.slow
def test_restore_refuses_while_a_projector_runs(tmp_path, backup):
    data = tmp_path / "data"
    csm(data, "init")
    projector = subprocess.Popen([*CSM, "--data-dir", str(data), "projector"], env=env(), cwd=tmp_path,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (data / "projector.alive").exists():
            assert projector.poll() is None, projector.communicate()[1]
            assert time.monotonic() < deadline, "the projector did not start"
            time.sleep(0.2)
        _refused(data, backup)
    finally:
        stderr = stopped(projector)
    assert projector.returncode == 0, stderr
    assert "OK" in csm(data, "restore", "--force", str(backup)).stdout


def test_serve_projector_and_backup_refuse_to_start_during_a_restore(tmp_path):
    data = tmp_path / "data"
    csm(data, "init")
    with exclusive(data):  # as `csm restore` holds it while it replaces the files
        for args in (("serve", "--port", "0"), ("projector",), ("backup", str(tmp_path / "b"))):
            run = subprocess.run([*CSM, "--data-dir", str(data), *args], capture_output=True, text=True,
                                 timeout=120, env=env(), cwd=tmp_path)
            assert run.returncode != 0 and "a restore into" in run.stderr, (args, run.stderr)
    assert not (tmp_path / "b").exists()


def _files(data: Path) -> dict[str, str]:
    """Every file of the data directory but the lock's, by content."""
    return {p.relative_to(data).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(data.rglob("*")) if p.is_file() and p.parent.name != RUN_DIR}


ONE_OFF = (("init",), ("admin", "create-token", "--name", "late"), ("admin", "sweep-keys", "--dry-run"),
           ("tenant", "create", "acme", "--name", "Acme"), ("cert", "list"), ("auth", "rotate-signing-key"),
           ("audit", "verify"), ("events", "export"), ("projections", "rebuild", "tenants"))


def test_one_off_commands_refuse_during_a_restore_and_write_nothing(tmp_path):
    data = tmp_path / "data"
    csm(data, "init")
    before = _files(data)
    with exclusive(data):  # as `csm restore` holds it while it replaces the files
        for args in ONE_OFF:
            run = subprocess.run([*CSM, "--data-dir", str(data), *args], capture_output=True, text=True,
                                 timeout=120, env=env(), cwd=tmp_path)
            assert run.returncode == 1 and run.stdout == "", (args, run.stdout, run.stderr)
            assert run.stderr.startswith(f"error: a restore into {data} is running"), (args, run.stderr)
            assert len(run.stderr.strip().splitlines()) == 1 and "nothing was done" in run.stderr, (args, run.stderr)
    assert _files(data) == before
    assert "created" in csm(data, "tenant", "create", "acme", "--name", "Acme").stdout  # once the restore has ended


def _pending(pipe) -> int:
    """Bytes written into ``pipe`` and not yet read."""
    return struct.unpack("i", fcntl.ioctl(pipe.fileno(), termios.FIONREAD, b"\0" * 4))[0]


def test_restore_refuses_while_a_one_off_command_runs(tmp_path, backup):
    data = tmp_path / "data"
    csm(data, "init")
    csm(data, "tenant", "create", "acme", "--name", "Acme")
    csm(data, "audit", "checkpoint")  # with its signatures, the log's export is now longer than a page
    read, write = os.pipe()
    capacity = fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, 4096)  # a page: the export below writes more
    with os.fdopen(read, "rb") as out:
        export = subprocess.Popen([*CSM, "--data-dir", str(data), "events", "export"], env=env(), cwd=tmp_path,
                                  stdout=write, stderr=subprocess.PIPE, text=True)
        os.close(write)
        try:  # the export blocks on its full stdout, in the middle of the command
            deadline = time.monotonic() + 60
            while _pending(out) < capacity:
                assert export.poll() is None, export.communicate()[1]
                assert time.monotonic() < deadline, "the export never filled its stdout"
                time.sleep(0.1)
            assert f"pid {export.pid}" in _refused(data, backup)
            exported = out.read()
            stderr = export.communicate(timeout=60)[1]
        finally:
            if export.poll() is None:
                export.kill()
                export.wait(30)
    assert export.returncode == 0 and b'"stream_id":"tenant-acme"' in exported, stderr
    assert "OK" in csm(data, "restore", "--force", str(backup)).stdout  # once it has ended, the restore goes ahead
