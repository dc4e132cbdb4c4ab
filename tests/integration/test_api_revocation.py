"""Revocation end to end: the revoke commands, CRLs checked by `openssl verify`, OCSP checked by `openssl ocsp`.

Every request to /v1/cas/{id}/crl and /ocsp/{ca_id} here is made without a token, as relying
parties make them. openssl runs in a worker thread: the server shares this test's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID
from test_api_support import assert_problem, pki_api  # noqa: F401

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl CLI is not installed")
END = "-----END CERTIFICATE-----\n"


async def ca(api, headers, kind, name, parent=None, path_length=None, algorithm="ecdsa-p384", days=None):
    body = {"kind": kind, "tenant_id": "acme", "name": name, "algorithm": algorithm,
            "subject": {"common_name": f"Acme {name}", "organization": "Acme"}}
    if parent:
        body["parent_id"] = parent
    if path_length is not None:
        body["path_length"] = path_length
    if days is not None:
        body["validity_days"] = days
    response = await api.client.post("/v1/cas", headers=headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()["ca_id"]


async def leaf(api, headers, ca_id, name):
    response = await api.client.post("/v1/certificates", headers=headers, json={
        "tenant_id": "acme", "ca_id": ca_id, "algorithm": "ecdsa-p256", "subject": {"common_name": name},
        "sans": {"dns": [name]}})
    assert response.status_code == 201, response.text
    issued = response.json()
    row = await api.client.get(f"/v1/certificates/{issued['certificate_id']}", headers=headers,
                               params={"min_position": issued["global_position"]})
    assert row.status_code == 200, row.text
    return row.json()


async def setup(api):
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    root = await ca(api, admin, "root", "Root")
    inter = await ca(api, admin, "intermediate", "Issuing", parent=root)
    return admin, root, inter


async def three_levels(api):
    """A root, an intermediate that may sign CAs, and a CA below it: (admin headers, root, inter, sub)."""
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    root = await ca(api, admin, "root", "Root")
    inter = await ca(api, admin, "intermediate", "Regional", parent=root, path_length=1)
    sub = await ca(api, admin, "intermediate", "Cluster", parent=inter, days=900)
    return admin, root, inter, sub


async def chain_files(api, headers, ca_id, tmp_path):
    chain = (await api.client.get(f"/v1/cas/{ca_id}/chain", headers=headers)).text
    (tmp_path / "chain.pem").write_text(chain)
    (tmp_path / "issuer.pem").write_text(chain.split(END)[0] + END)
    return chain


async def crl_of(api, ca_id, tmp_path=None) -> x509.CertificateRevocationList:
    response = await api.client.get(f"/v1/cas/{ca_id}/crl", params={"format": "pem"})  # no token
    assert response.status_code == 200, response.text
    if tmp_path is not None:
        (tmp_path / "crl.pem").write_text(response.text)
    return x509.load_pem_x509_crl(response.content)


async def run(*args) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(subprocess.run, [str(a) for a in args], capture_output=True, text=True)


async def openssl_ocsp(api, ca_id, tmp_path, name="leaf.pem") -> str:
    done = await run(OPENSSL, "ocsp", "-issuer", tmp_path / "issuer.pem", "-cert", tmp_path / name,
                     "-url", f"{api.base_url}/ocsp/{ca_id}", "-CAfile", tmp_path / "chain.pem", "-resp_text")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Response verify OK" in done.stdout + done.stderr, done.stdout + done.stderr
    return done.stdout


async def revoke(api, headers, certificate_id, **body):
    response = await api.client.post(f"/v1/certificates/{certificate_id}/revoke", headers=headers, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def ocsp_request(certificate: x509.Certificate, issuer: x509.Certificate, nonce: bytes | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


async def ask(api, ca_id, request: bytes) -> ocsp.OCSPResponse:
    response = await api.client.post(f"/ocsp/{ca_id}", content=request,
                                     headers={"Content-Type": "application/ocsp-request"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(response.content)


def pem_certs(text: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(text.encode())


@needs_openssl
async def test_openssl_sees_good_then_revoked_by_ocsp_and_the_crl_rejects_only_the_revoked_leaf(pki_api, tmp_path):
    api = pki_api
    admin, _root, inter = await setup(api)
    victim = await leaf(api, admin, inter, "node1.acme.internal")
    bystander = await leaf(api, admin, inter, "node2.acme.internal")
    (tmp_path / "leaf.pem").write_text(victim["certificate_pem"])
    (tmp_path / "other.pem").write_text(bystander["certificate_pem"])
    await chain_files(api, admin, inter, tmp_path)
    assert "leaf.pem: good" in await openssl_ocsp(api, inter, tmp_path)
    first = await crl_of(api, inter, tmp_path)
    verified = await run(OPENSSL, "verify", "-crl_check", "-CRLfile", tmp_path / "crl.pem", "-CAfile",
                         tmp_path / "chain.pem", tmp_path / "leaf.pem")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    compromised = datetime.now(UTC) - timedelta(minutes=5)
    revoked = await revoke(api, admin, victim["certificate_id"], reason="key_compromise",
                           invalidity_date=compromised.isoformat())
    assert revoked["status"] == "revoked" and revoked["reason"] == "key_compromise"
    number = first.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    [published] = [c["crl_number"] for c in revoked["crls"]]  # published before the API answered
    assert published > number

    out = await openssl_ocsp(api, inter, tmp_path)
    assert "leaf.pem: revoked" in out and "Reason: keyCompromise" in out, out
    assert "other.pem" not in out
    crl = await crl_of(api, inter, tmp_path)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == published
    rejected = await run(OPENSSL, "verify", "-crl_check", "-CRLfile", tmp_path / "crl.pem", "-CAfile",
                         tmp_path / "chain.pem", tmp_path / "leaf.pem")
    assert rejected.returncode != 0 and "certificate revoked" in rejected.stdout + rejected.stderr
    accepted = await run(OPENSSL, "verify", "-crl_check", "-CRLfile", tmp_path / "crl.pem", "-CAfile",
                         tmp_path / "chain.pem", tmp_path / "other.pem")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr

    issuer = pem_certs((tmp_path / "issuer.pem").read_text())[0]
    assert crl.is_signature_valid(issuer.public_key()) and isinstance(crl.signature_hash_algorithm, hashes.SHA384)
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert aki == issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert crl.next_update_utc - crl.last_update_utc == timedelta(days=7)
    entry = crl.get_revoked_certificate_by_serial_number(int(victim["certificate_id"], 16))
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    invalid_since = entry.extensions.get_extension_for_class(x509.InvalidityDate).value.invalidity_date_utc
    assert abs(invalid_since - compromised) < timedelta(seconds=1)
    assert crl.get_revoked_certificate_by_serial_number(int(bystander["certificate_id"], 16)) is None

    again = await api.client.post(f"/v1/certificates/{victim['certificate_id']}/revoke", headers=admin,
                                  json={"reason": "superseded"})
    assert_problem(again, 409, "already_revoked", field="id")
    row = (await api.client.get(f"/v1/certificates/{victim['certificate_id']}", headers=admin,
                                params={"min_position": revoked["global_position"]})).json()
    assert (row["status"], row["revocation_reason"], row["revoked_ca_id"]) == ("revoked", "key_compromise", None)
    listed = (await api.client.get("/v1/certificates", headers=admin, params={"status": "revoked"})).json()
    assert [item["certificate_id"] for item in listed["items"]] == [victim["certificate_id"]]


async def test_crl_and_ocsp_need_no_token_while_v1_does(pki_api):
    api = pki_api
    _admin, _root, inter = await setup(api)
    der = await api.client.get(f"/v1/cas/{inter}/crl")
    assert der.status_code == 200 and der.headers["content-type"] == "application/pkix-crl"
    assert x509.load_der_x509_crl(der.content).issuer.rfc4514_string() == "CN=Acme Issuing,O=Acme"
    assert (await ask(api, inter, b"\x30\x00")).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    for path in ("/v1/certificates", f"/v1/cas/{inter}", f"/v1/cas/{inter}/chain"):
        assert_problem(await api.client.get(path), 401, "unauthorized")
    assert_problem(await api.client.post(f"/v1/cas/{inter}/revoke", json={}), 401, "unauthorized")
    assert_problem(await api.client.get("/v1/cas/no-such-ca/crl"), 404, "ca_not_found")


async def test_ocsp_echoes_the_nonce_and_answers_unknown_malformed_and_unauthorized(pki_api):
    api = pki_api
    admin, root, inter = await setup(api)
    row = await leaf(api, admin, inter, "node3.acme.internal")
    certificate = x509.load_pem_x509_certificate(row["certificate_pem"].encode())
    chain = pem_certs((await api.client.get(f"/v1/cas/{inter}/chain", headers=admin)).text)
    issuer, root_cert = chain
    answer = await ask(api, inter, ocsp_request(certificate, issuer, nonce=b"0123456789abcdef"))
    assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"0123456789abcdef"
    signer = answer.certificates[0]
    assert signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.OCSP_SIGNING])
    signer.extensions.get_extension_for_class(x509.OCSPNoCheck)
    signer.verify_directly_issued_by(issuer)
    assert signer.not_valid_after_utc - signer.not_valid_before_utc <= timedelta(days=30)
    signer.public_key().verify(answer.signature, answer.tbs_response_bytes, ec.ECDSA(answer.signature_hash_algorithm))
    assert answer.serial_number == certificate.serial_number

    unknown = x509.CertificateBuilder().subject_name(certificate.subject).issuer_name(issuer.subject).public_key(
        certificate.public_key()).serial_number(x509.random_serial_number()).not_valid_before(
        certificate.not_valid_before_utc).not_valid_after(certificate.not_valid_after_utc).sign(
        ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    assert (await ask(api, inter, ocsp_request(unknown, issuer))).certificate_status == ocsp.OCSPCertStatus.UNKNOWN
    sub_ca = await ask(api, root, ocsp_request(issuer, root_cert))  # the root's responder knows its intermediate
    assert sub_ca.certificate_status == ocsp.OCSPCertStatus.GOOD
    for garbage in (b"", b"not an ocsp request", b"\x30\x03\x02\x01\x01"):
        assert (await ask(api, inter, garbage)).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    assert (await ask(api, "01a00000-0000-7000-8000-000000000000", ocsp_request(certificate, issuer))
            ).response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED
    wrong_issuer = await ask(api, inter, ocsp_request(certificate, root_cert))  # the root's name and key hashes
    assert wrong_issuer.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED

    # RFC 8954: a nonce is 1-32 octets; a 200-octet one was echoed into the signed answer
    longest = await ask(api, inter, ocsp_request(certificate, issuer, nonce=b"\x01" * 32))
    assert longest.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"\x01" * 32
    for nonce in (b"\x01" * 33, b"\x01" * 200, b""):
        refused = await ask(api, inter, ocsp_request(certificate, issuer, nonce=nonce))
        assert refused.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST, len(nonce)
        encoded = quote(base64.b64encode(ocsp_request(certificate, issuer, nonce=nonce)).decode(), safe="")
        got = await api.client.get(f"/ocsp/{inter}/{encoded}")
        assert got.status_code == 200 and got.headers["content-type"] == "application/ocsp-response"
        assert ocsp.load_der_ocsp_response(got.content).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


async def test_ocsp_get_is_cacheable_until_a_revocation_drops_the_cached_answer(pki_api):
    api = pki_api
    admin, _root, inter = await setup(api)
    row = await leaf(api, admin, inter, "node4.acme.internal")
    certificate = x509.load_pem_x509_certificate(row["certificate_pem"].encode())
    issuer = pem_certs((await api.client.get(f"/v1/cas/{inter}/chain", headers=admin)).text)[0]
    encoded = quote(base64.b64encode(ocsp_request(certificate, issuer)).decode(), safe="")
    first = await api.client.get(f"/ocsp/{inter}/{encoded}")
    assert first.status_code == 200, first.text
    cache_control = first.headers["cache-control"]
    assert "public" in cache_control and "no-transform" in cache_control and "max-age=" in cache_control
    assert {"last-modified", "expires", "etag"} <= first.headers.keys()
    second = await api.client.get(f"/ocsp/{inter}/{encoded}")
    assert second.content == first.content  # served from the cache: the same signed bytes
    assert ocsp.load_der_ocsp_response(first.content).certificate_status == ocsp.OCSPCertStatus.GOOD
    await revoke(api, admin, row["certificate_id"], reason="superseded")
    after = ocsp.load_der_ocsp_response((await api.client.get(f"/ocsp/{inter}/{encoded}")).content)
    assert after.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert after.revocation_reason == x509.ReasonFlags.superseded
    malformed = await api.client.get(f"/ocsp/{inter}/%%%not-base64")
    assert ocsp.load_der_ocsp_response(malformed.content).response_status == \
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST


async def test_an_ocsp_get_whose_base64_holds_slashes_is_answered_as_sent(pki_api):
    """'/' is in base64's alphabet: an encoded request may hold '//', start or end with '/'. Each is read as the
    client sent it, escaped (%2F, as RFC 6960 A.1 asks) or not; the router's path parameter had collapsed '//'
    and lost a trailing '/', so such a request (about one in forty) was answered malformedRequest."""
    api = pki_api
    admin, _root, inter = await setup(api)
    row = await leaf(api, admin, inter, "slashes.acme.internal")
    certificate = x509.load_pem_x509_certificate(row["certificate_pem"].encode())
    issuer = pem_certs((await api.client.get(f"/v1/cas/{inter}/chain", headers=admin)).text)[0]
    # the nonce ends the DER: all-ones bytes make '/' runs; a length that fills the last base64 group ends in '/'
    encoded = next(text for size in range(16, 32)
                   if (text := base64.b64encode(ocsp_request(certificate, issuer, nonce=b"\xff" * size)).decode())
                   .endswith("//"))
    for path in (quote(encoded, safe=""), quote(encoded, safe="/")):  # escaped, and as it is
        answer = ocsp.load_der_ocsp_response((await api.client.get(f"/ocsp/{inter}/{path}")).content)
        assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, (path, answer.response_status)
        assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
        assert answer.serial_number == certificate.serial_number


async def test_a_revocation_made_in_another_process_is_not_hidden_by_a_cached_ocsp_answer(pki_api, monkeypatch):
    """Cached OCSP answers are keyed by the revocations recorded on the CA and the CAs above it, so a revocation made
    by another worker process (whose cache-dropping never reaches this one: here, dropping is switched off)
    still changes the next answer, for a certificate and for a CA on the chain alike."""
    from commands import ocsp as responder

    api = pki_api
    admin, root, inter, sub = await three_levels(api)
    issuers = {ca_id: pem_certs((await api.client.get(f"/v1/cas/{ca_id}/chain", headers=admin)).text)[0]
               for ca_id in (inter, sub)}

    async def status(ca_id: str, row: dict):
        certificate = x509.load_pem_x509_certificate(row["certificate_pem"].encode())
        encoded = quote(base64.b64encode(ocsp_request(certificate, issuers[ca_id])).decode(), safe="")
        first = await api.client.get(f"/ocsp/{ca_id}/{encoded}")
        second = await api.client.get(f"/ocsp/{ca_id}/{encoded}")
        answer = ocsp.load_der_ocsp_response(first.content)
        assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, answer.response_status
        return answer, second.content == first.content

    monkeypatch.setattr(responder.RESPONSES, "invalidate", lambda ca_id: None)
    monkeypatch.setattr(responder.RESPONSES, "invalidate_all", lambda: None)
    direct, below = await leaf(api, admin, inter, "d.acme.internal"), await leaf(api, admin, sub, "e.acme.internal")
    for ca_id, row in ((inter, direct), (sub, below)):
        answer, cached = await status(ca_id, row)
        assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD and cached
    await revoke(api, admin, direct["certificate_id"], reason="key_compromise")
    answer, _ = await status(inter, direct)
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason == x509.ReasonFlags.key_compromise
    revoked = await api.client.post(f"/v1/cas/{inter}/revoke", headers=admin, json={"reason": "ca_compromise"})
    assert revoked.status_code == 200, revoked.text
    answer, _ = await status(sub, below)  # below the revoked CA: its own CA's stream did not move, the chain did
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED


async def test_revoking_an_intermediate_lists_it_on_its_parents_crl_and_untrusts_its_subtree(pki_api):
    api = pki_api
    admin, root, inter, sub = await three_levels(api)
    direct = await leaf(api, admin, inter, "a.acme.internal")
    below = await leaf(api, admin, sub, "b.acme.internal")
    other_inter = await ca(api, admin, "intermediate", "Other", parent=root)
    unaffected = await leaf(api, admin, other_inter, "c.acme.internal")
    chain = pem_certs((await api.client.get(f"/v1/cas/{sub}/chain", headers=admin)).text)
    sub_cert, inter_cert, root_cert = chain

    assert_problem(await api.client.post(f"/v1/cas/{root}/revoke", headers=admin, json={}), 422,
                   "root_not_revocable", field="ca_id")
    response = await api.client.post(f"/v1/cas/{inter}/revoke", headers=admin, json={"reason": "key_compromise"})
    assert response.status_code == 200, response.text
    revoked = response.json()
    assert [c["ca_id"] for c in revoked["crls"]] == [root]
    root_crl = await crl_of(api, root)
    entry = root_crl.get_revoked_certificate_by_serial_number(inter_cert.serial_number)
    assert entry is not None and root_crl.get_revoked_certificate_by_serial_number(sub_cert.serial_number) is None
    assert_problem(await api.client.post(f"/v1/cas/{inter}/revoke", headers=admin, json={}), 409, "already_revoked")

    position = {"min_position": revoked["global_position"]}
    assert (await api.client.get(f"/v1/cas/{inter}", headers=admin, params=position)).json()["status"] == "revoked"
    for row in (direct, below):
        got = (await api.client.get(f"/v1/certificates/{row['certificate_id']}", headers=admin)).json()
        assert (got["status"], got["revocation_reason"], got["revoked_ca_id"]) == ("revoked", "ca_revoked", inter)
    listed = (await api.client.get("/v1/certificates", headers=admin, params={"status": "revoked"})).json()
    assert {i["certificate_id"] for i in listed["items"]} == {direct["certificate_id"], below["certificate_id"]}
    assert (await api.client.get(f"/v1/certificates/{unaffected['certificate_id']}", headers=admin)
            ).json()["status"] == "issued"

    for ca_id in (inter, sub):  # a revoked CA, and a CA under one, sign nothing more
        refused = await api.client.post("/v1/certificates", headers=admin, json={
            "tenant_id": "acme", "ca_id": ca_id, "algorithm": "ecdsa-p256",
            "subject": {"common_name": "d.acme.internal"}, "sans": {"dns": ["d.acme.internal"]}})
        assert_problem(refused, 422, "ca_revoked", field="ca_id")
    answer = await ask(api, root, ocsp_request(inter_cert, root_cert))
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason == x509.ReasonFlags.key_compromise
    below_cert = x509.load_pem_x509_certificate(below["certificate_pem"].encode())
    under = await ask(api, sub, ocsp_request(below_cert, sub_cert))  # the sub-CA's responder still answers
    assert under.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert under.revocation_reason == x509.ReasonFlags.ca_compromise


async def test_refused_revocations_name_the_rule_and_field(pki_api):
    api = pki_api
    admin, _root, inter = await setup(api)
    row = await leaf(api, admin, inter, "node5.acme.internal")
    path = f"/v1/certificates/{row['certificate_id']}/revoke"
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    ancient = "2000-01-01T00:00:00Z"
    for body, status, code, field in (
            ({"reason": "certificate_hold"}, 422, "reason_not_supported", "reason"),
            ({"reason": "bogus"}, 422, "invalid_reason", "reason"),
            ({"reason": "key_compromise", "invalidity_date": future}, 422, "invalidity_date_in_future",
             "invalidity_date"),
            ({"reason": "key_compromise", "invalidity_date": ancient}, 422, "invalidity_date_before_validity",
             "invalidity_date"),
            ({"reason": "Key Compromise"}, 400, None, None)):
        assert_problem(await api.client.post(path, headers=admin, json=body), status, code, field)
    missing = "0" * 39 + "1"
    assert_problem(await api.client.post(f"/v1/certificates/{missing}/revoke", headers=admin, json={}), 404,
                   "certificate_not_found")
    viewer = await api.token("viewer", tenant_id="acme")
    assert_problem(await api.client.post(path, headers=viewer, json={}), 403, "forbidden")
    await api.create_tenant(admin, "other")
    stranger = await api.token("tenant-admin", tenant_id="other")
    assert_problem(await api.client.post(path, headers=stranger, json={}), 404, "certificate_not_found")
    tenant_admin = await api.token("tenant-admin", tenant_id="acme")
    assert (await revoke(api, tenant_admin, row["certificate_id"]))["reason"] == "unspecified"


async def test_a_burst_of_revocations_under_one_ca_all_land_and_the_last_crl_lists_every_one(pki_api):
    """Incident response: many revocations at once under one CA. Each appends to the CA's stream; racing each
    other there, 89 of 500 (32 in flight) once failed with `contention`. This process's writers now take turns."""
    api = pki_api
    admin, _, inter = await setup(api)
    leaves = [await leaf(api, admin, inter, f"node{i}.acme.internal") for i in range(40)]
    responses = await asyncio.gather(*(api.client.post(f"/v1/certificates/{row['certificate_id']}/revoke",
                                                       headers=admin, json={"reason": "key_compromise"})
                                       for row in leaves))
    assert [r.status_code for r in responses] == [200] * len(leaves), [r.text for r in responses if r.is_error]
    listed = {entry.serial_number for entry in await crl_of(api, inter)}
    assert listed == {int(row["serial_hex"], 16) for row in leaves}
    numbers = {c["crl_number"] for r in responses for c in r.json()["crls"]}
    assert 1 <= len(numbers) < len(leaves)  # those that waited mostly found a CRL that already listed them
