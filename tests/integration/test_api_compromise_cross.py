"""A stolen CA key's cross-certificate, issued by another CA of the tenant, is revoked (keyCompromise) with it, as
openssl sees it; and a report retried under its Idempotency-Key answers what the first call revoked.

Root S is cross-certified by root B: a relying party that trusts only B accepts, through that cross-certificate,
whatever S's key signs, the thief's certificates too. Reporting S's key (or rolling S over in compromise mode) has B
revoke the cross-certificate: `openssl ocsp` asks B and hears `revoked` (keyCompromise), and `openssl verify
-crl_check_all` refuses the chain B -> cross-certificate -> a certificate S's key signed.
"""

from __future__ import annotations

import pytest
from test_api_ca_lifecycle import (assert_verifies, ca_pem, chain, create_ca, issue_leaf, leaf_with_chain, load,
                                   needs_openssl, ok)
from test_api_compromise_links import openssl_ocsp_status
from test_api_compromised_halves import ProcessDied
from test_api_compromised_keys import (key_sha256, key_sha256_of_certificate, report,
                                      two_of_one_key_the_first_superseded)
from test_api_revocation import OPENSSL, run, setup
from test_api_root_link_certificates import ski
from test_api_support import assert_problem, pki_api  # noqa: F401

from commands import compromise_cascade, crl, revoke


async def cross_certified(api):
    """Root S cross-certified by root B, and a certificate S's key signed: (admin, S, B, S's certificate, the
    cross-certificate, B's certificate, the certificate)."""
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    stolen = await create_ca(api, admin, name="Acme Root")
    bridge = await create_ca(api, admin, name="Acme Bridge Root")
    crossed = (await ok(await api.client.post(f"/v1/cas/{stolen}/cross-sign", headers=admin,
                                              json={"issuer_id": bridge}))).json()
    cross, bridge_pem = await chain(api, admin, stolen, crossed["global_position"], via=bridge)
    signed = await issue_leaf(api, admin, stolen, "thief.acme.internal")
    leaf = (await leaf_with_chain(api, admin, signed))[0]
    return admin, stolen, bridge, await ca_pem(api, admin, stolen), cross, bridge_pem, leaf


@needs_openssl
@pytest.mark.parametrize("how", ["report", "rollover"])
async def test_another_cas_cross_certificate_of_a_stolen_key_is_revoked_and_openssl_refuses_the_chain(
        pki_api, tmp_path, how):
    api = pki_api
    admin, stolen, bridge, stolen_pem, cross, bridge_pem, leaf = await cross_certified(api)
    assert_verifies(tmp_path, "before", leaf, bridge_pem, [cross])  # B vouches for S's key through it
    serial = format(load(cross).serial_number, "x")
    if how == "report":
        done = (await ok(await api.client.post("/v1/tenants/acme/compromised-keys", headers=admin,
                                               json={"ca_id": stolen}))).json()
        assert done["revoked_ca_certificates"] == [{"ca_id": stolen, "issuer_ca_id": bridge, "serial_hex": serial}]
    else:
        await ok(await api.client.post(f"/v1/cas/{stolen}/rollover", headers=admin, json={
            "reason": "root key stolen", "compromised": True}))

    said = await openssl_ocsp_status(api, tmp_path, bridge, "cross", cross, bridge_pem)
    assert "cross.pem: revoked" in said and "Revocation Reason: keyCompromise" in said, said
    crls = [(await ok(await api.client.get(f"/v1/cas/{ca_id}/crl", params={
        "key": ski(load(key_of)).hex(), "format": "pem"}))).text for ca_id, key_of in
        ((bridge, bridge_pem), (stolen, stolen_pem))]  # B's for the cross-certificate, S's old key's for the leaf
    for path, text in (("anchor.pem", bridge_pem), ("cross.pem", cross), ("leaf.pem", leaf),
                       ("crls.pem", "".join(crls))):
        (tmp_path / path).write_text(text)
    checked = await run(OPENSSL, "verify", "-CAfile", tmp_path / "anchor.pem", "-untrusted", tmp_path / "cross.pem",
                        "-crl_check_all", "-CRLfile", tmp_path / "crls.pem", tmp_path / "leaf.pem")
    assert checked.returncode != 0 and "certificate revoked" in checked.stdout + checked.stderr, \
        checked.stdout + checked.stderr
    events = await api.runtime.store.read_stream("acme", f"ca-{bridge}")
    [entry] = [e.payload for e in events if e.type == "ca.certificate_revoked"]
    assert (entry["serial_hex"], entry["subject_ca_id"], entry["reason"]) == (serial, stolen, "key_compromise")
    # and the service no longer hands the cross-certificate out as a path to S
    position = await api.runtime.store.head_position()
    refused = assert_problem(await api.client.get(f"/v1/cas/{stolen}/chain", headers=admin, params={
        "via": bridge, "min_position": position}), 404, "no_such_path", field="via")
    assert "revoked" in refused["detail"]


