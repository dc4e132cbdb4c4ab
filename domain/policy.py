"""The policy engine: ``check_certificate`` and ``check_ca`` list every rule a certificate breaks, the issuer's
(its status, path length, validity and name constraints) and the validity, serial and usage rules here; the key,
subject and tenant rules they apply are in key_rules, subject_rules and tenant_policy, the spec builders in
spec_builders."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import msgspec

from domain import names
from domain.certspec import EXTENDED_KEY_USAGES, KEY_USAGES, CertificateSpec, NameConstraints
from domain.key_rules import check_algorithm_allowed, check_key, check_signature_hashes, key_usages_for
from domain.spec_builders import MAX_SERIAL
from domain.subject_rules import check_sans, check_subject, dns_identities, valid_sans
from domain.tenant_policy import TenantPolicy, tenant_name_violations
from domain.violations import Violation

if TYPE_CHECKING:  # annotations only: importing the engine does not load the profiles (and their events)
    from domain.profile import Profile

MAX_BACKDATE = timedelta(hours=1)  # a request may back-date by at most an hour (more would misstate issuance)
MAX_ROOT_DAYS, MAX_INTERMEDIATE_DAYS = 7305, 3653  # 20 and 10 years, leap days included


class IssuerFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What policy needs to know about the CA that will sign: its key, life, and constraints."""

    ca_id: str
    algorithm: str
    not_before: datetime
    not_after: datetime
    path_length: int | None  # the issuer certificate's pathLenConstraint; None = unlimited
    name_constraints: NameConstraints
    status: str  # active | disabled


def _aware(spec: CertificateSpec) -> bool:
    return spec.not_before.tzinfo is not None and spec.not_after.tzinfo is not None


def _check_validity(spec: CertificateSpec, now: datetime,
                    limits: Iterable[tuple[int | None, str]]) -> list[Violation]:
    """``now`` must be timezone-aware. Over-long validity is refused, never shortened."""
    if not _aware(spec):
        return [Violation("validity_days", "validity_invalid", "not_before and not_after must be timezone-aware")]
    if spec.not_after <= spec.not_before:
        return [Violation("validity_days", "validity_invalid", "the certificate must end after it starts")]
    out = []
    if spec.not_before < now - MAX_BACKDATE:
        out.append(Violation("validity_days", "validity_invalid", "not_before may be at most one hour in the past"))
    length = spec.not_after - spec.not_before
    days = length.days + bool(length % timedelta(days=1))
    for max_days, source in limits:
        if max_days is not None and length > timedelta(days=max_days):
            out.append(Violation("validity_days", "validity_too_long",
                                 f"{days} days is longer than the {max_days} days {source} allows"))
    return out


def _check_issuer(spec: CertificateSpec, issuer: IssuerFacts | None) -> list[Violation]:
    if issuer is None:
        return []
    out = []
    if issuer.status != "active":
        out.append(Violation("issuer_id", "issuer_disabled", f"CA {issuer.ca_id} is {issuer.status} and cannot sign"))
    if spec.is_ca and issuer.path_length == 0:
        out.append(Violation("path_length", "issuer_path_length",
                             f"CA {issuer.ca_id} has path length 0: it may not sign CA certificates"))
    elif spec.is_ca and issuer.path_length is not None and not (
            spec.path_length is not None and spec.path_length < issuer.path_length):
        out.append(Violation("path_length", "issuer_path_length",
                             f"a CA under {issuer.ca_id} needs a path length below {issuer.path_length}"))
    if _aware(spec) and (spec.not_after > issuer.not_after or spec.not_before < issuer.not_before):
        out.append(Violation("validity_days", "validity_beyond_issuer",
                             f"the certificate must lie within CA {issuer.ca_id}'s validity, "
                             f"{issuer.not_before.isoformat()} to {issuer.not_after.isoformat()}"))
    return out


def _check_tenant_names(spec: CertificateSpec, policy: TenantPolicy) -> list[Violation]:
    return tenant_name_violations(spec.sans, spec.subject.common_name, policy)


def _check_name_constraints(spec: CertificateSpec, issuer: IssuerFacts | None) -> list[Violation]:
    """RFC 5280 4.2.1.10, per name type: inside some permitted subtree (if any), in no excluded one."""
    if issuer is None or issuer.name_constraints.is_empty():
        return []
    nc, out = issuer.name_constraints, []
    for field, name in dns_identities(spec.sans, spec.subject.common_name):
        if nc.permitted_dns and not any(names.dns_within(name, tree) for tree in nc.permitted_dns):
            out.append(Violation(field, "name_constraint_violation",
                                 f"{name!r} is outside CA {issuer.ca_id}'s permitted DNS subtrees"))
        elif any(names.dns_touches(name, tree) for tree in nc.excluded_dns):
            out.append(Violation(field, "name_constraint_violation",
                                 f"{name!r} falls in a DNS subtree CA {issuer.ca_id} excludes"))
    for field, ip in valid_sans(spec.sans, "ip"):
        if nc.permitted_ip and not names.ip_in_networks(ip, nc.permitted_ip):
            out.append(Violation(field, "name_constraint_violation",
                                 f"{ip} is outside CA {issuer.ca_id}'s permitted networks"))
        elif names.ip_in_networks(ip, nc.excluded_ip):
            out.append(Violation(field, "name_constraint_violation",
                                 f"{ip} is in a network CA {issuer.ca_id} excludes"))
    return out


