"""CA keys generated on a real SoftHSM2 token and used only there: the key object, the engine's signing paths,
the API (root, intermediate, issuance, CRL, OCSP, rollover, a token gone) and the CLI's --key-storage."""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from cryptography.x509 import ocsp
from softhsm_fixture import PIN, softhsm, token_session  # noqa: F401 - softhsm is a fixture
from test_api_pki import fetch, issue
from test_api_support import assert_problem, running_api

from commands.ports import OcspAnswer, OcspQuestion
from domain.certspec import CertificateSpec, DistinguishedName
from domain.errors import DomainError
from infra.crypto import keys, token_keys
from infra.crypto.engine import CryptographyPki
from infra.crypto.revocation import CryptographyRevocation
from infra.crypto.token_keys import TokenKeyRef, TokenKeys

pytestmark = pytest.mark.timeout(300)
OPENSSL = shutil.which("openssl")
CONSOLE_SCRIPT = Path(sys.executable).parent / "csm"
CSM = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "cli.main"]
END = "-----END CERTIFICATE-----\n"


@pytest.fixture
def engine(softhsm):  # noqa: F811
    tokens = TokenKeys(softhsm.settings)
    yield CryptographyPki(tokens=tokens)
    tokens.close()


def _objects(softhsm, label: str) -> list[dict]:  # noqa: F811
    """Every object with ``label`` on the token, as a user session of this process sees them."""
    import pkcs11

    a = pkcs11.Attribute
    names = (a.CLASS, a.ID, a.TOKEN, a.PRIVATE, a.SENSITIVE, a.ALWAYS_SENSITIVE, a.EXTRACTABLE, a.NEVER_EXTRACTABLE,
             a.MODIFIABLE, a.SIGN, a.DECRYPT, a.UNWRAP, a.DERIVE)
    session = token_session(softhsm)
    try:
        found = []
        for item in session.get_objects({a.LABEL: label}):
            values = {}
            for name in names:
                try:
                    values[name] = item[name]
                except pkcs11.PKCS11Error:  # an attribute a public key does not have
                    values[name] = None
            found.append(values)
        return found
    finally:
        session.close()


def _spec(common_name: str, *, ca: bool = True, days: int = 30) -> CertificateSpec:
    now = datetime.now(UTC).replace(microsecond=0)
    return CertificateSpec(subject=DistinguishedName(common_name=common_name), serial=secrets.randbits(150) + 1,
                           not_before=now - timedelta(minutes=1), not_after=now + timedelta(days=days), is_ca=ca,
                           path_length=1 if ca else None, signature_hash="sha384",
                           key_usage=frozenset({"key_cert_sign", "crl_sign", "digital_signature"}) if ca
                           else frozenset({"digital_signature"}))


