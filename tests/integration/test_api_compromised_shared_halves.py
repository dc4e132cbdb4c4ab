"""Hybrid certificates that share only their ML-DSA half: a compromise of that half revokes each of them (the report's
cascade and the revocation scheduler's sweep find a certificate by either of its keys); a sweep while the certificates
read model rebuilds counts nothing as swept; a retried lift answers what the first one did.

Two server-made hybrid keys share an ML-DSA half when the key generator hands the second the first's ML-DSA key (a
holder reusing one ML-DSA key under two classical keys): real keys and real certificates, signed by the CA with both
of its signatures, only the generation steered.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager

from cryptography.hazmat.primitives.asymmetric import ec
from test_api_ca_lifecycle import issue_leaf
from test_api_compromised_halves import HYBRID, hybrid_key_pair, revoked_hybrid, spki_sha256
from test_api_compromised_keys import compromised, report
from test_api_revocation import revoke, setup
from authz_support import caught_up
from test_api_support import pki_api, written_since  # noqa: F401

from commands import pki
from domain import certificate
from infra.crypto.keys import KeyPair
from projections.certificates import CertificatesProjector
from projections.views_db import EMPTIED


async def issue_sharing_ml_dsa_half(api, headers, ca_id: str, pair, name: str, monkeypatch) -> dict:
    """A server-made hybrid certificate whose key is a new classical key with ``pair``'s ML-DSA half."""
    crypto = pki.crypto_of(api.runtime.services)
    with monkeypatch.context() as patch:
        patch.setattr(crypto, "generate_key", lambda algorithm: KeyPair(
            algorithm, ec.generate_private_key(ec.SECP384R1()), pair.alternative))
        return await issue_leaf(api, headers, ca_id, name, algorithm=HYBRID)


async def two_sharing_their_ml_dsa_half(api, monkeypatch):
    """(admin, the first hybrid certificate, the second, and the first's classical and ML-DSA keys' hashes): the two
    certify one ML-DSA key and different classical ones."""
    admin, _root, inter = await setup(api)
    first = await issue_leaf(api, admin, inter, "h1.acme.internal", algorithm=HYBRID)
    pair = await hybrid_key_pair(api, first["certificate_id"])
    second = await issue_sharing_ml_dsa_half(api, admin, inter, pair, "h2.acme.internal", monkeypatch)
    other = await hybrid_key_pair(api, second["certificate_id"])
    classical, ml_dsa = spki_sha256(pair.primary.public_key()), spki_sha256(pair.alternative.public_key())
    assert spki_sha256(other.alternative.public_key()) == ml_dsa
    assert spki_sha256(other.primary.public_key()) != classical
    return admin, first, second, classical, ml_dsa


async def status_of(api, certificate_id: str) -> tuple[str, str | None]:
    state = await api.runtime.store.read_stream("acme", certificate.stream_id(certificate_id))
    revoked = [e.payload["reason"] for e in state if e.type == "certificate.revoked"]
    return ("revoked", revoked[-1]) if revoked else ("issued", None)


async def test_reporting_one_hybrid_certificate_revokes_another_that_shares_only_its_ml_dsa_half(pki_api, monkeypatch):
    api = pki_api
    admin, first, second, classical, ml_dsa = await two_sharing_their_ml_dsa_half(api, monkeypatch)
    await caught_up(api)
    reported = await report(api, admin, certificate_id=first["certificate_id"])
    assert reported.status_code == 200, reported.text
    body = reported.json()
    assert body["public_keys_sha256"] == [classical, ml_dsa]
    assert sorted(body["revoked"]) == sorted([first["certificate_id"], second["certificate_id"]])
    assert await status_of(api, second["certificate_id"]) == ("revoked", "key_compromise")
    # what is blocked is what was stolen: the first certificate's two keys, not the second's classical key
    assert [(k["public_key_sha256"], k["alternative_of"]) for k in await compromised(api, admin)] == [
        (classical, None), (ml_dsa, classical)]


