"""A root's compromise rollover (``POST /v1/cas/{id}/rollover`` with ``compromised: true``): its stolen key is blocked,
no link certificate vouches for it, and no chain, truststore (PEM, PKCS#12, JKS) or caIssuers answer holds a
certificate of the root's keys before it, so `openssl verify` refuses what they signed against a truststore exported
since, and accepts what the new key signs. What the old keys signed is listed for re-issuance, never revoked."""

from __future__ import annotations

import datetime
import re
import shutil
import subprocess

import pytest
from cryptography import x509
from test_api_ca_lifecycle import (assert_does_not_verify, assert_verifies, ca_pem, chain, create_ca, issue_leaf,
                                   leaf_with_chain, load, needs_openssl, ok)
from test_api_compromised_keys import compromised, key_sha256_of_certificate, report
from test_api_root_link_certificates import STORE_PASSWORD, keystore_chain, ski, truststore
from test_api_support import assert_problem, dying_at, pki_api, written_since  # noqa: F401

KEYTOOL = shutil.which("keytool")


async def rollover(api, headers, ca_id: str, **body):
    return await api.client.post(f"/v1/cas/{ca_id}/rollover", headers=headers,
                                 json={"reason": "root key stolen", **body})


async def read_ca(api, headers, ca_id: str, position: int) -> dict:
    return (await ok(await api.client.get(f"/v1/cas/{ca_id}", headers=headers,
                                          params={"min_position": position}))).json()


async def compliance_findings(api, headers, position: int | None = None) -> set[tuple[str, str]]:
    params = {"min_position": position} if position else {}
    report = (await ok(await api.client.get("/v1/tenants/acme/compliance", headers=headers, params=params))).json()
    return {(finding["rule"], finding["subject_id"]) for finding in report["findings"]}


async def tenant_with_root(api) -> tuple[dict, str, str]:
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    root = await create_ca(api, admin, name="Acme Root", path_length=1)
    return admin, root, await ca_pem(api, admin, root)


@needs_openssl
async def test_a_compromise_rollover_leaves_the_stolen_key_out_of_every_chain_and_truststore(pki_api, tmp_path):
    api = pki_api
    admin, root, old_root = await tenant_with_root(api)
    issuing = await create_ca(api, admin, name="Acme Issuing", parent_id=root)
    direct = await issue_leaf(api, admin, root, "direct.acme.internal")  # signed by the stolen key itself
    node = await issue_leaf(api, admin, issuing, "node.acme.internal")  # under a CA the stolen key certified

    rolled = (await ok(await rollover(api, admin, root, compromised=True))).json()
    assert rolled["compromised"] is True and rolled["changed"] is True
    assert rolled["reissue"] == {"count": 3, "cas": [issuing], "complete": True,
                                 "certificates": [direct["certificate_id"], node["certificate_id"]]}
    assert (await read_ca(api, admin, root, rolled["global_position"]))["link_certificates"] == []
    event = (await api.runtime.store.read_stream("acme", f"ca-{root}"))[-1]
    assert (event.type, event.schema_version) == ("ca.key_rolled_over", 3)
    assert (event.payload["compromised"], event.payload["new_with_old"], event.payload["old_with_new"]) == (
        True, None, None)
    [new_root] = await chain(api, admin, root)
    assert new_root != old_root

    after = await create_ca(api, admin, name="Acme Issuing 2", parent_id=root)
    fresh = await issue_leaf(api, admin, after, "fresh.acme.internal")
    direct_new = await issue_leaf(api, admin, root, "direct2.acme.internal")
    store = await truststore(api, admin, fresh)
    assert store == [(await chain(api, admin, after))[0], new_root]  # its issuer path, then the root: no old root
    for issued in (direct, node):  # what the stolen key signed: the trusted root alone, not the path to the old one
        assert await truststore(api, admin, issued) == [new_root]
    fresh_chain = await leaf_with_chain(api, admin, fresh)
    assert fresh_chain[2:] == [new_root] and await keystore_chain(api, admin, fresh) == fresh_chain[1:]
    assert len(await leaf_with_chain(api, admin, direct)) == 1  # its issuer is the withdrawn root: no chain
    node_chain = await leaf_with_chain(api, admin, node)
    assert node_chain[1:] == (await chain(api, admin, issuing)) and old_root not in node_chain
    assert len(node_chain) == 2

    trusted = "".join(store)
    assert_verifies(tmp_path, "fresh", fresh_chain[0], trusted, fresh_chain[1:])
    direct_new_chain = await leaf_with_chain(api, admin, direct_new)
    assert_verifies(tmp_path, "direct-new", direct_new_chain[0], trusted, direct_new_chain[1:])
    direct_chain = await leaf_with_chain(api, admin, direct)
    assert_does_not_verify(tmp_path, "direct-old", direct_chain[0], trusted, [old_root])  # handed the old root too
    assert_does_not_verify(tmp_path, "node-old", node_chain[0], trusted, [*node_chain[1:], old_root])
    assert_verifies(tmp_path, "node-before", node_chain[0], old_root, node_chain[1:])  # it was valid, and is to them

    # caIssuers: the new key's certificate; the withdrawn key's is gone (410), not swapped for another key's
    assert (await ok(await api.client.get(f"/v1/cas/{root}/certificate", params={"format": "pem"}))).text == new_root
    old_ski = ski(load(old_root)).hex()
    assert_problem(await api.client.get(f"/v1/cas/{root}/certificate", params={"key": old_ski}), 410,
                   "ca_key_withdrawn", field="key")
    assert (await api.client.get(f"/v1/cas/{root}/certificate", params={
        "key": ski(load(new_root)).hex(), "format": "pem"})).text == new_root
    listed = (await ok(await api.client.get(f"/v1/cas/{root}/certificates", headers=admin))).json()
    assert [(c["role"], c["distrusted_at"] is not None) for c in listed] == [("previous", True), ("current", False)]
    # the old key still signs its CRL: it only takes trust away, for nodes not yet given the new truststore
    crl = x509.load_der_x509_crl((await ok(await api.client.get(f"/v1/cas/{root}/crl",
                                                                params={"key": old_ski}))).content)
    assert crl.is_signature_valid(load(old_root).public_key())

    # the stolen key is blocked in the tenant, as a report would block it
    assert_problem(await api.client.post("/v1/cas/import", headers=admin, json={
        "tenant_id": "acme", "name": "again", "certificate_pem": old_root}), 422, "key_compromised",
        field="certificate_pem")
    assert [(k["public_key_sha256"], k["subject_ca_id"], k["through"], k["reason"])
            for k in await compromised(api, admin)] == [
        (key_sha256_of_certificate(load(old_root)), root, "rollover", "key_compromise")]