@pytest.mark.parametrize("algorithm", ["ecdsa-p384", "ecdsa-p256", "rsa-4096"])
def test_a_token_key_signs_certificates_csrs_and_ocsp_and_never_leaves_the_token(engine, softhsm, algorithm):  # noqa: F811
    import pkcs11

    label = f"csm-ca:t-{secrets.token_hex(4)}:ca"
    key = engine.generate_token_key(algorithm, label)
    assert engine.key_storage(key) == "hsm"
    public = engine.public_keys(key)
    root = engine.sign_certificate(_spec("Token Root"), public, key, None)
    certificate = x509.load_der_x509_certificate(root)
    certificate.verify_directly_issued_by(certificate)
    assert isinstance(certificate.signature_hash_algorithm, hashes.SHA384)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    subject = engine.public_keys(keys.KeyPair("ecdsa-p256", leaf_key))
    leaf = engine.sign_certificate(_spec("leaf", ca=False), subject, key, root)
    engine.verify_issued(leaf, root)

    csr = x509.load_der_x509_csr(engine.create_csr(DistinguishedName(common_name="Token Intermediate"), key))
    assert csr.is_signature_valid and csr.public_key().public_numbers() == key.primary.public_key().public_numbers()

    question = OcspQuestion(hash_algorithm="sha256", issuer_name_hash=b"\x01" * 32, issuer_key_hash=b"\x02" * 32,
                            serial=12345)
    now = datetime.now(UTC)
    answer = ocsp.load_der_ocsp_response(CryptographyRevocation().ocsp_response(
        question, OcspAnswer(status="good"), signer_key=key, signer_certificate=root, this_update=now,
        next_update=now + timedelta(hours=1)))
    if algorithm.startswith("rsa"):
        certificate.public_key().verify(answer.signature, answer.tbs_response_bytes, padding.PKCS1v15(),
                                        answer.signature_hash_algorithm)
        assert certificate.public_key().key_size == 4096 and certificate.public_key().public_numbers().e == 65537
    else:
        certificate.public_key().verify(answer.signature, answer.tbs_response_bytes,
                                        ec.ECDSA(answer.signature_hash_algorithm))

    # The vault keeps a reference, never key material; it loads back as the same key, from the token.
    reference = engine.private_key_bytes(key)
    ref = TokenKeyRef.from_bytes(reference)
    assert token_keys.is_reference(reference) and len(reference) - len(ref.spki) < 150  # names and the public key
    assert (ref.algorithm, ref.label, ref.serial) == (algorithm, label, engine.tokens._shared().serial)
    loaded = engine.load_private_key(reference)
    assert engine.public_keys(loaded) == public
    engine.verify_issued(engine.sign_certificate(_spec("leaf 2", ca=False), subject, loaded, root), root)

    # Export, in any form, is refused by name.
    if algorithm.startswith("rsa"):
        with pytest.raises(DomainError) as refused:
            key.primary.decrypt(b"x" * 512, padding.PKCS1v15())
        assert refused.value.code == "key_sign_only"
        with pytest.raises(TypeError, match="PKCS #1 v1.5 only"):
            key.primary.sign(b"data", padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
        with pytest.raises(TypeError, match="not a SHA-256 digest"):  # refused before the token signs it
            key.primary.sign(b"\x01" * 20, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    else:
        with pytest.raises(TypeError, match="not a SHA-384 digest"):
            key.primary.sign(b"\x01" * 20, ec.ECDSA(utils.Prehashed(hashes.SHA384())))
    for attempt in (lambda: keys.to_bytes(key), lambda: keys.protect(key, b"passphrase-123"),
                    lambda: key.primary.private_numbers(),
                    lambda: key.primary.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption())):
        with pytest.raises(DomainError) as refused:
            attempt()
        assert (refused.value.code, refused.value.field) == ("key_not_extractable", "key")

    a = pkcs11.Attribute
    [private] = [o for o in _objects(softhsm, label) if o[a.CLASS] == pkcs11.ObjectClass.PRIVATE_KEY]
    assert private[a.ID] == ref.key_id
    assert all(private[flag] for flag in (a.TOKEN, a.PRIVATE, a.SENSITIVE, a.ALWAYS_SENSITIVE, a.NEVER_EXTRACTABLE,
                                          a.SIGN))
    assert not any(private[flag] for flag in (a.EXTRACTABLE, a.MODIFIABLE, a.DECRYPT, a.UNWRAP, a.DERIVE))
    session = token_session(softhsm)
    try:
        secret = a.PRIVATE_EXPONENT if algorithm.startswith("rsa") else a.VALUE
        with pytest.raises(pkcs11.AttributeSensitive):
            session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, label=label)[secret]
    finally:
        session.close()


def test_refusals_name_the_algorithm_the_missing_token_and_a_key_that_is_not_there(engine, softhsm):  # noqa: F811
    import pkcs11

    for algorithm in ("rsa-3072", "ecdsa-p521", "ml-dsa-65"):
        with pytest.raises(DomainError) as refused:
            engine.generate_token_key(algorithm, "csm-ca:x:y")
        assert (refused.value.code, refused.value.field, refused.value.status) == ("algorithm_not_on_token",
                                                                                  "key_storage", 422)
    with pytest.raises(DomainError) as refused:
        CryptographyPki().generate_token_key("ecdsa-p384", "csm-ca:x:y")
    assert (refused.value.code, refused.value.status) == ("hsm_not_configured", 422)

    label = f"csm-ca:t-{secrets.token_hex(4)}:gone"
    reference = engine.private_key_bytes(engine.generate_token_key("ecdsa-p384", label))
    with pytest.raises(DomainError) as refused:  # a token key with no token configured: unavailable, not corrupt
        CryptographyPki().load_private_key(reference)
    assert (refused.value.code, refused.value.status) == ("hsm_unavailable", 503)
    other = dataclasses.replace(TokenKeyRef.from_bytes(reference), serial="0000000000000000")
    with pytest.raises(DomainError) as refused:
        engine.load_private_key(other.to_bytes())
    assert refused.value.code == "hsm_unavailable" and "serial 0000000000000000" in refused.value.detail
    session = pkcs11.lib(str(softhsm.module)).get_token(token_label=softhsm.label).open(rw=True)  # logged in
    try:
        for item in session.get_objects({pkcs11.Attribute.LABEL: label}):
            item.destroy()
    finally:
        session.close()
    fresh = TokenKeys(softhsm.settings)  # a process that never saw the key: nothing cached
    try:
        with pytest.raises(DomainError) as refused:
            CryptographyPki(tokens=fresh).load_private_key(reference)
        assert refused.value.code == "hsm_unavailable" and "is not on the token" in refused.value.detail
    finally:
        fresh.close()


