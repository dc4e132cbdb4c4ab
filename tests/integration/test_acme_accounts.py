"""ACME accounts over HTTP with the JWS client: key rollover (RFC 8555 7.3.5) keeps the account, its orders and its
certificates; the old key signs for nothing after it; a key another account has is 409 with that account's URL.
Deactivation of an authorization and of an account, and an order's notAfter."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from acme_support import Client, Responder, acme_world, csr_der, poll, registered, validated_order
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from test_acme_api import assert_acme_problem

from domain import jose


def key_change_body(client: Client, new: Client, *, old_jwk: dict | None = None) -> dict:
    """The inner JWS: signed by the new key (jwk), the keyChange URL, {account, oldKey}."""
    url = client.directory["keyChange"]
    payload = {"account": client.kid, "oldKey": old_jwk or client.jwk}
    return new.sign({"alg": "ES256", "jwk": new.jwk, "url": url}, json.dumps(payload).encode())


async def _issue(world, client: Client, responder: Responder, name: str) -> x509.Certificate:
    order = await validated_order(client, responder, name)
    der, _ = csr_der(name)
    done = await client.post(order["finalize"], {"csr": jose.b64url_encode(der)})
    assert done.status_code == 200 and done.json()["status"] == "valid", done.text
    chain = await client.post(done.json()["certificate"], None)
    return x509.load_pem_x509_certificates(chain.content)[0]


async def test_key_rollover_keeps_the_account_and_its_certificates(tmp_path):
    async with acme_world(tmp_path) as world:
        responder = Responder(world.http01_port)
        try:
            client = await registered(world)
            account_id = jose.thumbprint(client.jwk)
            earlier = await _issue(world, client, responder, "node1.acme.test")
            new = Client(world.api.client, world.directory, key=ec.generate_private_key(ec.SECP256R1()),
                         kid=client.kid)
            await new.start()

            url = client.directory["keyChange"]
            assert_acme_problem(await client.post(url, key_change_body(client, new, old_jwk=new.jwk)), 400,
                                "malformed", "payload.oldKey")
            wrong_url = new.sign({"alg": "ES256", "jwk": new.jwk, "url": client.directory["newOrder"]},
                                 json.dumps({"account": client.kid, "oldKey": client.jwk}).encode())
            assert_acme_problem(await client.post(url, wrong_url), 400, "malformed", "payload.protected.url")
            assert_acme_problem(await client.post(url, key_change_body(client, client)), 400, "malformed",
                                "payload.jwk")  # the same key

            changed = await client.post(url, key_change_body(client, new))
            assert changed.status_code == 200, changed.text
            assert changed.json()["key"] == new.jwk and changed.headers["Location"] == client.kid

            # the old key signs for nothing: not by kid, not as a jwk
            assert_acme_problem(await client.post(client.kid, None), 400, "malformed", "signature")
            assert_acme_problem(await client.post(client.directory["newAccount"], {"onlyReturnExisting": True},
                                                  use_jwk=True), 403, "unauthorized", "protected.jwk")
            found = await new.post(new.directory["newAccount"], {"onlyReturnExisting": True}, use_jwk=True)
            assert found.status_code == 200 and found.headers["Location"] == client.kid

            # the new key validates (its key authorization), finalizes and revokes what the old key obtained
            later = await _issue(world, new, responder, "node2.acme.test")
            for leaf in (earlier, later):
                cert = jose.b64url_encode(leaf.public_bytes(serialization.Encoding.DER))
                revoked = await new.post(new.directory["revokeCert"], {"certificate": cert})
                assert revoked.status_code == 200, revoked.text
            events = [e for e in await world.api.runtime.store.read_all(0, 100_000)
                      if e.stream_id == f"acme-account-{account_id}"]
            assert [e.type for e in events] == ["acme.account_created", "acme.account_key_changed"]
            assert events[1].payload["new_thumbprint"] == jose.thumbprint(new.jwk)
            assert events[1].actor.principal == f"acme-account:{account_id}"

            # a key another account has, or had, is 409 with that account's URL
            other = await registered(world)
            for taken in (new, client):
                conflict = await other.post(url, key_change_body(other, taken))
                assert_acme_problem(conflict, 409, "malformed", "payload.jwk")
                assert conflict.headers["Location"] == client.kid
            assert (await other.post(other.kid, None)).json()["key"] == other.jwk
        finally:
            responder.close()


async def test_authorization_and_account_deactivation(tmp_path):
    async with acme_world(tmp_path) as world:
        responder = Responder(world.http01_port)
        try:
            client = await registered(world)
            ready = await validated_order(client, responder, "node1.acme.test")
            [valid_authz] = ready["authorizations"]
            assert_acme_problem(await client.post(valid_authz, {"status": "valid"}), 400, "malformed", "status")
            stranger = await registered(world)
            assert_acme_problem(await stranger.post(valid_authz, {"status": "deactivated"}), 404, "malformed",
                                "authz_id")
            gone = await client.post(valid_authz, {"status": "deactivated"})
            assert gone.status_code == 200 and gone.json()["status"] == "deactivated", gone.text
            assert (await client.post(valid_authz, {"status": "deactivated"})).json()["status"] == "deactivated"
            assert (await client.post(ready["url"], None)).json()["status"] == "invalid"
            der, _ = csr_der("node1.acme.test")
            assert_acme_problem(await client.post(ready["finalize"], {"csr": jose.b64url_encode(der)}), 403,
                                "orderNotReady", "order_id")

            pending = await client.post(client.directory["newOrder"], {"identifiers": [
                {"type": "dns", "value": "node2.acme.test"}, {"type": "dns", "value": "node3.acme.test"}]})
            authz_urls = pending.json()["authorizations"]
            challenge = next(c for c in (await client.post(authz_urls[0], None)).json()["challenges"]
                             if c["type"] == "http-01")
            deactivated = await client.post(client.kid, {"status": "deactivated"})
            assert deactivated.status_code == 200 and deactivated.json()["status"] == "deactivated", deactivated.text

            # every request signed for it is refused, whatever it asks
            for url, payload in ((client.kid, None), (client.directory["newOrder"], {"identifiers": []}),
                                 (authz_urls[0], None), (challenge["url"], {})):
                assert_acme_problem(await client.post(url, payload), 403, "unauthorized", "protected.kid")
            assert_acme_problem(await client.post(client.directory["newAccount"], {"onlyReturnExisting": True},
                                                  use_jwk=True), 403, "unauthorized", "protected.kid")
            events = await world.api.runtime.store.read_all(0, 100_000)
            ended = {e.stream_id.removeprefix("acme-authz-"): e.payload["reason"] for e in events
                     if e.type == "acme.authorization_deactivated"}
            ids = [url.rsplit("/", 1)[1] for url in (valid_authz, *authz_urls)]
            assert ended == {ids[0]: "client", ids[1]: "account_deactivated", ids[2]: "account_deactivated"}
            account_id = jose.thumbprint(client.jwk)
            assert [e.type for e in events if e.stream_id == f"acme-account-{account_id}"][-1] == \
                "acme.account_deactivated"
        finally:
            responder.close()


async def test_an_order_s_not_after_is_honoured_within_the_profile(tmp_path):
    async with acme_world(tmp_path) as world:
        responder = Responder(world.http01_port)
        try:
            client = await registered(world)
            names = [{"type": "dns", "value": "node1.acme.test"}]
            soon = datetime.now(UTC) + timedelta(days=30)
            for extra, field in (({"notBefore": soon.isoformat()}, "notBefore"), ({"notAfter": "tomorrow"}, "notAfter"),
                                 ({"notAfter": (soon + timedelta(days=400)).isoformat()}, "notAfter")):
                refused = await client.post(client.directory["newOrder"], {"identifiers": names, **extra})
                assert_acme_problem(refused, 400, "malformed", field)
            created = await client.post(client.directory["newOrder"], {"identifiers": names,
                                                                       "notAfter": soon.isoformat()})
            assert created.status_code == 201, created.text
            assert created.json()["notAfter"] == soon.strftime("%Y-%m-%dT%H:%M:%SZ")
            order_url = created.headers["Location"]
            for authz_url in created.json()["authorizations"]:
                challenge = next(c for c in (await client.post(authz_url, None)).json()["challenges"]
                                 if c["type"] == "http-01")
                responder.answers[challenge["token"]] = jose.key_authorization(challenge["token"],
                                                                               jose.thumbprint(client.jwk))
                await client.post(challenge["url"], {})
            order = await poll(client, order_url, done=("ready", "invalid"))
            der, _ = csr_der("node1.acme.test")
            done = await client.post(order["finalize"], {"csr": jose.b64url_encode(der)})
            assert done.status_code == 200, done.text
            leaf = x509.load_pem_x509_certificates((await client.post(done.json()["certificate"], None)).content)[0]
            assert soon - timedelta(days=1) < leaf.not_valid_after_utc <= soon
        finally:
            responder.close()
