"""A hybrid certificate's compromise blocks both of its keys, a block reported in error can be lifted, and the sweep
revokes a certificate that raced its key's report and lost its process.

A hybrid certificate certifies a classical key and an ML-DSA key (subjectAltPublicKeyInfo): whoever stole the pair
holds each half, and a pure ML-DSA CSR of the second half is a certificate of a stolen key as much as a CSR of the
first. Both are recorded (the ML-DSA one ``alternative_of`` the classical), and both refused. Lifting (permission
key:unblock, a reason) makes the key certifiable again and un-revokes nothing.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa
from cryptography.x509.oid import NameOID
from test_api_ca_lifecycle import issue_leaf
from test_api_compromised_keys import compromised, csr_of, new_csr
from test_api_revocation import revoke, setup
from test_api_support import Clock, assert_problem, pki_api, written_since  # noqa: F401

from commands import certificates, compromise_sweep, compromised_keys, pki
from domain import certificate

HYBRID = "hybrid-p384-ml-dsa-65"


def ml_dsa_csr(key, name: str) -> str:
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
               .sign(key, None))
    return request.public_bytes(serialization.Encoding.PEM).decode()


def spki_sha256(public_key) -> str:
    return hashlib.sha256(public_key.public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


async def hybrid_key_pair(api, certificate_id: str):
    """The server-made hybrid key of a certificate, from the vault (as its holder has it from a PKCS#12 export)."""
    services = api.runtime.services
    state = await api.runtime.store.read_stream("acme", certificate.stream_id(certificate_id))
    key_ref = state[0].payload["key_ref"]
    pair = pki.crypto_of(services).load_private_key(await pki.vault_of(services).get("acme", key_ref))
    assert pair.alternative is not None
    return pair


def csr_request(tenant: str, ca_id: str, csr: str) -> dict:
    return {"tenant_id": tenant, "ca_id": ca_id, "csr": csr}


async def revoked_hybrid(api):
    """A server-made hybrid certificate revoked key_compromise: (admin, its CA, it, its key pair, the classical and the
    ML-DSA keys' hashes)."""
    admin, _root, inter = await setup(api)
    issued = await issue_leaf(api, admin, inter, "hybrid.acme.internal", algorithm=HYBRID)
    pair = await hybrid_key_pair(api, issued["certificate_id"])
    classical, ml_dsa = spki_sha256(pair.primary.public_key()), spki_sha256(pair.alternative.public_key())
    await revoke(api, admin, issued["certificate_id"], reason="key_compromise")
    return admin, inter, issued, pair, classical, ml_dsa


async def test_a_hybrid_certificates_compromise_blocks_its_ml_dsa_half_too(pki_api):
    api = pki_api
    admin, inter, issued, pair, classical, ml_dsa = await revoked_hybrid(api)
    assert [(k["public_key_sha256"], k["alternative_of"], k["certificate_id"]) for k in await compromised(api, admin)
            ] == [(classical, None, issued["certificate_id"]), (ml_dsa, classical, issued["certificate_id"])]
    head = await api.runtime.store.head_position()
    refused = assert_problem(await api.client.post("/v1/certificates", headers=admin, json=csr_request(
        "acme", inter, ml_dsa_csr(pair.alternative, "again.acme.internal"))), 422, "key_compromised", field="csr")
    assert ml_dsa in refused["detail"]
    assert await written_since(api, head) == set()
    # another ML-DSA key is certified as ever: the refusal is of that key, not of the algorithm
    fresh = await api.client.post("/v1/certificates", headers=admin, json=csr_request(
        "acme", inter, ml_dsa_csr(mldsa.MLDSA65PrivateKey.generate(), "fresh.acme.internal")))
    assert fresh.status_code == 201, fresh.text


async def test_a_block_reported_in_error_is_lifted_by_a_tenant_admin_with_a_reason(pki_api):
    api = pki_api
    admin, inter, issued, pair, classical, ml_dsa = await revoked_hybrid(api)
    url = f"/v1/tenants/acme/compromised-keys/{classical}/lift"
    head = await api.runtime.store.head_position()
    operator = await api.token("ca-operator", tenant_id="acme")
    denied = assert_problem(await api.client.post(url, headers=operator, json={"reason": "reported in error"}), 403,
                            "forbidden")
    assert denied["errors"][0]["rule"] == "key:unblock", denied
    assert_problem(await api.client.post(url, headers=admin, json={}), 400, field="reason")
    assert_problem(await api.client.post("/v1/tenants/acme/compromised-keys/not-a-hash/lift", headers=admin,
                                         json={"reason": "reported in error"}), 400, field="public_key_sha256")
    assert not {"key.compromise_lifted"} & await written_since(api, head)

    tenant_admin = await api.token("tenant-admin", tenant_id="acme")
    lifted = await api.client.post(url, headers=tenant_admin, json={"reason": "the wrong certificate was named"})
    assert lifted.status_code == 200, lifted.text
    assert sorted(lifted.json()["public_keys_sha256"]) == sorted([classical, ml_dsa])
    listed = (await api.client.get("/v1/tenants/acme/compromised-keys", headers=admin)).json()
    assert listed["items"] == [] and sorted(k["public_key_sha256"] for k in listed["lifted"]) == sorted(
        [classical, ml_dsa])
    events = [e for e in await api.runtime.store.read_stream("acme", "compromised-keys")
              if e.type == "key.compromise_lifted"]
    assert len(events) == 2 and {e.payload["reason"] for e in events} == {"the wrong certificate was named"}
    revoked_by = (await api.runtime.store.read_stream("acme", "compromised-keys"))[0].actor.principal
    assert len({e.actor.principal for e in events}) == 1 and events[0].actor.principal != revoked_by  # who lifted
    assert_problem(await api.client.post(url, headers=tenant_admin, json={"reason": "again"}), 409,
                   "compromise_already_lifted", field="public_key_sha256")
    # certifiable again; the revoked certificate stays revoked
    again = await api.client.post("/v1/certificates", headers=admin, json=csr_request(
        "acme", inter, ml_dsa_csr(pair.alternative, "again.acme.internal")))
    assert again.status_code == 201, again.text
    shown = (await api.client.get(f"/v1/certificates/{issued['certificate_id']}", headers=admin,
                                  params={"min_position": again.json()["global_position"]})).json()
    assert shown["status"] == "revoked"


@pytest.mark.parametrize("reported_first", [False, True])
async def test_the_key_a_compromise_rollover_rolled_away_from_cannot_be_lifted(pki_api, reported_first):
    """Rolled over in compromise mode, or (the usual order, as a routine rollover of a reported key is refused) first
    reported and then rolled over: the root's old key stays blocked for good, whatever a tenant admin says."""
    api = pki_api
    admin, root, _inter = await setup(api)
    if reported_first:
        reported = await api.client.post("/v1/tenants/acme/compromised-keys", headers=admin, json={"ca_id": root})
        assert reported.status_code in (200, 201), reported.text
    rolled = await api.client.post(f"/v1/cas/{root}/rollover", headers=admin,
                                   json={"reason": "root key stolen", "compromised": True})
    assert rolled.status_code == 200, rolled.text
    [key] = [k["public_key_sha256"] for k in await compromised(api, admin)]
    assert_problem(await api.client.post(f"/v1/tenants/acme/compromised-keys/{key}/lift", headers=admin,
                                         json={"reason": "it was not stolen after all"}), 409,
                   "compromise_rollover_final", field="public_key_sha256")


async def test_a_key_reported_again_since_is_lifted_only_with_every_report(pki_api):
    """The race of a lift with a genuine second report: the second report is recorded (another source) and the lift
    of the first one alone is refused, naming every_report."""
    api = pki_api
    admin, _inter, issued, _pair, classical, ml_dsa = await revoked_hybrid(api)
    again = await api.client.post("/v1/tenants/acme/compromised-keys", headers=admin,
                                  json={"certificate_id": issued["certificate_id"]})
    assert again.status_code in (200, 201), again.text
    listed = {k["public_key_sha256"]: k["sources"] for k in await compromised(api, admin)}
    assert listed == {classical: 2, ml_dsa: 2}
    url = f"/v1/tenants/acme/compromised-keys/{classical}/lift"
    assert_problem(await api.client.post(url, headers=admin, json={"reason": "the first report was in error"}), 409,
                   "compromise_reported_again", field="every_report")
    lifted = await api.client.post(url, headers=admin, json={"reason": "both were in error", "every_report": True})
    assert lifted.status_code == 200, lifted.text
    assert sorted(lifted.json()["public_keys_sha256"]) == sorted([classical, ml_dsa])


class ProcessDied(Exception):
    pass


async def issued_by_a_process_that_died(api, headers, ca_id: str, key, name: str, monkeypatch) -> str:
    """An issuance of a blocked key whose first check passed just before the report and whose process died before the
    check after its append (simulated: the first check lets the key pass, the second dies): its certificate's id."""
    async def passed_before_the_report(*_args, **_kwargs) -> None:
        return None

    async def died(*_args, **_kwargs) -> None:
        raise ProcessDied("the process died between its append and its second check")

    head = await api.runtime.store.head_position()
    with monkeypatch.context() as patch:
        patch.setattr(compromised_keys, "refuse_if_compromised", passed_before_the_report)
        patch.setattr(certificates, "_withdraw_if_compromised", died)
        crashed = await new_csr(api, headers, "acme", ca_id, key, name)
        assert crashed.status_code == 500, crashed.text
    [raced] = [e.payload["certificate_id"] for e in await api.runtime.store.read_all(head, 10_000)
               if e.type == "certificate.issued"]
    state = await api.runtime.store.read_stream("acme", certificate.stream_id(raced))
    assert [e.type for e in state] == ["certificate.issued"]  # valid: a certificate of a blocked key
    return raced


async def test_a_certificate_that_raced_the_report_and_lost_its_process_is_revoked_by_the_sweep(pki_api, monkeypatch):
    """The race a crash leaves open: an issuance passed its first check just before the key was reported, appended
    after the report's own sweep, and its process died before the check after its append. The certificate is then
    valid; the revocation scheduler's sweep of blocked keys (a restarted process sweeps every one once) revokes it."""
    api = pki_api
    admin, _root, inter = await setup(api)
    key = ec.generate_private_key(ec.SECP256R1())
    first = await issue_leaf_with_csr(api, admin, inter, key, "k1.acme.internal")
    await revoke(api, admin, first["certificate_id"], reason="key_compromise")
    raced = await issued_by_a_process_that_died(api, admin, inter, key, "k2.acme.internal", monkeypatch)

    scheduler = api.runtime.revocation_scheduler()  # a restarted process: it has swept nothing yet
    assert await scheduler.sweep_compromised({"acme"}) == (raced,)
    assert [e.type for e in await api.runtime.store.read_stream("acme", certificate.stream_id(raced))][-1] == \
        "certificate.revoked"
    assert await scheduler.sweep_compromised({"acme"}) == ()  # idempotent: nothing trusted is left


async def test_a_certificate_that_raced_the_report_later_than_the_window_is_revoked_within_the_hour(
        pki_api, monkeypatch):
    """The same crash landing more than 15 minutes after the report, in a process that does not restart: the sweep
    that swept the key once already (it swept it only once per process) sweeps it again an hour later."""
    api = pki_api
    clock = api.runtime.services.clock = Clock()
    admin, _root, inter = await setup(api)
    key = ec.generate_private_key(ec.SECP256R1())
    first = await issue_leaf_with_csr(api, admin, inter, key, "k1.acme.internal")
    await revoke(api, admin, first["certificate_id"], reason="key_compromise")
    scheduler = api.runtime.revocation_scheduler()
    assert await scheduler.sweep_compromised({"acme"}) == ()  # swept once: nothing else of the key
    clock.offset = compromise_sweep.RACE_WINDOW + timedelta(minutes=5)
    raced = await issued_by_a_process_that_died(api, await api.admin(), inter, key, "k2.acme.internal", monkeypatch)
    assert await scheduler.sweep_compromised({"acme"}) == ()  # swept 20 minutes ago, reported 20 minutes ago
    clock.offset = compromise_sweep.FULL_PASS + timedelta(minutes=1)
    assert await scheduler.sweep_compromised({"acme"}) == (raced,)


async def issue_leaf_with_csr(api, headers, ca_id: str, key, name: str) -> dict:
    response = await api.client.post("/v1/certificates", headers=headers, json=csr_request(
        "acme", ca_id, csr_of(key, name)))
    assert response.status_code == 201, response.text
    return response.json()
