"""CRLs across a CA key rollover: each key that may still have valid certificates signs its own CRL, served at the
distribution point its certificates carry, and `openssl verify -crl_check` finds the revocation of a certificate
the previous key signed (a CRL signed only by the new key made it fail with "unable to get certificate CRL")."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from test_api_revocation import END, OPENSSL, ca, leaf, needs_openssl, revoke, run
from test_api_support import pki_api  # noqa: F401
from test_crl_schedule import Clock, caught_up, crl_number


def crl_url(certificate_pem: str) -> str:
    """The path and query of the certificate's (one) CRL distribution point."""
    certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
    points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    url = urlsplit(points[0].full_name[0].value)
    return f"{url.path}?{url.query}" if url.query else url.path


def key_identifier(certificate: x509.Certificate) -> bytes:
    return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def aki(listed: x509.CertificateRevocationList) -> bytes:
    return listed.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier


async def fetch(api, url: str, out) -> x509.CertificateRevocationList:
    path, _, query = url.partition("?")
    params = dict(parse_qsl(query)) | {"format": "pem"}  # httpx would replace the URL's own query with params
    response = await api.client.get(path, params=params)  # no token, as relying parties fetch it
    assert response.status_code == 200, response.text
    out.write_text(response.text)
    return x509.load_pem_x509_crl(response.content)


async def exported(api, headers, row: dict) -> list[str]:
    """The certificate with the chain it is served with (its own issuer key's CA certificate): leaf first."""
    response = await api.client.get(f"/v1/certificates/{row['certificate_id']}/export", headers=headers,
                                    params={"format": "pem"})
    assert response.status_code == 200, response.text
    return [part + END for part in response.text.split(END) if part.strip()]


async def rolled_over(api, tmp_path):
    """A root and an intermediate; A issued under the intermediate's first key, then a rollover, then B under the
    new key. Writes root.pem, old-ca.pem, new-ca.pem, a.pem and b.pem; returns (admin, inter, A row, B row)."""
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    root = await ca(api, admin, "root", "Root")
    inter = await ca(api, admin, "intermediate", "Issuing", parent=root)
    a = await leaf(api, admin, inter, "old-key.acme.internal")
    rolled = await api.client.post(f"/v1/cas/{inter}/rollover", headers=admin, json={"reason": "x"})
    assert rolled.status_code == 200, rolled.text
    b = await leaf(api, admin, inter, "new-key.acme.internal")
    a_chain, b_chain = await exported(api, admin, a), await exported(api, admin, b)
    assert a_chain[2] == b_chain[2] and a_chain[1] != b_chain[1]  # one root, one CA certificate per key
    for name, pem in (("a", a_chain[0]), ("old-ca", a_chain[1]), ("b", b_chain[0]), ("new-ca", b_chain[1]),
                      ("root", a_chain[2])):
        (tmp_path / f"{name}.pem").write_text(pem)
    (tmp_path / "root+old.pem").write_text(a_chain[2] + a_chain[1])
    (tmp_path / "root+new.pem").write_text(a_chain[2] + b_chain[1])
    (tmp_path / "root+both.pem").write_text(a_chain[2] + a_chain[1] + b_chain[1])
    return admin, inter, a, b


async def crl_verify(tmp_path, cafile: str, crlfile: str, certificate: str):
    done = await run(OPENSSL, "verify", "-crl_check", "-CAfile", tmp_path / cafile, "-CRLfile", tmp_path / crlfile,
                     tmp_path / certificate)
    return done.returncode, done.stdout + done.stderr


