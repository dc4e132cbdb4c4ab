"""After a root's compromise rollover its link certificates are revoked (key_compromise), as openssl sees it.

Before a rollover away from stolen key K2, a routine rollover K1 -> K2 signed NewWithOld (K2 certified by K1): a
relying party that trusts only K1 accepts whatever K2 signs through it, so the thief's chains too. Leaving the link out
of exports does not stop a chain the thief assembles; K1 (not stolen) revoking it does. `openssl ocsp` hears
`revoked` (keyCompromise) for both links, K1's CRL lists NewWithOld, and `openssl verify -crl_check_all` refuses a
chain K1 -> NewWithOld -> a certificate K2 signed. ``GET /v1/cas/{id}/compromise`` tells what was done.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from test_api_ca_lifecycle import (assert_verifies, ca_pem, chain, create_ca, issue_leaf, leaf_with_chain, load,
                                   needs_openssl, ok)
from test_api_revocation import OPENSSL, run
from test_api_root_link_certificates import ski, truststore
from test_api_support import assert_problem, pki_api  # noqa: F401


async def rolled_twice(api):
    """Root K1 -> K2 (routine, with links), a certificate K2 signs (what the thief can sign), then K2 -> K3 in
    compromise mode. Returns the admin headers, the root's id, K1's and K2's certificates, the links by role, the
    leaf and the compromise rollover's answer."""
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    root = await create_ca(api, admin, name="Acme Root", path_length=1)
    first = await ca_pem(api, admin, root)
    routine = (await ok(await api.client.post(f"/v1/cas/{root}/rollover", headers=admin,
                                              json={"reason": "root key update"}))).json()
    links = {c["role"]: c["certificate_pem"] for c in (await ok(await api.client.get(
        f"/v1/cas/{root}", headers=admin, params={"min_position": routine["global_position"]}))).json()[
        "link_certificates"]}
    second = (await chain(api, admin, root))[-1]
    signed = await issue_leaf(api, admin, root, "thief.acme.internal")
    rolled = (await ok(await api.client.post(f"/v1/cas/{root}/rollover", headers=admin, json={
        "reason": "root key stolen", "compromised": True}))).json()
    return admin, root, first, second, links, signed, rolled


async def openssl_ocsp_status(api, tmp_path, root: str, name: str, certificate: str, issuer: str) -> str:
    (tmp_path / f"{name}.pem").write_text(certificate)
    (tmp_path / f"{name}-issuer.pem").write_text(issuer)
    done = await run(OPENSSL, "ocsp", "-issuer", tmp_path / f"{name}-issuer.pem", "-cert", tmp_path / f"{name}.pem",
                     "-url", f"{api.base_url}/ocsp/{root}", "-CAfile", tmp_path / f"{name}-issuer.pem", "-resp_text")
    assert done.returncode == 0 and "Response verify OK" in done.stdout + done.stderr, done.stdout + done.stderr
    return done.stdout


@needs_openssl
async def test_a_compromise_rollover_revokes_every_link_and_openssl_refuses_the_thiefs_chain(pki_api, tmp_path):
    api = pki_api
    admin, root, first, second, links, signed, rolled = await rolled_twice(api)
    new_with_old, old_with_new = links["new_with_old"], links["old_with_new"]
    for name, link, issuer in (("new-with-old", new_with_old, first), ("old-with-new", old_with_new, second)):
        said = await openssl_ocsp_status(api, tmp_path, root, name, link, issuer)
        assert f"{name}.pem: revoked" in said, said
        assert "Revocation Reason: keyCompromise" in said, said

    crls = []
    for key_of in (first, second):  # K1's CRL for the link it signed, K2's for the certificate K2 signed
        response = await ok(await api.client.get(f"/v1/cas/{root}/crl", params={
            "key": ski(load(key_of)).hex(), "format": "pem"}))
        crls.append(response.text)
    listed = x509.load_pem_x509_crl(crls[0].encode()).get_revoked_certificate_by_serial_number(
        load(new_with_old).serial_number)
    assert listed is not None
    assert listed.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise

    leaf = (await ok(await api.client.get(f"/v1/certificates/{signed['certificate_id']}/export", headers=admin,
                                          params={"format": "pem"}))).text.split("-----END CERTIFICATE-----")[0] \
        + "-----END CERTIFICATE-----\n"
    for path, text in (("anchor.pem", first), ("link.pem", new_with_old), ("leaf.pem", leaf),
                       ("crls.pem", "".join(crls))):
        (tmp_path / path).write_text(text)
    base = [OPENSSL, "verify", "-CAfile", tmp_path / "anchor.pem", "-untrusted", tmp_path / "link.pem"]
    trusting = await run(*base, tmp_path / "leaf.pem")  # without revocation checks, K1 accepts it through the link
    assert trusting.returncode == 0, trusting.stdout + trusting.stderr
    checked = await run(*base, "-crl_check_all", "-CRLfile", tmp_path / "crls.pem", tmp_path / "leaf.pem")
    assert checked.returncode != 0 and "certificate revoked" in checked.stdout + checked.stderr, \
        checked.stdout + checked.stderr

    events = await api.runtime.store.read_stream("acme", f"ca-{root}")  # one append: no crash comes between
    at = next(e.version for e in events if e.type == "ca.key_rolled_over" and e.payload["compromised"])
    assert at == rolled["version"]
    assert [(e.type, e.payload["reason"], e.payload["subject_ca_id"]) for e in events if e.version in (at - 2, at - 1)
            ] == [("ca.certificate_revoked", "key_compromise", root)] * 2