async def test_a_key_compromise_revocation_revokes_the_hybrid_that_shares_only_its_ml_dsa_half(pki_api, monkeypatch):
    api = pki_api
    admin, first, second, _classical, _ml_dsa = await two_sharing_their_ml_dsa_half(api, monkeypatch)
    await caught_up(api)
    revoked = await revoke(api, admin, first["certificate_id"], reason="key_compromise")
    assert revoked["also_revoked"] == [second["certificate_id"]]
    assert await status_of(api, second["certificate_id"]) == ("revoked", "key_compromise")


@contextmanager
def certificates_rebuilding(api):
    """The certificates read model as a server shows it while rebuilding it (its checkpoint EMPTIED): reads of it are
    refused; its own checkpoint back afterwards (nothing was appended meanwhile that it would have to catch up with)."""
    views = sqlite3.connect(api.runtime.runner.views_path, isolation_level=None)
    try:
        views.execute("UPDATE projection_checkpoints SET version = ? WHERE name = 'certificates'", (EMPTIED,))
        yield
    finally:
        views.execute("UPDATE projection_checkpoints SET version = ? WHERE name = 'certificates'",
                      (CertificatesProjector.version,))
        views.close()


async def test_the_sweep_finds_a_hybrid_by_its_ml_dsa_half_and_a_sweep_during_a_rebuild_counts_nothing_swept(
        pki_api, monkeypatch):
    """The revocation found none of the key's other certificates (its read model was away), so only the sweep can
    revoke the second certificate. A sweep while the certificates read model rebuilds finds nothing, and must not
    count the keys as swept (a process sweeps each once, then only those reported within the race window): the next
    pass, with the read model back, finds the certificate by its ML-DSA half and revokes it."""
    api = pki_api
    admin, first, second, classical, ml_dsa = await two_sharing_their_ml_dsa_half(api, monkeypatch)
    with monkeypatch.context() as patch:
        patch.setattr(api.runtime.services, "key_holders", None)  # no cascade: the sweep's to do
        assert (await revoke(api, admin, first["certificate_id"], reason="key_compromise"))["also_revoked"] == []
    await caught_up(api)
    scheduler = api.runtime.revocation_scheduler()
    with certificates_rebuilding(api):
        assert await scheduler.sweep_compromised({"acme"}) == ()
        assert scheduler.swept == {}  # nothing was looked at: each key is swept again
    assert await status_of(api, second["certificate_id"]) == ("issued", None)

    assert await scheduler.sweep_compromised({"acme"}) == (second["certificate_id"],)
    assert scheduler.swept.keys() == {("acme", classical), ("acme", ml_dsa)}
    assert await status_of(api, second["certificate_id"]) == ("revoked", "key_compromise")


async def test_a_retried_lift_answers_what_the_first_lift_did(pki_api):
    api = pki_api
    admin, _inter, _issued, _pair, classical, ml_dsa = await revoked_hybrid(api)
    tenant_admin = await api.token("tenant-admin", tenant_id="acme")
    headers = tenant_admin | {"Idempotency-Key": "lift-once"}
    url = f"/v1/tenants/acme/compromised-keys/{ml_dsa}/lift"
    first = await api.client.post(url, headers=headers, json={"reason": "the wrong certificate was named"})
    assert first.status_code == 200, first.text
    assert sorted(first.json()["public_keys_sha256"]) == sorted([classical, ml_dsa])
    head = await api.runtime.store.head_position()
    again = await api.client.post(url, headers=headers, json={"reason": "the wrong certificate was named"})
    assert again.status_code == 200, again.text
    assert again.json()["public_keys_sha256"] == first.json()["public_keys_sha256"]
    assert again.json()["result"]["replayed"] is True
    # nothing appended by the retry (an audit checkpoint or a scheduled CRL may land in between)
    assert await written_since(api, head) == set()
