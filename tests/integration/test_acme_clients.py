"""End to end with real ACME clients: Debian's certbot and lego obtain, and revoke, node certificates.

Each runs against the tenant's directory over HTTPS (the server's TLS CA given by REQUESTS_CA_BUNDLE /
LEGO_CA_CERTIFICATES), registers with an EAB key made through the API, serves http-01 itself (standalone) on the
port the server validates, or writes its dns-01 TXT record into a real DNS server by RFC 2136 (Knot DNS, the
server's resolver too), and gets a chain that ``openssl verify`` accepts against the tenant's root.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from acme_support import acme_world, free_port, run_tool, verify_chain
from cryptography import x509
from knot_fixture import KEY_NAME, knot  # noqa: F401 - knot is a fixture

CERTBOT, LEGO, OPENSSL = shutil.which("certbot"), shutil.which("lego"), shutil.which("openssl")


def _certbot_has_rfc2136() -> bool:
    """Whether certbot's own interpreter (its script's #! line) imports the dns-rfc2136 plugin."""
    if CERTBOT is None:
        return False
    interpreter = Path(CERTBOT).read_text(errors="replace").splitlines()[0].removeprefix("#!").split()
    return bool(interpreter) and subprocess.run([*interpreter, "-c", "import certbot_dns_rfc2136"],
                                                capture_output=True).returncode == 0


