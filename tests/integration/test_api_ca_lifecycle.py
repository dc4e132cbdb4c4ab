"""A CA's life through the HTTP API (and the offline ceremony's CLI), every chain checked with `openssl verify`.

Cross-certification (a second path to a second root), key rollover (old and new leaves both
verify), disable/enable, the offline root (`csm ca root init`, import, CSR, `csm ca root
sign-intermediate`, install), and the problem+json a malformed CA request gets.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from test_api_support import assert_problem, pki_api  # noqa: F401

OPENSSL = shutil.which("openssl")
CSM = Path(sys.executable).with_name("csm")
PASSPHRASE = "correct horse battery staple"
CERT_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----\r?\n?", re.DOTALL)
HYBRID_SUBJECT_ALT_KEY = x509.ObjectIdentifier("2.5.29.72")

needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")


def certificates(text: str) -> list[str]:
    return CERT_BLOCK.findall(text)


def load(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def openssl_verify(tmp_path: Path, name: str, leaf: str, trusted: str,
                   untrusted: list[str]) -> subprocess.CompletedProcess:
    """`openssl verify -x509_strict` of ``leaf`` against the single anchor ``trusted``, with ``untrusted`` helpers."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "leaf.pem").write_text(leaf)
    (folder / "anchor.pem").write_text(trusted)
    args = [OPENSSL, "verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", str(folder / "anchor.pem")]
    if untrusted:
        (folder / "untrusted.pem").write_text("".join(untrusted))
        args += ["-untrusted", str(folder / "untrusted.pem")]
    return subprocess.run([*args, str(folder / "leaf.pem")], capture_output=True, text=True)


def assert_verifies(tmp_path, name, leaf, trusted, untrusted) -> None:
    run = openssl_verify(tmp_path, name, leaf, trusted, untrusted)
    assert run.returncode == 0 and run.stdout.strip().endswith(": OK"), run.stdout + run.stderr


def assert_does_not_verify(tmp_path, name, leaf, trusted, untrusted) -> None:
    run = openssl_verify(tmp_path, name, leaf, trusted, untrusted)
    assert run.returncode != 0, run.stdout + run.stderr


async def ok(response, status: int = 200):
    assert response.status_code == status, response.text
    return response


async def create_ca(api, headers, *, name: str, parent_id: str | None = None, algorithm: str = "ecdsa-p384",
                    tenant: str = "acme", **extra) -> str:
    body = {"kind": "intermediate" if parent_id else "root", "tenant_id": tenant, "name": name,
            "algorithm": algorithm, "subject": {"common_name": name, "organization": tenant}, **extra}
    if parent_id:
        body["parent_id"] = parent_id
    created = (await ok(await api.client.post("/v1/cas", headers=headers, json=body), 201)).json()
    # Commands on /v1/cas/{id}/... find the CA's tenant in the read model: wait until it has the new CA.
    await ok(await api.client.get(f"/v1/cas/{created['ca_id']}", headers=headers,
                                  params={"min_position": created["global_position"]}))
    return created["ca_id"]


async def issue_leaf(api, headers, ca_id: str, host: str, algorithm: str = "ecdsa-p256") -> dict:
    return (await ok(await api.client.post("/v1/certificates", headers=headers, json={
        "tenant_id": "acme", "ca_id": ca_id, "algorithm": algorithm, "subject": {"common_name": host},
        "sans": {"dns": [host]}}), 201)).json()


async def leaf_with_chain(api, headers, issued: dict) -> list[str]:
    """The leaf's PEM export with its chain, as served: leaf first, root last."""
    exported = await ok(await api.client.get(f"/v1/certificates/{issued['certificate_id']}/export", headers=headers,
                                             params={"format": "pem", "min_position": issued["global_position"]}))
    return certificates(exported.text)


async def ca_pem(api, headers, ca_id: str, position: int | None = None) -> str:
    params = {"format": "pem"} | ({"min_position": position} if position else {})
    return (await ok(await api.client.get(f"/v1/cas/{ca_id}/certificate", headers=headers, params=params))).text


async def current_ca_pem(api, headers, ca_id: str, position: int | None = None) -> str:
    """The CA's current certificate: its chain's first (the plain certificate URL answers the first key's while that
    key's certificates may be valid, as the caIssuers URL in them means)."""
    return (await chain(api, headers, ca_id, position))[0]


