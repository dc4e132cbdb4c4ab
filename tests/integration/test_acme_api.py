"""The ACME server through HTTP with a small JWS client: directory, nonces, JWS rules, EAB, orders, http-01,
finalize through the ordinary issuance, download, revokeCert, suspension, SSRF refusals and a validator restart."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from acme_support import (Client, Responder, acme_world, csr_der, http01, poll, registered, restarted,
                          started_challenge, validated_order)
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from domain import jose

ACME = "urn:ietf:params:acme:error:"


def assert_acme_problem(response, status: int, kind: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers.get("Replay-Nonce"), "every answer carries a fresh nonce"
    body = response.json()
    assert body["type"] == ACME + kind, body
    assert body["field"] and body["errors"][0]["rule"], body
    if field is not None:
        assert body["field"] == field, body
    return body


async def test_directory_nonces_and_jws_rules(tmp_path):
    async with acme_world(tmp_path) as world:
        directory = await world.api.client.get(world.directory)
        assert directory.status_code == 200 and directory.headers["Replay-Nonce"]
        body = directory.json()
        assert body["meta"] == {"externalAccountRequired": True}
        assert body["newAccount"] == f"{world.api.base_url}/acme/{world.tenant}/new-account"
        assert_acme_problem(await world.api.client.get(f"{world.api.base_url}/acme/nobody/directory"), 404,
                            "malformed", "tenant_id")
        head = await world.api.client.head(body["newNonce"])
        assert head.status_code == 200 and head.headers["Cache-Control"] == "no-store"
        assert (await world.api.client.get(body["newNonce"])).status_code == 204

        client = Client(world.api.client, world.directory)
        await client.start()
        used = client.nonce
        response = await client.post(body["newAccount"], {}, use_jwk=True)
        assert_acme_problem(response, 400, "externalAccountRequired", "externalAccountBinding")
        assert_acme_problem(await client.post(body["newAccount"], {}, use_jwk=True, nonce=used), 400, "badNonce",
                            "protected.nonce")  # the same nonce again
        assert_acme_problem(await client.post(body["newAccount"], {}, use_jwk=True, nonce="made-up"), 400,
                            "badNonce")
        assert_acme_problem(await client.post(body["newOrder"], {}, use_jwk=True), 400, "malformed",
                            "protected.jwk")  # only newAccount and revokeCert take a jwk
        assert_acme_problem(await client.post(body["newAccount"], {}, use_jwk=True,
                                              protected={"url": body["newOrder"]}), 403, "unauthorized",
                            "protected.url")
        assert_acme_problem(await client.post(body["newAccount"], {}, use_jwk=True, protected={"alg": "none"}), 400,
                            "badSignatureAlgorithm", "protected.alg")
        assert_acme_problem(await client.post(body["newAccount"], {}, use_jwk=True, protected={"alg": "HS256"}), 400,
                            "badSignatureAlgorithm", "protected.alg")
        plain = await world.api.client.post(body["newAccount"], content=b"{}",
                                            headers={"Content-Type": "application/json"})
        assert_acme_problem(plain, 415, "malformed", "Content-Type")
        client.kid = "https://elsewhere/acct/x"
        assert_acme_problem(await client.post(body["newOrder"], {}), 400, "accountDoesNotExist", "protected.kid")


async def test_a_nonce_from_another_process_is_accepted_once(tmp_path):
    """The server's processes share nonces: one issued by another process (the store file opened there) is
    accepted once here, and its replay refused."""
    async with acme_world(tmp_path) as world:
        client = Client(world.api.client, world.directory)
        await client.start()
        code = ("import sys; from pathlib import Path; from infra.acme.nonces import SQLiteNonceStore; "
                "print(SQLiteNonceStore(Path(sys.argv[1])).issue())")
        nonce = subprocess.run([sys.executable, "-c", code, str(world.api.runtime.settings.acme_nonces_db)],
                               capture_output=True, text=True, check=True).stdout.strip()
        first = await client.post(client.directory["newAccount"], {}, use_jwk=True, nonce=nonce)
        assert_acme_problem(first, 400, "externalAccountRequired")  # past the nonce check
        assert_acme_problem(await client.post(client.directory["newAccount"], {}, use_jwk=True, nonce=nonce), 400,
                            "badNonce")


async def test_eab_binding_keys_and_their_listing(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    async with acme_world(tmp_path) as world:
        key = await world.eab_key(allowed_names=["*.acme.test"], description="ci")
        assert len(jose.b64url_decode(key["hmac_key"], "k")) == 32 and key["directory"] == world.directory
        client = Client(world.api.client, world.directory)
        await client.start()
        wrong = await client.register(key["key_id"], jose.b64url_encode(b"x" * 32))
        assert_acme_problem(wrong, 403, "unauthorized", "externalAccountBinding.signature")
        assert_acme_problem(await client.register("no-such-key", key["hmac_key"]), 403, "unauthorized")
        created = await client.register(key["key_id"], key["hmac_key"])
        assert created.status_code == 201 and created.json()["status"] == "valid"
        again = await client.post(client.directory["newAccount"], {"onlyReturnExisting": True}, use_jwk=True)
        assert again.status_code == 200 and again.headers["Location"] == client.kid
        other = Client(world.api.client, world.directory)
        await other.start()
        assert_acme_problem(await other.register(key["key_id"], key["hmac_key"]), 403, "unauthorized")  # bound

        listed = await world.api.client.get(f"/v1/tenants/{world.tenant}/acme/eab-keys", headers=world.admin,
                                            params={"min_position": await world.api.runtime.store.head_position()})
        [row] = listed.json()["items"]
        assert row["status"] == "bound" and row["account_id"] == jose.thumbprint(client.jwk)
        assert "hmac_key" not in row and "secret_ref" not in row
        viewer = await world.api.token("ca-operator", tenant_id=world.tenant)
        denied = await world.api.client.get(f"/v1/tenants/{world.tenant}/acme/eab-keys", headers=viewer)
        assert denied.status_code == 403

        events = await world.api.runtime.store.read_all(0, 100_000)
        raw = jose.b64url_decode(key["hmac_key"], "k")
        for event in events:
            text = json.dumps(event.payload)
            assert key["hmac_key"] not in text and raw.hex() not in text
        assert key["hmac_key"] not in caplog.text

        revoked = await world.api.client.delete(f"/v1/tenants/{world.tenant}/acme/eab-keys/{key['key_id']}",
                                                headers=world.admin)
        assert revoked.status_code == 200, revoked.text
        order = await client.post(client.directory["newOrder"], {"identifiers": [{"type": "dns",
                                                                                  "value": "node1.acme.test"}]})
        assert_acme_problem(order, 403, "unauthorized", "protected.kid")


async def test_http01_finalize_download_and_revoke(tmp_path):
    async with acme_world(tmp_path) as world:
        responder = Responder(world.http01_port)
        try:
            client = await registered(world, allowed_names=[".acme.test"])
            outside = await client.post(client.directory["newOrder"], {"identifiers": [
                {"type": "dns", "value": "node1.elsewhere.test"}]})
            assert_acme_problem(outside, 400, "rejectedIdentifier", "identifiers[0].value")
            order = await validated_order(client, responder, "node1.acme.test", "node2.acme.test")
            assert order["status"] == "ready"
            assert responder.requests[0][1] == f"node1.acme.test:{world.http01_port}"  # Host: the name, not the IP

            stranger = await registered(world)
            assert_acme_problem(await stranger.post(order["url"], None), 404, "malformed", "order_id")
            bad, _ = csr_der("node1.acme.test")
            assert_acme_problem(await client.post(order["finalize"], {"csr": jose.b64url_encode(bad)}), 400,
                                "badCSR", "csr")
            der, key = csr_der("node2.acme.test", "node1.acme.test")
            done = await client.post(order["finalize"], {"csr": jose.b64url_encode(der)})
            assert done.status_code == 200 and done.json()["status"] == "valid", done.text
            again = await client.post(order["finalize"], {"csr": jose.b64url_encode(der)})
            assert again.json()["certificate"] == done.json()["certificate"]  # one certificate per order
            account = (await client.post(client.kid, None)).json()
            listed = (await client.post(account["orders"], None)).json()["orders"]
            assert order["url"] in listed and len(listed) == 1  # the refused order was never created
            assert_acme_problem(await stranger.post(account["orders"], None), 403, "unauthorized", "account_id")

            chain = await client.post(done.json()["certificate"], None)
            assert chain.headers["content-type"].startswith("application/pem-certificate-chain")
            certificates = x509.load_pem_x509_certificates(chain.content)
            leaf = certificates[0]
            assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
            assert len(certificates) >= 2
            row = (await world.api.client.get(f"/v1/certificates/{leaf.serial_number:040x}", headers=world.admin,
                                              params={"min_position": await world.api.runtime.store.head_position()}
                                              )).json()
            assert f"acme-account:{jose.thumbprint(client.jwk)}" in row["tags"]
            issued = [e for e in await world.api.runtime.store.read_all(0, 100_000) if e.type == "certificate.issued"]
            assert issued[-1].actor.auth_method == "acme"
            assert issued[-1].actor.principal == f"acme-account:{jose.thumbprint(client.jwk)}"

            cert_b64 = jose.b64url_encode(leaf.public_bytes(serialization.Encoding.DER))
            assert_acme_problem(await stranger.post(stranger.directory["revokeCert"], {"certificate": cert_b64}),
                                403, "unauthorized", "certificate")
            assert_acme_problem(await client.post(client.directory["revokeCert"],
                                                  {"certificate": cert_b64, "reason": 7}), 400,
                                "badRevocationReason", "reason")
            by_key = Client(world.api.client, world.directory, key=key)  # signed by the certificate's own key
            await by_key.start()
            revoked = await by_key.post(by_key.directory["revokeCert"], {"certificate": cert_b64, "reason": 4},
                                        use_jwk=True)
            assert revoked.status_code == 200, revoked.text
            row = (await world.api.client.get(f"/v1/certificates/{leaf.serial_number:040x}", headers=world.admin,
                                              params={"min_position": await world.api.runtime.store.head_position()}
                                              )).json()
            assert row["status"] == "revoked" and row["revocation_reason"] == "superseded"
        finally:
            responder.close()


async def test_validation_never_connects_outside_the_networks(tmp_path):
    """A name the hosts file points at cloud metadata, or an address outside the validation networks: the
    challenge fails as rejectedIdentifier and nothing is fetched."""
    async with acme_world(tmp_path) as world:
        hosts = world.api.runtime.settings.acme_hosts_file
        hosts.write_text(hosts.read_text() + "169.254.169.254 metadata.acme.test\n10.255.255.1 far.acme.test\n")
        client = await registered(world)
        for name, expected in (("metadata.acme.test", "link-local"), ("far.acme.test", "outside the validation")):
            created = (await client.post(client.directory["newOrder"], {"identifiers": [
                {"type": "dns", "value": name}]})).json()
            authz_url = created["authorizations"][0]
            challenge = http01(await client.post(authz_url, None))
            await client.post(challenge["url"], {})
            assert (await poll(client, authz_url))["status"] == "invalid"
            failed = (await client.post(challenge["url"], None)).json()
            assert failed["error"]["type"] == ACME + "rejectedIdentifier" and expected in failed["error"]["detail"]


async def test_a_started_challenge_is_validated_after_a_restart(tmp_path):
    """The process stops before validating (no job worker); the next one on the same data finds it and validates."""
    async with acme_world(tmp_path, job_worker_threads=0) as world:
        client = await registered(world)
        authz_url, challenge = await started_challenge(client, "node3.acme.test")
    async with restarted(world, tmp_path, client, challenge) as again:
        assert (await poll(again.client, again.url(authz_url)))["status"] == "valid"
        assert len(again.responder.requests) == 1


async def test_a_suspended_tenant_opens_no_account_and_issues_nothing(tmp_path):
    async with acme_world(tmp_path) as world:
        responder = Responder(world.http01_port)
        try:
            client = await registered(world)
            order = await validated_order(client, responder, "node4.acme.test")
            spare = await world.eab_key()
            suspended = await world.api.client.post(f"/v1/tenants/{world.tenant}/suspend", json={"reason": "unpaid"},
                                                    headers=world.admin)
            assert suspended.status_code == 200, suspended.text
            head = await world.api.runtime.store.head_position()
            der, _ = csr_der("node4.acme.test")
            assert_acme_problem(await client.post(order["finalize"], {"csr": jose.b64url_encode(der)}), 403,
                                "unauthorized", "tenant_id")
            assert_acme_problem(await client.post(client.directory["newOrder"], {"identifiers": [
                {"type": "dns", "value": "node4.acme.test"}]}), 403, "unauthorized", "tenant_id")
            newcomer = Client(world.api.client, world.directory)
            await newcomer.start()
            assert_acme_problem(await newcomer.register(spare["key_id"], spare["hmac_key"]), 403, "unauthorized",
                                "tenant_id")
            written = {e.type for e in await world.api.runtime.store.read_all(head, 1000)}
            assert not written - {"audit.checkpoint", "ca.crl_published", "access.denied"}, written
        finally:
            responder.close()
