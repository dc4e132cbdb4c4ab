"""The policy engine: pure checks listing every rule a certificate breaks, and the spec builders."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import msgspec

from domain import names
from domain.algorithms import ALGORITHMS, SIGNATURE_HASH, Algorithm
from domain.certspec import (EXTENDED_KEY_USAGES, KEY_USAGES, CertificateSpec, DistinguishedName, DnsText, IpText,
                             NameConstraints, SubjectAltNames)
from domain.errors import DomainError

if TYPE_CHECKING:  # profile.py imports this module for Violation; annotations only here
    from domain.profile import Profile

# Issued certificates start 5 minutes before ``now`` so relying parties whose clocks run a
# little behind accept them at once; a request may back-date by at most an hour (more would
# misstate when the certificate was issued).
CLOCK_SKEW = timedelta(minutes=5)
MAX_BACKDATE = timedelta(hours=1)
MAX_SERIAL = 2**159  # RFC 5280 4.1.2.2: at most 20 octets, positive
MIN_RSA_BITS_LEAF, MIN_RSA_BITS_CA = 3072, 4096
# NIST SP 800-56B Rev. 2 (6.2.1) and the CA/Browser Forum Baseline Requirements (6.1.6): an RSA public exponent is
# odd and 2**16 + 1 <= e < 2**256. With e = 3, a verifier that checks PKCS#1 v1.5 padding loosely accepts forged
# signatures (Bleichenbacher 2006), and a message sent unpadded to three keys can be recovered (Hastad).
MIN_RSA_EXPONENT, MAX_RSA_EXPONENT = 2**16 + 1, 2**256
MAX_ROOT_DAYS, MAX_INTERMEDIATE_DAYS = 7305, 3653  # 20 and 10 years, leap days included
MAX_SPEC_DAYS = 36600  # beyond any rule; guards datetime arithmetic against absurd input
MAX_SANS = 100
STRONG_HASHES = frozenset({"sha384", "sha512"})
BROKEN_HASHES = frozenset({"md2", "md4", "md5", "sha1"})
CA_KEY_USAGE = frozenset({"key_cert_sign", "crl_sign", "digital_signature"})
DEFAULT_CA_ALGORITHM = "ml-dsa-65"
_CLASSICAL_SIGNERS = ("rsa", "ecdsa", "hybrid")
_RSA, _DSA, _ECDSA = re.compile(r"rsa-(\d{1,6})"), re.compile(r"dsa-\d{1,6}"), re.compile(r"ecdsa-(\w+)")
_GOOD_CURVES = frozenset({"p256", "p384", "p521", "secp256r1", "secp384r1", "secp521r1", "prime256v1"})
# RFC 5280 upper bounds (Appendix A.1), and a country is two ISO 3166 letters.
_DN_LIMITS = {"common_name": 64, "organization": 64, "organizational_unit": 64, "locality": 128, "state": 128,
              "email": 255, "country": 2}


class Violation(msgspec.Struct, frozen=True):
    field: str
    rule: str
    message: str


class PolicyViolation(DomainError):
    """One or more policy rules were broken; ``violations`` lists every one found."""

    status = 422

    def __init__(self, violations: list[Violation]) -> None:
        if not violations:
            raise ValueError("PolicyViolation needs at least one violation")
        super().__init__("policy_violation", "; ".join(v.message for v in violations), field=violations[0].field)
        self.violations = list(violations)


def raise_for(violations: Iterable[Violation]) -> None:
    found = list(violations)
    if found:
        raise PolicyViolation(found)


MAX_PATTERNS = 256  # field limit: entries per allowed-names list of a tenant policy
AlgorithmText = Annotated[str, msgspec.Meta(max_length=40)]


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


class IssuerFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What policy needs to know about the CA that will sign: its key, life, and constraints."""

    ca_id: str
    algorithm: str
    not_before: datetime
    not_after: datetime
    path_length: int | None  # the issuer certificate's pathLenConstraint; None = unlimited
    name_constraints: NameConstraints
    status: str  # active | disabled