async def chain(api, headers, ca_id: str, position: int | None = None, **params) -> list[str]:
    params |= {"min_position": position} if position else {}
    return certificates((await ok(await api.client.get(f"/v1/cas/{ca_id}/chain", headers=headers,
                                                       params=params))).text)


async def ca_certificates(api, headers, ca_id: str, position: int) -> list[dict]:
    return (await ok(await api.client.get(f"/v1/cas/{ca_id}/certificates", headers=headers,
                                          params={"min_position": position}))).json()


@needs_openssl
async def test_a_cross_certified_intermediate_chains_to_either_root(pki_api, tmp_path):
    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    r1 = await create_ca(api, admin, name="Acme Root One")
    r2 = await create_ca(api, admin, name="Acme Root Two")
    inter = await create_ca(api, admin, name="Acme Issuing", parent_id=r1)
    issued = await issue_leaf(api, admin, inter, "node1.acme.internal")
    leaf = (await leaf_with_chain(api, admin, issued))[0]
    widened = await api.client.post(f"/v1/cas/{inter}/cross-sign", headers=admin,
                                    json={"issuer_id": r2, "path_length": 3})
    assert_problem(widened, 422, "path_length_widens", field="path_length")  # the intermediate's own is 0
    crossed = (await ok(await api.client.post(f"/v1/cas/{inter}/cross-sign", headers=admin,
                                              json={"issuer_id": r2}))).json()
    position = crossed["global_position"]
    r1_pem, r2_pem = await ca_pem(api, admin, r1), await ca_pem(api, admin, r2)
    own = await ca_pem(api, admin, inter)

    via = await chain(api, admin, inter, position, via=r2)
    assert len(via) == 2 and via[-1] == r2_pem, via
    cross = load(via[0])
    assert cross.issuer == load(r2_pem).subject and cross.subject == load(own).subject
    assert cross.public_key() == load(own).public_key()
    # The cross-certificate passes on the intermediate's constraints: it grants no more than its own certificate.
    assert cross.extensions.get_extension_for_class(x509.BasicConstraints).value == \
        load(own).extensions.get_extension_for_class(x509.BasicConstraints).value
    assert_verifies(tmp_path, "via-r2", leaf, r2_pem, [via[0]])
    assert_does_not_verify(tmp_path, "r2-without-cross", leaf, r2_pem, [own])

    default = await chain(api, admin, inter, position)
    assert default == [own, r1_pem]
    assert_verifies(tmp_path, "via-r1", leaf, r1_pem, [own])
    assert (await leaf_with_chain(api, admin, issued))[1:] == [own, r1_pem]  # exports keep the default path

    roles = {(c["role"], c["issuer_ca_id"]) for c in await ca_certificates(api, admin, inter, position)}
    assert roles == {("current", r1), ("cross", r2)}
    assert_problem(await api.client.get(f"/v1/cas/{inter}/chain", headers=admin, params={"via": r1}),
                   404, "no_such_path", field="via")
    again = await api.client.post(f"/v1/cas/{inter}/cross-sign", headers=admin, json={"issuer_id": r2})
    assert_problem(again, 409, "already_cross_certified", field="issuer_id")


@needs_openssl
async def test_a_chain_via_a_root_ends_at_that_root_even_when_the_root_is_itself_cross_certified(pki_api, tmp_path):
    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    r1 = await create_ca(api, admin, name="Acme Root One")
    r2 = await create_ca(api, admin, name="Acme Root Two", validity_days=1000)
    inter = await create_ca(api, admin, name="Acme Issuing", parent_id=r1, validity_days=900)
    await ok(await api.client.post(f"/v1/cas/{inter}/cross-sign", headers=admin,
                                   json={"issuer_id": r2, "validity_days": 900}))
    # R1 bridges to R2 with a certificate that outlives R2's own: a relying party trusting R2 must not need R1.
    bridged = (await ok(await api.client.post(f"/v1/cas/{r2}/cross-sign", headers=admin,
                                              json={"issuer_id": r1, "validity_days": 3000}))).json()
    r2_pem = await ca_pem(api, admin, r2)
    via = await chain(api, admin, inter, bridged["global_position"], via=r2)
    assert len(via) == 2 and via[-1] == r2_pem, [load(c).issuer.rfc4514_string() for c in via]
    issued = await issue_leaf(api, admin, inter, "node1.acme.internal")
    leaf = (await leaf_with_chain(api, admin, issued))[0]
    assert_verifies(tmp_path, "via-r2", leaf, r2_pem, via[:-1])


