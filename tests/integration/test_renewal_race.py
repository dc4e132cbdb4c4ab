"""A renewal racing a revocation of the same certificate: no order of their steps leaves a valid successor; and a
key_compromise revocation reaches every trusted certificate of the key in the tenant.

Each interleaving is pinned with a gate on the real store's append: one command is held at a chosen
step (an asyncio event, never a sleep) while the other runs, then released. The revocation appends
to the issuing CA's stream (the authority) before the certificate's; the renewal claims, issues the
successor, and links it. The crash between the revocation's two appends is reproduced by failing the
second one: the scheduler and the renew API must then refuse, not renew a revoked certificate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from test_api_ca_lifecycle import create_ca
from test_api_revocation import ask, leaf, ocsp_request, pem_certs, revoke, setup
from test_api_support import assert_problem, dying_at, pki_api  # noqa: F401
from test_crl_schedule import Clock, caught_up
from test_renewal import DAY, create_profile, events_of, issue, public_key_of, row, types_of

from commands import crl
from commands.ports import AppendRequest

GATE_BOUND = 30  # seconds: a bound on waiting for a step that must come, not a timing


def gate(api, monkeypatch, matches: Callable[[AppendRequest], bool], *, before: bool = False,
         hold: bool = True) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold the first append that ``matches`` (after it lands; ``before``: before it is tried) until ``release`` is
    set; ``reached`` is set once it is there (``hold`` False: only tell). Gates stack: each wraps the store's
    append as it finds it."""
    store = api.runtime.services.store
    append, reached, release = store.append, asyncio.Event(), asyncio.Event()
    if not hold:
        release.set()

    async def gated(request: AppendRequest):
        if reached.is_set() or not matches(request):
            return await append(request)
        if before:
            reached.set()
            await release.wait()
            return await append(request)
        result = await append(request)
        reached.set()
        await release.wait()
        return result

    monkeypatch.setattr(store, "append", gated)
    return reached, release


def appends(event_type: str, stream_id: str | None = None, *, other_than: str | None = None):
    return lambda r: (r.events[0].type == event_type and (stream_id is None or r.stream_id == stream_id)
                      and r.stream_id != other_than)


async def reached(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), GATE_BOUND)


def renew(api, headers, certificate_id: str, **body) -> asyncio.Future:
    return asyncio.ensure_future(api.client.post(f"/v1/certificates/{certificate_id}/renew", headers=headers,
                                                 json=body))


def revoke_later(api, headers, certificate_id: str, **body) -> asyncio.Future:
    return asyncio.ensure_future(api.client.post(f"/v1/certificates/{certificate_id}/revoke", headers=headers,
                                                 json=body))


async def successor_of(api, certificate_id: str) -> str:
    claims = [p for p in await events_of(api, certificate_id) if type(p).event_type == "certificate.renewal_started"]
    assert len(claims) == 1, claims
    return claims[0].new_certificate_id


async def ocsp_status(api, headers, ca_id: str, certificate_pem: str) -> ocsp.OCSPResponse:
    issuer = pem_certs((await api.client.get(f"/v1/cas/{ca_id}/chain", headers=headers)).text)[0]
    return await ask(api, ca_id, ocsp_request(x509.load_pem_x509_certificate(certificate_pem.encode()), issuer))


async def revoked_on_ca(api, ca_id: str) -> dict:
    return (await crl.load_registry(api.runtime.services, "acme", ca_id)).revoked


async def test_a_successor_issued_while_the_revocation_lands_is_revoked_with_the_same_key(pki_api, monkeypatch):
    """The tester's H1: the key-compromise revocation completes while the renewal (same key) has issued its
    successor but not linked it. The successor is revoked key_compromise too, and the renewal answers 409."""
    api = pki_api
    admin, _root, inter = await setup(api)
    await create_profile(api, admin, "keep-key", {"reuse_key": True})
    old = await issue(api, admin, inter, "rr2.acme.internal", profile="keep-key", algorithm="ecdsa-p256")
    old_id = old["certificate_id"]
    issued, release = gate(api, monkeypatch, appends("certificate.issued", other_than=f"certificate-{old_id}"))
    renewal = renew(api, admin, old_id, reuse_key=True)
    await reached(issued)  # the successor exists, valid, and is not linked yet

    await revoke(api, admin, old_id, reason="key_compromise")
    release.set()
    body = assert_problem(await renewal, 409, "certificate_revoked", field="id")
    successor = await successor_of(api, old_id)
    assert successor in body["detail"]

    assert await types_of(api, old_id) == ["certificate.issued", "certificate.renewal_started", "certificate.revoked",
                                           "certificate.renewal_failed"]
    assert (await events_of(api, old_id))[-1].reason == "certificate_revoked"
    assert await types_of(api, successor) == ["certificate.issued", "certificate.revoked"]
    on_ca = await revoked_on_ca(api, inter)
    assert {on_ca[r["serial_hex"]].reason for r in (old, await row(api, admin, successor))} == {"key_compromise"}
    new = await row(api, admin, successor)
    assert public_key_of(new) == public_key_of(old)  # the same key: revoked for the same compromise
    assert (new["status"], new["revocation_reason"], new["supersedes"]) == ("revoked", "key_compromise", None)
    answer = await ocsp_status(api, admin, inter, new["certificate_pem"])
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason == x509.ReasonFlags.key_compromise


