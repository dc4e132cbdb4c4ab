"""The spec builders: the complete content of a leaf or CA certificate (validity window, key usages, URLs,
signature hash) before policy checks it, the validity a request naming none gets, and random serial numbers."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from domain.algorithms import SIGNATURE_HASH
from domain.certspec import CertificateSpec, DistinguishedName, NameConstraints, SubjectAltNames
from domain.key_rules import key_usages_for
from domain.violations import PolicyViolation, Violation

if TYPE_CHECKING:  # annotations only: importing the builders does not load the profiles (and their events)
    from domain.profile import Profile

# Issued certificates start 5 minutes before ``now`` so relying parties whose clocks run a
# little behind accept them at once.
CLOCK_SKEW = timedelta(minutes=5)
MAX_SERIAL = 2**159  # RFC 5280 4.1.2.2: at most 20 octets, positive
MAX_SPEC_DAYS = 36600  # beyond any rule; guards datetime arithmetic against absurd input
CA_KEY_USAGE = frozenset({"key_cert_sign", "crl_sign", "digital_signature"})


def serial_from_random(random20: bytes) -> int:
    """A serial from 20 CSPRNG bytes: the top bit cleared, so positive and below 2**159; ValueError if zero."""
    if len(random20) != 20:
        raise ValueError("a serial is drawn from exactly 20 random bytes")
    serial = int.from_bytes(random20, "big") & (MAX_SERIAL - 1)
    if serial == 0:
        raise ValueError("the random draw gave serial 0: draw again")
    return serial


def _window(now: datetime, days: int) -> tuple[datetime, datetime]:
    if not -MAX_SPEC_DAYS <= days <= MAX_SPEC_DAYS:
        rule = "validity_too_long" if days > 0 else "validity_invalid"
        raise PolicyViolation([Violation("validity_days", rule, f"{days} days is not a usable validity")])
    not_before = now - CLOCK_SKEW
    return not_before, not_before + timedelta(days=days)


def default_validity_days(default: int, *, now: datetime, issuer_not_after: datetime | None = None,
                          limit: int | None = None) -> int:
    """The validity a request that names none gets: ``default`` (the profile's, or a CA kind's), shortened to a
    tenant's maximum (``limit``) and to what the issuer has left, so that a default is never itself refused. Given
    explicitly, a validity is checked as it is and refused when too long (the caller asked for it)."""
    days = default if limit is None else min(default, limit)
    if issuer_not_after is not None:  # whole days from the certificate's start (now - CLOCK_SKEW) to the issuer's end
        days = min(days, (issuer_not_after - (now - CLOCK_SKEW)) // timedelta(days=1))
    return max(days, 1)  # an issuer ending within a day: refused by the issuer rule, with its dates


def leaf_spec(profile: Profile, *, subject: DistinguishedName, sans: SubjectAltNames, validity_days: int | None,
              subject_algorithm: str, issuer_algorithm: str, serial: int, now: datetime,
              crl_urls: tuple[str, ...], ocsp_urls: tuple[str, ...],
              ca_issuer_urls: tuple[str, ...]) -> CertificateSpec:
    """A leaf certificate's content; ``validity_days`` None takes the profile's default (0 is kept, and refused)."""
    not_before, not_after = _window(now, profile.default_validity_days if validity_days is None else validity_days)
    return CertificateSpec(subject=subject, serial=serial, not_before=not_before, not_after=not_after, sans=sans,
                           key_usage=key_usages_for(subject_algorithm, profile.key_usage),
                           extended_key_usage=profile.extended_key_usage, crl_urls=crl_urls, ocsp_urls=ocsp_urls,
                           ca_issuer_urls=ca_issuer_urls, ocsp_no_check=profile.ocsp_no_check,
                           signature_hash=SIGNATURE_HASH.get(issuer_algorithm))


def ca_spec(*, subject: DistinguishedName, validity_days: int, path_length: int | None,
            name_constraints: NameConstraints, issuer_algorithm: str, serial: int, now: datetime,
            crl_urls: tuple[str, ...] = (), ocsp_urls: tuple[str, ...] = (),
            ca_issuer_urls: tuple[str, ...] = ()) -> CertificateSpec:
    """A CA certificate's content; for a root, ``issuer_algorithm`` is its own and the URLs are empty."""
    not_before, not_after = _window(now, validity_days)
    return CertificateSpec(subject=subject, serial=serial, not_before=not_before, not_after=not_after, is_ca=True,
                           path_length=path_length, key_usage=CA_KEY_USAGE, name_constraints=name_constraints,
                           crl_urls=crl_urls, ocsp_urls=ocsp_urls, ca_issuer_urls=ca_issuer_urls,
                           signature_hash=SIGNATURE_HASH.get(issuer_algorithm))