@needs_openssl
async def test_the_runbooks_re_issuance_brings_everything_listed_under_the_new_key(pki_api, tmp_path):
    """docs/operations.md 6.1: roll each listed CA over (its parent signs with the new root key), then renew each
    listed certificate (its CA's current key signs the successor): each then verifies against the truststore
    exported after the compromise rollover, and a second compromise rollover's list would be empty of them."""
    api = pki_api
    admin, root, _old = await tenant_with_root(api)
    issuing = await create_ca(api, admin, name="Acme Issuing", parent_id=root)
    direct = await issue_leaf(api, admin, root, "direct.acme.internal")
    node = await issue_leaf(api, admin, issuing, "node.acme.internal")
    reissue = (await ok(await rollover(api, admin, root, compromised=True))).json()["reissue"]
    for ca_id in reissue["cas"]:
        await ok(await rollover(api, admin, ca_id, reason="root key compromised"))
    renewed = []
    for certificate_id in reissue["certificates"]:
        renewed.append((await ok(await api.client.post(f"/v1/certificates/{certificate_id}/renew", headers=admin,
                                                       json={}), 201)).json())
    assert [r["renewed_from"] for r in renewed] == [direct["certificate_id"], node["certificate_id"]]
    store = "".join(await truststore(api, admin, renewed[-1]))
    for successor in renewed:
        served = await leaf_with_chain(api, admin, successor)
        assert_verifies(tmp_path, successor["certificate_id"], served[0], store, served[1:])
    [issuing_now, new_root] = await chain(api, admin, issuing, renewed[-1]["global_position"])
    assert store == issuing_now + new_root
    left = await api.runtime.services.untrusted_chains.below("acme", root, datetime.datetime.now(datetime.UTC))
    assert (left.count, left.cas, left.certificates) == (0, (), ())  # the predecessors are superseded