CERTBOT_RFC2136 = _certbot_has_rfc2136()


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
        await run_tool(CERTBOT, "certonly", *common, "--standalone", "--http-01-port", str(world.http01_port),
                   "--http-01-address", "127.0.0.1", "--agree-tos", "--register-unsafely-without-email",
                   "--eab-kid", key["key_id"], f"--eab-hmac-key={key['hmac_key']}", "-d", "node1.acme.test",
                   "--cert-name", "node1", env=env)
        live = config / "live" / "node1"
        leaf = await verify_chain(world, tmp_path, live / "fullchain.pem", "node1.acme.test")
        row = await _certificate_status(world, leaf)
        assert row["profile"] == "cassandra-node" and row["status"] == "issued"

        await run_tool(CERTBOT, "revoke", *common, "--cert-path", str(live / "cert.pem"), "--reason", "keycompromise",
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
        await run_tool(LEGO, *common, "--http", "--http.port", f"127.0.0.1:{world.http01_port}", "run",
                   "--always-deactivate-authorizations", "true", env=env)
        leaf = await verify_chain(world, tmp_path, path / "certificates" / "node2.acme.test.crt", "node2.acme.test")
        assert (await _certificate_status(world, leaf))["status"] == "issued"
        events = await world.api.runtime.store.read_all(0, 100_000)
        # lego gave up its valid authorization once it had the certificate (RFC 8555 7.5.2)
        assert [e.payload["reason"] for e in events if e.type == "acme.authorization_deactivated"] == ["client"]

        await run_tool(LEGO, *common, "revoke", env=env)
        row = await _certificate_status(world, leaf)
        assert row["status"] == "revoked", row


@pytest.mark.skipif(LEGO is None, reason="lego is not installed (Debian package lego)")
@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
async def test_lego_proves_a_name_with_tls_alpn_01(tmp_path):
    tls_port = free_port()
    async with acme_world(tmp_path, acme_tls_alpn_port=tls_port) as world:
        key = await world.eab_key(allowed_names=["node3.acme.test"], description="lego tls-alpn-01")
        path = tmp_path / "lego"
        await run_tool(LEGO, "--server", world.directory, "--path", str(path), "--email", "ops@acme.test",
                   "--accept-tos", "--eab", "--kid", key["key_id"], f"--hmac={key['hmac_key']}",
                   "--domains", "node3.acme.test", "--tls", "--tls.port", f"127.0.0.1:{tls_port}", "run",
                   env={"LEGO_CA_CERTIFICATES": str(world.tls_ca)})
        await verify_chain(world, tmp_path, path / "certificates" / "node3.acme.test.crt", "node3.acme.test")
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
        await run_tool(CERTBOT, "register", *common, "--agree-tos", "--register-unsafely-without-email",
                   "--eab-kid", key["key_id"], f"--eab-hmac-key={key['hmac_key']}", env=env)
        await run_tool(CERTBOT, "unregister", *common, env=env)
        events = await world.api.runtime.store.read_all(0, 100_000)
        [created] = [e for e in events if e.type == "acme.account_created"]
        ended = [e for e in events if e.type == "acme.account_deactivated"]
        assert [e.stream_id for e in ended] == [created.stream_id]
        assert ended[0].actor.principal == f"acme-account:{created.payload['account_id']}"


async def _wildcard_world(world) -> dict:
    """The tenant's policy allows wildcards to ACME orders; an EAB key for the names under acme.test."""
    response = await world.api.client.put(f"/v1/tenants/{world.tenant}/policy", headers=world.admin,
                                          json={"allow_wildcards": True, "allowed_dns": [".acme.test", "acme.test"]})
    assert response.status_code == 200, response.text
    await world.api.runtime.runner.wait_for(response.json()["global_position"], 10)
    return await world.eab_key(allowed_names=[".acme.test", "acme.test"], description="dns-01")


def _dns01_proofs(events) -> list[str]:
    """The challenge types of the validated challenges, in order."""
    kinds = {c["challenge_id"]: c["challenge_type"] for e in events if e.type == "acme.authorization_created"
             for c in e.payload["challenges"]}
    return [kinds[e.payload["challenge_id"]] for e in events if e.type == "acme.challenge_validated"]


@pytest.mark.skipif(LEGO is None, reason="lego is not installed (Debian package lego)")
@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
async def test_lego_obtains_a_wildcard_certificate_through_rfc2136_and_dns_01(tmp_path, knot):
    async with acme_world(tmp_path, acme_dns_resolvers=(knot.nameserver,)) as world:
        key = await _wildcard_world(world)
        path = tmp_path / "lego"
        env = {"LEGO_CA_CERTIFICATES": str(world.tls_ca), "RFC2136_NAMESERVER": knot.nameserver,
               "RFC2136_TSIG_KEY": KEY_NAME, "RFC2136_TSIG_ALGORITHM": "hmac-sha256.",
               "RFC2136_TSIG_SECRET": knot.secret, "RFC2136_POLLING_INTERVAL": "1",
               "RFC2136_PROPAGATION_TIMEOUT": "30", "RFC2136_TTL": "60",
               "RFC2136_SEQUENCE_INTERVAL": "1"}  # both names prove at one TXT name, one after the other: 60 s apart by default
        # lego finds the zone by asking --dns.resolvers (the zone's own server here); the TXT record is checked
        # there, not at the NS record's address (port 53, which the test server is not on): --dns.disable-cp
        await run_tool(LEGO, "--server", world.directory, "--path", str(path), "--email", "ops@acme.test",
                       "--accept-tos", "--eab", "--kid", key["key_id"], f"--hmac={key['hmac_key']}",
                       "--domains", "*.acme.test", "--domains", "acme.test", "--dns", "rfc2136",
                       "--dns.resolvers", knot.nameserver, "--dns.disable-cp", "run", env=env)
        leaf = await verify_chain(world, tmp_path, path / "certificates" / "_.acme.test.crt", "*.acme.test",
                                  "acme.test")
        assert (await _certificate_status(world, leaf))["status"] == "issued"
        assert _dns01_proofs(await world.api.runtime.store.read_all(0, 100_000)) == ["dns-01", "dns-01"]


@pytest.mark.skipif(CERTBOT is None, reason="certbot is not installed (Debian package certbot)")
@pytest.mark.skipif(not CERTBOT_RFC2136, reason="certbot's dns-rfc2136 plugin is not installed (Debian package "
                    "python3-certbot-dns-rfc2136)")
@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
async def test_certbot_obtains_a_wildcard_certificate_through_rfc2136_and_dns_01(tmp_path, knot):
    async with acme_world(tmp_path, acme_dns_resolvers=(knot.nameserver,)) as world:
        key = await _wildcard_world(world)
        config = tmp_path / "certbot"
        credentials = tmp_path / "rfc2136.ini"
        credentials.write_text(f"dns_rfc2136_server = 127.0.0.1\ndns_rfc2136_port = {knot.port}\n"
                               f"dns_rfc2136_name = {KEY_NAME}\ndns_rfc2136_secret = {knot.secret}\n"
                               "dns_rfc2136_algorithm = HMAC-SHA256\n")
        credentials.chmod(0o600)
        await run_tool(CERTBOT, "certonly", "--config-dir", str(config), "--work-dir", str(config / "work"),
                       "--logs-dir", str(config / "logs"), "--server", world.directory, "--non-interactive",
                       "--agree-tos", "--register-unsafely-without-email", "--eab-kid", key["key_id"],
                       f"--eab-hmac-key={key['hmac_key']}", "--dns-rfc2136", "--dns-rfc2136-credentials",
                       str(credentials), "--dns-rfc2136-propagation-seconds", "1", "-d", "*.acme.test",
                       "--cert-name", "wild", env={"REQUESTS_CA_BUNDLE": str(world.tls_ca)})
        leaf = await verify_chain(world, tmp_path, config / "live" / "wild" / "fullchain.pem", "*.acme.test")
        assert (await _certificate_status(world, leaf))["status"] == "issued"
        assert _dns01_proofs(await world.api.runtime.store.read_all(0, 100_000)) == ["dns-01"]
