"""dns-01 (infra/acme/dns01.py) against a real Knot DNS server that takes RFC 2136 updates: the exact TXT match, every
way a lookup fails, and through the ACME API: wildcard orders (dns-01 only, the tenant policy's say), a wrong TXT
record failing the challenge with a clear error, dns-01 offered only when resolvers are configured."""

from __future__ import annotations

import contextlib

import pytest
from cryptography import x509
from acme_support import Client, acme_world, csr_der, free_port, poll, registered
from knot_fixture import knot  # noqa: F401 - a fixture

from domain import acme_challenges, jose
from infra.acme.dns01 import Dns01
from infra.acme.http01 import ValidationFailed

KEY_AUTHORIZATION = "token-abc.thumbprint-xyz"


def dns01(server, timeout: float = 3.0) -> Dns01:
    return Dns01(resolvers=(("127.0.0.1", server.port),), timeout=timeout)


def test_the_digest_in_a_txt_record_proves_the_name_and_its_wildcard(knot):
    knot.set_txt("_acme-challenge", "other-value", acme_challenges.digest(KEY_AUTHORIZATION))
    assert dns01(knot).check("acme.test", KEY_AUTHORIZATION) == "127.0.0.1"
    assert dns01(knot).check("*.acme.test", KEY_AUTHORIZATION) == "127.0.0.1"  # the same record
    knot.set_txt("_acme-challenge.node1", acme_challenges.digest(KEY_AUTHORIZATION))
    assert dns01(knot).check("node1.acme.test", KEY_AUTHORIZATION) == "127.0.0.1"


@pytest.mark.parametrize("values, kind, words", [
    (["wrong-value"], "incorrectResponse", "found 'wrong-value'"),
    # the key authorization itself (what http-01 serves), not its digest
    ([KEY_AUTHORIZATION], "incorrectResponse", "digest"),
    ([acme_challenges.digest(KEY_AUTHORIZATION) + "="], "incorrectResponse", "digest"),  # padded
    ([acme_challenges.digest(KEY_AUTHORIZATION).upper()], "incorrectResponse", "digest"),
])
def test_a_txt_record_that_is_not_exactly_the_digest_fails(knot, values, kind, words):
    knot.set_txt("_acme-challenge", *values)
    with pytest.raises(ValidationFailed) as failed:
        dns01(knot).check("*.acme.test", KEY_AUTHORIZATION)
    assert failed.value.error_type == kind and words in failed.value.detail
    assert "_acme-challenge.acme.test." in failed.value.detail


def test_no_record_another_type_another_zone_and_no_answer_each_fail_clearly(knot):
    with pytest.raises(ValidationFailed) as missing:
        dns01(knot).check("node2.acme.test", KEY_AUTHORIZATION)
    assert missing.value.error_type == "dns" and "NXDOMAIN" in missing.value.detail
    knot.add("_acme-challenge.node3", "A", "127.0.0.1")
    with pytest.raises(ValidationFailed) as no_txt:
        dns01(knot).check("node3.acme.test", KEY_AUTHORIZATION)
    assert no_txt.value.error_type == "unauthorized" and "no TXT record" in no_txt.value.detail
    with pytest.raises(ValidationFailed) as refused:  # the server is authoritative for acme.test only: REFUSED
        dns01(knot).check("node1.elsewhere.test", KEY_AUTHORIZATION)
    assert refused.value.error_type == "dns" and "no resolver answered" in refused.value.detail
    silent = Dns01(resolvers=(("127.0.0.1", free_port()),), timeout=1.0)  # nothing listens there
    with pytest.raises(ValidationFailed) as unanswered:
        silent.check("acme.test", KEY_AUTHORIZATION)
    assert unanswered.value.error_type == "dns"
    with pytest.raises(ValidationFailed) as unconfigured:
        Dns01(resolvers=(), timeout=1.0).check("acme.test", KEY_AUTHORIZATION)
    assert "CSM_ACME_DNS_RESOLVERS" in unconfigured.value.detail


def test_a_resolver_that_does_not_answer_is_passed_over_for_the_next(knot):
    knot.set_txt("_acme-challenge", acme_challenges.digest(KEY_AUTHORIZATION))
    both = Dns01(resolvers=(("127.0.0.1", free_port()), ("127.0.0.1", knot.port)), timeout=5.0)
    assert both.check("acme.test", KEY_AUTHORIZATION) == "127.0.0.1"


async def _allow_wildcards(world, allow: bool | None) -> None:
    response = await world.api.client.put(f"/v1/tenants/{world.tenant}/policy", headers=world.admin,
                                          json={"allow_wildcards": allow})
    assert response.status_code == 200, response.text
    await world.api.runtime.runner.wait_for(response.json()["global_position"], 10)


async def _order(client: Client, *names: str):
    return await client.post(client.directory["newOrder"], {"identifiers": [{"type": "dns", "value": n}
                                                                            for n in names]})