async def test_a_renewal_that_claimed_before_the_revocation_reached_the_ca_issues_nothing(pki_api, monkeypatch):
    """The tester's log order: the claim lands, the revocation reaches the CA, then the renewal goes on."""
    api = pki_api
    admin, _root, inter = await setup(api)
    old = await leaf(api, admin, inter, "claimed.acme.internal")
    old_id = old["certificate_id"]
    claimed, release = gate(api, monkeypatch, appends("certificate.renewal_started"))
    on_ca, _ = gate(api, monkeypatch, appends("ca.certificate_revoked"), hold=False)
    renewal = renew(api, admin, old_id)
    await reached(claimed)
    revocation = revoke_later(api, admin, old_id, reason="key_compromise")
    await reached(on_ca)  # the commit point: revoked for every relying party from here on
    release.set()

    assert_problem(await renewal, 409, "certificate_revoked", field="id")
    assert (await revocation).status_code == 200, (await revocation).text
    successor = await successor_of(api, old_id)
    assert await types_of(api, successor) == []  # never issued
    events = await events_of(api, old_id)
    assert [type(p).event_type for p in events] == ["certificate.issued", "certificate.renewal_started",
                                                    "certificate.revoked", "certificate.renewal_failed"]
    assert events[-1].reason == "certificate_revoked"
    assert (await row(api, admin, old_id))["superseded_by"] is None


async def test_a_link_that_lands_after_the_revocation_reached_the_ca_is_undone(pki_api, monkeypatch):
    """The revocation reaches the CA while the renewal's link waits for the certificate's stream, which the
    renewal holds: the link lands first, yet the renewal must not finish. A new key is not compromised: its
    successor is revoked ``unspecified``."""
    api = pki_api
    admin, _root, inter = await setup(api)
    old = await leaf(api, admin, inter, "linked.acme.internal")  # cassandra-node: rotated on renewal
    old_id = old["certificate_id"]
    linking, release = gate(api, monkeypatch, appends("certificate.renewed"), before=True)
    on_ca, _ = gate(api, monkeypatch, appends("ca.certificate_revoked"), hold=False)
    renewal = renew(api, admin, old_id)
    await reached(linking)  # checked the CA (not revoked), decided the link, holding the certificate's stream
    revocation = revoke_later(api, admin, old_id, reason="key_compromise")
    await reached(on_ca)
    release.set()

    body = assert_problem(await renewal, 409, "certificate_revoked", field="id")
    assert (await revocation).status_code == 200, (await revocation).text
    successor = await successor_of(api, old_id)
    assert successor in body["detail"]
    assert await types_of(api, old_id) == ["certificate.issued", "certificate.renewal_started",
                                           "certificate.renewed", "certificate.revoked"]
    new = await row(api, admin, successor)
    assert public_key_of(new) != public_key_of(old)
    assert (new["status"], new["revocation_reason"]) == ("revoked", "unspecified")
    assert (await revoked_on_ca(api, inter))[new["serial_hex"]].reason == "unspecified"


