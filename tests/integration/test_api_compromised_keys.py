"""A key revoked for compromise is never certified again in its tenant: a new CSR, a renewal that keeps it, an imported
root of it are refused (422 key_compromised) before anything is written; another tenant, another reason, are not."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from test_api_ca_lifecycle import create_ca
from test_api_revocation import ca, revoke, setup
from test_api_support import assert_problem, dying_at, pki_api, written_since  # noqa: F401
from test_crl_schedule import Clock, caught_up
from test_renewal import DAY, create_profile, events_of, issue, row

from commands import compromised_keys
from commands.authz import SYSTEM
from commands.runtime import CommandContext
from domain.compromised_keys import KeyCompromiseRecorded


def csr_of(key, name: str) -> str:
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
               .sign(key, hashes.SHA256()))
    return request.public_bytes(serialization.Encoding.PEM).decode()


def key_sha256(key) -> str:
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def new_csr(api, headers, tenant: str, ca_id: str, key, name: str):
    return api.client.post("/v1/certificates", headers=headers, json={
        "tenant_id": tenant, "ca_id": ca_id, "csr": csr_of(key, name)})


async def compromised(api, headers, tenant: str = "acme") -> list[dict]:
    response = await api.client.get(f"/v1/tenants/{tenant}/compromised-keys", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def test_a_new_csr_with_a_key_revoked_for_compromise_is_refused_and_writes_nothing(pki_api):
    api = pki_api
    admin, _root, inter = await setup(api)
    key = ec.generate_private_key(ec.SECP256R1())
    first = await issue(api, admin, inter, "k1.acme.internal", csr=csr_of(key, "k1.acme.internal"))
    assert (await new_csr(api, admin, "acme", inter, key, "k2.acme.internal")).status_code == 201  # before: certified again
    await api.create_tenant(admin, "globex")
    globex_root = await create_ca(api, admin, name="Globex Root", tenant="globex")
    globex_ca = await create_ca(api, admin, name="Globex Issuing", tenant="globex", parent_id=globex_root)

    compromised_at = datetime.now(UTC) - timedelta(minutes=1)
    await revoke(api, admin, first["certificate_id"], reason="key_compromise", invalidity_date=compromised_at.isoformat())
    head = await api.runtime.store.head_position()
    refused = await new_csr(api, admin, "acme", inter, key, "k3.acme.internal")
    body = assert_problem(refused, 422, "key_compromised", field="csr")
    assert key_sha256(key) in body["detail"] and first["certificate_id"] in body["detail"]
    # nothing written, not even a key (the background jobs may write meanwhile)
    assert await written_since(api, head) == set()

    listed = await compromised(api, admin)
    assert [(k["public_key_sha256"], k["certificate_id"], k["ca_id"], k["reason"], k["subject_ca_id"])
            for k in listed] == [(key_sha256(key), first["certificate_id"], inter, "key_compromise", None)]
    assert datetime.fromisoformat(listed[0]["invalidity_date"]) == compromised_at
    # tenant-scoped: the same key in another tenant is that tenant's to report
    assert (await new_csr(api, admin, "globex", globex_ca, key, "k.globex.internal")).status_code == 201
    assert await compromised(api, admin, "globex") == []
    # and only that key is blocked
    assert (await new_csr(api, admin, "acme", inter, ec.generate_private_key(ec.SECP256R1()), "k4.acme.internal")
            ).status_code == 201


async def test_another_revocation_reason_blocks_nothing(pki_api):
    api = pki_api
    admin, _root, inter = await setup(api)
    key = ec.generate_private_key(ec.SECP256R1())
    first = await issue(api, admin, inter, "s1.acme.internal", csr=csr_of(key, "s1.acme.internal"))
    for reason in ("superseded", "ca_compromise"):  # ca_compromise of a certificate says its issuer, not its key
        await revoke(api, admin, first["certificate_id"], reason=reason)
        name = f"s-{reason.replace('_', '-')}.acme.internal"
        first = await issue(api, admin, inter, name, csr=csr_of(key, name))
    assert await compromised(api, admin) == []


async def test_a_renewal_keeping_a_compromised_key_is_refused_before_it_claims(pki_api, monkeypatch):
    """The holder's second certificate of the key escaped the revocation's sweep (the read model that finds them was
    unavailable): renewing it with the same key is still refused, and nothing is claimed, by request or by the
    scheduler (which records the failure)."""
    api = pki_api
    clock = api.runtime.services.clock = Clock()
    admin, _root, inter = await setup(api)
    await create_profile(api, admin, "keep-key", {"reuse_key": True})
    key = ec.generate_private_key(ec.SECP256R1())
    first = await issue(api, admin, inter, "r1.acme.internal", profile="keep-key", csr=csr_of(key, "r1.acme.internal"))
    twin = await issue(api, admin, inter, "r2.acme.internal", profile="keep-key", csr=csr_of(key, "r2.acme.internal"))
    with monkeypatch.context() as patch:
        patch.setattr(api.runtime.services, "key_holders", None)  # no sweep of the key's other certificates
        assert (await revoke(api, admin, first["certificate_id"], reason="key_compromise"))["also_revoked"] == []
    assert (await row(api, admin, twin["certificate_id"]))["status"] == "issued"

    head = await api.runtime.store.head_position()
    refused = await api.client.post(f"/v1/certificates/{twin['certificate_id']}/renew", headers=admin,
                                    json={"reuse_key": True})
    assert_problem(refused, 422, "key_compromised", field="reuse_key")
    assert await written_since(api, head) == set()  # no claim, no failure, no key
    clock.advance(250 * DAY)  # 68% of its life: due, and its profile keeps the key
    await caught_up(api)
    report = await api.runtime.renewal_scheduler().run_once()
    assert (report.renewed, report.failed) == ([], [twin["certificate_id"]])
    failures = [p for p in await events_of(api, twin["certificate_id"]) if type(p).event_type != "certificate.issued"]
    assert [(type(p).event_type, p.reason, p.attempt) for p in failures] == [
        ("certificate.renewal_failed", "key_compromised", 0)]  # refused before a claim
    admin = await api.admin()  # API keys live 90 days: one made on the moved clock
    # its holder's way out is a new key, in a new CSR
    assert (await new_csr(api, admin, "acme", inter, ec.generate_private_key(ec.SECP256R1()), "r2.acme.internal")
            ).status_code == 201


async def test_the_key_is_recorded_before_the_revocation_commits_so_a_crash_leaves_it_blocked(pki_api):
    api = pki_api
    admin, _root, inter = await setup(api)
    key = ec.generate_private_key(ec.SECP256R1())
    first = await issue(api, admin, inter, "c1.acme.internal", csr=csr_of(key, "c1.acme.internal"))
    store = api.runtime.services.store
    with dying_at(store, "ca.certificate_revoked", "the process died before the issuer's append"):
        died = await api.client.post(f"/v1/certificates/{first['certificate_id']}/revoke", headers=admin,
                                     json={"reason": "key_compromise"})
        assert died.status_code == 500, died.text
    assert_problem(await new_csr(api, admin, "acme", inter, key, "c2.acme.internal"), 422, "key_compromised", field="csr")
    await revoke(api, admin, first["certificate_id"], reason="key_compromise")  # the retry completes it
    stream = await store.read_stream("acme", "compromised-keys")
    assert [e.type for e in stream] == ["key.compromise_recorded"]  # recorded once


async def test_a_ca_revoked_for_compromise_records_its_key_and_an_import_of_a_compromised_key_is_refused(pki_api):
    api = pki_api
    admin, root, inter = await setup(api)
    sub = await ca(api, admin, "intermediate", "Doomed", parent=root)
    revoked = await api.client.post(f"/v1/cas/{sub}/revoke", headers=admin, json={"reason": "key_compromise"})
    assert revoked.status_code == 200, revoked.text
    chain = (await api.client.get(f"/v1/cas/{sub}/chain", headers=admin)).text
    sub_cert = x509.load_pem_x509_certificates(chain.encode())[0]
    sub_key = hashlib.sha256(sub_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()
    listed = await compromised(api, admin)
    assert [(k["public_key_sha256"], k["subject_ca_id"], k["certificate_id"]) for k in listed] == [
        (sub_key, sub, None)]

    # a key reported through a leaf: a root made with it is refused at import, naming the certificate
    key = ec.generate_private_key(ec.SECP384R1())
    leaf_ = await issue(api, admin, inter, "ca-key.acme.internal", csr=csr_of(key, "ca-key.acme.internal"))
    await revoke(api, admin, leaf_["certificate_id"], reason="key_compromise")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Stolen Root")])
    now = datetime.now(UTC)
    root_pem = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
                .not_valid_after(now + timedelta(days=365))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=True, crl_sign=True, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA384())).public_bytes(serialization.Encoding.PEM).decode()
    head = await api.runtime.store.head_position()
    refused = await api.client.post("/v1/cas/import", headers=admin, json={
        "tenant_id": "acme", "name": "stolen", "certificate_pem": root_pem})
    assert_problem(refused, 422, "key_compromised", field="certificate_pem")
    assert await written_since(api, head) == set()


def ca_certificate(subject: str, public_key, issuer: str, signer) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])).public_key(public_key)
               .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
               .not_valid_after(now + timedelta(days=365))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0 if subject != issuer else None),
                              critical=True)
               .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False, key_agreement=False,
                                            key_cert_sign=True, crl_sign=True, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                              critical=False))
    return builder.sign(signer, hashes.SHA384())


def pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


async def test_an_offline_signed_intermediate_certificate_of_a_compromised_key_is_not_installed(pki_api):
    """The pending intermediate's key was made here, yet a report of it (by whatever revocation) blocks it too."""
    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    root_key = ec.generate_private_key(ec.SECP384R1())
    imported = await api.client.post("/v1/cas/import", headers=admin, json={
        "tenant_id": "acme", "name": "Offline", "certificate_pem": pem(ca_certificate("Offline", root_key.public_key(),
                                                                                       "Offline", root_key))})
    assert imported.status_code == 201, imported.text
    root_id = imported.json()["ca_id"]
    await caught_up(api)
    pending = await api.client.post("/v1/cas/offline-intermediate", headers=admin, json={
        "tenant_id": "acme", "parent_id": root_id, "name": "Pending", "algorithm": "ecdsa-p384",
        "subject": {"common_name": "Pending"}})
    assert pending.status_code == 201, pending.text
    ca_id = pending.json()["ca_id"]
    await caught_up(api)
    csr = x509.load_pem_x509_csr((await api.client.get(f"/v1/cas/{ca_id}", headers=admin)).json()["csr_pem"].encode())
    signed = pem(ca_certificate("Pending", csr.public_key(), "Offline", root_key))
    spki = csr.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    report = KeyCompromiseRecorded(public_key_sha256=hashlib.sha256(spki).hexdigest(), reason="ca_compromise",
                                   reported_at=datetime.now(UTC), invalidity_date=None, subject_ca_id="elsewhere")
    await compromised_keys.record(api.runtime.services, CommandContext(principal=SYSTEM),
                                  compromised_keys.ListCompromisedKeys(tenant_id="acme"), "acme", [report])
    head = await api.runtime.store.head_position()
    refused = await api.client.post(f"/v1/cas/{ca_id}/certificate", headers=admin, json={"certificate_pem": signed})
    assert_problem(refused, 422, "key_compromised", field="certificate_pem")
    assert await written_since(api, head) == set()
    assert (await api.client.get(f"/v1/cas/{ca_id}", headers=admin)).json()["status"] == "pending"


