"""Revocation on the CA stream: RFC 5280 reasons, the revocation events, and the authoritative revoked list.

A CA's stream is the single place its revocations are decided: ``ca.certificate_revoked``
lands there *before* anything else records the revocation, and ``ca.crl_published`` is
appended with the stream version the CRL was built from. Optimistic concurrency on that one
stream therefore guarantees the invariant every CRL and OCSP answer rests on: a
``ca.crl_published`` at version v lists every ``ca.certificate_revoked`` below v.

``fold`` reads a CA stream into a ``Registry`` (the CA, its revoked serials, each key's last CRL, its OCSP
signers); publishing CRLs from it is domain/crl_publication.py, signing OCSP answers domain/ocsp_signing.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from domain import ca
from domain.errors import AlreadyExists, DomainError
from domain.events import Payload, event, resumable

# RFC 5280 5.3.1 CRLReason codes, by the snake-case names the API uses. certificateHold (6) is
# refused on purpose: a hold is undone with removeFromCRL (8), and revocation here is final.
REASONS: dict[str, int] = {
    "unspecified": 0, "key_compromise": 1, "ca_compromise": 2, "affiliation_changed": 3, "superseded": 4,
    "cessation_of_operation": 5, "privilege_withdrawn": 9, "aa_compromise": 10,
}
REFUSED_REASONS = ("certificate_hold", "remove_from_crl")
# An OCSP signer is renewed when less than this share of its validity remains (and so is a CRL).
RENEW_FRACTION = 3


@event("ca.certificate_revoked")
class RevocationRecorded(Payload, frozen=True, kw_only=True):
    """A certificate this CA signed is revoked: a leaf (``certificate_id``) or a sub-CA's (``subject_ca_id``)."""

    serial_hex: str  # lower case, no leading zeros (CertificateFacts.serial_hex)
    certificate_id: str | None
    subject_ca_id: str | None
    reason: str
    revoked_at: datetime
    invalidity_date: datetime | None
    not_after: datetime  # the revoked certificate's expiry: its CRL entry may go one CRL period later


@event("ca.crl_published")
class CrlPublished(Payload, frozen=True, kw_only=True):
    """CRL ``crl_number`` was signed; its DER is the artifact named by ``sha256``."""

    crl_number: int
    this_update: datetime
    next_update: datetime
    revoked_count: int
    sha256: str
    signer_fingerprint: str  # the CA certificate whose key signed it


@event("ca.ocsp_signer_issued")
class OcspSignerIssued(Payload, frozen=True, kw_only=True):
    """A delegated OCSP responder certificate for the CA key that certificate ``issuer_fingerprint`` holds."""

    issuer_fingerprint: str
    certificate: ca.CaCertificate


class AlreadyRevoked(AlreadyExists):
    def __init__(self, what: str) -> None:
        super().__init__("already_revoked", f"{what} is already revoked", field="id")


class KeyCrl(msgspec.Struct, frozen=True, kw_only=True):
    """The last CRL one CA key signed, and the stream version of its ``ca.crl_published``."""

    published: CrlPublished
    version: int


class Registry(msgspec.Struct, frozen=True, kw_only=True):
    """A CA stream folded for revocation: the CA, its revoked serials, its CRLs and its OCSP signers."""

    ca: ca.CertificateAuthority = ca.CertificateAuthority()
    revoked: dict[str, RevocationRecorded] = {}  # by serial_hex; read-only once folded
    recorded_at: dict[str, int] = {}  # serial_hex -> the stream version of its ``ca.certificate_revoked``
    crl: CrlPublished | None = None  # the last CRL published, by whichever key: it holds the last CRL number
    crl_version: int = 0  # the stream version of the last ``ca.crl_published``
    crls: dict[str, KeyCrl] = {}  # by the signing key (``public_key_sha256``): each key's last CRL; read-only
    signers: dict[str, ca.CaCertificate] = {}  # by issuer fingerprint: the newest signer for that key
    ca_revoked: ca.CaRevoked | None = None  # this CA's own revocation

    @property
    def version(self) -> int:
        return self.ca.version

    @property
    def revocations_mark(self) -> tuple[int, bool]:
        """Moves with every revocation recorded here (a certificate's, or the CA's own), and with nothing else:
        the stream version of the last certificate revocation, and whether the CA is revoked."""
        return max(self.recorded_at.values(), default=0), self.ca_revoked is not None