def family_of(algorithm: str) -> str:
    """The family of a catalogued algorithm, or the prefix of a described one ("rsa-2048" → "rsa")."""
    known = ALGORITHMS.get(algorithm)
    return known.family if known else algorithm.partition("-")[0]


def allowed_for_ca(algorithm: str) -> bool:
    """Whether a CA may hold a key of this catalogued algorithm (smaller RSA keys are refused as ``weak_key``)."""
    known = ALGORITHMS.get(algorithm)
    return known is not None and _weakness(algorithm, None, known, for_ca=True) is None


def key_usages_for(algorithm: str, usages: Iterable[str]) -> frozenset[str]:
    """``usages`` less what the subject key cannot do: only RSA encrypts, only EC keys agree keys."""
    family, drop = family_of(algorithm), set()
    if family != "rsa":
        drop |= {"key_encipherment", "data_encipherment"}
    if family not in ("ecdsa", "hybrid"):  # a hybrid certificate's subject key is its EC key
        drop.add("key_agreement")
    return frozenset(usages) - drop


def _weakness(algorithm: str, key_bits: int | None, known: Algorithm | None, for_ca: bool) -> str | None:
    floor = MIN_RSA_BITS_CA if for_ca else MIN_RSA_BITS_LEAF
    bits = key_bits or (known.key_bits if known else None)
    if bits is None and (described := _RSA.fullmatch(algorithm)):
        bits = int(described[1])
    if family_of(algorithm) == "rsa" and bits is not None and bits < floor:
        return f"RSA keys{' for a CA' if for_ca else ''} must be at least {floor} bits, not {bits}"
    if known is not None:
        return None
    if _DSA.fullmatch(algorithm):
        return "DSA keys are not accepted"
    curve = _ECDSA.fullmatch(algorithm)
    if curve and curve[1].lower() not in _GOOD_CURVES:
        return f"curve {curve[1]} is not accepted: use P-256, P-384 or P-521"
    return None


def _exponent_weakness(algorithm: str, rsa_exponent: int | None) -> str | None:
    if rsa_exponent is None or family_of(algorithm) != "rsa":
        return None
    if rsa_exponent % 2 == 1 and MIN_RSA_EXPONENT <= rsa_exponent < MAX_RSA_EXPONENT:
        return None
    # a huge exponent is named by its size: its decimal digits could pass Python's int-to-text limit
    shown = rsa_exponent if rsa_exponent < MAX_RSA_EXPONENT else f"a {rsa_exponent.bit_length()}-bit number"
    return f"an RSA public exponent must be odd, at least 65537 and below 2**256, not {shown}"


def check_key(algorithm: str, key_bits: int | None, *, for_ca: bool, available: frozenset[str],
              field: str = "algorithm", rsa_exponent: int | None = None) -> list[Violation]:
    """Whether a subject key is known, strong enough, and can be used on this installation.

    ``rsa_exponent`` is the public exponent of an RSA key made elsewhere (a CSR, an imported CA certificate);
    None for keys this service generates (always 65537).
    """
    known = ALGORITHMS.get(algorithm)
    weak = _weakness(algorithm, key_bits, known, for_ca)
    out = [Violation(field, "weak_key", weak)] if weak else []
    if exponent := _exponent_weakness(algorithm, rsa_exponent):
        out.append(Violation(field, "weak_key", exponent))
    if known is None and not weak:
        out.append(Violation(field, "algorithm_unknown", f"{algorithm!r} is not a supported algorithm"))
    if known is not None and algorithm not in available:
        out.append(Violation(field, "algorithm_unavailable", f"{algorithm} is not available on this installation"))
    return out


def _check_allowed(algorithm: str, allowed: tuple[str, ...] | None, source: str) -> list[Violation]:
    if allowed is None or algorithm in allowed:
        return []
    return [Violation("algorithm", "algorithm_not_allowed",
                      f"{source} does not allow {algorithm}; it allows {', '.join(allowed) or 'none'}")]


def check_csr_hash(csr_hash: str | None) -> list[Violation]:
    """A CSR signed over a broken hash (MD2, MD4, MD5, SHA-1) is refused by name, whatever its key."""
    if csr_hash is None or csr_hash.lower() not in BROKEN_HASHES:
        return []
    return [Violation("csr", "weak_hash", f"the CSR is signed with {csr_hash}, which is broken; "
                      "sign it with SHA-256 or stronger")]


