"""A multi-worker `csm serve` (api/workers.py): a primary and two HTTP workers behind one port, as `make run`
starts it on a machine with two CPUs or more."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from test_cli_serve import CSM, csm, env, free_port

httpx = pytest.importorskip("httpx")


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def up(base: str, server: subprocess.Popen) -> bool:
    assert server.poll() is None, server.communicate()[1]
    try:
        return httpx.get(f"{base}/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
def test_two_workers_share_one_writer_one_log_and_one_set_of_rate_limits(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    server_env = {**env(), "CSM_WORKERS": "2", "CSM_RATE_LIMIT_PER_PRINCIPAL": "1000/day",
                  "CSM_RATE_LIMIT_PER_ADDRESS": "", "CSM_CHECKPOINT_INTERVAL": "0.5"}
    server = subprocess.Popen([*CSM, "--data-dir", str(data), "serve", "--port", str(port)], env=server_env,
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    issued: list[str] = []
    try:
        wait_for(lambda: up(base, server), 90, "the server")
        processes = children(server.pid)
        assert len(processes) >= 3, processes  # the primary and two workers (and multiprocessing's tracker)

        token = csm(data, "admin", "create-token", "--name", "e2e", "--role", "platform-admin").stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}

        def post(path: str, body: dict) -> dict:
            with httpx.Client(base_url=base, headers=headers, timeout=30) as client:  # a new connection each time
                response = client.post(path, json=body)
            assert response.status_code == 201, response.text
            return response.json()

        post("/v1/tenants", {"tenant_id": "acme", "name": "Acme"})
        root = post("/v1/cas", {"kind": "root", "tenant_id": "acme", "name": "Root", "algorithm": "ecdsa-p384",
                                "subject": {"common_name": "acme root"}})["ca_id"]
        ca = post("/v1/cas", {"kind": "intermediate", "tenant_id": "acme", "parent_id": root, "name": "Issuing",
                              "algorithm": "ecdsa-p256", "subject": {"common_name": "acme issuing"}})["ca_id"]

        def issue_and_read(n: int) -> str:
            certificate = post("/v1/certificates", {
                "tenant_id": "acme", "ca_id": ca, "profile": "cassandra-node", "algorithm": "ecdsa-p256",
                "subject": {"common_name": f"node{n}.acme.internal"}, "sans": {"dns": [f"node{n}.acme.internal"]}})
            with httpx.Client(base_url=base, headers=headers, timeout=30) as client:  # maybe the other worker
                read = client.get(f"/v1/certificates/{certificate['certificate_id']}")
            assert read.status_code == 200, read.text  # read-your-writes across processes
            return certificate["certificate_id"]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            issued = list(pool.map(issue_and_read, range(24)))
        assert len(set(issued)) == 24

        # one set of buckets: fresh connections land on either worker, and the count goes down by one each time,
        # but for the request the bucket gives back every 86.4 s (1000/day): at most one such step in any run this
        # short (a worker of its own would repeat or jump back at every switch of worker)
        remaining, started = [], time.monotonic()
        for _ in range(12):
            with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
                response = client.get("/v1/tenants")
            assert response.status_code == 200
            remaining.append(int(response.headers["ratelimit-remaining"]))
        given_back = -(-(time.monotonic() - started) // 86.4)
        steps = [before - after for before, after in zip(remaining, remaining[1:])]
        assert set(steps) <= {0, 1} and steps.count(0) <= given_back, remaining

        # a worker that dies is replaced, and the service goes on
        workers = [pid for pid in children(server.pid) if _is_worker(pid)]
        assert len(workers) == 2, workers
        victim = workers[-1]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in children(server.pid) and len(children(server.pid)) >= len(processes),
                 30, "the worker to be replaced")
        wait_for(lambda: up(base, server), 30, "readiness after the restart")
        issued.append(issue_and_read(99))

        # a quota holds across the workers: one after another, each request sees what the other worker issued
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            quota = client.put("/v1/tenants/acme/quotas", json={"max_certificates": len(issued) + 3})
        assert quota.status_code == 200, quota.text
        statuses = []
        for n in range(100, 106):
            with httpx.Client(base_url=base, headers=headers, timeout=30) as client:  # either worker
                response = client.post("/v1/certificates", json={
                    "tenant_id": "acme", "ca_id": ca, "algorithm": "ecdsa-p256",
                    "subject": {"common_name": f"node{n}.acme.internal"}, "sans": {"dns": [f"node{n}.acme.internal"]}})
            statuses.append(response.status_code)
            if response.status_code == 201:
                issued.append(response.json()["certificate_id"])
            else:
                assert response.json()["field"] == "quotas.max_certificates", response.text
        assert statuses == [201, 201, 201, 409, 409, 409], statuses
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            _, stderr = server.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert server.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    report = json.loads(csm(data, "audit", "verify", "--json").stdout)
    assert report["ok"] and report["unsealed_events"] == 0, report  # the primary sealed at its stop
    exported = [json.loads(line) for line in csm(data, "events", "export").stdout.splitlines() if line.strip()]
    assert sorted(e["payload"]["certificate_id"] for e in exported if e["type"] == "certificate.issued") == \
        sorted(issued)
    positions = [e["global_position"] for e in exported]
    assert positions == list(range(1, len(positions) + 1))  # one gap-free log, whoever served the request


@pytest.mark.slow
def test_a_killed_supervisor_takes_its_processes_with_it(tmp_path):
    """SIGKILL gives the supervisor no chance to stop anything: the kernel tells the primary and the workers."""
    data = tmp_path / "data"
    port = free_port()
    server = subprocess.Popen([*CSM, "--data-dir", str(data), "serve", "--port", str(port), "--workers", "2"],
                              env=env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: up(f"http://127.0.0.1:{port}", server), 90, "the server")
        processes = children(server.pid)
        assert len(processes) >= 3, processes
    finally:
        server.kill()
        server.communicate(timeout=30)
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid) for pid in processes),
             60, "the primary and the workers to exit")
    report = json.loads(csm(data, "audit", "verify", "--json").stdout)
    assert report["ok"], report


def _state(pid: int) -> str:
    try:
        return next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("State:")).lower()
    except (OSError, StopIteration):
        return "zombie"


def _is_worker(pid: int) -> bool:
    """Workers hold the listening TCP socket; the primary and multiprocessing's tracker do not."""
    try:
        return "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text() and _listening_tcp(pid)
    except OSError:
        return False


def _listening_tcp(pid: int) -> bool:
    """True if the process holds the listening TCP socket (workers do; the primary does not)."""
    inodes = set()
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:] + Path("/proc/net/tcp6").read_text().splitlines()[1:]
    for line in lines:
        fields = line.split()
        if fields[3] == "0A":  # LISTEN
            inodes.add(fields[9])
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False