@resumable
def fold(payloads: Iterable[Payload], start: Registry | None = None) -> Registry:
    """One pass with local dicts: a CA with many revocations folds in linear time. Resumed from ``start``, the
    dicts are copies of its own (a folded Registry is read-only), made only if the new events add to them."""
    start = Registry() if start is None else start
    state, crl, crl_version, ca_revoked = start.ca, start.crl, start.crl_version, start.ca_revoked
    revoked, recorded_at, signers, crls = start.revoked, start.recorded_at, start.signers, start.crls
    copied = crls_copied = False  # a CRL alone copies only ``crls``: the revoked list may be long
    for payload in payloads:
        state = ca.evolve(state, payload)
        if not copied and isinstance(payload, (RevocationRecorded, OcspSignerIssued)):
            revoked, recorded_at, signers, copied = dict(revoked), dict(recorded_at), dict(signers), True
        match payload:
            case RevocationRecorded():
                revoked[payload.serial_hex] = payload
                recorded_at[payload.serial_hex] = state.version
            case ca.CaRevoked():
                ca_revoked = payload
            case CrlPublished():
                crl, crl_version = payload, state.version
                if not crls_copied:
                    crls, crls_copied = dict(crls), True
                crls[_key_of(state, payload.signer_fingerprint)] = KeyCrl(published=payload, version=state.version)
            case OcspSignerIssued():
                signers[payload.issuer_fingerprint] = payload.certificate
    return Registry(ca=state, revoked=revoked, recorded_at=recorded_at, crl=crl, crl_version=crl_version,
                    signers=signers, ca_revoked=ca_revoked, crls=crls)


def key_certificates(state: ca.CertificateAuthority) -> list[ca.CaCertificate]:
    """Every certificate of the CA's keys, oldest first: previous ones, the current one, cross-certificates."""
    return [c for c in (*state.previous, state.current, *state.cross) if c is not None]


def _key_of(state: ca.CertificateAuthority, fingerprint: str) -> str:
    """The key (``public_key_sha256``) of the CA certificate ``fingerprint`` names (itself if none does)."""
    return next((c.facts.public_key_sha256 for c in key_certificates(state)
                 if c.facts.fingerprint_sha256 == fingerprint), fingerprint)


def key_id(certificate: ca.CaCertificate) -> str:
    """What relying parties call a CA key: its subject key identifier (hex), which certificates it signed and its
    CRLs carry as their authority key identifier."""
    return certificate.facts.subject_key_identifier


def first_key(state: ca.CertificateAuthority) -> str | None:
    """The CA's first key (``public_key_sha256``): the one the plain CRL distribution point was written for."""
    first = next(iter(key_certificates(state)), None)
    return first.facts.public_key_sha256 if first is not None else None


def key_named(state: ca.CertificateAuthority, key_identifier: str) -> str | None:
    """The CA key (``public_key_sha256``) whose identifier (``key_id``, hex, any case) is ``key_identifier``."""
    wanted = key_identifier.lower()
    return next((c.facts.public_key_sha256 for c in key_certificates(state) if key_id(c).lower() == wanted), None)


def check_reason(reason: str) -> str:
    if reason in REFUSED_REASONS:
        raise DomainError("reason_not_supported", f"{reason} is not offered: revocation here is final, and a hold "
                          "would need un-revoking", field="reason")
    if reason not in REASONS:
        raise DomainError("invalid_reason", f"reason must be one of {', '.join(REASONS)}", field="reason")
    return reason


def check_invalidity_date(invalidity_date: datetime | None, *, now: datetime, not_before: datetime) -> None:
    """RFC 5280 5.3.2: when the key was (suspected) compromised: known now, and not before the certificate."""
    if invalidity_date is None:
        return
    if invalidity_date.tzinfo is None:
        raise DomainError("invalid_invalidity_date", "invalidity_date needs a time zone (RFC 3339)",
                          field="invalidity_date")
    if invalidity_date > now:
        raise DomainError("invalidity_date_in_future", "invalidity_date cannot be in the future",
                          field="invalidity_date")
    if invalidity_date < not_before:
        raise DomainError("invalidity_date_before_validity", "invalidity_date is before the certificate's "
                          "notBefore", field="invalidity_date")


def carried_revocation(reason: str, invalidity_date: datetime | None, *, same_key: bool,
                       not_before: datetime) -> tuple[str, datetime | None]:
    """The reason and invalidity date a revocation carries to another certificate of the same subject or key: the
    successor of a renewal that lost the race to it (commands/revoke.py), or, for a key_compromise, every other
    certificate of the compromised key.

    The same key certified again carries the reason, and the invalidity date no earlier than that certificate's
    notBefore (RFC 5280 5.3.2): a compromised key is as compromised there, from its first second. A new key keeps
    the reason where it is about the subject or its CA (affiliation changed, cessation of operation, privilege
    withdrawn, superseded, ...), which the successor names again. key_compromise says nothing of the new key:
    that successor is revoked ``unspecified``, as RFC 5280 has no reason for "issued by a renewal that lost the
    race", and ``superseded`` would tell relying parties that a replacement exists.
    """
    if same_key:
        return reason, None if invalidity_date is None else max(invalidity_date, not_before)
    return ("unspecified" if reason == "key_compromise" else reason), None


def decide_record(state: Registry, issuer_id: str, entries: Iterable[RevocationRecorded]) -> list[Payload]:
    """Add the entries this CA does not list yet (a retried revocation adds nothing)."""
    ca.require(state.ca, issuer_id)
    return [entry for entry in entries if entry.serial_hex not in state.revoked]