async def test_a_report_retried_under_its_idempotency_key_answers_what_the_first_call_revoked(pki_api):
    """The retry appends nothing and revokes nothing more, yet says what the first call revoked (it said
    ``revoked: []`` when it recomputed the answer), for a certificate's key and for a CA's."""
    api = pki_api
    admin, _inter, _key, first, other = await two_of_one_key_the_first_superseded(api)
    once = {**admin, "Idempotency-Key": "report-late1"}
    answered = (await ok(await report(api, once, certificate_id=first["certificate_id"]))).json()
    assert answered["revoked"] == [other["certificate_id"]] and answered["result"]["replayed"] is False
    head = await api.runtime.store.head_position()
    again = (await ok(await report(api, once, certificate_id=first["certificate_id"]))).json()
    # no report and no revocation since (an audit checkpoint or a scheduled CRL may land in between)
    since = [e.type for e in await api.runtime.store.read_all(head)]
    assert not [t for t in since if t.startswith("key.") or t.endswith("revoked")], since
    assert again["result"]["replayed"] is True
    assert {**again, "result": None} == {**answered, "result": None}

    stolen, bridge = await create_ca(api, admin, name="Acme Stolen"), await create_ca(api, admin, name="Acme Bridge")
    await ok(await api.client.post(f"/v1/cas/{stolen}/cross-sign", headers=admin, json={"issuer_id": bridge}))
    once = {**admin, "Idempotency-Key": "report-stolen-root"}
    answered = (await ok(await report(api, once, ca_id=stolen))).json()
    assert [c["issuer_ca_id"] for c in answered["revoked_ca_certificates"]] == [bridge]
    again = (await ok(await report(api, once, ca_id=stolen))).json()
    assert again["result"]["replayed"] is True and {**again, "result": None} == {**answered, "result": None}


async def test_a_report_of_a_key_recorded_already_retried_under_its_idempotency_key_answers_what_it_revoked(
        pki_api, monkeypatch):
    """A first report dies after the key's block; a second, under its own Idempotency-Key, blocks nothing new (its
    append says only that it was made: key.compromise_report_repeated) and revokes the other certificate. Its retry
    answers that: before the report kept an append, the retry found no replay record and answered ``revoked: []``
    and ``replayed: false``."""
    api = pki_api
    admin, _inter, key, first, other = await two_of_one_key_the_first_superseded(api)

    async def died(*_args, **_kwargs):
        raise ProcessDied("the process died after blocking the key")

    with monkeypatch.context() as patch:
        patch.setattr(revoke, "revoke_holders", died)
        assert (await report(api, admin, certificate_id=first["certificate_id"])).status_code == 500
    once = {**admin, "Idempotency-Key": "report-late1-again"}
    answered = (await ok(await report(api, once, certificate_id=first["certificate_id"]))).json()
    assert answered["revoked"] == [other["certificate_id"]]
    assert (answered["result"]["changed"], answered["result"]["replayed"]) == (False, False)
    events = await api.runtime.store.read_stream("acme", "compromised-keys")
    assert [e.type for e in events] == ["key.compromise_recorded", "key.compromise_report_repeated"]
    assert (events[-1].payload["public_keys_sha256"], events[-1].payload["certificate_id"]) == (
        [key_sha256(key)], first["certificate_id"])  # the key's hash, never the key
    head = await api.runtime.store.head_position()
    again = (await ok(await report(api, once, certificate_id=first["certificate_id"]))).json()
    # no report and no revocation since (an audit checkpoint or a scheduled CRL may land in between)
    since = [e.type for e in await api.runtime.store.read_all(head)]
    assert not [t for t in since if t.startswith("key.") or t.endswith("revoked")], since
    assert again["result"]["replayed"] is True
    assert {**again, "result": {**again["result"], "replayed": False}} == answered