def _check_hashes(spec: CertificateSpec, signer_algorithm: str, csr_hash: str | None, field: str) -> list[Violation]:
    out = check_csr_hash(csr_hash)
    if family_of(signer_algorithm) in _CLASSICAL_SIGNERS and spec.signature_hash not in STRONG_HASHES:
        out.append(Violation(field, "weak_hash", "classical CA signatures use SHA-384 or SHA-512, "
                             f"not {spec.signature_hash}"))
    return out


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


def _check_subject(subject: DistinguishedName, *, require_common_name: bool) -> list[Violation]:
    out = []
    for attribute, limit in _DN_LIMITS.items():
        value = getattr(subject, attribute)
        field = f"subject.{attribute}"
        if value is None:
            continue
        if attribute == "common_name" and not value.strip() and require_common_name:
            out.append(Violation(field, "common_name_required", "this certificate needs a common name"))
        elif not value.strip() or len(value) > limit or not value.isprintable():
            rule = "common_name_invalid" if attribute == "common_name" else "subject_invalid"
            out.append(Violation(field, rule, f"{attribute} must be 1-{limit} printable characters, not blank"))
        elif attribute == "country" and not re.fullmatch(r"[A-Z]{2}", value):
            out.append(Violation(field, "subject_invalid", "country is two upper-case ISO 3166 letters"))
    return out


_SAN_SYNTAX = {"dns": names.dns_name_problem, "ip": names.ip_problem, "email": names.email_problem,
               "uri": names.uri_problem}


def _valid_sans(sans: SubjectAltNames, kind: str) -> Iterator[tuple[str, str]]:
    for i, value in enumerate(getattr(sans, kind)):
        if _SAN_SYNTAX[kind](value) is None:
            yield f"sans.{kind}[{i}]", value


def _check_sans(sans: SubjectAltNames, profile: Profile) -> list[Violation]:
    out = []
    if profile.require_san and not any(getattr(sans, kind) for kind in profile.allowed_san_types & _SAN_SYNTAX.keys()):
        out.append(Violation("sans", "san_required", f"profile {profile.name} requires a subject alternative name "
                             f"({', '.join(sorted(profile.allowed_san_types))})"))
    if sum(len(getattr(sans, kind)) for kind in _SAN_SYNTAX) > MAX_SANS:
        out.append(Violation("sans", "san_invalid", f"a certificate carries at most {MAX_SANS} alternative names"))
    for kind, syntax in _SAN_SYNTAX.items():
        values = getattr(sans, kind)
        if values and kind not in profile.allowed_san_types:
            out.append(Violation(f"sans.{kind}", "san_type_not_allowed", f"profile {profile.name} does not allow "
                                 f"{kind} names; it allows {', '.join(sorted(profile.allowed_san_types)) or 'none'}"))
        out += [Violation(f"sans.{kind}[{i}]", "san_invalid", problem)
                for i, problem in enumerate(map(syntax, values)) if problem]
    out += [Violation(field, "san_ip_not_a_host", problem)
            for field, ip in _valid_sans(sans, "ip") if (problem := names.ip_host_problem(ip))]
    return out + _duplicates(sans)


def _duplicates(sans: SubjectAltNames) -> list[Violation]:
    """Each SAN that repeats an earlier one of its type (refused, not silently dropped: the request is wrong)."""
    out = []
    for kind in _SAN_SYNTAX:
        first: dict[str, int] = {}
        for i, value in enumerate(getattr(sans, kind)):
            earlier = first.setdefault(names.comparable(kind, value), i)
            if earlier != i:
                out.append(Violation(f"sans.{kind}[{i}]", "san_duplicate",
                                     f"{value!r} repeats sans.{kind}[{earlier}]"))
    return out


def _dns_identities(sans: SubjectAltNames, common_name: str | None) -> list[tuple[str, str]]:
    """DNS SANs, and a host-name-like common name: TLS clients may still match on it."""
    found = list(_valid_sans(sans, "dns"))
    if common_name and names.looks_like_hostname(common_name):
        found.append(("subject.common_name", common_name))
    return found