def _check_serial(serial: int) -> list[Violation]:
    if 0 < serial < MAX_SERIAL:
        return []
    return [Violation("serial", "serial_invalid", "a serial number is a positive integer below 2**159")]


def _check_usages(spec: CertificateSpec, subject_algorithm: str) -> list[Violation]:
    def bad(field: str, rule: str, message: str) -> None:
        out.append(Violation(field, rule, message))

    out: list[Violation] = []
    if spec.key_usage - KEY_USAGES:
        bad("key_usage", "key_usage_invalid", f"unknown key usages: {', '.join(sorted(spec.key_usage - KEY_USAGES))}")
    if spec.is_ca and "key_cert_sign" not in spec.key_usage:
        bad("key_usage", "key_usage_invalid", "a CA certificate needs key_cert_sign")
    if not spec.is_ca and spec.key_usage & {"key_cert_sign", "crl_sign"}:
        bad("key_usage", "key_usage_invalid", "only CA certificates may have key_cert_sign or crl_sign")
    unusable = (spec.key_usage & KEY_USAGES) - key_usages_for(subject_algorithm, spec.key_usage)
    if unusable:
        bad("key_usage", "key_usage_invalid", f"a {subject_algorithm} key cannot do {', '.join(sorted(unusable))}")
    if [e for e in spec.extended_key_usage if e not in EXTENDED_KEY_USAGES]:
        bad("extended_key_usage", "key_usage_invalid", "unknown extended key usage")
    if spec.path_length is not None and (not spec.is_ca or spec.path_length < 0):
        bad("path_length", "path_length_invalid", "only a CA has a path length, and it is 0 or more")
    if not spec.is_ca and not spec.name_constraints.is_empty():
        bad("name_constraints", "name_constraints_invalid", "only a CA certificate carries name constraints")
    return out


def _check_ca_constraints(spec: CertificateSpec, issuer: IssuerFacts | None) -> list[Violation]:
    if not spec.is_ca:
        return []
    out = [Violation("name_constraints", "name_constraints_invalid", m)
           for m in names.constraint_problems(spec.name_constraints)]
    if issuer is not None:
        out += [Violation("name_constraints", "ca_name_constraints_widen", f"{m} (CA {issuer.ca_id})")
                for m in names.widenings(issuer.name_constraints, spec.name_constraints)]
    return out


def check_certificate(spec: CertificateSpec, *, profile: Profile, tenant_policy: TenantPolicy,
                      issuer: IssuerFacts | None, subject_algorithm: str, key_bits: int | None,
                      csr_signature_hash: str | None, available: frozenset[str], now: datetime,
                      rsa_exponent: int | None = None, key_field: str = "algorithm") -> list[Violation]:
    """Every rule a certificate built from ``profile`` breaks; ``issuer`` None means self-signed.

    ``key_field`` names where the subject key came from: "algorithm" (made here), or "csr".
    """
    signer = issuer.algorithm if issuer else subject_algorithm
    limits = [(profile.max_validity_days, f"profile {profile.name}"),
              (tenant_policy.max_validity_days, "tenant policy")]
    return [
        *check_subject(spec.subject, require_common_name=profile.require_common_name),
        *check_sans(spec.sans, profile),
        *_check_tenant_names(spec, tenant_policy),
        *_check_name_constraints(spec, issuer),
        *_check_validity(spec, now, limits),
        *_check_issuer(spec, issuer),
        *check_key(subject_algorithm, key_bits, for_ca=spec.is_ca, available=available, field=key_field,
                   rsa_exponent=rsa_exponent),
        *check_algorithm_allowed(subject_algorithm, profile.allowed_algorithms, f"profile {profile.name}"),
        *check_algorithm_allowed(subject_algorithm, tenant_policy.allowed_algorithms, "tenant policy"),
        *check_signature_hashes(spec, signer, csr_signature_hash, "issuer_id"),
        *_check_serial(spec.serial),
        *_check_usages(spec, subject_algorithm),
        *_check_ca_constraints(spec, issuer),
    ]


def check_ca(spec: CertificateSpec, *, issuer: IssuerFacts | None, subject_algorithm: str, key_bits: int | None,
             available: frozenset[str], now: datetime, tenant_policy: TenantPolicy = TenantPolicy(),
             rsa_exponent: int | None = None, key_field: str = "algorithm") -> list[Violation]:
    """Every rule a CA certificate breaks: a root when ``issuer`` is None, else an intermediate under it."""
    limit = (MAX_INTERMEDIATE_DAYS, "an intermediate CA") if issuer else (MAX_ROOT_DAYS, "a root CA")
    return [
        *check_subject(spec.subject, require_common_name=True),
        *_check_name_constraints(spec, issuer),
        *_check_validity(spec, now, [limit]),
        *_check_issuer(spec, issuer),
        *check_key(subject_algorithm, key_bits, for_ca=True, available=available, field=key_field,
                   rsa_exponent=rsa_exponent),
        *check_algorithm_allowed(subject_algorithm, tenant_policy.allowed_algorithms, "tenant policy"),
        *check_signature_hashes(spec, issuer.algorithm if issuer else subject_algorithm, None,
                       "issuer_id" if issuer else "algorithm"),
        *_check_serial(spec.serial),
        *_check_usages(spec, subject_algorithm),
        *_check_ca_constraints(spec, issuer),
    ]