async def test_a_revocation_that_stopped_after_the_ca_is_never_renewed(pki_api):
    """The documented crash window: ``ca.certificate_revoked`` is committed, ``certificate.revoked`` never came.
    The scheduler must not renew it (it completes the revocation instead), nor may the renew API."""
    api = pki_api
    clock = api.runtime.services.clock = Clock()
    admin, _root, inter = await setup(api)
    due = await leaf(api, admin, inter, "crashed.acme.internal")  # cassandra-node: renewed at 67% of 365 days
    asked = await leaf(api, admin, inter, "asked.acme.internal")
    with dying_at(api.runtime.services.store, "certificate.revoked", "the process died between the two appends"):
        for victim in (due, asked):
            died = await api.client.post(f"/v1/certificates/{victim['certificate_id']}/revoke", headers=admin,
                                         json={"reason": "key_compromise"})
            assert died.status_code == 500, died.text
    on_ca = await revoked_on_ca(api, inter)
    assert {due["serial_hex"], asked["serial_hex"]} <= on_ca.keys()
    assert await types_of(api, due["certificate_id"]) == ["certificate.issued"]  # "issued" in the inventory

    refused = await api.client.post(f"/v1/certificates/{asked['certificate_id']}/renew", headers=admin, json={})
    assert_problem(refused, 409, "certificate_revoked", field="id")
    assert await types_of(api, asked["certificate_id"]) == ["certificate.issued", "certificate.revoked"]

    clock.advance(250 * DAY)  # 68% of its life: due
    await caught_up(api)
    scheduler = api.runtime.renewal_scheduler()
    assert ((report := await scheduler.run_once()).renewed, report.failed) == ([], [])
    assert await types_of(api, due["certificate_id"]) == ["certificate.issued", "certificate.revoked"]
    admin = await api.admin()  # API keys live 90 days: one made on the moved clock
    assert (await row(api, admin, due["certificate_id"]))["status"] == "revoked"  # and no longer a candidate
    assert (await scheduler.run_once()).renewed == []


async def test_revoking_a_certificate_renewed_before_leaves_its_successor_alone(pki_api):
    """Revoking a superseded certificate is routine: a renewal that finished first is not part of a race."""
    api = pki_api
    admin, _root, inter = await setup(api)
    old = await leaf(api, admin, inter, "done.acme.internal")
    renewed = await api.client.post(f"/v1/certificates/{old['certificate_id']}/renew", headers=admin, json={})
    assert renewed.status_code == 201, renewed.text
    await revoke(api, admin, old["certificate_id"], reason="superseded")
    assert (await row(api, admin, renewed.json()["certificate_id"]))["status"] == "issued"


def csr_of(key: ec.EllipticCurvePrivateKey, name: str) -> str:
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
               .sign(key, hashes.SHA256()))
    return request.public_bytes(serialization.Encoding.PEM).decode()


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_a_key_compromise_revokes_every_trusted_certificate_of_that_key_in_the_tenant(pki_api):
    """A renewal kept the key (its predecessor stays valid until it expires), and the holder sent the same key in a
    second CSR: revoking one for key_compromise revokes the others, not another key, nor another tenant's."""
    api = pki_api
    admin, _root, inter = await setup(api)
    await create_profile(api, admin, "keep-key", {"reuse_key": True})
    key = ec.generate_private_key(ec.SECP256R1())
    first = await issue(api, admin, inter, "k1.acme.internal", profile="keep-key", csr=csr_of(key, "k1.acme.internal"))
    renewed = await api.client.post(f"/v1/certificates/{first['certificate_id']}/renew", headers=admin,
                                    json={"reuse_key": True})
    assert renewed.status_code == 201, renewed.text
    successor = renewed.json()["certificate_id"]
    twin = await issue(api, admin, inter, "k2.acme.internal", csr=csr_of(key, "k2.acme.internal"))
    other = await leaf(api, admin, inter, "k3.acme.internal")
    await api.create_tenant(admin, "globex")
    globex_root = await create_ca(api, admin, name="Globex Root", tenant="globex")
    globex_ca = await create_ca(api, admin, name="Globex Issuing", tenant="globex", parent_id=globex_root)
    elsewhere = await api.client.post("/v1/certificates", headers=admin, json={
        "tenant_id": "globex", "ca_id": globex_ca, "csr": csr_of(key, "k.globex.internal")})
    assert elsewhere.status_code == 201, elsewhere.text

    compromised_at = first["not_before"]
    answer = await revoke(api, admin, successor, reason="key_compromise", invalidity_date=compromised_at)
    assert sorted(answer["also_revoked"]) == sorted([first["certificate_id"], twin["certificate_id"]])
    for certificate_id in (successor, first["certificate_id"], twin["certificate_id"]):
        revoked = await row(api, admin, certificate_id)
        assert (revoked["status"], revoked["revocation_reason"]) == ("revoked", "key_compromise"), certificate_id
        assert moment(revoked["invalidity_date"]) == max(moment(compromised_at), moment(revoked["not_before"]))
        answer_ = await ocsp_status(api, admin, inter, revoked["certificate_pem"])
        assert answer_.certificate_status == ocsp.OCSPCertStatus.REVOKED, certificate_id
    assert (await row(api, admin, other["certificate_id"]))["status"] == "issued"
    assert (await row(api, admin, elsewhere.json()["certificate_id"]))["status"] == "issued"

    plain = await leaf(api, admin, inter, "k4.acme.internal")
    assert (await revoke(api, admin, plain["certificate_id"], reason="key_compromise"))["also_revoked"] == []
    assert (await revoke(api, admin, other["certificate_id"], reason="superseded"))["also_revoked"] == []

