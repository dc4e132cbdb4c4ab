"""ACME against a multi-worker `csm serve` over TLS, as `make run` starts it: nonces issued by one HTTP worker are
accepted once by any other, and certbot obtains a certificate whose challenge a worker started and the primary's
validator checked."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time

import pytest
from acme_tls import server_tls
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from domain import jose
from test_cli_serve import CSM, csm, env, free_port

httpx = pytest.importorskip("httpx")
CERTBOT = shutil.which("certbot")


def _signed(key: ec.EllipticCurvePrivateKey, url: str, nonce: str) -> bytes:
    numbers = key.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "x": jose.b64url_encode(numbers.x.to_bytes(32, "big")),
           "y": jose.b64url_encode(numbers.y.to_bytes(32, "big"))}
    head = jose.b64url_encode(json.dumps({"alg": "ES256", "nonce": nonce, "url": url, "jwk": jwk}).encode())
    payload = jose.b64url_encode(b"{}")
    r, s = decode_dss_signature(key.sign(f"{head}.{payload}".encode(), ec.ECDSA(hashes.SHA256())))
    signature = jose.b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    return json.dumps({"protected": head, "payload": payload, "signature": signature}).encode()


@pytest.mark.slow
def test_nonces_cross_workers_and_certbot_gets_a_certificate(tmp_path):
    tls_ca, cert, key_file = server_tls(tmp_path)
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 node1.workers.test\n")
    data, port, http01 = tmp_path / "data", free_port(), free_port()
    server_env = {**env(), "CSM_WORKERS": "2", "CSM_RATE_LIMIT_PER_ADDRESS": "", "CSM_TLS_CERT_FILE": str(cert),
                  "CSM_TLS_KEY_FILE": str(key_file), "CSM_ACME_HTTP01_PORT": str(http01),
                  "CSM_ACME_VALIDATION_NETWORKS": "127.0.0.0/8", "CSM_ACME_HOSTS_FILE": str(hosts)}
    server = subprocess.Popen([*CSM, "--data-dir", str(data), "serve", "--port", str(port)], env=server_env,
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"https://127.0.0.1:{port}"
    verify = ssl.create_default_context(cafile=str(tls_ca))
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, server.communicate()[1]
            try:
                if httpx.get(f"{base}/health/ready", verify=verify, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        token = csm(data, "admin", "create-token", "--name", "acme", "--role", "platform-admin").stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}

        def post(path: str, body: dict) -> dict:
            with httpx.Client(base_url=base, headers=headers, verify=verify, timeout=30) as client:
                response = client.post(path, json=body)
            assert response.status_code == 201, response.text
            return response.json()

        post("/v1/tenants", {"tenant_id": "fleet", "name": "Fleet"})
        root = post("/v1/cas", {"kind": "root", "tenant_id": "fleet", "name": "Root", "algorithm": "ecdsa-p384",
                                "subject": {"common_name": "fleet root"}})["ca_id"]
        issuing = post("/v1/cas", {"kind": "intermediate", "tenant_id": "fleet", "parent_id": root,
                                   "name": "Issuing", "algorithm": "ecdsa-p256",
                                   "subject": {"common_name": "fleet issuing"}})["ca_id"]
        eab = post("/v1/tenants/fleet/acme/eab-keys", {"ca_id": issuing})
        directory = eab["directory"]
        new_account = directory.replace("/directory", "/new-account")
        account_key = ec.generate_private_key(ec.SECP256R1())
        for _ in range(12):  # each request on a new connection: the kernel spreads them over both workers
            nonce = httpx.head(directory.replace("/directory", "/new-nonce"), verify=verify).headers["Replay-Nonce"]
            body = _signed(account_key, new_account, nonce)
            kinds = []
            for _attempt in range(2):
                answer = httpx.post(new_account, content=body, verify=verify,
                                    headers={"Content-Type": "application/jose+json"})
                kinds.append(answer.json()["type"].rsplit(":", 1)[-1])
            assert kinds == ["externalAccountRequired", "badNonce"], kinds  # accepted once, then a replay

        if CERTBOT is None:
            pytest.skip("certbot is not installed (Debian package certbot): nonces checked, issuance not")
        config = tmp_path / "certbot"
        run = subprocess.run([CERTBOT, "certonly", "--config-dir", str(config), "--work-dir", str(config / "w"),
                              "--logs-dir", str(config / "l"), "--server", directory, "--non-interactive",
                              "--standalone", "--http-01-port", str(http01), "--http-01-address", "127.0.0.1",
                              "--agree-tos", "--register-unsafely-without-email", "--eab-kid", eab["key_id"],
                              f"--eab-hmac-key={eab['hmac_key']}", "-d", "node1.workers.test", "--cert-name", "n1"],
                             env={**os.environ, "REQUESTS_CA_BUNDLE": str(tls_ca)}, capture_output=True, text=True,
                             timeout=180)
        assert run.returncode == 0, run.stdout + run.stderr
        assert (config / "live" / "n1" / "fullchain.pem").read_text().count("BEGIN CERTIFICATE") >= 2
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