@needs_openssl
async def test_after_a_rollover_a_revoked_certificate_of_the_previous_key_is_found_revoked_by_openssl(
        pki_api, tmp_path):
    api = pki_api
    admin, inter, a, b = await rolled_over(api, tmp_path)
    old_ca = x509.load_pem_x509_certificate((tmp_path / "old-ca.pem").read_bytes())
    new_ca = x509.load_pem_x509_certificate((tmp_path / "new-ca.pem").read_bytes())
    a_url, b_url = crl_url(a["certificate_pem"]), crl_url(b["certificate_pem"])
    assert a_url == f"/v1/cas/{inter}/crl"  # the first key keeps the plain URL (certificates already carry it)
    before = crl_number(await fetch(api, a_url, tmp_path / "a-before.pem"))
    done = await revoke(api, admin, a["certificate_id"], reason="key_compromise")

    # A, signed by the previous key, is checked against the CRL at its own distribution point
    a_crl = await fetch(api, a_url, tmp_path / "a-crl.pem")
    code, out = await crl_verify(tmp_path, "root+old.pem", "a-crl.pem", "a.pem")
    assert code != 0 and "certificate revoked" in out, out  # it was "unable to get certificate CRL"
    code, out = await crl_verify(tmp_path, "root+both.pem", "a-crl.pem", "a.pem")
    assert code != 0 and "certificate revoked" in out, out
    assert aki(a_crl) == key_identifier(old_ca) and a_crl.is_signature_valid(old_ca.public_key())
    assert a_crl.get_revoked_certificate_by_serial_number(int(a["certificate_id"], 16)) is not None
    assert crl_number(a_crl) > before  # increases for the old key, as its relying parties see it

    # B, signed by the new key, names its key in its distribution point and is checked against that key's CRL
    assert b_url == f"/v1/cas/{inter}/crl?key={key_identifier(new_ca).hex()}"
    b_crl = await fetch(api, b_url, tmp_path / "b-crl.pem")
    code, out = await crl_verify(tmp_path, "root+new.pem", "b-crl.pem", "b.pem")
    assert code == 0, out
    assert aki(b_crl) == key_identifier(new_ca) and b_crl.is_signature_valid(new_ca.public_key())
    assert b_crl.get_revoked_certificate_by_serial_number(int(a["certificate_id"], 16)) is not None  # every one

    # a relying party holding both CA certificates and both CRLs gets the same answers
    (tmp_path / "both-crls.pem").write_text((tmp_path / "a-crl.pem").read_text() + (tmp_path / "b-crl.pem").read_text())
    code, out = await crl_verify(tmp_path, "root+both.pem", "both-crls.pem", "a.pem")
    assert code != 0 and "certificate revoked" in out, out
    code, out = await crl_verify(tmp_path, "root+both.pem", "both-crls.pem", "b.pem")
    assert code == 0, out

    # one CRL per key, numbered in turn from the CA's one sequence, the old key's first
    assert [(c["key_id"], c["crl_number"]) for c in done["crls"]] == [
        (key_identifier(old_ca).hex(), crl_number(a_crl)), (key_identifier(new_ca).hex(), crl_number(a_crl) + 1)]
    assert crl_number(b_crl) == crl_number(a_crl) + 1
    named = await fetch(api, f"/v1/cas/{inter}/crl?key={key_identifier(old_ca).hex().upper()}", tmp_path / "x.pem")
    assert named.tbs_certlist_bytes == a_crl.tbs_certlist_bytes  # the plain URL is the old key's, while it lasts
    unknown = await api.client.get(f"/v1/cas/{inter}/crl", params={"key": "00" * 20})
    assert unknown.status_code == 404 and unknown.json()["field"] == "key"


async def test_the_scheduler_republishes_the_crl_of_every_key_and_each_supersedes_its_own_keys(pki_api, tmp_path):
    api = pki_api
    _admin, inter, a, b = await rolled_over(api, tmp_path)
    services = api.runtime.services
    old_ca = x509.load_pem_x509_certificate((tmp_path / "old-ca.pem").read_bytes())
    new_ca = x509.load_pem_x509_certificate((tmp_path / "new-ca.pem").read_bytes())
    superseded: list[tuple[str, list[str]]] = []
    supersede = services.artifacts.supersede

    async def recorded(newer, older):
        superseded.append((newer, list(older)))
        return await supersede(newer, older)

    services.artifacts.supersede = recorded
    first_old = await fetch(api, crl_url(a["certificate_pem"]), tmp_path / "1.pem")  # publishes both keys' CRLs
    first_new = await fetch(api, crl_url(b["certificate_pem"]), tmp_path / "2.pem")
    assert (aki(first_old), aki(first_new)) == (key_identifier(old_ca), key_identifier(new_ca))
    await caught_up(api)
    clock = services.clock = Clock()
    scheduler = api.runtime.revocation_scheduler()
    assert [p for p in await scheduler.run_once() if p.ca_id == inter] == []  # nothing is due yet
    clock.advance(timedelta(days=5))  # 2 days left of 7: both keys' CRLs are due
    last = max(crl_number(first_old), crl_number(first_new))
    published = [(p.key_id, p.crl_number) for p in await scheduler.run_once() if p.ca_id == inter]
    number = published[0][1]  # the clock's floor (days on): both keys' numbers in turn from it
    assert number > last + 1 and published == [(key_identifier(old_ca).hex(), number),
                                                (key_identifier(new_ca).hex(), number + 1)]
    second_old = await fetch(api, crl_url(a["certificate_pem"]), tmp_path / "3.pem")
    second_new = await fetch(api, crl_url(b["certificate_pem"]), tmp_path / "4.pem")
    assert (crl_number(second_old), aki(second_old)) == (number, key_identifier(old_ca))
    assert (crl_number(second_new), aki(second_new)) == (number + 1, key_identifier(new_ca))

    # a CRL supersedes (is kept as a delta of) the previous CRL of its own key, and every one reads back whole
    signer = {}
    for listed in (first_old, first_new, second_old, second_new):
        der = listed.public_bytes(serialization.Encoding.DER)
        digest = hashlib.sha256(der).hexdigest()
        assert await services.artifacts.get(digest) == der
        signer[digest] = aki(listed)
    pairs = [(newer, older) for newer, olders in superseded for older in olders if newer in signer]
    assert pairs and all(signer[newer] == signer.get(older) for newer, older in pairs), pairs
    assert {signer[newer] for newer, _ in pairs} == {key_identifier(old_ca), key_identifier(new_ca)}