async def compromise_of(api, headers, root: str, position: int | None = None) -> dict:
    params = {"min_position": position} if position else {}
    return (await ok(await api.client.get(f"/v1/cas/{root}/compromise", headers=headers, params=params))).json()


async def test_the_compromise_route_tells_what_was_done_and_what_is_left(pki_api):
    api = pki_api
    admin, root, first, second, links, signed, rolled = await rolled_twice(api)
    report = await compromise_of(api, admin, root, rolled["global_position"])
    [done] = report["rollovers"]
    assert (done["version"], done["reason"]) == (rolled["version"], "root key stolen")
    assert done["compromised_key_sha256"] == (await api.runtime.store.read_stream("acme", "compromised-keys"))[
        0].payload["public_key_sha256"]
    assert done["certificate_fingerprint"] == load((await chain(api, admin, root))[-1]).fingerprint(
        hashes.SHA256()).hex()
    assert sorted((r["role"], r["reason"]) for r in report["revoked_links"]) == [
        ("new_with_old", "key_compromise"), ("old_with_new", "key_compromise")]
    assert report["withdrawn_certificates"] == 4  # two root certificates, two links
    assert report["reissue"] == rolled["reissue"] == {"count": 1, "cas": [], "certificates": [
        signed["certificate_id"]], "complete": True}
    renewed = (await ok(await api.client.post(f"/v1/certificates/{signed['certificate_id']}/renew", headers=admin,
                                              json={}), 201)).json()
    assert (await compromise_of(api, admin, root, renewed["global_position"]))["reissue"]["count"] == 0
    other = await create_ca(api, admin, name="Never rolled")
    assert (await compromise_of(api, admin, other)) | {"ca_id": None} == {
        "ca_id": None, "tenant_id": "acme", "rollovers": [], "withdrawn_certificates": 0, "revoked_links": [],
        "reissue": None}


async def test_a_ca_the_stolen_key_certified_issues_nothing_until_it_is_rolled_over(pki_api, tmp_path):
    """Its certificate, signed by the withdrawn key, validates for no relying party that dropped the old root: what it
    signs would chain nowhere. Refused (422 ``ca_recertification_required``, naming the CA to roll over) until its
    rollover has the root's new key certify it; a CA two levels down waits for the one above it first."""
    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    root = await create_ca(api, admin, name="Acme Root", path_length=2)
    upper = await create_ca(api, admin, name="Acme Upper", parent_id=root, path_length=1)
    lower = await create_ca(api, admin, name="Acme Lower", parent_id=upper)
    rolled = (await ok(await api.client.post(f"/v1/cas/{root}/rollover", headers=admin, json={
        "reason": "root key stolen", "compromised": True}))).json()
    assert rolled["reissue"]["cas"] == [upper, lower]

    def names(problem: dict, ca_id: str) -> None:  # in the sentence, and as a member a client acts on
        assert f"roll CA {ca_id} over" in problem["detail"] and problem["ca_to_roll_over"] == ca_id, problem

    for issuer in (upper, lower):
        refused = assert_problem(await api.client.post("/v1/certificates", headers=admin, json={
            "tenant_id": "acme", "ca_id": issuer, "algorithm": "ecdsa-p256", "subject": {"common_name": "n.acme"},
            "sans": {"dns": ["n.acme"]}}), 422, "ca_recertification_required", field="ca_id")
        names(refused, upper)
    names(assert_problem(await api.client.post("/v1/cas", headers=admin, json={
        "kind": "intermediate", "tenant_id": "acme", "name": "Below", "parent_id": upper, "algorithm": "ecdsa-p384",
        "subject": {"common_name": "Below"}}), 422, "ca_recertification_required", field="parent_id"), upper)
    names(assert_problem(await api.client.post(f"/v1/cas/{lower}/rollover", headers=admin, json={
        "reason": "root key compromised"}), 422, "ca_recertification_required", field="parent_id"), upper)

    await ok(await api.client.post(f"/v1/cas/{upper}/rollover", headers=admin, json={"reason": "root key compromised"}))
    fresh = await issue_leaf(api, admin, upper, "fresh.acme.internal")
    names(assert_problem(await api.client.post("/v1/certificates", headers=admin, json={
        "tenant_id": "acme", "ca_id": lower, "algorithm": "ecdsa-p256", "subject": {"common_name": "n.acme"},
        "sans": {"dns": ["n.acme"]}}), 422, "ca_recertification_required", field="ca_id"), lower)
    again = (await ok(await api.client.post(f"/v1/cas/{lower}/rollover", headers=admin, json={
        "reason": "root key compromised"}))).json()
    below = await issue_leaf(api, admin, lower, "below.acme.internal")
    assert (await compromise_of(api, admin, root, again["global_position"]))["reissue"]["cas"] == []
    for issued in (fresh, below):
        served = await leaf_with_chain(api, admin, issued)
        assert_verifies(tmp_path, issued["certificate_id"], served[0], "".join(await truststore(api, admin, issued)),
                        served[1:])
