"""The Certificate aggregate's renewal decisions: claiming a renewal (one claim at a time, a stale one taken over),
linking the successor or closing a failed claim, and warning of expiry. The events are domain/certificate.py's."""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from domain.certificate import (Certificate, CertificateRenewed, ExpiryWarned, RenewalFailed, RenewalStarted,
                                require_exists)
from domain.errors import DomainError
from domain.events import Payload
from domain.renewal import warning_due


class RenewalRefused(DomainError):
    status = 409


def decide_start_renewal(state: Certificate, certificate_id: str, claim: RenewalStarted) -> list[Payload]:
    """Claim the renewal: refused if revoked, renewed already, or another renewal holds the claim."""
    require_exists(state, certificate_id)
    if state.status == "revoked":
        raise RenewalRefused("certificate_revoked", f"certificate {certificate_id} is revoked", field="id")
    if state.renewed is not None:
        raise RenewalRefused("already_renewed", f"certificate {certificate_id} was renewed as "
                             f"{state.renewed.new_certificate_id}", field="id")
    if state.pending is not None:
        raise RenewalRefused("renewal_in_progress", f"certificate {certificate_id} is being renewed as "
                             f"{state.pending.new_certificate_id}", field="id")
    return [msgspec.structs.replace(claim, attempt=state.attempts + 1)]


def claim_stale(state: Certificate, now: datetime, timeout: timedelta) -> bool:
    """A claim nobody finished in ``timeout``: its holder died; another may complete it (same successor id)."""
    return state.pending is not None and now >= state.pending.started_at + timeout


def decide_renewed(state: Certificate, claim: RenewalStarted) -> list[Payload]:
    """Link the successor; nothing if this claim's renewal is already recorded (a retry, or a racing completer).

    Refused once the certificate is revoked: a revocation that reached this stream first wins, and the renewal
    then revokes the successor it issued (commands/renewal.py)."""
    if state.renewed is not None and state.renewed.new_certificate_id == claim.new_certificate_id:
        return []
    if state.status == "revoked":
        raise RenewalRefused("certificate_revoked", f"certificate {state.certificate_id} was revoked while it "
                             "was being renewed", field="id")
    if state.pending is None or state.pending.new_certificate_id != claim.new_certificate_id:
        raise RenewalRefused("renewal_claim_lost", f"the renewal of {state.certificate_id} as "
                             f"{claim.new_certificate_id} is no longer claimed", field="id")
    return [CertificateRenewed(certificate_id=state.certificate_id, new_certificate_id=claim.new_certificate_id,
                               rotated=claim.rotate_key, attempt=claim.attempt)]


def decide_renewal_failed(state: Certificate, failure: RenewalFailed, window: timedelta) -> list[Payload]:
    """Close a failed claim; a failure before any claim is recorded at most once per ``window``."""
    if state.renewed is not None:
        return []
    if failure.attempt:
        return [failure] if state.pending is not None and state.pending.attempt == failure.attempt else []
    if state.last_failure_at is not None and failure.failed_at < state.last_failure_at + window:
        return []
    return [failure]


def decide_expiry_warning(state: Certificate, now: datetime, thresholds: tuple[int, ...]) -> list[Payload]:
    """Warn of the tightest threshold crossed, once; never for a revoked, renewed or expired certificate."""
    if state.status != "issued" or state.issued is None or state.renewed is not None:
        return []
    days = warning_due(state.issued.facts.not_after, now, thresholds, state.warned_days)
    if days is None:
        return []
    return [ExpiryWarned(certificate_id=state.certificate_id, ca_id=state.issued.ca_id, threshold_days=days,
                         not_after=state.issued.facts.not_after)]