@needs_openssl
async def test_after_a_key_rollover_old_and_new_leaves_both_verify_with_the_chains_served(pki_api, tmp_path):
    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    root = await create_ca(api, admin, name="Acme Root")
    inter = await create_ca(api, admin, name="Acme Issuing", parent_id=root)
    root_pem = await ca_pem(api, admin, root)
    l1 = await issue_leaf(api, admin, inter, "old.acme.internal")
    old = await ca_pem(api, admin, inter, l1["global_position"])
    rolled = (await ok(await api.client.post(f"/v1/cas/{inter}/rollover", headers=admin,
                                             json={"reason": "scheduled key rollover"}))).json()
    l2 = await issue_leaf(api, admin, inter, "new.acme.internal")
    new = await current_ca_pem(api, admin, inter, l2["global_position"])
    assert new != old and load(new).subject == load(old).subject
    # The plain caIssuers URL, which the first key's certificates carry, still answers the first key's certificate
    assert await ca_pem(api, admin, inter) == old
    assert load(new).public_key() != load(old).public_key()

    chain1, chain2 = await leaf_with_chain(api, admin, l1), await leaf_with_chain(api, admin, l2)
    assert chain1[1:] == [old, root_pem] and chain2[1:] == [new, root_pem]
    assert_verifies(tmp_path, "l1", chain1[0], chain1[-1], chain1[1:-1])
    assert_verifies(tmp_path, "l2", chain2[0], chain2[-1], chain2[1:-1])
    assert_does_not_verify(tmp_path, "l1-new-ca", chain1[0], root_pem, [new])  # each needs its own CA certificate

    listed = await ca_certificates(api, admin, inter, rolled["global_position"])
    assert [(c["role"], c["certificate_pem"]) for c in listed] == [("previous", old), ("current", new)]
    assert await chain(api, admin, inter) == [new, root_pem]


async def test_a_disabled_ca_refuses_issuance_until_it_is_enabled(pki_api):
    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    root = await create_ca(api, admin, name="Acme Root")
    inter = await create_ca(api, admin, name="Acme Issuing", parent_id=root)
    disabled = (await ok(await api.client.post(f"/v1/cas/{inter}/disable", headers=admin,
                                               json={"reason": "key ceremony audit"}))).json()
    row = (await ok(await api.client.get(f"/v1/cas/{inter}", headers=admin,
                                         params={"min_position": disabled["global_position"]}))).json()
    assert row["status"] == "disabled"
    refused = await api.client.post("/v1/certificates", headers=admin, json={
        "tenant_id": "acme", "ca_id": inter, "algorithm": "ecdsa-p256", "subject": {"common_name": "n.acme.internal"},
        "sans": {"dns": ["n.acme.internal"]}})
    assert_problem(refused, 422, "ca_disabled", field="ca_id")
    enabled = (await ok(await api.client.post(f"/v1/cas/{inter}/enable", headers=admin,
                                              json={"reason": "audit passed"}))).json()
    assert enabled["version"] == disabled["version"] + 1
    issued = await issue_leaf(api, admin, inter, "n.acme.internal")
    row = (await ok(await api.client.get(f"/v1/cas/{inter}", headers=admin,
                                         params={"min_position": issued["global_position"]}))).json()
    assert row["status"] == "active"