async def test_after_routine_rollovers_a_compromise_rollover_withdraws_every_earlier_key_and_link(pki_api):
    """The first key signed a link certifying the second: a truststore holding the first would trust the thief's
    chains through it. So every earlier key leaves, and every link; only the stolen key is recorded compromised.
    The routine rollover before it is as it always was."""
    api = pki_api
    admin, root, first_root = await tenant_with_root(api)
    routine = (await ok(await rollover(api, admin, root, reason="root key update"))).json()
    assert (routine["compromised"], routine["reissue"]) == (False, None)
    assert len((await read_ca(api, admin, root, routine["global_position"]))["link_certificates"]) == 2
    second_root = (await chain(api, admin, root))[-1]
    before = await issue_leaf(api, admin, root, "before.acme.internal")
    assert set(await truststore(api, admin, before)) == {first_root, second_root}

    rolled = (await ok(await rollover(api, admin, root, compromised=True))).json()
    assert rolled["reissue"]["certificates"] == [before["certificate_id"]] and rolled["reissue"]["cas"] == []
    links = (await read_ca(api, admin, root, rolled["global_position"]))["link_certificates"]
    assert len(links) == 2 and all(link["distrusted_at"] for link in links)
    [third_root] = await chain(api, admin, root)
    fresh = await issue_leaf(api, admin, root, "fresh.acme.internal")
    assert await truststore(api, admin, fresh) == [third_root]
    assert (await leaf_with_chain(api, admin, fresh))[1:] == [third_root]
    assert await truststore(api, admin, before) == [third_root]
    assert [k["public_key_sha256"] for k in await compromised(api, admin)] == [
        key_sha256_of_certificate(load(second_root))]
    # and a routine rollover after it links the new keys only
    again = (await ok(await rollover(api, admin, root, reason="root key update"))).json()
    await read_ca(api, admin, root, again["global_position"])
    served = await leaf_with_chain(api, admin, fresh)
    assert len(served) == 3 and first_root not in served and second_root not in served
    assert set(await truststore(api, admin, fresh)) == {third_root, (await chain(api, admin, root,
                                                                                   again["global_position"]))[-1]}


async def test_refused_compromise_rollovers_name_the_field_and_record_nothing(pki_api):
    api = pki_api
    admin, root, _old = await tenant_with_root(api)
    issuing = await create_ca(api, admin, name="Acme Issuing", parent_id=root)
    head = await api.runtime.store.head_position()
    assert_problem(await rollover(api, admin, issuing, compromised=True), 422, "compromise_rollover_root_only",
                   field="compromised")  # an intermediate's stolen key is revoked, on its parent's CRL
    assert_problem(await rollover(api, admin, root, invalidity_date="2026-01-01T00:00:00Z"), 422,
                   "compromised_only", field="invalidity_date")
    later = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)).isoformat()
    assert_problem(await rollover(api, admin, root, compromised=True, invalidity_date=later), 422,
                   "invalidity_date_in_future", field="invalidity_date")
    assert_problem(await rollover(api, admin, root, compromised="yes"), 400, field="compromised")
    assert await written_since(api, head) == set()


async def test_a_key_reported_first_rolls_over_only_in_compromise_mode(pki_api):
    """Reporting the key first (the quickest block) is fine: the compromise rollover then records nothing more. A
    routine rollover of it is refused: its links would vouch for the thief."""
    api = pki_api
    admin, root, old_root = await tenant_with_root(api)
    assert (await report(api, admin, ca_id=root)).status_code == 200
    head = await api.runtime.store.head_position()
    assert_problem(await rollover(api, admin, root, reason="root key update"), 422, "key_compromised",
                   field="compromised")
    assert await written_since(api, head) == set()
    rolled = (await ok(await rollover(api, admin, root, compromised=True))).json()
    assert (await read_ca(api, admin, root, rolled["global_position"]))["link_certificates"] == []
    assert [(k["public_key_sha256"], k["through"]) for k in await compromised(api, admin)] == [
        (key_sha256_of_certificate(load(old_root)), "report")]


