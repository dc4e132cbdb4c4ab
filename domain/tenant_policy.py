"""A tenant's policy: its restrictions (algorithms, name patterns, networks, validity, wildcards), their
validation when set, and the names a certificate carries that it refuses."""

from __future__ import annotations

from typing import Annotated

import msgspec

from domain import names
from domain.algorithms import ALGORITHMS, AlgorithmText
from domain.certspec import DnsText, IpText, SubjectAltNames
from domain.subject_rules import dns_identities, valid_sans
from domain.violations import Violation

MAX_PATTERNS = 256  # field limit: entries per allowed-names list of a tenant policy


class TenantPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A tenant's restrictions. DNS and email-domain patterns: "a.example.com" exact, "*.example.com"
    exactly one label below, ".example.com" any depth below; an empty tuple restricts nothing.

    ``allow_wildcards`` decides wildcard DNS names ("*.example.com", compared with the patterns as a literal
    label): True allows them to every request, ACME orders included; False refuses them to every request; None
    (the default, and every policy set before the field was) refuses them to ACME orders and leaves requests
    made through the API, CLI and UI as they were (allowed, within ``allowed_dns``)."""

    allowed_algorithms: Annotated[tuple[AlgorithmText, ...], msgspec.Meta(max_length=64)] | None = None
    allowed_dns: Annotated[tuple[DnsText, ...], msgspec.Meta(max_length=MAX_PATTERNS)] = ()
    allowed_ip_networks: Annotated[tuple[IpText, ...], msgspec.Meta(max_length=MAX_PATTERNS)] = ()
    allowed_email_domains: Annotated[tuple[DnsText, ...], msgspec.Meta(max_length=MAX_PATTERNS)] = ()
    max_validity_days: int | None = None
    allow_wildcards: bool | None = None


def wildcards_allowed(policy: TenantPolicy, *, acme: bool) -> bool:
    """Whether the tenant's policy lets a request name a wildcard: an ACME order only when it says so."""
    return policy.allow_wildcards is True or (policy.allow_wildcards is None and not acme)


def tenant_name_violations(sans: SubjectAltNames, common_name: str | None, policy: TenantPolicy) -> list[Violation]:
    """The names a certificate carries that the tenant's policy does not allow: at issuance, and for the names of
    certificates issued before the policy changed (``domain.compliance``)."""
    out = []
    if not wildcards_allowed(policy, acme=False):
        out += [Violation(field, "wildcard_not_allowed", f"{name!r} is a wildcard, which the tenant's policy refuses "
                          "(allow_wildcards false)")
                for field, name in dns_identities(sans, common_name) if name.startswith("*.")]
    if policy.allowed_dns:
        out += [Violation(field, "san_not_allowed", f"{name!r} matches none of the tenant's allowed DNS names")
                for field, name in dns_identities(sans, common_name)
                if not names.matches_any_pattern(name, policy.allowed_dns)]
    if policy.allowed_ip_networks:
        out += [Violation(field, "san_not_allowed", f"{ip} is in none of the tenant's allowed networks")
                for field, ip in valid_sans(sans, "ip")
                if not names.ip_in_networks(ip, policy.allowed_ip_networks)]
    if policy.allowed_email_domains:
        out += [Violation(field, "san_not_allowed", f"{email!r} is not in one of the tenant's email domains")
                for field, email in valid_sans(sans, "email")
                if not names.matches_any_pattern(names.email_domain(email), policy.allowed_email_domains)]
    return out


def validate_tenant_policy(policy: TenantPolicy) -> list[Violation]:
    """Every malformed entry of a tenant policy (empty when it is sound)."""
    out = [Violation(f"allowed_algorithms[{i}]", "algorithm_unknown", f"{a!r} is not a known algorithm")
           for i, a in enumerate(policy.allowed_algorithms or ()) if a not in ALGORITHMS]
    for field in ("allowed_dns", "allowed_email_domains"):
        out += [Violation(f"{field}[{i}]", "pattern_invalid", f"{p!r}: {problem}")
                for i, p in enumerate(getattr(policy, field)) if (problem := names.pattern_problem(p))]
    out += [Violation(f"allowed_ip_networks[{i}]", "pattern_invalid", f"{n!r} is not an IP network (address/prefix)")
            for i, n in enumerate(policy.allowed_ip_networks) if names.parse_network(n) is None]
    if policy.max_validity_days is not None and policy.max_validity_days < 1:
        out.append(Violation("max_validity_days", "validity_invalid", "a maximum validity is at least one day"))
    return out
