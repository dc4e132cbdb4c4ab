"""`csm serve`, with the CLI working on the same data directory while the server runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")

CONSOLE_SCRIPT = Path(sys.executable).parent / "csm"
CSM = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "cli.main"]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CSM_")}


def csm(data_dir: Path, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    run = subprocess.run([*CSM, "--data-dir", str(data_dir), *args], capture_output=True, text=True, timeout=120,
                         env=env(), cwd=data_dir.parent)
    assert run.returncode == expect, f"exit {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    return run


def wait_until_live(server: subprocess.Popen, base: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert server.poll() is None, server.communicate()[1]
        try:
            if httpx.get(f"{base}/health/live", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not come up"
        time.sleep(0.2)


def stopped(server: subprocess.Popen, signum: int = signal.SIGTERM) -> str:
    """Signal the server, wait for it to exit (killed after 60 s, and the test fails), and return its stderr."""
    server.send_signal(signum)
    try:
        return server.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        server.kill()
        raise


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize(("stop", "workers"), [(signal.SIGINT, "auto"), (signal.SIGTERM, "auto"), (signal.SIGTERM, "1")],
                         ids=["SIGINT", "SIGTERM", "SIGTERM-one-process"])
def test_serve_initialises_serves_shares_the_store_with_the_cli_and_stops_cleanly(tmp_path, stop, workers):
    pytest.importorskip("api.server", reason="api.server is not importable: csm serve has nothing to run")
    data = tmp_path / "data"
    port = free_port()
    server = subprocess.Popen([*CSM, "--data-dir", str(data), "serve", "--port", str(port)],
                              env={**env(), "CSM_WORKERS": workers},
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_live(server, base)
        assert (data / "keys" / "audit-keys.pub.json").exists()

        token = csm(data, "admin", "create-token", "--name", "e2e").stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        created = httpx.post(f"{base}/v1/tenants", json={"tenant_id": "acme", "name": "Acme"}, headers=headers,
                             timeout=10)
        assert created.status_code == 201, created.text
        csm(data, "tenant", "create", "globex", "--name", "Globex")  # the CLI writes (and projects) beside it
        assert [t["tenant_id"] for t in json.loads(csm(data, "tenant", "list", "--json").stdout)] == \
            ["acme", "globex"]
        position = json.loads(csm(data, "events", "export").stdout.splitlines()[-1])["global_position"]
        seen = httpx.get(f"{base}/v1/tenants/globex", params={"min_position": position}, headers=headers,
                         timeout=10)
        assert seen.status_code == 200, seen.text
    finally:
        stderr = stopped(server, stop)
    assert server.returncode == 0 and stderr.rstrip().endswith("stopped"), stderr  # a clean stop is a success
    assert "Traceback" not in stderr, stderr
    report = json.loads(csm(data, "audit", "verify", "--json").stdout)
    assert report["ok"] and report["unsealed_events"] == 0  # the shutdown sealed everything


def test_a_server_sees_what_the_cli_wrote_and_projected(tmp_path):
    """The CLI catches the shared read models up after a write; a running server's read-your-writes
    (``min_position``) and token checks must then see it, though its own tail applied nothing."""
    import asyncio

    from infra.bootstrap import initialise
    from infra.config import Settings

    data = tmp_path / "data"

    async def go() -> None:
        # a server's runtime, in-process; no timer checkpoints, whose appends would wake its tail anyway
        runtime = initialise(Settings(data_dir=data, poll_interval=0.05, checkpoint_interval=3600))
        try:
            csm(data, "tenant", "create", "acme", "--name", "Acme")
            position = json.loads(csm(data, "tenant", "show", "acme", "--json").stdout)["position"]
            runtime.start_background()
            await asyncio.sleep(0.05)  # let the tail start, as it has long since in a serving process
            assert await runtime.runner.wait_for(position, 3.0), (runtime.runner.position, position)
        finally:
            await runtime.stop()

    asyncio.run(go())


@pytest.mark.slow
@pytest.mark.parametrize(("host", "workers"), [("127.0.0.1", "auto"), ("0.0.0.0", "1")],
                         ids=["supervisor", "wildcard-one-process"])
def test_port_0_serves_on_the_port_chosen_and_certificates_name_that_port(tmp_path, host, workers):
    pytest.importorskip("api.server", reason="api.server is not importable: csm serve has nothing to run")
    from cryptography import x509

    data = tmp_path / "data"
    server = subprocess.Popen([*CSM, "--data-dir", str(data), "serve", "--host", host, "--port", "0"],
                              env={**env(), "CSM_WORKERS": workers},
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = server.stderr.readline()
        assert first.startswith(f"serving http://{host}:"), first
        port = int(first.split()[1].rsplit(":", 1)[1])
        assert port > 0
        warning = server.stderr.readline()
        if host == "0.0.0.0":  # no CSM_PUBLIC_URL: the URLs certificates will carry name no reachable address
            assert warning.startswith(f"warning: certificates issued now name http://0.0.0.0:{port} "), warning
        base = f"http://127.0.0.1:{port}"
        wait_until_live(server, base)
        token = csm(data, "admin", "create-token", "--name", "e2e").stdout.strip().splitlines()[-1]
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.post(f"{base}/v1/tenants", json={"tenant_id": "acme", "name": "Acme"}, headers=headers,
                          timeout=10).status_code == 201
        root = httpx.post(f"{base}/v1/cas", json={"kind": "root", "tenant_id": "acme", "name": "Root",
                                                  "subject": {"common_name": "Acme Root"},
                                                  "algorithm": "ecdsa-p256"}, headers=headers, timeout=30)
        assert root.status_code == 201, root.text
        issued = httpx.post(f"{base}/v1/certificates", json={
            "tenant_id": "acme", "ca_id": root.json()["ca_id"], "profile": "cassandra-node",
            "subject": {"common_name": "node1.acme.internal"}, "sans": {"dns": ["node1.acme.internal"]},
            "algorithm": "ecdsa-p256"}, headers=headers, timeout=30)
        assert issued.status_code == 201, issued.text
        row = httpx.get(f"{base}{issued.headers['location']}", headers=headers, timeout=10)
        assert row.status_code == 200, row.text
        leaf = x509.load_pem_x509_certificate(row.json()["certificate_pem"].encode())
        crl = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        urls = [name.value for point in crl for name in point.full_name]
        assert urls and all(url.startswith(f"http://{host}:{port}/") for url in urls), urls
        # the CLI beside it issues certificates naming the same URLs (the server recorded its base URL)
        by_cli = json.loads(csm(data, "cert", "issue", "--tenant", "acme", "--ca", root.json()["ca_id"], "--cn",
                                "node2.acme.internal", "--dns", "node2.acme.internal", "--json").stdout)
        pem = csm(data, "cert", "show", by_cli["certificate_id"], "--pem").stdout
        crl = x509.load_pem_x509_certificate(pem.encode()).extensions.get_extension_for_class(
            x509.CRLDistributionPoints).value
        assert [name.value for point in crl for name in point.full_name] == urls
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    assert server.returncode == 0


@pytest.mark.slow
def test_a_multi_worker_server_serves_while_a_changed_read_model_rebuilds(tmp_path):
    """The primary rebuilds it in the background; the HTTP workers refuse reads of it until it is swapped in,
    then each of them answers (they learn of the swap from the checkpoints, not from the primary)."""
    pytest.importorskip("api.server", reason="api.server is not importable: csm serve has nothing to run")
    import fcntl
    import sqlite3
    from contextlib import closing

    from projections.certificates import CertificatesProjector
    from projections.views_db import rebuild_lock_path

    data = tmp_path / "data"
    csm(data, "init")
    token = csm(data, "admin", "create-token", "--name", "e2e").stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    views = data / "views.db"
    with closing(sqlite3.connect(views)) as conn:  # as if the certificates projector's version had changed
        conn.execute("UPDATE projection_checkpoints SET version = ? WHERE name = 'certificates'",
                     (CertificatesProjector.version - 1,))
        conn.commit()
    lock = open(rebuild_lock_path(views), "a")  # noqa: SIM115 (released by closing it)
    fcntl.flock(lock, fcntl.LOCK_EX)  # the primary's rebuild waits for it
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([*CSM, "--data-dir", str(data), "serve", "--port", str(port)],
                              env={**env(), "CSM_WORKERS": "2"},
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_live(server, base)
        assert httpx.get(f"{base}/health/ready", timeout=10).json()["rebuilding"] == ["certificates"]
        created = httpx.post(f"{base}/v1/tenants", json={"tenant_id": "acme", "name": "Acme"}, headers=headers,
                             timeout=10)
        assert created.status_code == 201, created.text
        for _ in range(6):  # new connections, spread over both workers
            refused = httpx.get(f"{base}/v1/certificates", headers=headers, timeout=10)
            assert refused.status_code == 503 and refused.json()["type"].endswith("/projection-rebuilding")
        lock.close()
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/health/ready", timeout=10).json()["rebuilding"]:
            assert time.monotonic() < deadline, "the rebuild did not finish"
            time.sleep(0.1)
        for _ in range(6):
            listed = httpx.get(f"{base}/v1/certificates", headers=headers, timeout=10)
            assert listed.status_code == 200, listed.text
    finally:
        lock.close()
        stderr = stopped(server)
    assert server.returncode == 0 and "Traceback" not in stderr, stderr
    with closing(sqlite3.connect(views)) as conn:
        assert conn.execute("SELECT version FROM projection_checkpoints WHERE name = 'certificates'"
                            ).fetchone()[0] == CertificatesProjector.version


@pytest.mark.slow
def test_a_burst_of_issuances_across_http_workers_stops_exactly_at_the_quota(tmp_path):
    """Two HTTP workers issue for one tenant at once: together they stop at its max_certificates, not past it."""
    pytest.importorskip("api.server", reason="api.server is not importable: csm serve has nothing to run")
    import asyncio

    data = tmp_path / "data"
    csm(data, "init")
    token = csm(data, "admin", "create-token", "--name", "e2e").stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([*CSM, "--data-dir", str(data), "serve", "--port", str(port)],
                              env={**env(), "CSM_WORKERS": "2", "CSM_RATE_LIMIT_PER_PRINCIPAL": "",
                                   "CSM_RATE_LIMIT_PER_ADDRESS": ""},
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    limit, burst = 12, 80
    try:
        wait_until_live(server, base)
        assert httpx.post(f"{base}/v1/tenants", json={"tenant_id": "acme", "name": "Acme",
                                                      "quotas": {"max_certificates": limit}},
                          headers=headers, timeout=10).status_code == 201
        root = httpx.post(f"{base}/v1/cas", json={"kind": "root", "tenant_id": "acme", "name": "Root",
                                                  "subject": {"common_name": "Acme Root"},
                                                  "algorithm": "ecdsa-p256"}, headers=headers, timeout=30)
        assert root.status_code == 201, root.text

        async def burst_of(n: int) -> list[int]:
            limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)  # a connection each: both workers
            async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60, limits=limits) as client:
                async def one(i: int) -> int:
                    response = await client.post("/v1/certificates", json={
                        "tenant_id": "acme", "ca_id": root.json()["ca_id"], "algorithm": "ecdsa-p256",
                        "subject": {"common_name": f"n{i}.acme.internal"}, "sans": {"dns": [f"n{i}.acme.internal"]}})
                    assert response.status_code in (201, 409), response.text
                    return response.status_code
                return await asyncio.gather(*(one(i) for i in range(n)))

        statuses = asyncio.run(burst_of(burst))
        assert statuses.count(201) == limit, statuses
        usage = httpx.get(f"{base}/v1/tenants/acme/usage", headers=headers, timeout=10).json()
        assert usage["usage"]["certificates"] == limit, usage
    finally:
        stderr = stopped(server)
    assert server.returncode == 0 and "Traceback" not in stderr, stderr


@pytest.mark.slow
def test_a_scrape_token_guards_metrics_in_every_worker_and_a_weak_one_stops_serve(tmp_path):
    pytest.importorskip("api.server", reason="api.server is not importable: csm serve has nothing to run")
    data, token_file = tmp_path / "data", tmp_path / "scrape-token"
    token_file.write_text("short\n")
    weak = subprocess.run([*CSM, "--data-dir", str(data), "serve", "--port", "0"], capture_output=True, text=True,
                          timeout=120, env={**env(), "CSM_METRICS_TOKEN_FILE": str(token_file)}, cwd=tmp_path)
    assert weak.returncode != 0 and "CSM_METRICS_TOKEN_FILE" in weak.stderr, weak.stderr
    token = "f" * 64
    token_file.write_text(token + "\n")
    port = free_port()
    server = subprocess.Popen([*CSM, "--data-dir", str(data), "serve", "--port", str(port), "--workers", "2"],
                              env={**env(), "CSM_METRICS_TOKEN_FILE": str(token_file)},
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_live(server, base)
        for _ in range(4):  # new connections: the workers take turns
            assert httpx.get(f"{base}/metrics", timeout=10).status_code == 401
            scraped = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert scraped.status_code == 200 and "csm_http_requests_total" in scraped.text
    finally:
        stderr = stopped(server)
    assert "Traceback" not in stderr, stderr