async def test_a_wildcard_order_needs_dns_01_and_the_tenant_policys_consent(tmp_path, knot):
    for sub in ("none", "dns"):
        (tmp_path / sub).mkdir()
    async with acme_world(tmp_path / "none") as world:  # no resolvers: no dns-01, so no wildcard
        client = await registered(world)
        refused = await _order(client, "*.acme.test")
        assert refused.status_code == 400 and refused.json()["type"].endswith(":rejectedIdentifier")
        assert "dns-01" in refused.json()["detail"] and refused.json()["field"] == "identifiers[0].value"
        plain = (await _order(client, "node1.acme.test")).json()
        authz = (await client.post(plain["authorizations"][0], None)).json()
        assert sorted(c["type"] for c in authz["challenges"]) == ["http-01", "tls-alpn-01"]

    async with acme_world(tmp_path / "dns", acme_dns_resolvers=(knot.nameserver,)) as world:
        client = await registered(world, allowed_names=[".acme.test"])
        refused = await _order(client, "*.acme.test")  # the default policy refuses wildcards to ACME orders
        assert refused.status_code == 400 and "allow_wildcards" in refused.json()["detail"], refused.text
        await _allow_wildcards(world, False)
        assert "allow_wildcards" in (await _order(client, "*.acme.test")).json()["detail"]
        await _allow_wildcards(world, True)
        created = await _order(client, "*.acme.test", "node1.acme.test")
        assert created.status_code == 201, created.text
        assert [i["value"] for i in created.json()["identifiers"]] == ["*.acme.test", "node1.acme.test"]
        authzs = [(await client.post(url, None)).json() for url in created.json()["authorizations"]]
        wildcard = next(a for a in authzs if a.get("wildcard"))
        assert wildcard["identifier"] == {"type": "dns", "value": "acme.test"}  # RFC 8555 7.1.4
        assert [c["type"] for c in wildcard["challenges"]] == ["dns-01"]
        plain = next(a for a in authzs if not a.get("wildcard"))
        assert sorted(c["type"] for c in plain["challenges"]) == ["dns-01", "http-01", "tls-alpn-01"]
        # the account's EAB key narrows wildcards like any name: a plain name's pattern does not allow one
        narrow = await registered(world, allowed_names=["node1.acme.test"])
        assert (await _order(narrow, "*.acme.test")).json()["type"].endswith(":rejectedIdentifier")


@contextlib.asynccontextmanager
async def _wildcard_order(tmp_path, knot, **overrides):
    """A world whose tenant allows wildcards to ACME orders, validating dns-01 with ``knot``, and a registered
    client's order for ``*.acme.test``: (world, client, order URL, authorization URL, its dns-01 challenge)."""
    async with acme_world(tmp_path, acme_dns_resolvers=(knot.nameserver,), **overrides) as world:
        await _allow_wildcards(world, True)
        client = await registered(world)
        created = await _order(client, "*.acme.test")
        order_url, authz_url = created.headers["Location"], created.json()["authorizations"][0]
        [challenge] = (await client.post(authz_url, None)).json()["challenges"]
        yield world, client, order_url, authz_url, challenge


async def test_a_wrong_txt_record_makes_the_challenge_invalid_with_a_clear_error(tmp_path, knot):
    async with _wildcard_order(tmp_path, knot) as (world, client, order_url, authz_url, challenge):
        knot.set_txt("_acme-challenge", "not-the-digest")
        assert (await client.post(challenge["url"], {})).json()["status"] == "processing"
        assert (await poll(client, authz_url))["status"] == "invalid"
        failed = (await client.post(challenge["url"], None)).json()
        assert failed["status"] == "invalid"
        assert failed["error"]["type"] == "urn:ietf:params:acme:error:incorrectResponse"
        assert "_acme-challenge.acme.test." in failed["error"]["detail"]
        assert "'not-the-digest'" in failed["error"]["detail"]
        assert (await poll(client, order_url, done=("invalid",)))["status"] == "invalid"


async def test_a_wildcard_certificate_through_dns_01_and_the_policy_at_finalize(tmp_path, knot):
    async with _wildcard_order(tmp_path, knot) as (world, client, order_url, authz_url, challenge):
        key_authorization = jose.key_authorization(challenge["token"], jose.thumbprint(client.jwk))
        knot.set_txt("_acme-challenge", acme_challenges.digest(key_authorization))
        await client.post(challenge["url"], {})
        assert (await poll(client, authz_url))["status"] == "valid"
        order = await poll(client, order_url, done=("ready", "invalid"))
        assert order["status"] == "ready"
        der, _ = csr_der("*.acme.test")
        await _allow_wildcards(world, None)  # the policy changed after validation: finalize refuses
        refused = await client.post(order["finalize"], {"csr": jose.b64url_encode(der)})
        assert refused.status_code == 400 and "allow_wildcards" in refused.json()["detail"], refused.text
        await _allow_wildcards(world, True)
        done = await client.post(order["finalize"], {"csr": jose.b64url_encode(der)})
        assert done.status_code == 200 and done.json()["status"] == "valid", done.text
        chain = await client.post(done.json()["certificate"], None)
        leaf = x509.load_pem_x509_certificates(chain.content)[0]
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == ["*.acme.test"]
        validated = [e for e in await world.api.runtime.store.read_all(0, 100_000)
                     if e.type == "acme.challenge_validated"]
        assert validated[-1].payload["address"] == "127.0.0.1"  # the resolver that answered
