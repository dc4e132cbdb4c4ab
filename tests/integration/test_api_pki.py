"""The CA hierarchy and issuance through the HTTP API: roots, intermediates, CSRs, server-side keys, search, export."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import shutil
import subprocess
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from test_api_support import assert_problem, pki_api  # noqa: F401

from infra.crypto import der

OPENSSL = shutil.which("openssl")


def csr_pem(common_name: str, dns: list[str], key=None, hash_=None) -> tuple[str, object]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False)
    csr = builder.sign(key, hash_ or hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key


async def tenant_events(api, tenant_id: str) -> list[str]:
    """Every event id of one tenant (the audit ledger's checkpoints, in the system tenant, come and go)."""
    return [e.event_id for e in await api.runtime.store.read_all(0, 100_000) if e.tenant_id == tenant_id]


async def hierarchy(api, headers, tenant="acme", algorithm="ecdsa-p384", permit=("acme.internal",)):
    await api.create_tenant(headers, tenant)
    root = await api.client.post("/v1/cas", headers=headers, json={
        "kind": "root", "tenant_id": tenant, "name": "Root", "algorithm": algorithm,
        "subject": {"common_name": f"{tenant} root", "organization": tenant}})
    assert root.status_code == 201, root.text
    inter = await api.client.post("/v1/cas", headers=headers, json={
        "kind": "intermediate", "tenant_id": tenant, "parent_id": root.json()["ca_id"], "name": "Issuing",
        "algorithm": algorithm, "subject": {"common_name": f"{tenant} issuing"},
        "name_constraints": {"permitted_dns": list(permit)}})
    assert inter.status_code == 201, inter.text
    return root.json(), inter.json()


async def issue(api, headers, **body):
    response = await api.client.post("/v1/certificates", headers=headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def fetch(api, headers, path, **params):
    response = await api.client.get(path, headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response


async def test_a_csr_is_issued_under_an_intermediate_and_the_chain_verifies_with_openssl(pki_api, tmp_path):
    api = pki_api
    admin = await api.admin()
    root, inter = await hierarchy(api, admin)
    csr, key = csr_pem("node1.acme.internal", ["node1.acme.internal", "node1.dc1.acme.internal"])
    issued = await issue(api, admin, tenant_id="acme", ca_id=inter["ca_id"], csr=csr,
                         sans={"dns": ["node1.acme.internal"], "ip": ["10.0.0.7"]}, tags=["dc1"])
    position = issued["global_position"]
    row = (await fetch(api, admin, f"/v1/certificates/{issued['certificate_id']}", min_position=position)).json()
    assert row["common_name"] == "node1.acme.internal" and row["key_source"] == "csr" and not row["has_key"]
    assert row["sans"] == {"dns": ["node1.acme.internal"], "ip": ["10.0.0.7"]}
    certificate = x509.load_pem_x509_certificate(row["certificate_pem"].encode())
    assert certificate.public_key().public_numbers() == key.public_key().public_numbers()
    assert certificate.serial_number == int(issued["certificate_id"], 16)
    chain = (await fetch(api, admin, f"/v1/cas/{inter['ca_id']}/chain")).text
    assert chain.count("BEGIN CERTIFICATE") == 2
    if OPENSSL:
        (tmp_path / "leaf.pem").write_text(row["certificate_pem"])
        pems = chain.split("-----END CERTIFICATE-----\n")
        (tmp_path / "inter.pem").write_text(pems[0] + "-----END CERTIFICATE-----\n")
        (tmp_path / "root.pem").write_text(pems[1] + "-----END CERTIFICATE-----\n")
        run = subprocess.run([OPENSSL, "verify", "-x509_strict", "-purpose", "sslserver", "-CAfile",
                              tmp_path / "root.pem", "-untrusted", tmp_path / "inter.pem", tmp_path / "leaf.pem"],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
    found = (await fetch(api, admin, "/v1/certificates", san="10.0.0.7", tag="dc1")).json()
    assert [item["certificate_id"] for item in found["items"]] == [issued["certificate_id"]]


async def test_refusals_name_every_rule_and_leave_the_store_unchanged(pki_api):
    api = pki_api
    admin = await api.admin()
    _, inter = await hierarchy(api, admin)
    before = await tenant_events(api, "acme")
    weak, _ = csr_pem("x.acme.internal", ["x.acme.internal"], key=rsa.generate_private_key(65537, 2048),
                      hash_=hashes.SHA256())
    response = await api.client.post("/v1/certificates", headers=admin, json={
        "tenant_id": "acme", "ca_id": inter["ca_id"], "csr": weak, "validity_days": 5000,
        "sans": {"dns": ["evil.example.com"]}})
    problem = assert_problem(response, 422, "policy_violation")
    rules = {error["rule"] for error in problem["errors"]}
    assert {"weak_key", "validity_too_long", "name_constraint_violation"} <= rules, problem
    garbage = await api.client.post("/v1/certificates", headers=admin, json={
        "tenant_id": "acme", "ca_id": inter["ca_id"], "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                                                            "-----END CERTIFICATE REQUEST-----\n"})
    assert_problem(garbage, 422, field="csr")
    assert await tenant_events(api, "acme") == before


async def test_an_rsa_csr_with_public_exponent_3_is_refused_as_a_weak_key(pki_api):
    api = pki_api
    admin = await api.admin()
    _, inter = await hierarchy(api, admin)
    before = await tenant_events(api, "acme")
    csr, _ = csr_pem("x.acme.internal", ["x.acme.internal"], key=rsa.generate_private_key(3, 3072))
    response = await api.client.post("/v1/certificates", headers=admin, json={
        "tenant_id": "acme", "ca_id": inter["ca_id"], "csr": csr})
    problem = assert_problem(response, 422, "policy_violation", field="csr")
    assert [(e["field"], e["rule"]) for e in problem["errors"]] == [("csr", "weak_key")], problem
    assert "exponent" in problem["errors"][0]["message"]
    assert await tenant_events(api, "acme") == before


def weak_hash_csr_pem(kind: str) -> str:
    """A correctly self-signed CSR over SHA-1 or MD5 (as `openssl req -sha1`, `-md5` make them; cryptography won't)."""
    if kind == "ecdsa-with-SHA1":
        key, oid, null = ec.generate_private_key(ec.SECP256R1()), "1.2.840.10045.4.1", False
        sign = lambda info: key.sign(info, ec.ECDSA(hashes.SHA1()))  # noqa: E731
    else:
        key, oid, null = rsa.generate_private_key(65537, 3072), "1.2.840.113549.1.1.4", True
        sign = lambda info: key.sign(info, padding.PKCS1v15(), hashes.MD5())  # noqa: E731
    info = x509.load_pem_x509_csr(csr_pem("x.acme.internal", ["x.acme.internal"], key=key)[0].encode())
    algorithm = der.sequence(der.encode_oid(oid), *([der.encode_tlv(der.NULL, b"")] if null else []))
    body = der.sequence(info.tbs_certrequest_bytes, algorithm, der.encode_bit_string(sign(info.tbs_certrequest_bytes)))
    return "-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(body).decode() + \
        "-----END CERTIFICATE REQUEST-----\n"


@pytest.mark.parametrize("kind", ["ecdsa-with-SHA1", "md5WithRSAEncryption"])
async def test_csrs_signed_over_sha1_or_md5_are_refused_as_weak_hash_without_library_text(pki_api, kind):
    api = pki_api
    admin = await api.admin()
    _, inter = await hierarchy(api, admin)
    before = await tenant_events(api, "acme")
    response = await api.client.post("/v1/certificates", headers=admin, json={
        "tenant_id": "acme", "ca_id": inter["ca_id"], "csr": weak_hash_csr_pem(kind)})
    problem = assert_problem(response, 422, "policy_violation", field="csr")
    assert [(e["field"], e["rule"]) for e in problem["errors"]] == [("csr", "weak_hash")], problem
    assert "SHA-256 or stronger" in problem["detail"] and "Unsupported" not in problem["detail"]
    assert await tenant_events(api, "acme") == before


async def test_ip_sans_that_name_no_host_and_repeated_sans_are_refused_by_rule(pki_api):
    api = pki_api
    admin = await api.admin()
    _, inter = await hierarchy(api, admin)
    before = await tenant_events(api, "acme")

    async def refused(**body) -> list[tuple[str, str]]:
        response = await api.client.post("/v1/certificates", headers=admin, json={
            "tenant_id": "acme", "ca_id": inter["ca_id"], **body})
        return [(e["field"], e["rule"]) for e in assert_problem(response, 422, "policy_violation")["errors"]]

    server_key = {"algorithm": "ecdsa-p256", "subject": {"common_name": "x.acme.internal"}}
    for ip in ("0.0.0.0", "::", "255.255.255.255", "224.0.0.1", "240.0.0.1", "0.1.2.3", "2001:db8::7", "100::1"):
        assert await refused(**server_key, sans={"dns": ["x.acme.internal"], "ip": [ip]}) == [
            ("sans.ip[0]", "san_ip_not_a_host")], ip
    assert await refused(**server_key, sans={"dns": ["x.acme.internal"] * 100}) == [
        (f"sans.dns[{i}]", "san_duplicate") for i in range(1, 100)]
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x.acme.internal")])).add_extension(
        x509.SubjectAlternativeName([x509.DNSName("x.acme.internal"), x509.DNSName("X.Acme.Internal"),
                                     x509.IPAddress(ipaddress.ip_address("0.0.0.0"))]), critical=False)
    csr = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()
    assert sorted(await refused(csr=csr)) == [("sans.dns[1]", "san_duplicate"), ("sans.ip[0]", "san_ip_not_a_host")]
    assert await tenant_events(api, "acme") == before
    await issue(api, admin, tenant_id="acme", ca_id=inter["ca_id"], **server_key,
                sans={"dns": ["x.acme.internal"], "ip": ["127.0.0.1", "10.0.0.7", "::1", "169.254.0.9", "fd00::9"]})
    # loopback, private and link-local: hosts


async def test_a_serial_already_taken_is_refused_and_the_first_certificate_stays_as_it_was(pki_api, monkeypatch):
    # Issuance decides on a certificate stream it presumes new (runtime.run presume_new): the append at
    # version 0 must catch a serial that is taken, and the retry that reads the stream must refuse it.
    from commands import certificates
    api = pki_api
    admin = await api.admin()
    _, inter = await hierarchy(api, admin)
    first = await issue(api, admin, tenant_id="acme", ca_id=inter["ca_id"],
                        csr=csr_pem("n1.acme.internal", ["n1.acme.internal"])[0])
    before = await tenant_events(api, "acme")
    monkeypatch.setattr(certificates.pki, "new_serial", lambda: int(first["certificate_id"], 16))
    again = await api.client.post("/v1/certificates", headers=admin, json={
        "tenant_id": "acme", "ca_id": inter["ca_id"], "csr": csr_pem("n2.acme.internal", ["n2.acme.internal"])[0]})
    assert_problem(again, 409, "serial_exists", field="serial")
    assert await tenant_events(api, "acme") == before
    events = await api.runtime.store.read_stream("acme", f"certificate-{first['certificate_id']}")
    assert [e.type for e in events] == ["certificate.issued"]
    assert events[0].payload["subject"]["common_name"] == "n1.acme.internal"


async def test_server_side_keys_export_as_pkcs12_and_jks_and_the_key_export_is_audited(pki_api, tmp_path):
    api = pki_api
    admin = await api.admin()
    _, inter = await hierarchy(api, admin)
    issued = await issue(api, admin, tenant_id="acme", ca_id=inter["ca_id"], algorithm="ecdsa-p256",
                         subject={"common_name": "node2.acme.internal"}, sans={"dns": ["node2.acme.internal"]})
    cid = issued["certificate_id"]
    await fetch(api, admin, f"/v1/certificates/{cid}", min_position=issued["global_position"])
    missing = await api.client.get(f"/v1/certificates/{cid}/export", headers=admin, params={"format": "pkcs12"})
    assert_problem(missing, 422, "password_required", field="X-Export-Password")
    secret = {**admin, "X-Export-Password": "changeit-please"}
    p12 = await api.client.get(f"/v1/certificates/{cid}/export", headers=secret, params={"format": "pkcs12"})
    assert p12.status_code == 200, p12.text
    assert p12.headers["cache-control"] == "no-store"
    (tmp_path / "node.p12").write_bytes(p12.content)
    jks = await api.client.get(f"/v1/certificates/{cid}/export", headers=secret, params={"format": "jks"})
    assert jks.status_code == 200, jks.text
    (tmp_path / "node.jks").write_bytes(jks.content)
    trust = await api.client.get(f"/v1/certificates/{cid}/export", headers=secret,
                                 params={"format": "jks-truststore"})
    (tmp_path / "trust.jks").write_bytes(trust.content)
    if OPENSSL:
        run = subprocess.run([OPENSSL, "pkcs12", "-in", tmp_path / "node.p12", "-passin", "pass:changeit-please",
                              "-nodes"], capture_output=True, text=True)
        assert run.returncode == 0 and "PRIVATE KEY" in run.stdout, run.stderr
    if keytool := shutil.which("keytool"):
        listing = subprocess.run([keytool, "-list", "-v", "-keystore", tmp_path / "node.jks", "-storepass",
                                  "changeit-please"], capture_output=True, text=True)
        assert listing.returncode == 0 and "PrivateKeyEntry" in listing.stdout, listing.stdout + listing.stderr
        assert "Certificate chain length: 3" in listing.stdout
        trusted = subprocess.run([keytool, "-list", "-keystore", tmp_path / "trust.jks", "-storepass",
                                  "changeit-please"], capture_output=True, text=True)
        assert trusted.returncode == 0 and trusted.stdout.count("trustedCertEntry") == 2, trusted.stdout
    events = await api.runtime.store.read_stream("acme", f"certificate-{cid}")
    assert [e.type for e in events] == ["certificate.issued", "certificate.private_key_exported",
                                        "certificate.private_key_exported"]
    assert all("PRIVATE KEY" not in str(e.payload) for e in events)
    viewer = await api.token("viewer", tenant_id="acme")
    denied = await api.client.get(f"/v1/certificates/{cid}/export", headers={**viewer, "X-Export-Password": "x" * 8},
                                  params={"format": "pkcs12"})
    assert_problem(denied, 403)
    public = await api.client.get(f"/v1/certificates/{cid}/export", headers=viewer, params={"format": "pem"})
    assert public.status_code == 200 and b"PRIVATE KEY" not in public.content


async def test_every_export_password_has_one_minimum_and_der_carries_no_key(pki_api):
    """8 characters for every store and PEM key password (a pkcs12 store took "a"); der refuses include_key (it
    dropped the key silently). Refused before the key leaves the vault: no export is recorded."""
    api = pki_api
    admin = await api.admin()
    _, inter = await hierarchy(api, admin)
    issued = await issue(api, admin, tenant_id="acme", ca_id=inter["ca_id"], algorithm="ecdsa-p256",
                         subject={"common_name": "node3.acme.internal"}, sans={"dns": ["node3.acme.internal"]})
    cid = issued["certificate_id"]
    await fetch(api, admin, f"/v1/certificates/{cid}", min_position=issued["global_position"])
    export = f"/v1/certificates/{cid}/export"
    short = {**admin, "X-Export-Password": "a" * 7}
    for params in ({"format": "pkcs12"}, {"format": "jks"}, {"format": "pkcs12-truststore"},
                   {"format": "jks-truststore"}, {"format": "pem", "include_key": "true"}, {"format": "pem"}):
        refused = await api.client.get(export, headers=short, params=params)
        problem = assert_problem(refused, 422, "password_too_short", field="X-Export-Password")
        assert problem["errors"][0]["rule"] == "password_too_short", params
    der = await api.client.get(export, headers=admin, params={"format": "der", "include_key": "true"})
    assert_problem(der, 422, "key_not_in_der", field="include_key")
    assert [e.type for e in await api.runtime.store.read_stream("acme", f"certificate-{cid}")] \
        == ["certificate.issued"]
    enough = {**admin, "X-Export-Password": "a" * 8}
    for params in ({"format": "pkcs12"}, {"format": "jks-truststore"}, {"format": "pem", "include_key": "true"}):
        assert (await api.client.get(export, headers=enough, params=params)).status_code == 200, params
    plain = await api.client.get(export, headers=admin, params={"format": "pem", "include_key": "true"})
    assert plain.status_code == 200 and b"-----BEGIN PRIVATE KEY-----" in plain.content  # as asked, and audited
    assert (await api.client.get(export, headers=admin, params={"format": "der"})).status_code == 200


@pytest.mark.parametrize("algorithm", ["hybrid-p384-ml-dsa-65", "ml-dsa-65", "ed25519"])
async def test_post_quantum_and_hybrid_hierarchies_issue(pki_api, algorithm):
    api = pki_api
    admin = await api.admin()
    _, inter = await hierarchy(api, admin, algorithm=algorithm)
    issued = await issue(api, admin, tenant_id="acme", ca_id=inter["ca_id"], algorithm=algorithm.replace(
        "hybrid-p384-ml-dsa-65", "hybrid-p256-ml-dsa-44"), subject={"common_name": "n.acme.internal"},
        sans={"dns": ["n.acme.internal"]})
    row = (await fetch(api, admin, f"/v1/certificates/{issued['certificate_id']}",
                       min_position=issued["global_position"])).json()
    assert row["certificate_pem"].startswith("-----BEGIN CERTIFICATE-----")


async def test_a_tenant_profile_narrows_issuance_and_algorithms_are_listed(pki_api):
    api = pki_api
    admin = await api.admin()
    _, inter = await hierarchy(api, admin)
    profile = {"name": "short-lived-node", "description": "7-day node certificates",
               "key_usage": ["digital_signature"], "extended_key_usage": ["server_auth", "client_auth"],
               "allowed_san_types": ["dns"], "require_san": True, "require_common_name": True,
               "max_validity_days": 7, "default_validity_days": 7, "allowed_algorithms": ["ecdsa-p256"],
               "default_algorithm": "ecdsa-p256"}
    created = await api.client.post("/v1/profiles", headers=admin, json={"tenant_id": "acme", "profile": profile})
    assert created.status_code == 201, created.text
    reserved = await api.client.post("/v1/profiles", headers=admin,
                                     json={"tenant_id": "acme", "profile": {**profile, "name": "cassandra-node"}})
    assert_problem(reserved, 422, field="name")
    refused = await api.client.post("/v1/certificates", headers=admin, json={
        "tenant_id": "acme", "ca_id": inter["ca_id"], "profile": "short-lived-node", "algorithm": "ed25519",
        "validity_days": 30, "subject": {"common_name": "n.acme.internal"}, "sans": {"ip": ["10.1.1.1"]}})
    rules = {e["rule"] for e in assert_problem(refused, 422, "policy_violation")["errors"]}
    assert {"algorithm_not_allowed", "validity_too_long", "san_type_not_allowed"} <= rules, rules
    issued = await issue(api, admin, tenant_id="acme", ca_id=inter["ca_id"], profile="short-lived-node",
                         subject={"common_name": "n.acme.internal"}, sans={"dns": ["n.acme.internal"]})
    row = (await fetch(api, admin, f"/v1/certificates/{issued['certificate_id']}",
                       min_position=issued["global_position"])).json()
    assert row["profile"] == "short-lived-node" and row["algorithm"] == "ecdsa-p256"
    listed = (await fetch(api, admin, "/v1/profiles", tenant_id="acme")).json()
    assert {"cassandra-node", "ocsp-signing", "short-lived-node"} <= {p["name"] for p in listed}
    algorithms = {a["name"]: a for a in (await fetch(api, admin, "/v1/algorithms")).json()}
    assert algorithms["ml-dsa-65"]["available"] and not algorithms["rsa-3072"]["allowed_for_ca"]
    assert algorithms["falcon-512"]["available"] is False  # liboqs is not installed here


async def test_another_tenants_token_sees_none_of_its_cas_or_certificates(pki_api):
    api = pki_api
    admin = await api.admin()
    _, inter = await hierarchy(api, admin)
    issued = await issue(api, admin, tenant_id="acme", ca_id=inter["ca_id"], algorithm="ecdsa-p256",
                         subject={"common_name": "n.acme.internal"}, sans={"dns": ["n.acme.internal"]})
    await api.create_tenant(admin, "globex")
    other = await api.token("tenant-admin", tenant_id="globex")
    await fetch(api, admin, "/v1/cas", min_position=issued["global_position"])
    assert_problem(await api.client.get(f"/v1/cas/{inter['ca_id']}", headers=other), 404)
    assert_problem(await api.client.get(f"/v1/certificates/{issued['certificate_id']}", headers=other), 404)
    assert (await fetch(api, other, "/v1/certificates")).json()["items"] == []
    assert (await fetch(api, other, "/v1/cas")).json()["items"] == []
    stolen = await api.client.post("/v1/certificates", headers=other, json={
        "tenant_id": "acme", "ca_id": inter["ca_id"], "subject": {"common_name": "n.acme.internal"},
        "sans": {"dns": ["n.acme.internal"]}})
    assert_problem(stolen, 403)
    borrowed = await api.client.post("/v1/certificates", headers=other, json={
        "ca_id": inter["ca_id"], "subject": {"common_name": "n.globex.internal"},
        "sans": {"dns": ["n.globex.internal"]}})
    assert_problem(borrowed, 404, "ca_not_found")


async def test_a_rollover_to_another_algorithm_keeps_issuing(pki_api):
    api = pki_api
    admin = await api.admin()
    _, inter = await hierarchy(api, admin)
    rolled = await api.client.post(f"/v1/cas/{inter['ca_id']}/rollover", headers=admin,
                                   params={"min_position": inter["global_position"]},
                                   json={"reason": "move to post-quantum", "algorithm": "ml-dsa-65"})
    assert rolled.status_code == 200, rolled.text
    issued = await issue(api, admin, tenant_id="acme", ca_id=inter["ca_id"], algorithm="ecdsa-p256",
                         subject={"common_name": "n.acme.internal"}, sans={"dns": ["n.acme.internal"]})
    ca = (await fetch(api, admin, f"/v1/cas/{inter['ca_id']}", min_position=issued["global_position"])).json()
    assert ca["algorithm"] == "ml-dsa-65"
    row = (await fetch(api, admin, f"/v1/certificates/{issued['certificate_id']}")).json()
    leaf = x509.load_pem_x509_certificate(row["certificate_pem"].encode())
    assert leaf.signature_algorithm_oid.dotted_string == "2.16.840.1.101.3.4.3.18"  # ML-DSA-65


async def test_a_burst_of_server_side_key_generations_does_not_hold_up_csr_issuance(pki_api, monkeypatch):
    """Key generation runs on a bounded pool of its own (commands/blocking.py). A burst of server-side keys,
    each held back here and more of them than the event loop's shared pool has threads, leaves that pool to
    the store reads and read-model queries a CSR issuance needs: the CSR is issued and read back meanwhile."""
    api = pki_api
    admin = await api.admin()
    _, inter = await hierarchy(api, admin)
    crypto = api.runtime.services.crypto
    release, started = threading.Event(), threading.Semaphore(0)
    real = crypto.generate_key

    def held(algorithm: str):
        started.release()
        release.wait(60)
        return real(algorithm)

    monkeypatch.setattr(crypto, "generate_key", held)
    burst = [asyncio.create_task(api.client.post("/v1/certificates", headers=admin, json={
        "tenant_id": "acme", "ca_id": inter["ca_id"], "algorithm": "ecdsa-p256",
        "subject": {"common_name": f"burst{i}.acme.internal"}, "sans": {"dns": [f"burst{i}.acme.internal"]}}))
        for i in range(24)]
    try:
        assert await asyncio.to_thread(started.acquire, True, 30), [t.result().text for t in burst if t.done()][:1]
        csr, _ = csr_pem("node9.acme.internal", ["node9.acme.internal"])
        issued = await asyncio.wait_for(issue(api, admin, tenant_id="acme", ca_id=inter["ca_id"], csr=csr), 20)
        await asyncio.wait_for(fetch(api, admin, f"/v1/certificates/{issued['certificate_id']}",
                                     min_position=issued["global_position"]), 20)
        assert not any(task.done() for task in burst)  # the burst was still waiting for its keys throughout
    finally:
        release.set()
        answers = await asyncio.gather(*burst)
    assert [a.status_code for a in answers] == [201] * len(burst), [a.text for a in answers if a.status_code != 201]


async def test_nobody_gets_an_ocsp_responder_certificate_on_request(pki_api):
    """A delegated OCSP responder's certificate signs answers relying parties take as the CA's own: held by a
    requester, it would answer "good" for a revoked certificate. Only the service issues them, to itself."""
    api = pki_api
    admin = await api.admin()
    _, inter = await hierarchy(api, admin)
    issuer = await api.token("issuer", tenant_id="acme")
    csr, _ = csr_pem("evil", [])
    for headers in (issuer, admin):
        for body in ({"csr": csr}, {"algorithm": "ecdsa-p256", "subject": {"common_name": "evil"}}):
            refused = await api.client.post("/v1/certificates", headers=headers, json={
                "tenant_id": "acme", "ca_id": inter["ca_id"], "profile": "ocsp-signing", **body})
            assert_problem(refused, 422, "profile_reserved", field="profile")
    profile = {"name": "my-responder", "description": "a responder of my own", "key_usage": ["digital_signature"],
               "extended_key_usage": ["client_auth", "ocsp_signing"], "allowed_san_types": [], "require_san": False,
               "require_common_name": True, "max_validity_days": 30, "default_validity_days": 30,
               "allowed_algorithms": None, "default_algorithm": "ecdsa-p256", "ocsp_no_check": True}
    created = await api.client.post("/v1/profiles", headers=admin, json={"tenant_id": "acme", "profile": profile})
    assert {(e["field"], e["rule"]) for e in assert_problem(created, 422)["errors"]} \
        == {("extended_key_usage[1]", "eku_reserved")}
    assert not [e for e in await api.runtime.store.read_all(0, 100_000) if e.type == "certificate.issued"]


async def test_retries_arriving_together_all_answer_the_one_certificate_that_was_issued(pki_api):
    """Concurrent retries under one Idempotency-Key: every answer names the stored certificate, and no retry
    leaves a key of its own behind (through HTTP they take turns; handlers racing anyway, as two worker
    processes do, each delete the key that could not land)."""
    from datetime import timedelta

    from commands import certificates
    from commands.authz import Principal
    from commands.runtime import CommandContext

    api = pki_api
    admin = await api.admin()
    _, inter = await hierarchy(api, admin)
    body = {"tenant_id": "acme", "ca_id": inter["ca_id"], "subject": {"common_name": "p.acme.internal"},
            "sans": {"dns": ["p.acme.internal"]}, "algorithm": "ecdsa-p256"}
    answers = await asyncio.gather(*(api.client.post("/v1/certificates", json=body,
                                                      headers={**admin, "Idempotency-Key": "burst-1"})
                                     for _ in range(12)))
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["certificate_id"] for a in answers}) == 1
    assert sum(not a.json()["replayed"] for a in answers) == 1
    command = certificates.IssueCertificate(tenant_id="acme", ca_id=inter["ca_id"], algorithm="ecdsa-p256",
                                            subject=certificates.DistinguishedName(common_name="q.acme.internal"),
                                            sans=certificates.SubjectAltNames(dns=("q.acme.internal",)))
    operator = Principal(id="operator", auth_method="local-cli", roles=frozenset({"platform-admin"}))
    ctx = CommandContext(principal=operator, idempotency_key="burst-2")  # the handlers, without HTTP's turn
    issued = await asyncio.gather(*(certificates.issue_certificate(command, ctx, api.runtime.services)
                                    for _ in range(6)))
    assert len({i.certificate_id for i in issued}) == 1
    ids = {a.json()["certificate_id"] for a in answers} | {issued[0].certificate_id}
    for certificate_id in ids:
        await fetch(api, admin, f"/v1/certificates/{certificate_id}", min_position=issued[0].result.global_position)
    stored = await api.runtime.keys.stored_before(api.runtime.services.clock.now() + timedelta(days=1))
    assert len([k for k in stored if k.purpose == "end-entity"]) == 2  # one per certificate, none per retry


async def test_a_request_that_names_no_validity_gets_one_its_issuer_and_tenant_allow(pki_api):
    """Defaults are never refused on their own: 1,825 days under a 5-year intermediate, or a profile's 365 days
    under a tenant's 90-day maximum, are shortened to what is allowed; a validity asked for is still checked."""
    from datetime import datetime

    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    root = (await api.client.post("/v1/cas", headers=admin, json={
        "kind": "root", "tenant_id": "acme", "name": "Root", "algorithm": "ecdsa-p384", "path_length": 2,
        "subject": {"common_name": "acme root"}})).json()
    upper = (await api.client.post("/v1/cas", headers=admin, json={
        "kind": "intermediate", "tenant_id": "acme", "parent_id": root["ca_id"], "name": "Upper", "path_length": 1,
        "algorithm": "ecdsa-p384", "subject": {"common_name": "acme upper"}})).json()
    lower = await api.client.post("/v1/cas", headers=admin, json={
        "kind": "intermediate", "tenant_id": "acme", "parent_id": upper["ca_id"], "name": "Lower",
        "algorithm": "ecdsa-p384", "subject": {"common_name": "acme lower"}})
    assert lower.status_code == 201, lower.text  # was 422 validity_beyond_issuer: 1825 days from a second later

    rows = {ca["name"]: ca for ca in (await fetch(api, admin, "/v1/cas", tenant_id="acme",
                                                  min_position=lower.json()["global_position"])).json()["items"]}
    ends = {name: datetime.fromisoformat(rows[name]["not_after"].replace("Z", "+00:00")) for name in rows}
    assert ends["Lower"] <= ends["Upper"] < ends["Root"]
    before = await api.client.get("/v1/tenants/acme/policy", headers=admin)
    assert before.status_code == 200 and before.json()["policy"]["max_validity_days"] is None, before.text
    policy = await api.client.put("/v1/tenants/acme/policy", headers=admin, json={"max_validity_days": 90})
    assert policy.status_code == 200, policy.text
    after = (await api.client.get("/v1/tenants/acme/policy", headers=admin)).json()  # the stream: no lag
    assert after["policy"]["max_validity_days"] == 90 and after["version"] == policy.json()["version"]
    assert_problem(await api.client.get("/v1/tenants/nobody/policy", headers=admin), 404, "tenant_not_found",
                   field="tenant_id")
    body = {"tenant_id": "acme", "ca_id": lower.json()["ca_id"], "algorithm": "ecdsa-p256",
            "subject": {"common_name": "n.acme.internal"}, "sans": {"dns": ["n.acme.internal"]}}
    issued = await issue(api, admin, **body)
    row = (await fetch(api, admin, f"/v1/certificates/{issued['certificate_id']}",
                       min_position=issued["global_position"])).json()
    leaf = x509.load_pem_x509_certificate(row["certificate_pem"].encode())
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days == 90
    asked = await api.client.post("/v1/certificates", headers=admin, json={**body, "validity_days": 365})
    assert "validity_too_long" in {e["rule"] for e in assert_problem(asked, 422)["errors"]}


async def test_a_keystore_that_cannot_carry_the_key_is_refused_before_the_key_leaves_the_vault(pki_api):
    """PKCS#12 and JKS carry classical keys only: an ML-DSA key's keystore export is refused before its audit
    event (the log said the key was exported three times when it never was); PEM still carries it."""
    api = pki_api
    admin = await api.admin()
    _, inter = await hierarchy(api, admin, algorithm="ml-dsa-65")
    issued = await issue(api, admin, tenant_id="acme", ca_id=inter["ca_id"], algorithm="ml-dsa-65",
                         subject={"common_name": "pq.acme.internal"}, sans={"dns": ["pq.acme.internal"]})
    path = f"/v1/certificates/{issued['certificate_id']}/export"
    headers = {**admin, "X-Export-Password": "changeit-please"}
    for format_ in ("pkcs12", "jks"):
        refused = await api.client.get(path, params={"format": format_, "min_position": issued["global_position"]},
                                       headers=headers)
        assert_problem(refused, 422, "export_refused", field="format")
    pem = await api.client.get(path, params={"format": "pem", "include_key": "true"}, headers=headers)
    assert pem.status_code == 200 and b"ENCRYPTED PRIVATE KEY" in pem.content, pem.text
    exports = [e for e in await api.runtime.store.read_all(0, 100_000) if e.type == "certificate.private_key_exported"]
    assert [e.payload["format"] for e in exports] == ["pem"]


async def test_changing_or_retiring_a_builtin_profile_names_it_reserved_not_missing(pki_api):
    """GET /v1/profiles lists cassandra-node, yet PUT and retire answered 404 "profile cassandra-node does not exist"."""
    admin = await pki_api.admin()
    await pki_api.create_tenant(admin, "acme")
    listed = (await pki_api.client.get("/v1/profiles", params={"tenant_id": "acme"}, headers=admin)).json()
    builtin = next(item["profile"] for item in listed if item["name"] == "cassandra-node")
    replaced = await pki_api.client.put("/v1/profiles/cassandra-node", headers=admin,
                                        json={"tenant_id": "acme", "profile": {**builtin, "description": "mine"}})
    problem = assert_problem(replaced, 422, "profile_name_reserved", field="name")
    assert "built-in" in problem["detail"]
    retired = await pki_api.client.post("/v1/profiles/cassandra-node/retire", headers=admin,
                                        json={"tenant_id": "acme", "reason": "ours instead"})
    assert_problem(retired, 422, "profile_name_reserved", field="name")