async def test_a_crash_between_the_two_appends_leaves_the_old_key_blocked_and_a_retry_completes(pki_api):
    api = pki_api
    admin, root, old_root = await tenant_with_root(api)
    store = api.runtime.services.store
    with dying_at(store, "ca.key_rolled_over", "the process died before the CA's append"):
        died = await rollover(api, admin, root, compromised=True)
        assert died.status_code == 500, died.text
    assert [e.type for e in await store.read_stream("acme", f"ca-{root}")] == ["ca.created"]  # still on the old key
    assert_problem(await api.client.post("/v1/cas/import", headers=admin, json={
        "tenant_id": "acme", "name": "again", "certificate_pem": old_root}), 422, "key_compromised",
        field="certificate_pem")
    assert_problem(await rollover(api, admin, root, reason="root key update"), 422, "key_compromised",
                   field="compromised")  # nor can a routine retry link the stolen key
    assert ("ca_key_compromised", root) in await compliance_findings(api, admin)  # the half-done state is flagged
    rolled = (await ok(await rollover(api, admin, root, compromised=True))).json()
    assert rolled["compromised"] is True
    assert ("ca_key_compromised", root) not in await compliance_findings(api, admin, rolled["global_position"])
    assert old_root not in await chain(api, admin, root, rolled["global_position"])
    assert [e.type for e in await store.read_stream("acme", "compromised-keys")] == ["key.compromise_recorded"]


async def test_a_retried_compromise_rollover_answers_the_first_and_lists_what_is_left(pki_api):
    api = pki_api
    admin, root, _old = await tenant_with_root(api)
    before = await issue_leaf(api, admin, root, "before.acme.internal")
    headers = {**admin, "Idempotency-Key": "stolen-root-1"}
    first = (await ok(await rollover(api, headers, root, compromised=True))).json()
    again = (await ok(await rollover(api, headers, root, compromised=True))).json()
    assert again["replayed"] is True and (again["version"], again["global_position"]) == (
        first["version"], first["global_position"])
    assert again["reissue"] == first["reissue"] and first["reissue"]["certificates"] == [before["certificate_id"]]
    assert len(await api.runtime.store.read_stream("acme", "compromised-keys")) == 1


async def test_a_compromise_rollover_needs_what_a_rollover_needs(pki_api):
    """ca:manage, in the CA's tenant (as the report of a CA's key needs): a viewer or developer is refused (403),
    another tenant's admin does not see the CA (404); neither records the key. A ca-operator may."""
    api = pki_api
    admin, root, _old = await tenant_with_root(api)
    await api.create_tenant(admin, "globex")
    head = await api.runtime.store.head_position()
    for roles in (("viewer",), ("developer",)):
        refused = assert_problem(await rollover(api, await api.token(*roles, tenant_id="acme"), root,
                                                compromised=True), 403, "forbidden")
        assert refused["errors"][0]["rule"] == "ca:manage", refused
    assert_problem(await rollover(api, await api.token("tenant-admin", tenant_id="globex"), root, compromised=True),
                   404, "ca_not_found", field="ca_id")
    assert not {"ca.key_rolled_over", "key.compromise_recorded"} & await written_since(api, head)  # only the denials
    operator = await api.token("ca-operator", tenant_id="acme")
    assert (await ok(await rollover(api, operator, root, compromised=True))).json()["compromised"] is True


@pytest.mark.skipif(KEYTOOL is None, reason="Java keytool is not installed (apt install openjdk-17-jre-headless)")
async def test_the_jks_truststore_after_a_compromise_rollover_holds_the_new_root_only(pki_api, tmp_path):
    """As Cassandra's JVM reads it: keytool lists one trusted certificate, the new root's."""
    api = pki_api
    admin, root, old_root = await tenant_with_root(api)
    before = await issue_leaf(api, admin, root, "before.acme.internal")
    rolled = (await ok(await rollover(api, admin, root, compromised=True))).json()
    [new_root] = await chain(api, admin, root, rolled["global_position"])
    for issued in (before, await issue_leaf(api, admin, root, "after.acme.internal")):
        exported = await ok(await api.client.get(f"/v1/certificates/{issued['certificate_id']}/export",
                                                 headers={**admin, "X-Export-Password": STORE_PASSWORD},
                                                 params={"format": "jks-truststore"}))
        path = tmp_path / f"{issued['certificate_id']}.jks"
        path.write_bytes(exported.content)
        listing = subprocess.run([KEYTOOL, "-list", "-rfc", "-keystore", path, "-storepass", STORE_PASSWORD],
                                 capture_output=True, text=True)
        assert listing.returncode == 0, listing.stdout + listing.stderr
        assert "trustedCertEntry" in listing.stdout
        listed = [load(pem).fingerprint(load(pem).signature_hash_algorithm) for pem in re.findall(
            r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", listing.stdout, re.DOTALL)]
        assert listed == [load(new_root).fingerprint(load(new_root).signature_hash_algorithm)]
        assert load(old_root).fingerprint(load(old_root).signature_hash_algorithm) not in listed
