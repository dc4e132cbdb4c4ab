"""Revocation on the CA stream: RFC 5280 reasons, the authoritative revoked list, CRLs per key and OCSP signers.

A CA's stream is the single place its revocations are decided: ``ca.certificate_revoked``
lands there *before* anything else records the revocation, and ``ca.crl_published`` is
appended with the stream version the CRL was built from. Optimistic concurrency on that one
stream therefore guarantees the invariant every CRL and OCSP answer rests on: a
``ca.crl_published`` at version v lists every ``ca.certificate_revoked`` below v.

After a key rollover the previous key's certificates stay valid, and a relying party checks each
against a CRL its own issuer key signed (RFC 5280 6.3.3: the CRL's key must be the certificate's
issuer key). So every key that may still have valid certificates publishes a CRL, all of them
built from the same stream version and listing every revocation of the CA; their numbers come
from the CA's one sequence, so they increase for each key, and never repeat under the CA's name.

A CA whose key is offline (an imported root) cannot publish here: its CRL is signed in the
ceremony from what the stream records (``csm ca crl-request``, then ``csm ca root sign-crl``),
and installing it (``decide_install``) checks that it keeps the same invariant.

A revoked CA certifies nothing more, an OCSP responder included, yet relying parties keep asking
it about what it signed: its key keeps signing its CRLs (``can_publish``), and its OCSP answers
come from the responder it was given just before the revocation, then from its own key
(``answering_signer``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

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
# An offline key's CRL is signed in a ceremony: CA/Browser Forum BR 4.9.7 has a CA certificate's CRL reissued at
# least every 12 months, so a CRL signed offline may cover at most that long.
OFFLINE_CRL_MAX_DAYS = 365
CLOCK_SKEW = timedelta(minutes=5)  # how far ahead of this service's clock an offline CRL's thisUpdate may be
# RFC 5280 5.2.3: a CRL number is a non-negative INTEGER of at most 20 octets, so below 2**159 (the top bit of a
# 20-octet positive INTEGER is its sign); relying parties need not handle a longer one.
CRL_NUMBER_LIMIT = 1 << 159


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


class CrlOutdated(DomainError):
    """The CA stream moved on after a CRL was built from it: build it again from the new state."""

    status = 409

    def __init__(self, ca_id: str) -> None:
        super().__init__("crl_outdated", f"CA {ca_id} changed while its CRL was being built", field="ca_id")


class SignedCrl(msgspec.Struct, frozen=True, kw_only=True):
    """A CRL signed elsewhere (an offline key's ceremony), as read from its DER; its signature already checked."""

    crl_number: int
    this_update: datetime
    next_update: datetime | None
    reasons: dict[str, str]  # by serial_hex: each entry's reason, "unspecified" where it carries none
    signer_fingerprint: str  # the CA certificate whose public key verified the signature
    sha256: str  # of its DER: the artifact's name


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


def _certificates(state: ca.CertificateAuthority) -> list[ca.CaCertificate]:
    """Every certificate of the CA's keys, oldest first: previous ones, the current one, cross-certificates."""
    return [c for c in (*state.previous, state.current, *state.cross) if c is not None]


def _key_of(state: ca.CertificateAuthority, fingerprint: str) -> str:
    """The key (``public_key_sha256``) of the CA certificate ``fingerprint`` names (itself if none does)."""
    return next((c.facts.public_key_sha256 for c in _certificates(state) if c.facts.fingerprint_sha256 == fingerprint),
                fingerprint)


def key_id(certificate: ca.CaCertificate) -> str:
    """What relying parties call a CA key: its subject key identifier (hex), which certificates it signed and its
    CRLs carry as their authority key identifier."""
    return certificate.facts.subject_key_identifier


def first_key(state: ca.CertificateAuthority) -> str | None:
    """The CA's first key (``public_key_sha256``): the one the plain CRL distribution point was written for."""
    first = next(iter(_certificates(state)), None)
    return first.facts.public_key_sha256 if first is not None else None


def publishing_keys(state: Registry, now: datetime) -> list[ca.CaCertificate]:
    """The certificate to sign each key's CRL with, oldest key first; the current key's is last.

    A previous key publishes while it is held here and one of its CA certificates (its own, or a
    cross-certificate) is unexpired: until then certificates it signed may be valid, and a relying party
    checks them only against a CRL that key signed. A key whose certificates have all expired signs no
    more CRLs: nothing it signed can validate any more.
    """
    current = state.ca.current
    if current is None:
        return []
    expiry: dict[str, datetime] = {}
    for held in _certificates(state.ca):
        key = held.facts.public_key_sha256
        expiry[key] = max(expiry.get(key, held.facts.not_after), held.facts.not_after)
    signers: dict[str, ca.CaCertificate] = {}
    for held in state.ca.previous:  # the last certificate of a key is the one it signed under
        key = held.facts.public_key_sha256
        if key != current.facts.public_key_sha256 and held.key_ref is not None and expiry[key] > now:
            signers.pop(key, None)
            signers[key] = held
    return [*signers.values(), current]


def lapses_at(state: Registry, now: datetime) -> datetime | None:
    """The earliest nextUpdate of the last CRLs of the keys that publish: when a relying party first finds one of
    the CA's CRLs stale. None while no publishing key has a CRL (the first is published on demand)."""
    dates = [last.published.next_update for signer in publishing_keys(state, now)
             if (last := state.crls.get(signer.facts.public_key_sha256)) is not None]
    return min(dates, default=None)


def crl_of_key(state: Registry, key_identifier: str | None, now: datetime) -> KeyCrl | None:
    """The last CRL of the key ``key_identifier`` names (``key_id``, hex); None: the oldest key that still
    publishes, which the plain distribution point of the CA's earlier certificates means. None if it has none."""
    if key_identifier is None:
        signers = publishing_keys(state, now)
        return state.crls.get(signers[0].facts.public_key_sha256) if signers else None
    key = key_named(state.ca, key_identifier)
    return state.crls.get(key) if key is not None else None


def key_named(state: ca.CertificateAuthority, key_identifier: str) -> str | None:
    """The CA key (``public_key_sha256``) whose identifier (``key_id``, hex, any case) is ``key_identifier``."""
    wanted = key_identifier.lower()
    return next((c.facts.public_key_sha256 for c in _certificates(state) if key_id(c).lower() == wanted), None)


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


def can_publish(state: Registry) -> bool:
    """A CRL needs the CA's key here. A disabled CA still publishes (its certificates stay revocable), and so does a
    revoked one: it certifies nothing more, but relying parties that check only a leaf's own CRL keep needing a
    current one, listing revocations recorded after its own too (an expired CRL reads as no answer)."""
    return state.ca.status in ("active", "disabled", "revoked") and state.ca.signing_key_ref is not None


def key_offline(state: Registry) -> bool:
    """The CA is in service but its key is not held here (an imported root): its CRL comes from the ceremony."""
    return state.ca.status in ("active", "disabled") and state.ca.current is not None \
        and state.ca.signing_key_ref is None


def require_key_offline(state: Registry) -> None:
    """Refuse a ceremony's CRL (or a request for one) for a CA that signs its own CRLs here, or is not in service."""
    ca.require(state.ca, state.ca.ca_id)
    if can_publish(state):
        raise DomainError("ca_key_online", f"CA {state.ca.ca_id} signs its own CRLs here (GET /v1/cas/"
                          f"{state.ca.ca_id}/crl): a CRL from a ceremony is for a CA whose key is offline",
                          field="ca_id")
    if not key_offline(state):
        raise DomainError("ca_not_active", f"CA {state.ca.ca_id} is {state.ca.status}: it has no CRL to sign",
                          field="ca_id")


def stale(state: Registry, last: KeyCrl | None, now: datetime) -> bool:
    """Whether to publish before serving ``last``: there is none yet, or its key still publishes and it has lapsed
    or lacks a revocation. A key that no longer publishes keeps its last CRL: nothing it signed is valid."""
    if last is None:
        return True
    if not any(state.crls.get(signer.facts.public_key_sha256) is last for signer in publishing_keys(state, now)):
        return False
    return last.published.next_update <= now or max(state.recorded_at.values(), default=0) > last.version


def publication_due(state: Registry, now: datetime) -> bool:
    """A key that publishes has no CRL yet, a revocation its CRL lacks (its publication failed), or less than a
    third of its CRL's period left. Every key's CRL is published at once, so any one of them makes all due."""
    last_revocation = max(state.recorded_at.values(), default=0)
    for signer in publishing_keys(state, now):
        last = state.crls.get(signer.facts.public_key_sha256)
        if last is None or last_revocation > last.version:
            return True
        period = last.published.next_update - last.published.this_update
        if last.published.next_update - now < period / RENEW_FRACTION:
            return True
    return False


def covers(state: Registry, version: int, now: datetime) -> bool:
    """Whether every key that publishes has a CRL including every revocation recorded at or below ``version``."""
    signers = publishing_keys(state, now)
    return bool(signers) and all((last := state.crls.get(signer.facts.public_key_sha256)) is not None
                                 and last.version > version for signer in signers)


def crl_entries(state: Registry, this_update: datetime, period: timedelta) -> list[RevocationRecorded]:
    """The entries of the next CRL, in the order they were revoked.

    RFC 5280 3.3: an entry stays until one regularly scheduled CRL issued after the
    certificate expired has listed it; republishing within every period guarantees that.
    RFC 5280 sets no order on revokedCertificates (OpenSSL sorts them as it loads a CRL), and the stream's order
    is as deterministic as the serials': sorting by serial value cost 1.5 ms of every revocation at 2,000.
    """
    return listed(state.revoked.values(), this_update, period)


def listed(entries: Iterable[RevocationRecorded], this_update: datetime,
           period: timedelta) -> list[RevocationRecorded]:
    """The entries a CRL of ``period`` from ``this_update`` lists: those not expired a whole period before it."""
    return [entry for entry in entries if entry.not_after + period > this_update]


def crl_number_floor(now: datetime) -> int:
    """The least CRL number a CRL signed at ``now`` may carry: milliseconds since the Unix epoch (6 octets; RFC
    5280 5.2.3 allows 20). Why: a data directory restored from a backup has not seen the CRLs published after the
    backup, so a count from its last CRL would repeat numbers relying parties already hold; the clock has moved
    past them (unless a CA once published faster than a CRL a millisecond, which then only delays the floor)."""
    return int(now.timestamp() * 1000)


def check_crl_number(number: int, field: str) -> None:
    """Refuse a CRL number RFC 5280 5.2.3 does not allow (negative, or longer than 20 octets): the CA's numbers
    after it would follow it, and stay out of range."""
    if not 0 <= number < CRL_NUMBER_LIMIT:
        raise DomainError("crl_number_out_of_range", f"CRL number {number} is not a non-negative integer of at most "
                          "20 octets (RFC 5280 5.2.3): sign a CRL from a fresh crl-request", field=field)


def next_crl_number(state: Registry, now: datetime) -> int:
    """One sequence per CA, whichever key signs: above the CA's last CRL number and not below the clock's floor,
    so a key's CRL numbers increase (with gaps, as RFC 5280 5.2.3 allows), and no two CRLs under the CA's name
    ever carry the same number, even across a restore from backup."""
    return max((state.crl.crl_number if state.crl else 0) + 1, crl_number_floor(now))


def decide_publish(state: Registry, built_from: int, published: Sequence[CrlPublished]) -> list[Payload]:
    """The CRLs of one publication (one per key), built from stream version ``built_from``, numbered in turn."""
    if state.version != built_from:  # a revocation (or another publisher) came in between
        raise CrlOutdated(state.ca.ca_id)
    expected = next_crl_number(state, published[0].this_update) if published else 0
    for offset, crl in enumerate(published):
        if crl.crl_number != expected + offset:
            raise DomainError("crl_number_invalid", f"the next CRL number is {expected + offset}", field="crl_number")
    return list(published)


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


def decide_install(state: Registry, signed: SignedCrl, now: datetime) -> list[Payload]:
    """Record a CRL the CA's offline key signed in a ceremony, as if it had been published here.

    It must keep the invariant every published CRL keeps: list every revocation recorded on the stream it is
    appended to, and nothing the stream does not record (the audit trail is the one record of revocations), with
    each entry's reason as recorded. It carries a CRL number above every earlier one, is current, and covers no
    more than OFFLINE_CRL_MAX_DAYS. Installing the same CRL again adds nothing.
    """
    require_key_offline(state)
    current = state.ca.current
    assert current is not None  # require_key_offline
    last = state.crls.get(current.facts.public_key_sha256)
    if last is not None and last.published.sha256 == signed.sha256:
        return []
    if signed.signer_fingerprint != current.facts.fingerprint_sha256:
        raise DomainError("crl_signer_not_current", f"the CRL is not signed by CA {state.ca.ca_id}'s current key",
                          field="crl_pem")

    def refuse(rule: str, message: str) -> DomainError:
        return DomainError(rule, message, field="crl_pem")

    check_crl_number(signed.crl_number, "crl_pem")
    if state.crl is not None and signed.crl_number <= state.crl.crl_number:
        raise refuse("crl_number_not_increasing", f"CRL number {signed.crl_number} is not above the last CRL's "
                     f"({state.crl.crl_number}): sign a new CRL from a fresh crl-request")
    if signed.next_update is None:
        raise refuse("crl_next_update_missing", "the CRL has no nextUpdate (RFC 5280 5.1.2.5 requires one)")
    if signed.this_update > now + CLOCK_SKEW:
        raise refuse("crl_not_yet_valid", f"the CRL's thisUpdate {signed.this_update.isoformat()} is in the future: "
                     "check the ceremony machine's clock")
    if signed.next_update <= now:
        raise refuse("crl_lapsed", f"the CRL's nextUpdate {signed.next_update.isoformat()} has passed")
    period = signed.next_update - signed.this_update
    if period > timedelta(days=OFFLINE_CRL_MAX_DAYS):
        raise refuse("crl_period_too_long", f"the CRL covers {period.days} days; at most {OFFLINE_CRL_MAX_DAYS}")
    required = [entry.serial_hex for entry in listed(state.revoked.values(), signed.this_update, period)]
    if missing := [serial for serial in required if serial not in signed.reasons]:
        raise refuse("crl_incomplete", f"the CRL lacks {len(missing)} revocation(s) recorded here ({_some(missing)}): "
                     "sign a CRL from a fresh crl-request")
    if unrecorded := [serial for serial in signed.reasons if serial not in state.revoked]:
        raise refuse("crl_lists_unrecorded", f"the CRL lists {len(unrecorded)} serial(s) this CA's audit trail does "
                     f"not record as revoked ({_some(unrecorded)}): revoke them here first")
    if differing := [serial for serial, reason in signed.reasons.items() if state.revoked[serial].reason != reason]:
        raise refuse("crl_reason_mismatch", f"the CRL gives {len(differing)} revocation(s) another reason than the "
                     f"one recorded ({_some(differing)})")
    return [CrlPublished(crl_number=signed.crl_number, this_update=signed.this_update, next_update=signed.next_update,
                         revoked_count=len(signed.reasons), sha256=signed.sha256,
                         signer_fingerprint=signed.signer_fingerprint)]


def _some(serials: Sequence[str], shown: int = 5) -> str:
    return ", ".join(serials[:shown]) + (f" and {len(serials) - shown} more" if len(serials) > shown else "")
