"""A root's compromise rollover, decided on its stream folded for revocation: the rollover, the revocation of its
link certificates, and which CA certificates a rollover left signed only under withdrawn keys.

Every link certificate (RFC 4210 4.4) the root signed until then joins two of its keys: NewWithOld lets a relying
party that trusts only an earlier root certificate accept chains to the next key, up to the stolen one, so such a
party would accept the thief's chains through it. Withdrawing a link from exports (projections/cas.py) does not
reach a chain the thief assembles himself; revoking it does: the earlier key, which was not stolen, lists it on its
CRL and its OCSP answers say ``revoked``. Each link is revoked ``key_compromise`` in the same append as the rollover,
so no crash leaves the root rolled over with a link still good.

A stolen CA key's certificates that CAs here issued (another CA's cross-certificate of it, a root's link certifying
it) are found on the CA's own stream and revoked ``key_compromise`` on each issuer's (``certificates_of_keys``,
``key_compromise_entries``; commands/compromise_cascade.py), after a report of the key or before a compromise
rollover's append.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime

from domain import ca
from domain.events import Payload
from domain.revocation import Registry, RevocationRecorded


def key_compromise_entries(subject_ca_id: str, certificates: Iterable[ca.CaCertificate], revoked: Mapping[str, object],
                           *, now: datetime, invalidity_date: datetime | None) -> list[RevocationRecorded]:
    """``key_compromise`` entries for those of ``certificates`` (certifying CA ``subject_ca_id``'s keys, all signed by
    one issuer, whose revoked serials are ``revoked``) that are neither revoked nor expired; each invalidity date no
    earlier than its certificate's notBefore (RFC 5280 5.3.2)."""
    return [RevocationRecorded(serial_hex=held.facts.serial_hex, certificate_id=None, subject_ca_id=subject_ca_id,
                               reason="key_compromise", revoked_at=now,
                               invalidity_date=None if invalidity_date is None
                               else max(invalidity_date, held.facts.not_before),
                               not_after=held.facts.not_after)
            for held in certificates
            if held.facts.serial_hex not in revoked and held.facts.not_after > now]


def link_revocations(state: Registry, *, now: datetime,
                     invalidity_date: datetime | None) -> list[RevocationRecorded]:
    """``key_compromise`` entries for the root's link certificates that are neither revoked nor expired."""
    return key_compromise_entries(state.ca.ca_id, state.ca.links, state.revoked, now=now,
                                  invalidity_date=invalidity_date)


def certificates_of_keys(state: ca.CertificateAuthority, keys: Collection[str],
                         alternative: Callable[[ca.CaCertificate], str | None]) -> dict[str, list[ca.CaCertificate]]:
    """The certificates on the CA's stream whose subject key (or a hybrid's ML-DSA half, ``alternative``) is one of
    ``keys`` and that a CA here signed, by that issuer: its own certificates (an intermediate's, from its parent),
    the cross-certificates other CAs issued for its keys, and a root's link certificates (issued by itself). A CA's
    keys are certified nowhere else here: a cross-certificate is recorded on its subject's stream."""
    by_issuer: dict[str, list[ca.CaCertificate]] = {}
    for held in (*state.held, *state.links):
        if held.issuer_ca_id is not None and (held.facts.public_key_sha256 in keys or alternative(held) in keys):
            by_issuer.setdefault(held.issuer_ca_id, []).append(held)
    return by_issuer


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
