"""Conversions between the domain's names (DN, SANs, name constraints) and cryptography's x509 types."""

from __future__ import annotations

import ipaddress
import re

import msgspec
from cryptography import x509
from cryptography.x509.oid import NameOID

from domain.certspec import DistinguishedName, NameConstraints, SubjectAltNames

# DistinguishedName fields in the order they are encoded (most significant RDN first, so RFC 4514 text reads CN … C).
_DN_FIELDS: tuple[tuple[str, x509.ObjectIdentifier], ...] = (
    ("country", NameOID.COUNTRY_NAME),
    ("state", NameOID.STATE_OR_PROVINCE_NAME),
    ("locality", NameOID.LOCALITY_NAME),
    ("organization", NameOID.ORGANIZATION_NAME),
    ("organizational_unit", NameOID.ORGANIZATIONAL_UNIT_NAME),
    ("common_name", NameOID.COMMON_NAME),
    ("email", NameOID.EMAIL_ADDRESS),
)
_FIELD_BY_OID = {oid: name for name, oid in _DN_FIELDS}


def to_name(dn: DistinguishedName) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, getattr(dn, name))
                      for name, oid in _DN_FIELDS if getattr(dn, name) is not None])


def from_name(name: x509.Name) -> DistinguishedName | None:
    """The DN a name spells, None for an empty name; ValueError naming what does not fit a DistinguishedName."""
    values: dict[str, str] = {}
    for attribute in name:
        field = _FIELD_BY_OID.get(attribute.oid)
        if field is None:
            raise ValueError(f"subject attribute {_oid_label(attribute.oid)} is not supported")
        if field in values:
            raise ValueError(f"subject has more than one {field}")
        if not isinstance(attribute.value, str):
            raise ValueError(f"subject {field} is not a string")
        values[field] = attribute.value
    if not values:
        return None
    if "common_name" not in values:
        raise ValueError("subject has no common name")
    return within_limits(DistinguishedName(**values), "subject")


def within_limits(value, what: str):
    """``value`` if it fits its struct's field limits (as a request would be held to), else ValueError.

    The refusal names the part that is too large in our words; msgspec's own ("Expected `str` of length <= 256")
    describes its types, not the certificate.
    """
    try:
        return msgspec.convert(msgspec.to_builtins(value), type(value))
    except msgspec.ValidationError as exc:
        where = _AT.search(str(exc))
        part = f" ({where['path']})" if where and where["path"] else ""
        raise ValueError(f"{what}{part} is larger than a request may carry") from None


_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")  # where msgspec says the value failed: "$.common_name"


def _oid_label(oid: x509.ObjectIdentifier) -> str:
    name = getattr(oid, "_name", None)
    return oid.dotted_string if not name or name == "Unknown OID" else f"{name} ({oid.dotted_string})"


def to_general_names(sans: SubjectAltNames) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in sans.dns]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in sans.ip]
    names += [x509.RFC822Name(e) for e in sans.email]
    names += [x509.UniformResourceIdentifier(u) for u in sans.uri]
    return names


def from_general_names(names: x509.SubjectAlternativeName) -> SubjectAltNames:
    """SANs a CSR asked for; ValueError for kinds the service does not issue (otherName, directoryName …)."""
    dns: list[str] = []
    ip: list[str] = []
    email: list[str] = []
    uri: list[str] = []
    for name in names:
        if isinstance(name, x509.DNSName):
            dns.append(name.value)
        elif isinstance(name, x509.IPAddress) and isinstance(name.value, ipaddress.IPv4Address | ipaddress.IPv6Address):
            ip.append(str(name.value))
        elif isinstance(name, x509.RFC822Name):
            email.append(name.value)
        elif isinstance(name, x509.UniformResourceIdentifier):
            uri.append(name.value)
        else:
            raise ValueError(f"subject alternative name of kind {type(name).__name__} is not supported")
    return SubjectAltNames(dns=tuple(dns), ip=tuple(ip), email=tuple(email), uri=tuple(uri))


def to_name_constraints(constraints: NameConstraints) -> x509.NameConstraints:
    def subtrees(dns: tuple[str, ...], networks: tuple[str, ...]) -> list[x509.GeneralName] | None:
        trees: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        trees += [x509.IPAddress(ipaddress.ip_network(n)) for n in networks]
        return trees or None  # cryptography wants None, not [], for an absent list

    return x509.NameConstraints(
        permitted_subtrees=subtrees(constraints.permitted_dns, constraints.permitted_ip),
        excluded_subtrees=subtrees(constraints.excluded_dns, constraints.excluded_ip),
    )


def from_name_constraints(constraints: x509.NameConstraints | None) -> NameConstraints:
    """The DNS and IP subtrees of a certificate's name constraints (other name forms are not modelled)."""
    if constraints is None:
        return NameConstraints()

    def split(trees) -> tuple[tuple[str, ...], tuple[str, ...]]:
        trees = trees or []
        return (tuple(t.value for t in trees if isinstance(t, x509.DNSName)),
                tuple(str(t.value) for t in trees if isinstance(t, x509.IPAddress)))

    permitted_dns, permitted_ip = split(constraints.permitted_subtrees)
    excluded_dns, excluded_ip = split(constraints.excluded_subtrees)
    return within_limits(NameConstraints(permitted_dns=permitted_dns, excluded_dns=excluded_dns,
                                         permitted_ip=permitted_ip, excluded_ip=excluded_ip), "name constraints")