def tenant_name_violations(sans: SubjectAltNames, common_name: str | None, policy: TenantPolicy) -> list[Violation]:
    """The names a certificate carries that the tenant's policy does not allow: at issuance, and for the names of
    certificates issued before the policy changed (``domain.compliance``)."""
    out = []
    if not wildcards_allowed(policy, acme=False):
        out += [Violation(field, "wildcard_not_allowed", f"{name!r} is a wildcard, which the tenant's policy refuses "
                          "(allow_wildcards false)")
                for field, name in _dns_identities(sans, common_name) if name.startswith("*.")]
    if policy.allowed_dns:
        out += [Violation(field, "san_not_allowed", f"{name!r} matches none of the tenant's allowed DNS names")
                for field, name in _dns_identities(sans, common_name)
                if not names.matches_any_pattern(name, policy.allowed_dns)]
    if policy.allowed_ip_networks:
        out += [Violation(field, "san_not_allowed", f"{ip} is in none of the tenant's allowed networks")
                for field, ip in _valid_sans(sans, "ip")
                if not names.ip_in_networks(ip, policy.allowed_ip_networks)]
    if policy.allowed_email_domains:
        out += [Violation(field, "san_not_allowed", f"{email!r} is not in one of the tenant's email domains")
                for field, email in _valid_sans(sans, "email")
                if not names.matches_any_pattern(names.email_domain(email), policy.allowed_email_domains)]
    return out


def _check_tenant_names(spec: CertificateSpec, policy: TenantPolicy) -> list[Violation]:
    return tenant_name_violations(spec.sans, spec.subject.common_name, policy)


def _check_name_constraints(spec: CertificateSpec, issuer: IssuerFacts | None) -> list[Violation]:
    """RFC 5280 4.2.1.10, per name type: inside some permitted subtree (if any), in no excluded one."""
    if issuer is None or issuer.name_constraints.is_empty():
        return []
    nc, out = issuer.name_constraints, []
    for field, name in _dns_identities(spec.sans, spec.subject.common_name):
        if nc.permitted_dns and not any(names.dns_within(name, tree) for tree in nc.permitted_dns):
            out.append(Violation(field, "name_constraint_violation",
                                 f"{name!r} is outside CA {issuer.ca_id}'s permitted DNS subtrees"))
        elif any(names.dns_touches(name, tree) for tree in nc.excluded_dns):
            out.append(Violation(field, "name_constraint_violation",
                                 f"{name!r} falls in a DNS subtree CA {issuer.ca_id} excludes"))
    for field, ip in _valid_sans(spec.sans, "ip"):
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
        *_check_subject(spec.subject, require_common_name=profile.require_common_name),
        *_check_sans(spec.sans, profile),
        *_check_tenant_names(spec, tenant_policy),
        *_check_name_constraints(spec, issuer),
        *_check_validity(spec, now, limits),
        *_check_issuer(spec, issuer),
        *check_key(subject_algorithm, key_bits, for_ca=spec.is_ca, available=available, field=key_field,
                   rsa_exponent=rsa_exponent),
        *_check_allowed(subject_algorithm, profile.allowed_algorithms, f"profile {profile.name}"),
        *_check_allowed(subject_algorithm, tenant_policy.allowed_algorithms, "tenant policy"),
        *_check_hashes(spec, signer, csr_signature_hash, "issuer_id"),
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
        *_check_subject(spec.subject, require_common_name=True),
        *_check_name_constraints(spec, issuer),
        *_check_validity(spec, now, [limit]),
        *_check_issuer(spec, issuer),
        *check_key(subject_algorithm, key_bits, for_ca=True, available=available, field=key_field,
                   rsa_exponent=rsa_exponent),
        *_check_allowed(subject_algorithm, tenant_policy.allowed_algorithms, "tenant policy"),
        *_check_hashes(spec, issuer.algorithm if issuer else subject_algorithm, None,
                       "issuer_id" if issuer else "algorithm"),
        *_check_serial(spec.serial),
        *_check_usages(spec, subject_algorithm),
        *_check_ca_constraints(spec, issuer),
    ]


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