def _pems(text: str) -> list[str]:
    return [part + END for part in text.split(END) if part.strip()]


def _openssl(*args) -> subprocess.CompletedProcess:
    return subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True, timeout=60)


async def _ca(api, headers, **body) -> dict:
    response = await api.client.post("/v1/cas", headers=headers, json={"tenant_id": "acme", **body})
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_hierarchy_on_the_token_issues_revokes_and_answers_ocsp(softhsm, tmp_path):  # noqa: F811
    import pkcs11

    async with running_api(tmp_path, pkcs11=softhsm.settings, max_body_bytes=1 << 20) as api:
        admin = await api.admin()
        await api.create_tenant(admin, "acme")
        root = await _ca(api, admin, kind="root", name="Root", algorithm="ecdsa-p384", key_storage="hsm",
                         subject={"common_name": "Acme HSM Root"})
        inter = await _ca(api, admin, kind="intermediate", parent_id=root["ca_id"], name="Issuing",
                          algorithm="ecdsa-p256", key_storage="hsm", subject={"common_name": "Acme HSM Issuing"})
        issued = await issue(api, admin, tenant_id="acme", ca_id=inter["ca_id"], algorithm="ecdsa-p256",
                             subject={"common_name": "node1.acme.internal"}, sans={"dns": ["node1.acme.internal"]})
        row = (await fetch(api, admin, f"/v1/certificates/{issued['certificate_id']}",
                           min_position=issued["global_position"])).json()
        chain = _pems((await fetch(api, admin, f"/v1/cas/{inter['ca_id']}/chain")).text)
        leaf, inter_pem, root_pem = row["certificate_pem"], chain[0], chain[1]

        # cryptography's RFC 5280 path building
        from cryptography.x509 import verification
        store = verification.Store([x509.load_pem_x509_certificate(root_pem.encode())])
        verifier = verification.PolicyBuilder().store(store).build_server_verifier(x509.DNSName("node1.acme.internal"))
        assert len(verifier.verify(x509.load_pem_x509_certificate(leaf.encode()),
                                   [x509.load_pem_x509_certificate(inter_pem.encode())])) == 3

        # The events say where the keys are; the vault holds references to the token's objects, not keys.
        events = [e for e in await api.runtime.store.read_all(0, 10_000) if e.type == "ca.created"]
        assert [e.payload["key_storage"] for e in events] == ["hsm", "hsm"]
        a = pkcs11.Attribute
        for event in events:
            key_ref = event.payload["certificate"]["key_ref"]
            material = api.runtime.keys.get_sync("acme", key_ref)
            assert token_keys.is_reference(material) and b"csm-private-key" not in material
            ref = TokenKeyRef.from_bytes(material)
            assert ref.label == f"csm-ca:acme:{event.payload['ca_id']}"
            objects = _objects(softhsm, ref.label)
            assert sorted(o[a.CLASS] for o in objects) == [pkcs11.ObjectClass.PUBLIC_KEY,
                                                          pkcs11.ObjectClass.PRIVATE_KEY]
        all_payloads = repr([e.payload for e in await api.runtime.store.read_all(0, 10_000)])
        assert "PRIVATE KEY" not in all_payloads and "csm-token-key" not in all_payloads

        revoked = await api.client.post(f"/v1/certificates/{issued['certificate_id']}/revoke", headers=admin,
                                        json={"reason": "key_compromise"})
        assert revoked.status_code == 200, revoked.text
        crl_pem = (await api.client.get(f"/v1/cas/{inter['ca_id']}/crl", params={"format": "pem"})).text
        crl = x509.load_pem_x509_crl(crl_pem.encode())
        assert crl.is_signature_valid(x509.load_pem_x509_certificate(inter_pem.encode()).public_key())
        assert crl.get_revoked_certificate_by_serial_number(int(issued["certificate_id"], 16)) is not None
        if OPENSSL:
            (tmp_path / "leaf.pem").write_text(leaf)
            (tmp_path / "inter.pem").write_text(inter_pem)
            (tmp_path / "root.pem").write_text(root_pem)
            (tmp_path / "chain.pem").write_text(inter_pem + root_pem)
            (tmp_path / "crl.pem").write_text(crl_pem)
            done = _openssl("verify", "-x509_strict", "-CAfile", tmp_path / "root.pem", "-untrusted",
                            tmp_path / "inter.pem", tmp_path / "leaf.pem")
            assert done.returncode == 0, done.stdout + done.stderr
            done = _openssl("crl", "-in", tmp_path / "crl.pem", "-CAfile", tmp_path / "chain.pem", "-noout", "-text")
            assert done.returncode == 0 and "verify OK" in done.stderr, done.stdout + done.stderr
            assert issued["certificate_id"].upper().lstrip("0") in done.stdout.replace(":", "").upper()
            done = await _to_thread(_openssl, "ocsp", "-issuer", tmp_path / "inter.pem", "-cert",
                                    tmp_path / "leaf.pem", "-url", f"{api.base_url}/ocsp/{inter['ca_id']}",
                                    "-CAfile", tmp_path / "chain.pem", "-resp_text")
            out = done.stdout + done.stderr
            assert done.returncode == 0 and "Response verify OK" in out and "leaf.pem: revoked" in out, out

        # Refusals: an algorithm no token key has, no such storage, a rollover away from the token's curves.
        refused = await api.client.post("/v1/cas", headers=admin, json={
            "tenant_id": "acme", "kind": "root", "name": "PQ", "key_storage": "hsm", "subject": {"common_name": "x"}})
        assert_problem(refused, 422, "algorithm_not_on_token", field="key_storage")
        refused = await api.client.post("/v1/cas", headers=admin, json={
            "tenant_id": "acme", "kind": "root", "name": "X", "key_storage": "tpm", "algorithm": "ecdsa-p384",
            "subject": {"common_name": "x"}})
        assert_problem(refused, 400, "validation_failed", field="key_storage")
        refused = await api.client.post(f"/v1/cas/{root['ca_id']}/rollover", headers=admin,
                                        json={"reason": "bigger", "algorithm": "ecdsa-p521"})
        assert_problem(refused, 422, "algorithm_not_on_token", field="algorithm")

        # A root's rollover makes its new key on the token too; the link certificates verify.
        rolled = await api.client.post(f"/v1/cas/{root['ca_id']}/rollover", headers=admin,
                                       json={"reason": "key update"})
        assert rolled.status_code == 200, rolled.text
        read = (await fetch(api, admin, f"/v1/cas/{root['ca_id']}",
                            min_position=rolled.json()["global_position"])).json()
        assert read["key_storage"] == "hsm"
        links = {c["role"]: x509.load_pem_x509_certificate(c["certificate_pem"].encode())
                 for c in read["link_certificates"]}
        new_root = x509.load_pem_x509_certificate(_pems((await fetch(
            api, admin, f"/v1/cas/{root['ca_id']}/chain")).text)[-1].encode())
        old_root = x509.load_pem_x509_certificate(root_pem.encode())
        assert new_root.public_key() != old_root.public_key()
        links["new_with_old"].verify_directly_issued_by(old_root)
        links["old_with_new"].verify_directly_issued_by(new_root)
        privates = [o for o in _objects(softhsm, f"csm-ca:acme:{root['ca_id']}")
                    if o[a.CLASS] == pkcs11.ObjectClass.PRIVATE_KEY]
        assert len(privates) == 2 and all(not o[a.EXTRACTABLE] and o[a.SENSITIVE] for o in privates)
        under_new = await _ca(api, admin, kind="intermediate", parent_id=root["ca_id"], name="Issuing 2",
                              algorithm="ecdsa-p384", key_storage="hsm", subject={"common_name": "Acme HSM 2"})
        second = x509.load_pem_x509_certificate(_pems((await fetch(
            api, admin, f"/v1/cas/{under_new['ca_id']}/chain")).text)[0].encode())
        second.verify_directly_issued_by(new_root)

        # The token goes away: issuance under its CA is 503 hsm_unavailable, not a 500.
        victim = await issue(api, admin, tenant_id="acme", ca_id=inter["ca_id"], algorithm="ecdsa-p256",
                             subject={"common_name": "victim.acme.internal"}, sans={"dns": ["victim.acme.internal"]})
        tokens = api.runtime.services.crypto.tokens
        tokens.close()
        tokens.settings = dataclasses.replace(softhsm.settings, token_label="unplugged")
        refused = await api.client.post("/v1/certificates", headers=admin, json={
            "tenant_id": "acme", "ca_id": inter["ca_id"], "algorithm": "ecdsa-p256",
            "subject": {"common_name": "node2.acme.internal"}, "sans": {"dns": ["node2.acme.internal"]}})
        body = assert_problem(refused, 503, "hsm_unavailable", field="key_storage")
        assert PIN not in refused.text and "unplugged" in body["detail"]
        # a revocation is recorded and answered as done; its CRL waits for the token (a 503 here was a lie)
        gone = await api.client.post(f"/v1/certificates/{victim['certificate_id']}/revoke", headers=admin,
                                     json={"reason": "key_compromise"})
        assert gone.status_code == 200, gone.text
        assert gone.json()["crls"] == [] and gone.json()["reason"] == "key_compromise"
        unready = assert_problem(await api.client.get("/health/ready"), 503, "not_ready", field="hsm_available")
        assert unready["hsm_available"] is False and unready["kek_available"] is True and PIN not in str(unready)
        tokens.settings = softhsm.settings  # back: it signs again
        ready = await api.client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["hsm_available"] is True
        late = x509.load_pem_x509_crl((await api.client.get(f"/v1/cas/{inter['ca_id']}/crl",
                                                            params={"format": "pem"})).text.encode())
        assert late.get_revoked_certificate_by_serial_number(int(victim["certificate_id"], 16)) is not None
        await issue(api, admin, tenant_id="acme", ca_id=inter["ca_id"], algorithm="ecdsa-p256",
                    subject={"common_name": "node3.acme.internal"}, sans={"dns": ["node3.acme.internal"]})


