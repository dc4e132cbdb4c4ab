"""kill -9 in the middle of a burst of appends: every acknowledged append survives, and verifies.

The real server (`csm serve`) runs as a subprocess, checkpointing on a short timer. Many
concurrent HTTP clients create and rename tenants; every 2xx answer is an acknowledged append.
Mid-burst the server gets SIGKILL. The data directory is then reopened: every acknowledged
append must be there at the position it was acknowledged with, the audit trail must verify
(verifier and `csm audit verify`), and a restarted server must carry on from where it stopped.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from infra.bootstrap import verify_store
from infra.config import Settings
from infra.eventstore.sqlite import SQLiteEventStore

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("api.server") is None or importlib.util.find_spec("cli.main") is None,
                       reason="api.server or cli.main is not importable: there is no server to crash"),
]

CSM = Path(sys.executable).parent / "csm"
ACKS_BEFORE_KILL = 300
CLIENTS = 16


def env(workers: int = 1) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CSM_")}
    return {**clean, "CSM_CHECKPOINT_INTERVAL": "0.1", "CSM_POLL_INTERVAL": "0.05", "CSM_WORKERS": str(workers)}


def csm(data_dir: Path, *args: str) -> str:
    run = subprocess.run([str(CSM), "--data-dir", str(data_dir), *args], capture_output=True, text=True,
                         timeout=120, env=env())
    assert run.returncode == 0, f"csm {' '.join(args)}: exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    return run.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`csm serve` on a free loopback port, its output in a log file."""

    def __init__(self, data_dir: Path, log: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.workers = workers
        self.pid_file = data_dir / "run" / "primary.pid"
        with log.open("a") as output:
            self.process = subprocess.Popen([str(CSM), "--data-dir", str(data_dir), "serve", "--port", str(self.port)],
                                            env=env(workers), stdout=output, stderr=subprocess.STDOUT)

    def writer_pid(self) -> int:
        """The process that owns the store's writer: the server itself, or a multi-worker server's primary."""
        return int(self.pid_file.read_text()) if self.workers > 1 else self.process.pid

    async def ready(self, client: httpx.AsyncClient, headers: dict, timeout: float = 60) -> None:
        """Wait until the server answers an authenticated request (the token's read model caught up)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"the server exited: {self.log.read_text()[-3000:]}"
            try:
                response = await client.get("/v1/tenants", headers=headers, params={"limit": 1})
                if response.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the server did not become ready: {self.log.read_text()[-3000:]}"
            await asyncio.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


async def burst_then_kill(server: Server, headers: dict) -> list[dict]:
    """Create and rename tenants from many clients; SIGKILL the server once enough appends are acknowledged."""
    acked: list[dict] = []
    unexpected: list[str] = []
    killed = asyncio.Event()

    async def client_loop(client: httpx.AsyncClient, c: int) -> None:
        for i in range(10**9):
            tenant_id = f"c{c}-t{i}"
            for method, path, body, status in (("POST", "/v1/tenants", {"tenant_id": tenant_id, "name": "Before"}, 201),
                                               ("POST", f"/v1/tenants/{tenant_id}/rename", {"name": "After"}, 200)):
                try:
                    response = await client.request(method, path, json=body, headers=headers)
                except httpx.TransportError:
                    assert killed.is_set(), "the connection failed before the server was killed"
                    return
                if killed.is_set() and response.status_code == 503 and "store_unavailable" in response.text:
                    return  # a worker outlived the writer: a refusal, not an acknowledgement
                if response.status_code != status:
                    unexpected.append(f"{path}: {response.status_code} {response.text}")
                    return
                acked.append(response.json())
                if len(acked) >= ACKS_BEFORE_KILL and not killed.is_set():
                    killed.set()
                    os.kill(writer, signal.SIGKILL)  # other requests are in flight right now

    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30, limits=limits) as client:
        await server.ready(client, headers)
        writer = server.writer_pid()
        await asyncio.wait_for(asyncio.gather(*(client_loop(client, c) for c in range(CLIENTS))), 120)
    assert not unexpected, unexpected[:5]
    if server.workers > 1:
        server.process.kill()  # the supervisor too (it would restart the primary); its processes follow it
    assert server.process.wait(10) == -signal.SIGKILL
    return acked


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "primary-and-2-workers"])
async def test_every_acknowledged_append_survives_kill_9(tmp_path, workers):
    """With workers, SIGKILL hits the primary (the writer) while the workers have appends in flight."""
    settings = Settings(data_dir=tmp_path / "data")
    csm(settings.data_dir, "init")
    headers = {"Authorization": f"Bearer {csm(settings.data_dir, 'admin', 'create-token', '--name', 'crash').strip()}"}

    server = Server(settings.data_dir, tmp_path / "server.log", workers)
    try:
        acked = await burst_then_kill(server, headers)
    finally:
        server.stop(signal.SIGKILL)
    assert len(acked) >= ACKS_BEFORE_KILL

    store = SQLiteEventStore(settings.events_db)  # reopened after the crash
    recorded = {e.global_position: e for e in store.read_positions_sync([a["global_position"] for a in acked])}
    for ack in acked:
        event = recorded.get(ack["global_position"])
        assert event is not None, f"acknowledged append lost: {ack}"
        assert (event.stream_id, event.version) == (ack["stream_id"], ack["version"]), ack
    assert len({a["global_position"] for a in acked}) == len(acked)

    report = verify_store(settings, store)
    assert report.ok, report.problems
    assert report.checkpoints >= 1, "the server's checkpoint timer never ran"
    assert report.last_position >= max(a["global_position"] for a in acked)
    assert "OK" in csm(settings.data_dir, "audit", "verify", "--quiet")

    # a restarted server carries on from where the killed one stopped, and seals everything on a clean stop
    server = Server(settings.data_dir, tmp_path / "server.log", workers)
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            await server.ready(client, headers)
            response = await client.post("/v1/tenants", json={"tenant_id": "after-crash", "name": "After"},
                                         headers=headers)
            assert response.status_code == 201, response.text
            assert response.json()["global_position"] > report.last_position
    finally:
        # uvicorn re-raises SIGTERM after its graceful shutdown, so -15 is a clean stop too
        assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM), server.log.read_text()[-3000:]
    assert "Application shutdown complete" in server.log.read_text()
    final = verify_store(settings, SQLiteEventStore(settings.events_db))
    assert final.ok and final.unsealed_events == 0, final.problems
