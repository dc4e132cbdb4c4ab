"""ACME behind a load balancer: two `csm serve` processes on separate data directories share one Redis
(CSM_REDIS_URL, CSM_JOBS=redis), and a nonce either server issued is accepted once by the other, then refused as a
replay (badNonce) by both. One server runs HTTP workers beside its primary, the other a single process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from test_acme_workers import _signed
from test_cli_serve import CSM, csm, env, free_port, stopped, wait_until_live

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from redis_fixture import redis_url  # noqa: E402,F401

httpx = pytest.importorskip("httpx")
pytest.importorskip("dramatiq", reason="dramatiq is not installed (the 'distributed' extra)")
pytestmark = pytest.mark.slow
BALANCER = "http://acme.lb.test"  # the one URL clients know: both servers sign and check their URLs under it


def start(data: Path, port: int, workers: str, redis: str) -> subprocess.Popen:
    server_env = {**env(), "CSM_WORKERS": workers, "CSM_REDIS_URL": redis, "CSM_JOBS": "redis",
                  "CSM_ACME_BASE_URL": BALANCER, "CSM_RATE_LIMIT_PER_ADDRESS": ""}
    return subprocess.Popen([*CSM, "--data-dir", str(data), "serve", "--port", str(port)], env=server_env,
                            cwd=data.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def add_tenant(data: Path, base: str) -> None:
    """The same tenant on both servers, as one deployment would have it."""
    token = csm(data, "admin", "create-token", "--name", "ops", "--role", "platform-admin").stdout.strip()
    created = httpx.post(f"{base}/v1/tenants", json={"tenant_id": "fleet", "name": "Fleet"}, timeout=30,
                         headers={"Authorization": f"Bearer {token}"})
    assert created.status_code == 201, created.text


def kind(answer: httpx.Response) -> str:
    return answer.json()["type"].rsplit(":", 1)[-1]


def test_a_nonce_from_one_server_is_accepted_once_by_another(tmp_path, redis_url):  # noqa: F811
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    data_a, data_b = tmp_path / "a" / "data", tmp_path / "b" / "data"
    port_a, port_b = free_port(), free_port()
    server_a = start(data_a, port_a, "2", redis_url)
    server_b = start(data_b, port_b, "1", redis_url)
    base_a, base_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    try:
        wait_until_live(server_a, base_a, 120)
        wait_until_live(server_b, base_b, 120)
        add_tenant(data_a, base_a)
        add_tenant(data_b, base_b)
        new_account = f"{BALANCER}/acme/fleet/new-account"
        key = ec.generate_private_key(ec.SECP256R1())
        seen = []
        for issuer, other in ((base_a, base_b), (base_b, base_a)) * 3:
            issued = httpx.head(f"{issuer}/acme/fleet/new-nonce", timeout=10)
            assert issued.status_code == 200 and issued.headers["Link"].startswith(f"<{BALANCER}/acme/fleet/")
            seen.append(issued.headers["Replay-Nonce"])
            body = _signed(key, new_account, seen[-1])
            kinds = [kind(httpx.post(server + "/acme/fleet/new-account", content=body, timeout=10,
                                     headers={"Content-Type": "application/jose+json"}))
                     for server in (other, other, issuer)]
            # past the nonce check on the other server (no EAB: refused for that), then a replay on either
            assert kinds == ["externalAccountRequired", "badNonce", "badNonce"], (issuer, kinds)
        # the nonce of a refusal (badNonce included) is as good on the other server
        refusal = httpx.post(f"{base_a}/acme/fleet/new-account", content=body, timeout=10,
                             headers={"Content-Type": "application/jose+json"})
        assert kind(refusal) == "badNonce"
        retried = httpx.post(f"{base_b}/acme/fleet/new-account", timeout=10,
                             content=_signed(key, new_account, refusal.headers["Replay-Nonce"]),
                             headers={"Content-Type": "application/jose+json"})
        assert kind(retried) == "externalAccountRequired"
    finally:
        errors = [stopped(server) for server in (server_a, server_b)]
    assert not any(nonce in text for nonce in seen for text in errors), "a nonce was logged"