async def _to_thread(fn, *args):
    import asyncio

    return await asyncio.to_thread(fn, *args)


async def test_a_service_without_a_token_refuses_key_storage_hsm(tmp_path):
    async with running_api(tmp_path, max_body_bytes=1 << 20) as api:
        admin = await api.admin()
        await api.create_tenant(admin, "acme")
        refused = await api.client.post("/v1/cas", headers=admin, json={
            "tenant_id": "acme", "kind": "root", "name": "Root", "algorithm": "ecdsa-p384", "key_storage": "hsm",
            "subject": {"common_name": "Acme Root"}})
        assert_problem(refused, 422, "hsm_not_configured", field="key_storage")


def _csm(data_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CSM_")}
    run = subprocess.run([*CSM, "--data-dir", str(data_dir), *args], capture_output=True, text=True, timeout=120,
                         env={**clean, **env}, cwd=data_dir.parent)
    assert run.returncode == 0, f"exit {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert PIN not in run.stderr + run.stdout, run.stderr
    return run


def test_csm_ca_create_root_and_intermediate_with_key_storage_hsm(engine, softhsm, tmp_path):  # noqa: F811
    import pkcs11

    engine.tokens.check()  # this process logs in, so its sessions see the private objects the CLI makes

    data = tmp_path / "data"
    _csm(data, softhsm.env, "init")
    _csm(data, softhsm.env, "tenant", "create", "clitenant", "--name", "CLI")
    root = _csm(data, softhsm.env, "ca", "create-root", "--tenant", "clitenant", "--name", "Root", "--cn", "CLI Root",
                "--algorithm", "rsa-4096", "--key-storage", "hsm").stdout.split()[3]  # an RSA root signs on the token
    inter = _csm(data, softhsm.env, "ca", "create-intermediate", "--tenant", "clitenant", "--parent", root, "--name",
                 "Issuing", "--cn", "CLI Issuing", "--algorithm", "ecdsa-p384",
                 "--key-storage", "hsm").stdout.split()[3]
    for ca_id in (root, inter):
        classes = [o[pkcs11.Attribute.CLASS] for o in _objects(softhsm, f"csm-ca:clitenant:{ca_id}")]
        assert sorted(classes) == [pkcs11.ObjectClass.PUBLIC_KEY, pkcs11.ObjectClass.PRIVATE_KEY]
    (tmp_path / "root.pem").write_text(_csm(data, softhsm.env, "ca", "show", root, "--chain").stdout)
    (tmp_path / "inter.pem").write_text(_pems(_csm(data, softhsm.env, "ca", "show", inter, "--chain").stdout)[0])
    done = _openssl("verify", "-CAfile", tmp_path / "root.pem", tmp_path / "inter.pem")
    assert done.returncode == 0 and "OK" in done.stdout, done.stdout + done.stderr
    assert "sha384WithRSAEncryption" in _openssl("x509", "-in", tmp_path / "inter.pem", "-noout", "-text").stdout
    assert "--key-storage [vault|hsm]" in _csm(data, softhsm.env, "ca", "create-root", "--help").stdout


def _offline_root() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "Acme Offline Root")])
    now = datetime.now(UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
                   .not_valid_after(now + timedelta(days=3650))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
                   .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                  critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                   .sign(key, hashes.SHA384()))
    return key, certificate