async def test_the_ca_issuer_url_of_a_certificate_answers_without_a_token_with_the_key_that_signed_it(pki_api):
    """AIA caIssuers is for relying parties, who have no token: it used to answer 401. After a rollover the
    certificates of the new key name it, so an AIA-chasing client builds its path with the right certificate."""
    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    root = (await api.client.post("/v1/cas", headers=admin, json={
        "kind": "root", "tenant_id": "acme", "name": "Root", "algorithm": "ecdsa-p384",
        "subject": {"common_name": "acme root"}})).json()
    body = {"tenant_id": "acme", "ca_id": root["ca_id"], "algorithm": "ecdsa-p256",
            "subject": {"common_name": "n.acme.internal"}, "sans": {"dns": ["n.acme.internal"]}}

    async def issuer_of(issued: dict) -> x509.Certificate:
        row = (await api.client.get(f"/v1/certificates/{issued['certificate_id']}", headers=admin,
                                    params={"min_position": issued["global_position"]})).json()
        leaf = x509.load_pem_x509_certificate(row["certificate_pem"].encode())
        url = next(d.access_location.value for d in leaf.extensions.get_extension_for_class(
            x509.AuthorityInformationAccess).value if d.access_method == x509.AuthorityInformationAccessOID.CA_ISSUERS)
        parts = urlsplit(url)
        fetched = await api.client.get(parts.path, params=dict(parse_qsl(parts.query)))  # no token
        assert fetched.status_code == 200 and fetched.headers["content-type"].startswith("application/pkix-cert")
        issuer = x509.load_der_x509_certificate(fetched.content)
        leaf.verify_directly_issued_by(issuer)
        return issuer

    old_key = (await api.client.post("/v1/certificates", headers=admin, json=body)).json()
    first = await issuer_of(old_key)
    rolled = await api.client.post(f"/v1/cas/{root['ca_id']}/rollover", headers=admin, json={"reason": "yearly"})
    assert rolled.status_code in (200, 201), rolled.text
    second = await issuer_of((await api.client.post("/v1/certificates", headers=admin, json=body)).json())
    assert first.public_key() != second.public_key()
    # The first key's certificates carry the plain URL: after the rollover it still answers their issuer (it used
    # to answer the new key's certificate, and an AIA-chasing client could not build their path).
    assert (await issuer_of(old_key)).public_key() == first.public_key()
    assert (await api.client.get(f"/v1/cas/{root['ca_id']}/certificate", params={"key": "00ff"})).status_code == 404


async def test_a_previous_key_that_cannot_sign_does_not_keep_the_current_keys_crl_from_relying_parties(
        pki_api, tmp_path, monkeypatch, caplog):
    """A previous key gone from the vault (or of an algorithm no longer here) used to fail the whole publication:
    the revocation was recorded and no CRL listed it. Now the current key's CRL is published, and the log says
    which key's CRL was not."""
    from commands import pki
    from commands.runtime import load
    from domain import ca as authority

    api = pki_api
    admin, inter, a, b = await rolled_over(api, tmp_path)
    new_ca = x509.load_pem_x509_certificate((tmp_path / "new-ca.pem").read_bytes())
    old_ca = x509.load_pem_x509_certificate((tmp_path / "old-ca.pem").read_bytes())
    state = await load(api.runtime.services, "acme", authority.stream_id(inter), authority.fold)
    old_ref = next(c.key_ref for c in state.previous if c.facts.subject_key_identifier == key_identifier(old_ca).hex())
    real = pki.SIGNING_KEYS.get

    async def without_the_old_key(services, tenant_id, key_ref):
        if key_ref == old_ref:
            raise RuntimeError("the previous key is gone from the vault")
        return await real(services, tenant_id, key_ref)

    monkeypatch.setattr(pki.SIGNING_KEYS, "get", without_the_old_key)
    done = await revoke(api, admin, b["certificate_id"], reason="superseded")
    assert [c["key_id"] for c in done["crls"]] == [key_identifier(new_ca).hex()]
    b_crl = await fetch(api, crl_url(b["certificate_pem"]), tmp_path / "b-crl.pem")
    assert b_crl.get_revoked_certificate_by_serial_number(int(b["certificate_id"], 16)) is not None
    assert "previous key" in caplog.text and key_identifier(old_ca).hex() in caplog.text