def csm(cwd: Path, *args: str, passphrase: str = PASSPHRASE) -> subprocess.CompletedProcess:
    """The `csm` console script, run the way an operator runs the ceremony: no service, no data directory."""
    env = {**os.environ, "CSM_ROOT_PASSPHRASE": passphrase, "CSM_DATA_DIR": str(cwd / "no-data-dir")}
    return subprocess.run([str(CSM), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


async def request_offline_intermediate(api, headers, root_id: str, name: str, algorithm: str) -> tuple[str, dict]:
    created = (await ok(await api.client.post("/v1/cas/offline-intermediate", headers=headers, json={
        "tenant_id": "acme", "parent_id": root_id, "name": name, "algorithm": algorithm,
        "subject": {"common_name": name, "organization": "acme"}}), 201)).json()
    row = (await ok(await api.client.get(f"/v1/cas/{created['ca_id']}", headers=headers,
                                         params={"min_position": created["global_position"]}))).json()
    return created["ca_id"], row


@needs_openssl
@pytest.mark.skipif(not CSM.exists(), reason=f"the csm console script is not installed at {CSM}")
@pytest.mark.parametrize(("algorithm", "leaf_algorithm"), [("ecdsa-p384", "ecdsa-p256"),
                                                           ("hybrid-p384-ml-dsa-65", "hybrid-p256-ml-dsa-44")])
async def test_offline_root_ceremony_signs_an_intermediate_that_then_issues_online(pki_api, tmp_path, algorithm,
                                                                                   leaf_algorithm):
    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    ceremony = tmp_path / "ceremony"
    ceremony.mkdir()
    init = await asyncio.to_thread(csm, ceremony, "ca", "root", "init", "--offline", "--out", "root",
                                   "--cn", "Acme Offline Root", "--org", "acme", "--algorithm", algorithm)
    assert init.returncode == 0, init.stdout + init.stderr
    assert not (ceremony / "no-data-dir").exists()
    root_pem = (ceremony / "root" / "root.pem").read_text()
    assert (ceremony / "root" / "root.key.enc").stat().st_mode & 0o777 == 0o600

    imported = (await ok(await api.client.post("/v1/cas/import", headers=admin, json={
        "tenant_id": "acme", "name": "Offline root", "certificate_pem": root_pem}), 201)).json()
    root_id = imported["ca_id"]
    root_row = (await ok(await api.client.get(f"/v1/cas/{root_id}", headers=admin,
                                              params={"min_position": imported["global_position"]}))).json()
    assert (root_row["origin"], root_row["kind"], root_row["algorithm"]) == ("offline", "root", algorithm)

    inter, row = await request_offline_intermediate(api, admin, root_id, "Acme Issuing", algorithm)
    other, other_row = await request_offline_intermediate(api, admin, root_id, "Acme Spare", algorithm)
    assert row["status"] == "pending" and row["csr_pem"].startswith("-----BEGIN CERTIFICATE REQUEST-----")
    csr = x509.load_pem_x509_csr(row["csr_pem"].encode())
    assert csr.is_signature_valid
    pending = await api.client.post("/v1/certificates", headers=admin, json={
        "tenant_id": "acme", "ca_id": inter, "algorithm": "ecdsa-p256", "subject": {"common_name": "n.acme.internal"},
        "sans": {"dns": ["n.acme.internal"]}})
    assert_problem(pending, 422, "ca_pending", field="ca_id")

    signed = {}
    for ca_id, ca_row in ((inter, row), (other, other_row)):
        (ceremony / f"{ca_id}.csr").write_text(ca_row["csr_pem"])
        run = await asyncio.to_thread(csm, ceremony, "ca", "root", "sign-intermediate", "--root-dir", "root",
                                      "--csr", f"{ca_id}.csr", "--out", f"{ca_id}.pem")
        assert run.returncode == 0, run.stdout + run.stderr
        signed[ca_id] = (ceremony / f"{ca_id}.pem").read_text()
    wrong = await asyncio.to_thread(csm, ceremony, "ca", "root", "sign-intermediate", "--root-dir", "root",
                                    "--csr", f"{inter}.csr", "--out", "wrong.pem", passphrase="not the passphrase")
    assert wrong.returncode != 0 and "passphrase does not open" in wrong.stderr, wrong.stdout + wrong.stderr
    assert "Traceback" not in wrong.stderr and not (ceremony / "wrong.pem").exists()

    certificate = load(signed[inter])
    assert certificate.public_key() == csr.public_key()
    if algorithm.startswith("hybrid-"):  # the CSR's ML-DSA half is certified too
        requested = csr.extensions.get_extension_for_oid(HYBRID_SUBJECT_ALT_KEY).value.value
        assert certificate.extensions.get_extension_for_oid(HYBRID_SUBJECT_ALT_KEY).value.value == requested
        assert {"2.5.29.73", "2.5.29.74"} <= {e.oid.dotted_string for e in certificate.extensions}

    mismatch = await api.client.post(f"/v1/cas/{other}/certificate", headers=admin,
                                     json={"certificate_pem": signed[inter]})
    assert_problem(mismatch, 422, "certificate_key_mismatch")
    once = {**admin, "Idempotency-Key": f"install-{inter}"}
    installed = (await ok(await api.client.post(f"/v1/cas/{inter}/certificate", headers=once,
                                                json={"certificate_pem": signed[inter]}))).json()
    retried = (await ok(await api.client.post(f"/v1/cas/{inter}/certificate", headers=once,
                                              json={"certificate_pem": signed[inter]}))).json()
    assert retried == {**installed, "replayed": True}  # a retried request gets the first answer, not ca_not_pending
    row = (await ok(await api.client.get(f"/v1/cas/{inter}", headers=admin,
                                         params={"min_position": installed["global_position"]}))).json()
    assert (row["status"], row["csr_pem"], row["algorithm"]) == ("active", None, algorithm)
    assert (await api.client.get(f"/v1/cas/{other}", headers=admin)).json()["status"] == "pending"

    issued = await issue_leaf(api, admin, inter, "node1.acme.internal", algorithm=leaf_algorithm)
    served = await leaf_with_chain(api, admin, issued)
    assert served[1:] == [signed[inter], root_pem]
    assert await chain(api, admin, inter) == [signed[inter], root_pem]
    assert isinstance(load(served[0]).public_key(), ec.EllipticCurvePublicKey)
    assert_verifies(tmp_path, "offline", served[0], root_pem, [signed[inter]])


@needs_openssl
async def test_after_a_root_rollover_every_truststore_trusts_chains_to_either_root_key(pki_api, tmp_path):
    """Nodes keyed before and after a root's rollover must trust each other through a rolling restart: a
    truststore holds the root's every unexpired self-signed certificate, not only the one its chain ends at."""
    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    root = await create_ca(api, admin, name="Acme Root")
    before = await create_ca(api, admin, name="Acme Issuing 1", parent_id=root)
    l1 = await issue_leaf(api, admin, before, "old.acme.internal")
    await ok(await api.client.post(f"/v1/cas/{root}/rollover", headers=admin, json={"reason": "root rollover"}))
    after = await create_ca(api, admin, name="Acme Issuing 2", parent_id=root)
    l2 = await issue_leaf(api, admin, after, "new.acme.internal")
    chain1, chain2 = await leaf_with_chain(api, admin, l1), await leaf_with_chain(api, admin, l2)
    assert load(chain1[-1]).public_key() != load(chain2[-1]).public_key()  # two root keys

    def trusted(issued: dict) -> set[bytes]:
        return {load(pem).fingerprint(hashes.SHA256()) for pem in stores[issued["certificate_id"]]}

    stores = {}
    for issued in (l1, l2):
        response = await ok(await api.client.get(f"/v1/certificates/{issued['certificate_id']}/export",
                                                 headers={**admin, "X-Export-Password": "changeit-changeit"},
                                                 params={"format": "pkcs12-truststore"}))
        bundle = pkcs12.load_pkcs12(response.content, b"changeit-changeit")
        stores[issued["certificate_id"]] = [c.certificate.public_bytes(serialization.Encoding.PEM).decode()
                                            for c in bundle.additional_certs]
    roots = {load(chain1[-1]).fingerprint(hashes.SHA256()), load(chain2[-1]).fingerprint(hashes.SHA256())}
    assert roots <= trusted(l1) and roots <= trusted(l2)
    assert_verifies(tmp_path, "new-by-old-store", chain2[0], "".join(stores[l1["certificate_id"]]), chain2[1:-1])
    assert_verifies(tmp_path, "old-by-new-store", chain1[0], "".join(stores[l2["certificate_id"]]), chain1[1:-1])


async def test_malformed_ca_requests_are_problems_that_name_the_field(pki_api):
    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    root = await create_ca(api, admin, name="Acme Root")
    subject = {"common_name": "Bad CA"}

    async def create(**body):
        return await api.client.post("/v1/cas", headers=admin, json={
            "tenant_id": "acme", "name": "Bad", "subject": subject, "algorithm": "ecdsa-p384", **body})

    assert_problem(await create(kind="root", parent_id=root), 400, "validation_failed", field="parent_id")
    assert_problem(await create(kind="intermediate"), 400, "validation_failed", field="parent_id")

    def rules(problem: dict) -> set[tuple[str, str]]:
        return {(error["field"], error["rule"]) for error in problem["errors"]}

    weak = assert_problem(await create(kind="root", algorithm="rsa-3072"), 422, "policy_violation", field="algorithm")
    assert ("algorithm", "weak_key") in rules(weak)
    long = assert_problem(await create(kind="root", validity_days=30 * 365), 422, "policy_violation",
                          field="validity_days")
    assert ("validity_days", "validity_too_long") in rules(long)
    unknown = assert_problem(await create(kind="root", algorithm="quantum-magic-512"), 422, "policy_violation",
                             field="algorithm")
    assert ("algorithm", "algorithm_unknown") in rules(unknown)
    assert_problem(await create(kind="intermediate", parent_id="no-such-ca"), 404, "ca_not_found", field="parent_id")
    assert_problem(await create(kind="root", colour="blue"), 400, field="colour")
    listed = (await ok(await api.client.get("/v1/cas", headers=admin, params={"tenant_id": "acme"}))).json()
    assert [item["ca_id"] for item in listed["items"]] == [root]  # nothing refused was created


def _self_signed_root(key) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Outside Root")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now)
                   .not_valid_after(now + datetime.timedelta(days=3650))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA384()))
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