def _sign_csr(csr: x509.CertificateSigningRequest, key, root: x509.Certificate) -> str:
    now = datetime.now(UTC)
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    certificate = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(root.subject)
                   .public_key(csr.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=365))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                  critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
                   .sign(key, hashes.SHA384()))
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


async def test_an_intermediate_of_an_offline_root_keeps_its_key_on_the_token(softhsm, tmp_path):  # noqa: F811
    root_key, root = _offline_root()
    root_pem = root.public_bytes(serialization.Encoding.PEM).decode()
    async with running_api(tmp_path, pkcs11=softhsm.settings, max_body_bytes=1 << 20) as api:
        admin = await api.admin()
        await api.create_tenant(admin, "acme")
        imported = await api.client.post("/v1/cas/import", headers=admin, json={
            "tenant_id": "acme", "name": "Offline root", "certificate_pem": root_pem})
        assert imported.status_code == 201, imported.text
        requested = await api.client.post("/v1/cas/offline-intermediate", headers=admin, json={
            "tenant_id": "acme", "parent_id": imported.json()["ca_id"], "name": "Issuing", "algorithm": "ecdsa-p384",
            "key_storage": "hsm", "subject": {"common_name": "Acme Token Issuing"}})
        assert requested.status_code == 201, requested.text
        ca_id = requested.json()["ca_id"]
        row = (await fetch(api, admin, f"/v1/cas/{ca_id}", min_position=requested.json()["global_position"])).json()
        assert (row["status"], row["key_storage"]) == ("pending", "hsm")
        csr = x509.load_pem_x509_csr(row["csr_pem"].encode())  # signed on the token
        assert csr.is_signature_valid and isinstance(csr.signature_hash_algorithm, hashes.SHA384)
        installed = await api.client.post(f"/v1/cas/{ca_id}/certificate", headers=admin,
                                          json={"certificate_pem": _sign_csr(csr, root_key, root)})
        assert installed.status_code == 200, installed.text
        issued = await issue(api, admin, tenant_id="acme", ca_id=ca_id, algorithm="ecdsa-p256",
                             subject={"common_name": "node1.acme.internal"}, sans={"dns": ["node1.acme.internal"]})
        leaf = (await fetch(api, admin, f"/v1/certificates/{issued['certificate_id']}",
                            min_position=issued["global_position"])).json()["certificate_pem"]
        issuing = x509.load_pem_x509_certificate(_pems((await fetch(api, admin, f"/v1/cas/{ca_id}/chain")).text)[0]
                                                 .encode())
        assert issuing.public_key() == csr.public_key()
        x509.load_pem_x509_certificate(leaf.encode()).verify_directly_issued_by(issuing)
