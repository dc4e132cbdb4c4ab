"""CRL numbers and OCSP responders over time: the scheduler on a controllable clock, racing publishers, and
revocations that reach the CRL while the read models stand still."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509 import ocsp
from test_api_revocation import ask, ca, crl_of, leaf, ocsp_request, pem_certs, revoke, setup
from test_api_support import pki_api  # noqa: F401

from commands import crl
from domain.crl_publication import crl_number_floor
from domain.errors import Contention
from domain.events import decode_payload
from domain.revocation import CrlPublished, RevocationRecorded


class Clock:
    """The domain reads time through ``services.clock``; this one moves only when told."""

    def __init__(self) -> None:
        self.moment = datetime.now(UTC)

    def now(self) -> datetime:
        return self.moment

    def advance(self, delta: timedelta) -> None:
        self.moment += delta


def crl_number(crl_: x509.CertificateRevocationList) -> int:
    return crl_.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


async def caught_up(api) -> None:
    assert await api.runtime.runner.wait_for(await api.runtime.store.head_position(), 10)


async def test_the_scheduler_republishes_a_crl_once_a_third_of_its_period_is_left(pki_api):
    api = pki_api
    _admin, root, inter = await setup(api)
    clock = api.runtime.services.clock = Clock()
    first = await crl_of(api, inter)
    assert first.next_update_utc - first.last_update_utc == timedelta(days=7)
    await caught_up(api)
    scheduler = api.runtime.revocation_scheduler()
    assert inter not in {p.ca_id for p in await scheduler.run_once()}  # the root's first CRL may come now
    clock.advance(timedelta(days=4, hours=15))  # 2 days 9 hours left: more than a third of 7 days
    assert await scheduler.run_once() == []
    clock.advance(timedelta(hours=2))  # 2 days 7 hours left: less than a third
    published = {p.ca_id: p.crl_number for p in await scheduler.run_once()}
    floor = crl_number_floor(clock.now())  # numbers follow the clock: not below its milliseconds, days on
    assert published.keys() == {root, inter} and published[inter] == floor > crl_number(first)
    second = await crl_of(api, inter)
    assert crl_number(second) == published[inter]
    assert abs(second.last_update_utc - clock.now()) < timedelta(seconds=1)
    assert await scheduler.run_once() == []  # idempotent: nothing is due any more


async def test_racing_publishers_publish_one_crl_per_number_and_every_crl_lists_every_earlier_revocation(pki_api):
    api = pki_api
    admin, _root, inter = await setup(api)
    services = api.runtime.services
    rows = [await leaf(api, admin, inter, f"n{i}.acme.internal") for i in range(5)]
    await crl_of(api, inter)
    clock = services.clock = Clock()
    clock.advance(timedelta(days=6))  # due: every publisher below wants to publish
    revocations = [revoke(api, admin, row["certificate_id"], reason="superseded") for row in rows]
    publishers = [crl.publish(services, "acme", inter, only_if_due=True) for _ in range(4)]
    outcomes = await asyncio.gather(*revocations, *publishers)
    assert all(outcome is not None for outcome in outcomes)

    revoked: set[int] = set()
    numbers = []
    for envelope in await services.store.read_stream("acme", f"ca-{inter}"):
        payload = decode_payload(envelope)
        if isinstance(payload, RevocationRecorded):
            revoked.add(int(payload.serial_hex, 16))
        elif isinstance(payload, CrlPublished):
            numbers.append(payload.crl_number)
            listed = x509.load_der_x509_crl(await services.artifacts.get(payload.sha256))
            assert crl_number(listed) == payload.crl_number and len(listed) == payload.revoked_count
            assert {entry.serial_number for entry in listed} == revoked, payload.crl_number
    assert numbers == sorted(set(numbers)) and numbers[1] >= crl_number_floor(clock.now())  # none twice
    assert revoked == {int(row["certificate_id"], 16) for row in rows}
    assert {entry.serial_number for entry in await crl_of(api, inter)} == revoked


async def test_a_crl_publication_lost_to_other_processes_leaves_the_revocation_done_and_the_scheduler_publishes(
        pki_api, monkeypatch):
    api = pki_api
    admin, _root, inter = await setup(api)
    row = await leaf(api, admin, inter, "n1.acme.internal")
    before = crl_number(await crl_of(api, inter))

    async def lost(services, tenant_id, ca_id, **_):  # other processes kept appending to the CA's stream
        raise Contention(f"ca-{ca_id}", "ca_id")

    monkeypatch.setattr(crl, "publish", lost)
    done = await revoke(api, admin, row["certificate_id"], reason="key_compromise")
    assert done["status"] == "revoked" and done["crls"] == []  # recorded; no CRL lists it yet
    monkeypatch.undo()
    await caught_up(api)
    published = {p.ca_id: p.crl_number for p in await api.runtime.revocation_scheduler().run_once()}
    assert published[inter] > before  # the CRL that lacked it is due at once
    listed = await crl_of(api, inter)
    assert listed.get_revoked_certificate_by_serial_number(int(row["certificate_id"], 16)) is not None


async def test_a_revocation_reaches_the_crl_and_ocsp_while_the_read_models_stand_still(pki_api):
    api = pki_api
    admin, _root, inter = await setup(api)
    chain = pem_certs((await api.client.get(f"/v1/cas/{inter}/chain", headers=admin)).text)
    await crl_of(api, inter)
    await caught_up(api)
    projections = next(task for task in api.runtime.tasks if task.get_name() == "projections")
    projections.cancel()
    await asyncio.gather(projections, return_exceptions=True)

    response = await api.client.post("/v1/certificates", headers=admin, json={
        "tenant_id": "acme", "ca_id": inter, "algorithm": "ecdsa-p256", "subject": {"common_name": "x.acme.internal"},
        "sans": {"dns": ["x.acme.internal"]}})
    issued = response.json()
    revoked = await revoke(api, admin, issued["certificate_id"], reason="key_compromise", tenant_id="acme")
    assert api.runtime.runner.position < revoked["global_position"]  # the read models have not seen any of it
    serial = int(issued["certificate_id"], 16)
    assert (await crl_of(api, inter)).get_revoked_certificate_by_serial_number(serial) is not None
    stream = await api.runtime.store.read_stream("acme", f"certificate-{issued['certificate_id']}")
    certificate = x509.load_pem_x509_certificate(stream[0].payload["certificate_pem"].encode())
    answer = await ask(api, inter, ocsp_request(certificate, chain[0]))
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED


async def test_the_ocsp_responder_certificate_is_renewed_before_it_expires(pki_api):
    api = pki_api
    admin, _root, inter = await setup(api)
    row = await leaf(api, admin, inter, "node.acme.internal")
    certificate = x509.load_pem_x509_certificate(row["certificate_pem"].encode())
    issuer = pem_certs((await api.client.get(f"/v1/cas/{inter}/chain", headers=admin)).text)[0]
    first = (await ask(api, inter, ocsp_request(certificate, issuer))).certificates[0]
    await caught_up(api)
    clock = api.runtime.services.clock = Clock()
    clock.advance(timedelta(days=15))  # 15 of 30 days left: not due
    await api.runtime.revocation_scheduler().run_once()
    assert (await ask(api, inter, ocsp_request(certificate, issuer, nonce=b"a" * 16))).certificates[0] == first
    clock.advance(timedelta(days=6))  # 9 days left: less than a third
    await api.runtime.revocation_scheduler().run_once()
    answer = await ask(api, inter, ocsp_request(certificate, issuer, nonce=b"b" * 16))
    renewed = answer.certificates[0]
    assert renewed.serial_number != first.serial_number and renewed.not_valid_after_utc > first.not_valid_after_utc
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
    renewed.verify_directly_issued_by(issuer)


@pytest.mark.parametrize("algorithm", ["ml-dsa-65", "hybrid-p384-ml-dsa-65", "ed25519"])
async def test_every_ca_family_signs_crls_and_certifies_an_ocsp_responder(pki_api, algorithm):
    """ML-DSA and EdDSA CAs sign CRLs with their own algorithm; a hybrid CA signs them classically."""
    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    root = await ca(api, admin, "root", "Root", algorithm=algorithm)
    inter = await ca(api, admin, "intermediate", "Issuing", parent=root, algorithm=algorithm)
    row = await leaf(api, admin, inter, "pq.acme.internal")
    await revoke(api, admin, row["certificate_id"], reason="superseded")
    issuer = pem_certs((await api.client.get(f"/v1/cas/{inter}/chain", headers=admin)).text)[0]
    listed = await crl_of(api, inter)
    assert listed.is_signature_valid(issuer.public_key())
    assert listed.signature_algorithm_oid == issuer.signature_algorithm_oid  # the CA's own (classical) scheme
    assert listed.get_revoked_certificate_by_serial_number(int(row["certificate_id"], 16)) is not None
    certificate = x509.load_pem_x509_certificate(row["certificate_pem"].encode())
    answer = await ask(api, inter, ocsp_request(certificate, issuer))
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    answer.certificates[0].verify_directly_issued_by(issuer)
