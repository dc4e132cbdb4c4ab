"""A root's compromise rollover, decided on its stream folded for revocation: the rollover, the revocation of its
link certificates, and which CA certificates a rollover left signed only under withdrawn keys.

Every link certificate (RFC 4210 4.4) the root signed until then joins two of its keys: NewWithOld lets a relying
party that trusts only an earlier root certificate accept chains to the next key, up to the stolen one, so such a
party would accept the thief's chains through it. Withdrawing a link from exports (projections/cas.py) does not
reach a chain the thief assembles himself; revoking it does: the earlier key, which was not stolen, lists it on its
CRL and its OCSP answers say ``revoked``. Each link is revoked ``key_compromise`` in the same append as the rollover,
so no crash leaves the root rolled over with a link still good.
"""

from __future__ import annotations

from datetime import datetime

from domain import ca
from domain.events import Payload
from domain.revocation import Registry, RevocationRecorded


def link_revocations(state: Registry, *, now: datetime,
                     invalidity_date: datetime | None) -> list[RevocationRecorded]:
    """``key_compromise`` entries for the root's link certificates that are neither revoked nor expired; each
    invalidity date no earlier than its link's notBefore (RFC 5280 5.3.2)."""
    return [RevocationRecorded(serial_hex=link.facts.serial_hex, certificate_id=None, subject_ca_id=state.ca.ca_id,
                               reason="key_compromise", revoked_at=now,
                               invalidity_date=None if invalidity_date is None
                               else max(invalidity_date, link.facts.not_before),
                               not_after=link.facts.not_after)
            for link in state.ca.links
            if link.facts.serial_hex not in state.revoked and link.facts.not_after > now]


def decide_rollover(state: Registry, ca_id: str, rolled: ca.CaKeyRolledOver, *, now: datetime,
                    invalidity_date: datetime | None) -> list[Payload]:
    """A rollover (``ca.decide_rollover``); a compromise rollover revokes the root's links first, in one append."""
    rollover = ca.decide_rollover(state.ca, ca_id, rolled)
    if not rolled.compromised:
        return rollover
    return [*link_revocations(state, now=now, invalidity_date=invalidity_date), *rollover]


def signer_of(issuer: ca.CertificateAuthority, certificate: ca.CaCertificate) -> list[ca.CaCertificate]:
    """The certificates of ``issuer``'s key that signed ``certificate`` (by key identifier), not withdrawn."""
    aki = certificate.facts.authority_key_identifier
    return [held for held in issuer.held if held.facts.subject_key_identifier == aki
            and held.facts.fingerprint_sha256 not in issuer.withdrawn]
