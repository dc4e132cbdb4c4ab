"""End to end with real ACME clients: Debian's certbot and lego obtain, and revoke, node certificates.

Each runs against the tenant's directory over HTTPS (the server's TLS CA given by REQUESTS_CA_BUNDLE /
LEGO_CA_CERTIFICATES), registers with an EAB key made through the API, serves http-01 itself (standalone) on the
port the server validates, and gets a chain that ``openssl verify`` accepts against the tenant's root.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from acme_support import acme_world, free_port
from cryptography import x509

CERTBOT, LEGO, OPENSSL = shutil.which("certbot"), shutil.which("lego"), shutil.which("openssl")


async def _run(*argv: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    result = await asyncio.to_thread(subprocess.run, list(argv), env={**os.environ, **env}, capture_output=True,
                                     text=True, timeout=timeout)
    assert result.returncode == 0, f"{argv[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


async def _verify(world, tmp_path: Path, fullchain: Path, name: str) -> x509.Certificate:
    """openssl verify against the tenant's root, with the chain's intermediates as untrusted."""
    root = tmp_path / "root.pem"
    root.write_text(world.root_pem)
    pems = fullchain.read_text()
    leaf_pem = pems[:pems.index("-----END CERTIFICATE-----") + 25] + "\n"
    (tmp_path / "leaf.pem").write_text(leaf_pem)
    await _run(OPENSSL, "verify", "-CAfile", str(root), "-untrusted", str(fullchain), "-purpose", "sslserver",
               str(tmp_path / "leaf.pem"), env={})
    leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [name]
    return leaf


async def _certificate_status(world, leaf: x509.Certificate) -> str:
    certificate_id = f"{leaf.serial_number:040x}"
    response = await world.api.client.get(f"/v1/certificates/{certificate_id}", headers=world.admin,
                                          params={"min_position": await world.api.runtime.store.head_position()})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.skipif(CERTBOT is None, reason="certbot is not installed (Debian package certbot)")
@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
async def test_certbot_obtains_verifies_and_revokes_a_node_certificate(tmp_path):
    async with acme_world(tmp_path) as world:
        key = await world.eab_key(allowed_names=[".acme.test"], description="certbot")
        config = tmp_path / "certbot"
        common = ["--config-dir", str(config), "--work-dir", str(config / "work"), "--logs-dir", str(config / "logs"),
                  "--server", world.directory, "--non-interactive"]
        env = {"REQUESTS_CA_BUNDLE": str(world.tls_ca)}
        await _run(CERTBOT, "certonly", *common, "--standalone", "--http-01-port", str(world.http01_port),
                   "--http-01-address", "127.0.0.1", "--agree-tos", "--register-unsafely-without-email",
                   "--eab-kid", key["key_id"], f"--eab-hmac-key={key['hmac_key']}", "-d", "node1.acme.test",
                   "--cert-name", "node1", env=env)
        live = config / "live" / "node1"
        leaf = await _verify(world, tmp_path, live / "fullchain.pem", "node1.acme.test")
        row = await _certificate_status(world, leaf)
        assert row["profile"] == "cassandra-node" and row["status"] == "issued"

        await _run(CERTBOT, "revoke", *common, "--cert-path", str(live / "cert.pem"), "--reason", "keycompromise",
                   "--no-delete-after-revoke", env=env)
        row = await _certificate_status(world, leaf)
        assert row["status"] == "revoked" and row["revocation_reason"] == "key_compromise", row


@pytest.mark.skipif(LEGO is None, reason="lego is not installed (Debian package lego)")
@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
async def test_lego_obtains_verifies_and_revokes_a_node_certificate(tmp_path):
    async with acme_world(tmp_path) as world:
        key = await world.eab_key(allowed_names=["node2.acme.test"], description="lego")
        path = tmp_path / "lego"
        common = ["--server", world.directory, "--path", str(path), "--email", "ops@acme.test", "--accept-tos",
                  "--eab", "--kid", key["key_id"], f"--hmac={key['hmac_key']}", "--domains", "node2.acme.test"]
        env = {"LEGO_CA_CERTIFICATES": str(world.tls_ca)}
        await _run(LEGO, *common, "--http", "--http.port", f"127.0.0.1:{world.http01_port}", "run",
                   "--always-deactivate-authorizations", "true", env=env)
        leaf = await _verify(world, tmp_path, path / "certificates" / "node2.acme.test.crt", "node2.acme.test")
        assert (await _certificate_status(world, leaf))["status"] == "issued"
        events = await world.api.runtime.store.read_all(0, 100_000)
        # lego gave up its valid authorization once it had the certificate (RFC 8555 7.5.2)
        assert [e.payload["reason"] for e in events if e.type == "acme.authorization_deactivated"] == ["client"]

        await _run(LEGO, *common, "revoke", env=env)
        row = await _certificate_status(world, leaf)
        assert row["status"] == "revoked", row


@pytest.mark.skipif(LEGO is None, reason="lego is not installed (Debian package lego)")
@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
async def test_lego_proves_a_name_with_tls_alpn_01(tmp_path):
    tls_port = free_port()
    async with acme_world(tmp_path, acme_tls_alpn_port=tls_port) as world:
        key = await world.eab_key(allowed_names=["node3.acme.test"], description="lego tls-alpn-01")
        path = tmp_path / "lego"
        await _run(LEGO, "--server", world.directory, "--path", str(path), "--email", "ops@acme.test",
                   "--accept-tos", "--eab", "--kid", key["key_id"], f"--hmac={key['hmac_key']}",
                   "--domains", "node3.acme.test", "--tls", "--tls.port", f"127.0.0.1:{tls_port}", "run",
                   env={"LEGO_CA_CERTIFICATES": str(world.tls_ca)})
        await _verify(world, tmp_path, path / "certificates" / "node3.acme.test.crt", "node3.acme.test")
        started = [e for e in await world.api.runtime.store.read_all(0, 100_000) if e.type == "acme.challenge_started"]
        authz = [e for e in await world.api.runtime.store.read_all(0, 100_000)
                 if e.type == "acme.authorization_created" and e.stream_id == started[-1].stream_id][0]
        kinds = {c["challenge_id"]: c["challenge_type"] for c in authz.payload["challenges"]}
        assert kinds[started[-1].payload["challenge_id"]] == "tls-alpn-01"


@pytest.mark.skipif(CERTBOT is None, reason="certbot is not installed (Debian package certbot)")
async def test_certbot_unregister_deactivates_the_account(tmp_path):
    async with acme_world(tmp_path) as world:
        key = await world.eab_key(description="certbot unregister")
        config = tmp_path / "certbot"
        common = ["--config-dir", str(config), "--work-dir", str(config / "work"), "--logs-dir", str(config / "logs"),
                  "--server", world.directory, "--non-interactive"]
        env = {"REQUESTS_CA_BUNDLE": str(world.tls_ca)}
        await _run(CERTBOT, "register", *common, "--agree-tos", "--register-unsafely-without-email",
                   "--eab-kid", key["key_id"], f"--eab-hmac-key={key['hmac_key']}", env=env)
        await _run(CERTBOT, "unregister", *common, env=env)
        events = await world.api.runtime.store.read_all(0, 100_000)
        [created] = [e for e in events if e.type == "acme.account_created"]
        ended = [e for e in events if e.type == "acme.account_deactivated"]
        assert [e.stream_id for e in ended] == [created.stream_id]
        assert ended[0].actor.principal == f"acme-account:{created.payload['account_id']}"
