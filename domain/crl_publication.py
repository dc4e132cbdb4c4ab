"""Publishing a CA's CRLs: which keys publish, when a CRL is due or stale, its entries and number, and installing
the CRL an offline key signed in a ceremony.

After a key rollover the previous key's certificates stay valid, and a relying party checks each
against a CRL its own issuer key signed (RFC 5280 6.3.3: the CRL's key must be the certificate's
issuer key). So every key that may still have valid certificates publishes a CRL, all of them
built from the same stream version and listing every revocation of the CA; their numbers come
from the CA's one sequence, so they increase for each key, and never repeat under the CA's name.

A CA whose key is offline (an imported root) cannot publish here: its CRL is signed in the
ceremony from what the stream records (``csm ca crl-request``, then ``csm ca root sign-crl``),
and installing it (``decide_install``) checks that it keeps the same invariant (domain/revocation.py).

A revoked CA certifies nothing more, yet relying parties keep asking it about what it signed: its key keeps
signing its CRLs (``can_publish``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import msgspec

from domain import ca
from domain.errors import DomainError
from domain.events import Payload
from domain.revocation import (RENEW_FRACTION, CrlPublished, KeyCrl, Registry, RevocationRecorded, key_certificates,
                               key_named)

# An offline key's CRL is signed in a ceremony: CA/Browser Forum BR 4.9.7 has a CA certificate's CRL reissued at
# least every 12 months, so a CRL signed offline may cover at most that long.
OFFLINE_CRL_MAX_DAYS = 365
CLOCK_SKEW = timedelta(minutes=5)  # how far ahead of this service's clock an offline CRL's thisUpdate may be
# RFC 5280 5.2.3: a CRL number is a non-negative INTEGER of at most 20 octets, so below 2**159 (the top bit of a
# 20-octet positive INTEGER is its sign); relying parties need not handle a longer one.
CRL_NUMBER_LIMIT = 1 << 159


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
    for held in key_certificates(state.ca):
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
