"""Renewal policy and expiry arithmetic: when a certificate is due for renewal or for an expiry warning (pure)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Annotated

import msgspec

from domain import key_rules
from domain.certspec import SubjectKeyFacts
from domain.errors import DomainError
from domain.violations import Violation

DURATION_RE = re.compile(r"([1-9][0-9]{0,5})([dh])")
MAX_DURATION = timedelta(days=3650)


class RenewalPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a profile's certificates are renewed.

    The scheduler renews once ``renew_at_percent`` of the lifetime has passed (67: at two
    thirds), or ``renew_before_days`` before expiry when that is set (it wins, unless it is not
    shorter than the certificate's lifetime: see ``renew_at``). ``reuse_key``
    keeps the subject's key: a server-side key stays in the vault, a CSR's public key is
    certified again; without it a server-side key is rotated and a CSR certificate cannot be
    renewed automatically (its holder sends a new CSR).
    """

    auto: bool = True  # False: renewed only on request (POST /v1/certificates/{id}/renew)
    renew_at_percent: Annotated[int, msgspec.Meta(ge=1, le=99)] = 67
    renew_before_days: Annotated[int, msgspec.Meta(ge=1, le=825)] | None = None
    reuse_key: bool = False


DEFAULT_POLICY = RenewalPolicy()


def check_policy(policy: RenewalPolicy, max_validity_days: int, default_validity_days: int) -> list[Violation]:
    """A lead time must be shorter than the profile's default lifetime: one as long would have its certificates due
    the moment they are issued, and each renewal's successor too (``renew_at`` falls back to the share then)."""
    out = []
    if not 1 <= policy.renew_at_percent <= 99:
        out.append(Violation("renewal.renew_at_percent", "renewal_invalid", "renew_at_percent is 1-99"))
    if policy.renew_before_days is not None and not 1 <= policy.renew_before_days < max_validity_days:
        out.append(Violation("renewal.renew_before_days", "renewal_invalid",
                             f"renew_before_days is at least 1 and less than max_validity_days ({max_validity_days})"))
    elif policy.renew_before_days is not None and policy.renew_before_days >= default_validity_days:
        out.append(Violation("renewal.renew_before_days", "renewal_invalid",
                             f"renew_before_days must be less than default_validity_days ({default_validity_days}): "
                             f"with {policy.renew_before_days}, its certificates would be due for renewal as soon as "
                             "they are issued"))
    return out


def renew_at(policy: RenewalPolicy, not_before: datetime, not_after: datetime) -> datetime:
    """The moment a certificate valid from ``not_before`` to ``not_after`` is due for renewal.

    A lead time (``renew_before_days``) not shorter than the lifetime would make the certificate due from its first
    second, and its successor (no longer-lived: the same validity, capped by profile and tenant) too: a renewal
    on every scheduler pass. Such a certificate (a short ``validity_days``, a tenant's ``max_validity_days``
    below the lead time) renews at ``renew_at_percent`` of its lifetime instead, as cert-manager does with a
    ``renewBefore`` not shorter than the duration.
    """
    lifetime = not_after - not_before
    if policy.renew_before_days is not None and timedelta(days=policy.renew_before_days) < lifetime:
        return not_after - timedelta(days=policy.renew_before_days)
    return not_before + lifetime * policy.renew_at_percent / 100


def rotate_key(policy: RenewalPolicy, key_source: str, requested_reuse: bool | None) -> bool:
    """Whether the renewal gets a new key (True) or keeps the subject's (False); refuses what policy forbids."""
    reuse = policy.reuse_key if requested_reuse is None else requested_reuse
    if reuse and not policy.reuse_key:
        raise DomainError("key_reuse_not_allowed", "this certificate's profile does not allow renewing with the same "
                          "key", field="reuse_key")
    if not reuse and key_source == "csr":
        raise DomainError("new_csr_required", "the key of a certificate issued from a CSR is its holder's: a new key "
                          "needs a new CSR (issue a new certificate), or a profile that allows key reuse",
                          field="reuse_key")
    return not reuse


def check_reused_key(key: SubjectKeyFacts, key_source: str, available: frozenset[str]) -> list[Violation]:
    """The key rules issuance applies, applied to the key a same-key renewal would certify again.

    A key issued under an older, laxer policy (RSA exponent 3, a short modulus, a weak curve) is refused here as it
    would be in a new request, with the way out: a new key (the vault's keys rotate on ``reuse_key`` false), or, for
    a key its holder keeps, a new CSR.
    """
    remedy = ("renew with reuse_key false to get a new key" if key_source == "server" else
              "the holder's key is not in this service: send a new CSR with an acceptable key (POST /v1/certificates)")
    return [Violation("reuse_key", found.rule, f"the certificate's own key cannot be certified again: {found.message}; "
                      f"{remedy}")
            for found in key_rules.check_key(key.algorithm, key.key_bits, for_ca=False, available=available,
                                             rsa_exponent=key.rsa_exponent)]


def warning_due(not_after: datetime, now: datetime, thresholds: Iterable[int], warned_days: int | None) -> int | None:
    """The tightest threshold (days) crossed and not yet warned of; None if none, or once expired.

    Warning of a tight threshold covers the wider ones: a certificate first seen 5 days before
    expiry is warned once (7), not three times.
    """
    if now >= not_after:
        return None
    crossed = [days for days in thresholds if now >= not_after - timedelta(days=days)]
    if not crossed:
        return None
    tightest = min(crossed)
    return tightest if warned_days is None or tightest < warned_days else None


def parse_duration(text: str) -> timedelta:
    """``30d`` or ``12h`` (at most ten years); ValueError otherwise."""
    match = DURATION_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError("a duration is a whole number of days or hours, e.g. 30d or 12h")
    amount, unit = int(match.group(1)), match.group(2)
    duration = timedelta(days=amount) if unit == "d" else timedelta(hours=amount)
    if duration > MAX_DURATION:
        raise ValueError("a duration is at most 3650d")
    return duration