async def test_a_csr_whose_key_is_reported_compromised_while_it_is_signed_is_revoked_and_refused(pki_api, monkeypatch):
    """The race the check before signing cannot see: the issuance passed it, and the report landed (with its sweep of
    the key's certificates) before the certificate did. Simulated by letting the first check pass for a key already
    reported; the check after the append finds the report."""
    api = pki_api
    admin, _root, inter = await setup(api)
    key = ec.generate_private_key(ec.SECP256R1())
    first = await issue(api, admin, inter, "k1.acme.internal", csr=csr_of(key, "k1.acme.internal"))
    compromised_at = datetime.now(UTC) - timedelta(minutes=1)
    await revoke(api, admin, first["certificate_id"], reason="key_compromise", invalidity_date=compromised_at.isoformat())

    async def passed_before_the_report(*_args, **_kwargs) -> None:
        return None

    monkeypatch.setattr(compromised_keys, "refuse_if_compromised", passed_before_the_report)
    raced = await new_csr(api, admin, "acme", inter, key, "k2.acme.internal")
    body = assert_problem(raced, 422, "key_compromised", field="csr")
    certificate_id = body["detail"].split("certificate ")[-1].split()[0]
    await caught_up(api)
    shown = (await api.client.get(f"/v1/certificates/{certificate_id}", headers=admin)).json()
    assert (shown["status"], shown["revocation_reason"]) == ("revoked", "key_compromise")
    # from its own notBefore, the compromise predating it (RFC 5280 5.3.2)
    assert datetime.fromisoformat(shown["invalidity_date"]) >= datetime.fromisoformat(shown["not_before"])
    listed = {int(entry.serial_number) for entry in x509.load_der_x509_crl(
        (await api.client.get(f"/v1/cas/{inter}/crl")).content)}
    assert int(certificate_id, 16) in listed


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    length = bytes([size]) if size < 0x80 else bytes([0x80 | (size.bit_length() + 7) // 8]) + size.to_bytes(
        (size.bit_length() + 7) // 8, "big")
    return bytes([tag]) + length + content


def _children(element: bytes) -> list[bytes]:
    """The TLVs inside a constructed DER ``element``."""
    size, start = element[1], 2
    if size & 0x80:
        start += size & 0x7F
    data, found, i = element[start:], [], 0
    while i < len(data):
        size, j = data[i + 1], i + 2
        if size & 0x80:
            size, j = int.from_bytes(data[j:j + (size & 0x7F)], "big"), j + (size & 0x7F)
        found.append(data[i:j + size])
        i = j + size
    return found


def csr_with_spki(key, name: str, spki: bytes, sign) -> str:
    """A CSR of ``key`` whose SubjectPublicKeyInfo is ``spki`` (another encoding of the same key), signed by it."""
    normal = x509.load_pem_x509_csr(csr_of(key, name).encode())
    canonical = key.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    info = b"".join(_children(normal.tbs_certrequest_bytes))
    assert info.count(canonical) == 1
    info = _der(0x30, info.replace(canonical, spki))
    _info, algorithm, _signature = _children(normal.public_bytes(serialization.Encoding.DER))
    der = _der(0x30, info + algorithm + _der(0x03, b"\x00" + sign(info)))
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{base64.encodebytes(der).decode()}-----END CERTIFICATE REQUEST-----\n"


def compressed_point_csr(key: ec.EllipticCurvePrivateKey, name: str) -> str:
    canonical = key.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    spki = _der(0x30, _children(canonical)[0] + _der(0x03, b"\x00" + point))
    return csr_with_spki(key, name, spki, lambda info: key.sign(info, ec.ECDSA(hashes.SHA256())))


def rsa_parameters_absent_csr(key: rsa.RSAPrivateKey, name: str) -> str:
    """rsaEncryption with its parameters absent, where the canonical form has NULL (RFC 3279 2.3.1)."""
    canonical = key.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    algorithm, bits = _children(canonical)
    oid, null = _children(algorithm)
    assert null == b"\x05\x00"
    spki = _der(0x30, _der(0x30, oid) + bits)
    return csr_with_spki(key, name, spki, lambda info: key.sign(info, padding.PKCS1v15(), hashes.SHA256()))


async def test_a_compromised_key_in_another_encoding_of_its_public_key_is_still_refused(pki_api):
    """The hash names the key, not its bytes: a CSR carrying the same key as a compressed EC point, or as an RSA
    key whose algorithm parameters are absent instead of NULL, is refused as the canonical one is."""
    api = pki_api
    admin, _root, inter = await setup(api)
    for key, other_encoding in ((ec.generate_private_key(ec.SECP256R1()), compressed_point_csr),
                                (rsa.generate_private_key(public_exponent=65537, key_size=3072),
                                 rsa_parameters_absent_csr)):
        name = f"enc-{type(key).__name__.lower()[:3]}.acme.internal"
        first = await issue(api, admin, inter, name, csr=csr_of(key, name))
        await revoke(api, admin, first["certificate_id"], reason="key_compromise")
        refused = await api.client.post("/v1/certificates", headers=admin, json={
            "tenant_id": "acme", "ca_id": inter, "csr": other_encoding(key, "again-" + name)})
        body = assert_problem(refused, 422, "key_compromised", field="csr")
        assert key_sha256(key) in body["detail"]


async def test_only_the_tenants_own_principals_read_its_compromised_keys(pki_api):
    api = pki_api
    admin, _root, inter = await setup(api)
    await api.create_tenant(admin, "globex")
    key = ec.generate_private_key(ec.SECP256R1())
    first = await issue(api, admin, inter, "x.acme.internal", csr=csr_of(key, "x.acme.internal"))
    await revoke(api, admin, first["certificate_id"], reason="key_compromise")
    for roles, tenant in ((("viewer",), "globex"), (("tenant-admin",), "globex")):
        other = await api.token(*roles, tenant_id=tenant)
        refused = await api.client.get("/v1/tenants/acme/compromised-keys", headers=other)
        assert refused.status_code in (403, 404), refused.text
        assert key_sha256(key) not in refused.text
    own = await api.token("viewer", tenant_id="acme")
    assert [k["public_key_sha256"] for k in await compromised(api, own)] == [key_sha256(key)]


async def test_a_suspended_tenant_still_reports_a_compromised_key_and_sees_it_listed(pki_api):
    """Revocation goes on while a tenant is suspended, and so does the blocklist it feeds."""
    api = pki_api
    admin, _root, inter = await setup(api)
    key = ec.generate_private_key(ec.SECP256R1())
    first = await issue(api, admin, inter, "susp.acme.internal", csr=csr_of(key, "susp.acme.internal"))
    suspended = await api.client.post("/v1/tenants/acme/suspend", headers=admin, json={"reason": "unpaid"})
    assert suspended.status_code == 200, suspended.text
    await caught_up(api)
    await revoke(api, admin, first["certificate_id"], reason="key_compromise")
    assert [k["public_key_sha256"] for k in await compromised(api, admin)] == [key_sha256(key)]
    resumed = await api.client.post("/v1/tenants/acme/resume", headers=admin, json={"reason": "paid"})
    assert resumed.status_code == 200, resumed.text
    await caught_up(api)
    assert_problem(await new_csr(api, admin, "acme", inter, key, "susp2.acme.internal"), 422, "key_compromised",
                   field="csr")


async def report(api, headers, tenant: str = "acme", **body):
    return await api.client.post(f"/v1/tenants/{tenant}/compromised-keys", headers=headers, json=body)


async def two_of_one_key_the_first_superseded(api):
    """Two certificates of one key, the first revoked superseded (its key found stolen since): (admin, their CA,
    the key, the first, the other)."""
    admin, _root, inter = await setup(api)
    key = ec.generate_private_key(ec.SECP256R1())
    first = await issue(api, admin, inter, "late1.acme.internal", csr=csr_of(key, "late1.acme.internal"))
    other = await issue(api, admin, inter, "late2.acme.internal", csr=csr_of(key, "late2.acme.internal"))
    await revoke(api, admin, first["certificate_id"], reason="superseded")
    return admin, inter, key, first, other


async def test_a_key_found_compromised_after_its_certificate_was_revoked_for_another_reason_is_reported(pki_api):
    """A revocation is final (its reason stands), so the key is reported apart: blocked, its other trusted
    certificates revoked key_compromise; a second report records nothing."""
    api = pki_api
    admin, inter, key, first, other = await two_of_one_key_the_first_superseded(api)
    assert (await api.client.post(f"/v1/certificates/{first['certificate_id']}/revoke", headers=admin,
                                  json={"reason": "key_compromise"})).status_code == 409  # final
    assert_problem(await report(api, admin), 422, "one_of_required", field="certificate_id")
    assert_problem(await report(api, admin, certificate_id=first["certificate_id"], ca_id=inter), 422,
                   "one_of_required", field="certificate_id")

    reported = await report(api, admin, certificate_id=first["certificate_id"])
    assert reported.status_code == 200, reported.text
    body = reported.json()
    assert body["public_keys_sha256"] == [key_sha256(key)] and body["revoked"] == [other["certificate_id"]]
    assert body["result"]["changed"] is True
    await caught_up(api)
    shown = (await api.client.get(f"/v1/certificates/{other['certificate_id']}", headers=admin)).json()
    assert (shown["status"], shown["revocation_reason"]) == ("revoked", "key_compromise")
    kept = (await api.client.get(f"/v1/certificates/{first['certificate_id']}", headers=admin)).json()
    assert kept["revocation_reason"] == "superseded"  # its revocation stands as it was
    refused = assert_problem(await new_csr(api, admin, "acme", inter, key, "late3.acme.internal"), 422,
                             "key_compromised", field="csr")
    assert f"a report naming certificate {first['certificate_id']}" in refused["detail"]
    [listed] = await compromised(api, admin)
    assert (listed["through"], listed["certificate_id"], listed["reason"]) == (
        "report", first["certificate_id"], "key_compromise")
    again = (await report(api, admin, certificate_id=first["certificate_id"])).json()
    assert again["result"]["changed"] is False and again["revoked"] == []


async def test_a_roots_keys_are_reported_compromised_and_its_certificate_is_never_imported_again(pki_api):
    """A root is never revoked: its keys are reported (ca:manage), then blocked like any other key."""
    api = pki_api
    admin, root, _inter = await setup(api)
    root_pem = (await api.client.get(f"/v1/cas/{root}/certificate", params={"format": "pem"})).text
    root_key = key_sha256_of_certificate(x509.load_pem_x509_certificate(root_pem.encode()))
    reported = await report(api, admin, ca_id=root)
    assert reported.status_code == 200, reported.text
    assert reported.json()["public_keys_sha256"] == [root_key]
    assert [(k["public_key_sha256"], k["subject_ca_id"], k["through"]) for k in await compromised(api, admin)] == [
        (root_key, root, "report")]
    refused = await api.client.post("/v1/cas/import", headers=admin, json={
        "tenant_id": "acme", "name": "again", "certificate_pem": root_pem})
    assert_problem(refused, 422, "key_compromised", field="certificate_pem")
    assert_problem(await report(api, admin, ca_id="01a24ed1-bfc5-71d2-ad0c-408612e6125b"), 404, field="ca_id")


def key_sha256_of_certificate(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


async def test_after_a_rollover_only_the_roots_old_key_is_reported(pki_api):
    """A root rolled over because its old key leaked: ``public_key_sha256`` names that key alone, so the new key
    goes on certifying; a key the CA never held, or a key with a certificate_id, is refused naming the field."""
    api = pki_api
    admin, root, _inter = await setup(api)
    old_pem = (await api.client.get(f"/v1/cas/{root}/certificate", params={"format": "pem"})).text
    old_key = key_sha256_of_certificate(x509.load_pem_x509_certificate(old_pem.encode()))
    rolled = await api.client.post(f"/v1/cas/{root}/rollover", headers=admin, json={"reason": "old key leaked"})
    assert rolled.status_code in (200, 201), rolled.text
    assert_problem(await report(api, admin, ca_id=root, public_key_sha256="ab" * 32), 422, "key_not_held",
                   field="public_key_sha256")
    leaf_ = await issue(api, admin, root, "x.acme.internal")
    assert_problem(await report(api, admin, certificate_id=leaf_["certificate_id"], public_key_sha256=old_key), 422,
                   "key_with_ca_only", field="public_key_sha256")
    reported = await report(api, admin, ca_id=root, public_key_sha256=old_key)
    assert reported.status_code == 200, reported.text
    assert reported.json()["public_keys_sha256"] == [old_key]
    assert [k["public_key_sha256"] for k in await compromised(api, admin)] == [old_key]
    assert (await api.client.post("/v1/certificates", headers=admin, json={
        "tenant_id": "acme", "ca_id": root, "algorithm": "ecdsa-p256", "subject": {"common_name": "y.acme.internal"},
        "sans": {"dns": ["y.acme.internal"]}})).status_code == 201  # the new key signs on
