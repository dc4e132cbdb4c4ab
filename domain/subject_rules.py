"""The rules for what a certificate names: its subject DN (RFC 5280 bounds) and its subject alternative names
(syntax, the types a profile allows, addresses that name no host, repeats), and which of them are DNS identities."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from domain import names
from domain.certspec import DistinguishedName, SubjectAltNames
from domain.violations import Violation

if TYPE_CHECKING:  # annotations only: importing a rule module does not load the profiles (and their events)
    from domain.profile import Profile

MAX_SANS = 100
# RFC 5280 upper bounds (Appendix A.1), and a country is two ISO 3166 letters.
_DN_LIMITS = {"common_name": 64, "organization": 64, "organizational_unit": 64, "locality": 128, "state": 128,
              "email": 255, "country": 2}


def check_subject(subject: DistinguishedName, *, require_common_name: bool) -> list[Violation]:
    """Each subject attribute that is blank, too long, unprintable, or (country) not two ISO 3166 letters."""
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


def valid_sans(sans: SubjectAltNames, kind: str) -> Iterator[tuple[str, str]]:
    """(field, value) of each SAN of ``kind`` whose syntax is sound: the others are refused as ``san_invalid``."""
    for i, value in enumerate(getattr(sans, kind)):
        if _SAN_SYNTAX[kind](value) is None:
            yield f"sans.{kind}[{i}]", value


def check_sans(sans: SubjectAltNames, profile: Profile) -> list[Violation]:
    """The SANs against their syntax and ``profile``: required, types allowed, at most MAX_SANS, hosts, repeats."""
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
            for field, ip in valid_sans(sans, "ip") if (problem := names.ip_host_problem(ip))]
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


def dns_identities(sans: SubjectAltNames, common_name: str | None) -> list[tuple[str, str]]:
    """DNS SANs, and a host-name-like common name: TLS clients may still match on it."""
    found = list(valid_sans(sans, "dns"))
    if common_name and names.looks_like_hostname(common_name):
        found.append(("subject.common_name", common_name))
    return found
