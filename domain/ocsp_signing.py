"""Who signs a CA's OCSP answers: its delegated responders (renewed before they run out), and what a revoked CA's
answers say and are signed with.

A revoked CA certifies nothing more, an OCSP responder included, yet relying parties keep asking it about what it
signed: its OCSP answers come from the responder it was given just before the revocation, then from its own key
(``answering_signer``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from domain import ca
from domain.events import Payload
from domain.revocation import RENEW_FRACTION, OcspSignerIssued, Registry


def signer_due(signer: ca.CaCertificate | None, now: datetime) -> bool:
    """No signer yet, or less than a third of its validity remains."""
    if signer is None:
        return True
    facts = signer.facts
    return facts.not_after - now < (facts.not_after - facts.not_before) / RENEW_FRACTION


def answering_signer(state: Registry, issuer: ca.CaCertificate, now: datetime,
                     answer_validity: timedelta) -> ca.CaCertificate | None:
    """What signs OCSP answers about the certificates ``issuer``'s key signed when no new responder can be issued
    for it; None: nothing may (the answer is ``unauthorized``).

    A CA in service whose key cannot certify one (offline, or its certificate expired): its last responder, until
    that expires. A revoked CA certifies nothing more, yet everything below it must keep answering "revoked" (a
    client that soft-fails on an error would accept it): its last responder while it outlives an answer, then the
    CA's own key (RFC 6960 4.2.2.2: the CA that issued the certificate may sign), until the CA certificate expires.
    Even a compromised key signs nothing there that its thief could not sign already.
    """
    signer = state.signers.get(issuer.facts.fingerprint_sha256)
    if state.ca.status != "revoked":
        return signer if signer is not None and signer.facts.not_after > now else None
    if signer is not None and signer.facts.not_after >= now + answer_validity:
        return signer
    return issuer if issuer.key_ref is not None and issuer.facts.not_after > now else None


def decide_signer(state: Registry, issued: OcspSignerIssued, now: datetime) -> list[Payload]:
    """Keep a signer another instance issued meanwhile: one new signer per renewal, whoever wins the race."""
    if not signer_due(state.signers.get(issued.issuer_fingerprint), now):
        return []
    return [issued]


def ca_reason_for_subordinates(reason: str) -> str:
    """What OCSP says of certificates under a revoked CA: a compromised CA key compromises what it signed."""
    return "ca_compromise" if reason in ("key_compromise", "ca_compromise") else reason