async def test_an_intermediates_signing_key_is_revoked_not_reported_and_its_old_key_is_reported(pki_api):
    """Reporting the key an intermediate signs with would revoke its certificate under it while it goes on issuing:
    refused, naming the CA revocation. Its key before a rollover is reported, and the parent's certificate of that
    key revoked key_compromise (the CA goes on, on its new key)."""
    api = pki_api
    admin, root, inter = await setup(api)
    refused = assert_problem(await report(api, admin, ca_id=inter), 422, "revoke_ca_instead", field="ca_id")
    assert "/v1/cas/{id}/revoke" in refused["detail"]
    old = load(await ca_pem(api, admin, inter))
    await ok(await api.client.post(f"/v1/cas/{inter}/rollover", headers=admin, json={"reason": "old key leaked"}))
    old_key = key_sha256_of_certificate(old)
    done = (await ok(await report(api, admin, ca_id=inter, public_key_sha256=old_key))).json()
    assert done["revoked_ca_certificates"] == [{"ca_id": inter, "issuer_ca_id": root,
                                                "serial_hex": format(old.serial_number, "x")}]
    new_key = key_sha256_of_certificate(load((await chain(api, admin, inter))[0]))
    assert_problem(await report(api, admin, ca_id=inter, public_key_sha256=new_key), 422, "revoke_ca_instead",
                   field="public_key_sha256")
    await issue_leaf(api, admin, inter, "still.acme.internal")  # it signs on with its new key


async def test_a_cross_certificate_a_crash_left_trusted_after_the_report_is_revoked_by_the_sweep(pki_api, monkeypatch):
    """The process dies between the key's block and the revocation of the other CA's cross-certificate: the revocation
    scheduler's sweep of the blocked key (a restarted process sweeps every one) revokes it."""
    api = pki_api
    admin, stolen, bridge, _stolen_pem, cross, _bridge_pem, _leaf = await cross_certified(api)

    async def died(*_args, **_kwargs):
        raise ProcessDied("the process died after blocking the key")

    with monkeypatch.context() as patch:
        patch.setattr(compromise_cascade, "revoke_ca_certificates", died)
        assert (await api.client.post("/v1/tenants/acme/compromised-keys", headers=admin,
                                      json={"ca_id": stolen})).status_code == 500
    serial = format(load(cross).serial_number, "x")
    assert serial not in (await crl.load_registry(api.runtime.services, "acme", bridge)).revoked
    assert await api.runtime.revocation_scheduler().sweep_compromised({"acme"}) == ()  # no leaf: CA certificates
    assert (await crl.load_registry(api.runtime.services, "acme", bridge)).revoked[serial].reason == "key_compromise"


async def test_a_roots_report_retried_after_its_rollover_leaves_the_new_key_alone(pki_api):
    """A root's report retried under its Idempotency-Key after the root rolled over to a new key: the retry works out
    the root's keys again, which now include the new one, never reported. It answers the first call's keys, and
    revokes nothing the new key certifies (it revoked a certificate of it, as if that key were stolen)."""
    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    root = await create_ca(api, admin, name="Acme Root", path_length=1)
    once = {**admin, "Idempotency-Key": "report-then-roll"}
    answered = (await ok(await report(api, once, ca_id=root))).json()
    await ok(await api.client.post(f"/v1/cas/{root}/rollover", headers=admin, json={
        "reason": "root key stolen", "compromised": True}))
    after = await issue_leaf(api, admin, root, "after.acme.internal")
    again = (await ok(await report(api, once, ca_id=root))).json()
    assert again["result"]["replayed"] is True and {**again, "result": None} == {**answered, "result": None}
    events = await api.runtime.store.read_stream("acme", f"certificate-{after['certificate_id']}")
    assert "certificate.revoked" not in [e.type for e in events]
