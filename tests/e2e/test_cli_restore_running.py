"""`csm restore` refuses a data directory that a running `csm serve`, `csm projector` or backup uses."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from test_cli_serve import CSM, csm, env, free_port, stopped, wait_until_live

from infra.data_lock import exclusive

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