async def test_an_offline_root_whose_rsa_exponent_is_3_is_not_imported(pki_api):
    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    weak = await api.client.post("/v1/cas/import", headers=admin, json={
        "tenant_id": "acme", "name": "e3", "certificate_pem": _self_signed_root(rsa.generate_private_key(3, 4096))})
    problem = assert_problem(weak, 422, "policy_violation", field="certificate_pem")
    assert [(e["field"], e["rule"]) for e in problem["errors"]] == [("certificate_pem", "weak_key")], problem
    assert "exponent" in problem["detail"]
    await ok(await api.client.post("/v1/cas/import", headers=admin, json={
        "tenant_id": "acme", "name": "e65537",
        "certificate_pem": _self_signed_root(rsa.generate_private_key(65537, 4096))}), 201)


async def test_a_ca_certificate_that_does_not_decode_is_refused_in_our_words(pki_api):
    """The problem names certificate_pem and says what is wrong; cryptography's parser text ("error parsing asn1
    value: ParseError { kind: ShortData ...") and binascii's ("Incorrect padding") stay out of it."""
    from authz_support import self_signed_ca_pem

    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")

    async def imported(pem: str) -> str:
        response = await api.client.post("/v1/cas/import", headers=admin,
                                         json={"tenant_id": "acme", "name": "outside", "certificate_pem": pem})
        return assert_problem(response, 422, "invalid_certificate", field="certificate_pem")["detail"]

    not_der = await imported("-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n")
    assert "DER encoding does not decode" in not_der and "ParseError" not in not_der and "asn1" not in not_der
    not_base64 = await imported("-----BEGIN CERTIFICATE-----\nMAMCA\n-----END CERTIFICATE-----\n")
    assert "not base64" in not_base64 and "padding" not in not_base64 and "Invalid base64" not in not_base64
    too_large = await imported(self_signed_ca_pem(organization="x" * 300))
    assert "organization" in too_large and "Expected `" not in too_large


async def test_an_offline_root_that_is_not_self_signed_is_refused_naming_certificate_pem(pki_api):
    """The body's field is certificate_pem: a refusal of its chaining or signature names it, not "certificate"."""
    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    key = ec.generate_private_key(ec.SECP384R1())
    now = datetime.datetime.now(datetime.UTC)
    other = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Outside Root")]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Someone Else")]))
             .public_key(key.public_key()).serial_number(x509.random_serial_number()).not_valid_before(now)
             .not_valid_after(now + datetime.timedelta(days=3650))
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
             .sign(key, hashes.SHA384()).public_bytes(serialization.Encoding.PEM).decode())
    response = await api.client.post("/v1/cas/import", headers=admin,
                                     json={"tenant_id": "acme", "name": "outside", "certificate_pem": other})
    assert_problem(response, 422, "issuer_mismatch", field="certificate_pem")
