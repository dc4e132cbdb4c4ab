"""What an ACME client asks for, checked: a newOrder's identifiers (DNS names, and IP addresses: RFC 8738) and
notBefore/notAfter, a finalize's CSR names and addresses."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from domain.acme_problems import AcmeProblem
from domain.acme_challenges import is_wildcard
from domain.names import dns_name_problem, ip_host_problem, ip_problem, matches_any_pattern, parse_network
from domain.spec_builders import CLOCK_SKEW

MAX_IDENTIFIERS = 100


class OrderIdentifiers(NamedTuple):
    dns: list[str]  # lower case, no trailing dot, sorted
    ip: list[str]  # RFC 8738: each address's one text form (IPv6 compressed, RFC 5952), sorted


def ip_identifier(value: str) -> str:
    """An ``ip`` identifier's address in its one text form (IPv6 compressed and lower case, RFC 5952), or
    ValueError saying why it is none: a zone id (no iPAddress SAN holds one), an IPv4-mapped IPv6 address (the
    IPv4 address is the identifier), a network, a name, leading zeros, spaces."""
    if "%" in value:
        raise ValueError(f"{value!r} carries a zone id, which a certificate cannot hold")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        raise ValueError(f"{value!r} is an IPv4-mapped IPv6 address: order {address.ipv4_mapped} itself")
    return address.compressed


def check_identifiers(identifiers: object, allowed: Iterable[str], *,
                      wildcard_problem: str | None) -> OrderIdentifiers:
    """A newOrder's identifiers: DNS names and IP addresses (RFC 8738), within ``allowed`` (the EAB key's patterns
    and networks; none: the tenant policy's, at issuance). A wildcard is compared as a literal label, so
    ``*.example`` and ``.example`` allow ``*.example.internal``-like names, a plain name does not; an address must
    be inside one of the key's networks when it lists any patterns at all. ``wildcard_problem``: why a wildcard
    is refused here (no dns-01, the tenant policy), or None when allowed."""
    if not isinstance(identifiers, list) or not identifiers:
        raise AcmeProblem("malformed", "identifiers must be a non-empty list", field="identifiers")
    if len(identifiers) > MAX_IDENTIFIERS:
        raise AcmeProblem("rejectedIdentifier", f"at most {MAX_IDENTIFIERS} identifiers", field="identifiers")
    patterns = tuple(allowed)
    networks = tuple(p for p in patterns if parse_network(p) is not None)
    name_patterns = tuple(p for p in patterns if p not in networks)
    names: list[str] = []
    addresses: list[str] = []
    for index, item in enumerate(identifiers):
        where = f"identifiers[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("value"), str):
            raise AcmeProblem("malformed", "an identifier is {type, value}", field=where)
        if item.get("type") == "ip":
            addresses.append(_check_ip(item["value"], patterns, networks, f"{where}.value"))
            continue
        if item.get("type") != "dns":
            raise AcmeProblem("unsupportedIdentifier", f"identifier type {item.get('type')!r}: only dns and ip are "
                              "supported", field=f"{where}.type")
        name = item["value"].strip().lower().rstrip(".")
        if is_wildcard(name) and wildcard_problem is not None:
            raise AcmeProblem("rejectedIdentifier", f"{name}: {wildcard_problem}", field=f"{where}.value")
        if ip_problem(name) is None:  # as clients without RFC 8738 send one (lego before 4.2x: "dns")
            raise AcmeProblem("rejectedIdentifier", f"{name} is an IP address: order it as an identifier of type ip "
                              "(RFC 8738), not dns", field=f"{where}.value")
        if problem := dns_name_problem(name, wildcard=True):
            raise AcmeProblem("rejectedIdentifier", f"{name}: {problem}", field=f"{where}.value")
        if patterns and not matches_any_pattern(name, name_patterns):
            raise AcmeProblem("rejectedIdentifier", f"{name} is outside the names this account may request "
                              f"({', '.join(name_patterns) or 'none'})", field=f"{where}.value")
        names.append(name)
    return OrderIdentifiers(dns=sorted(set(names)), ip=sorted(set(addresses), key=_address_order))


def _check_ip(value: str, patterns: tuple[str, ...], networks: tuple[str, ...], where: str) -> str:
    """One ``ip`` identifier: an address (normalised) that names a host, inside the key's networks if it lists
    any patterns. Where validation may connect is the validator's rule (CSM_ACME_VALIDATION_NETWORKS)."""
    try:
        address = ip_identifier(value)
    except ValueError as exc:
        raise AcmeProblem("rejectedIdentifier", str(exc), field=where) from None
    if problem := ip_host_problem(address):
        raise AcmeProblem("rejectedIdentifier", problem, field=where)
    if patterns and not any(ipaddress.ip_address(address) in parse_network(n) for n in networks):
        raise AcmeProblem("rejectedIdentifier", f"{address} is outside the networks this account may request "
                          f"({', '.join(networks) or 'none'})", field=where)
    return address


def _address_order(text: str) -> tuple[int, int]:
    address = ipaddress.ip_address(text)
    return address.version, int(address)


def check_csr_names(order_names: Iterable[str], csr_dns: Iterable[str], common_name: str | None, *,
                    order_ips: Iterable[str] = (), csr_ips: Iterable[str] = ()) -> None:
    """RFC 8555 7.4: the CSR asks for exactly the order's names (its CN, if any, one of them), and its iPAddress
    SANs are exactly the order's addresses (RFC 8738; a CN that is an address must be one of them)."""
    wanted = {n.lower() for n in order_names}
    asked = {n.lower().rstrip(".") for n in csr_dns}
    wanted_ips = {_same_address(a) for a in order_ips}
    asked_ips = {_same_address(a) for a in csr_ips}
    cn_ip = _same_address(common_name) if common_name and ip_problem(common_name) is None else None
    if common_name and cn_ip is None:
        asked.add(common_name.lower().rstrip("."))
    if asked != wanted:
        raise AcmeProblem("badCSR", f"the CSR names {sorted(asked)}, the order {sorted(wanted)}: they must be the same",
                          field="csr")
    if asked_ips != wanted_ips or (cn_ip is not None and cn_ip not in wanted_ips):
        raise AcmeProblem("badCSR", f"the CSR's IP addresses are {sorted(asked_ips | ({cn_ip} - {None}))}, the "
                          f"order's {sorted(wanted_ips)}: they must be the same", field="csr")


def subject_name(common_name: str | None, names: list[str], ips: list[str]) -> str:
    """The issued certificate's CN, after ``check_csr_names``: the CSR's (one of the order's identifiers, in the
    order's form), else the order's first name, else its first address."""
    if common_name:
        return _same_address(common_name) if ip_problem(common_name) is None else common_name.lower().rstrip(".")
    return names[0] if names else ips[0]


def _same_address(text: str) -> str:
    """An address as compared: by value, in one text form (an IPv4-mapped IPv6 address is not its IPv4 address:
    the certificate would carry 16 bytes, not 4)."""
    return ipaddress.ip_address(text).compressed


def check_validity(not_before: object, not_after: object, now: datetime, max_days: int) -> str | None:
    """A newOrder's notBefore and notAfter (RFC 8555 7.4). A certificate starts when its order is finalized, so
    notBefore is refused; notAfter (RFC 3339 with an offset) is honoured in whole days from then, at least one and
    at most ``max_days`` (the profile's and tenant policy's maximum). Returns it as UTC RFC 3339, or None."""
    if not_before is not None:
        raise AcmeProblem("malformed", "notBefore is not supported: a certificate starts when its order is finalized",
                          field="notBefore")
    if not_after is None:
        return None
    if not isinstance(not_after, str) or len(not_after) > 64:
        raise AcmeProblem("malformed", "notAfter is an RFC 3339 date-time", field="notAfter")
    try:
        moment = datetime.fromisoformat(not_after)
    except ValueError:
        raise AcmeProblem("malformed", "notAfter is an RFC 3339 date-time", field="notAfter") from None
    if moment.tzinfo is None or "T" not in not_after.upper():
        raise AcmeProblem("malformed", "notAfter is an RFC 3339 date-time with a UTC offset", field="notAfter")
    days = validity_days_until(moment, now)
    if days < 1:
        raise AcmeProblem("malformed", "notAfter must be at least a day from now", field="notAfter")
    if days > max_days:
        raise AcmeProblem("malformed", f"notAfter is {days} days away; the profile and policy allow at most "
                          f"{max_days}", field="notAfter")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def validity_days_until(not_after: datetime, now: datetime) -> int:
    """Whole days from a certificate's start (``now`` less the clock skew allowance, as issuance starts it) to
    ``not_after``: the certificate then ends no later than asked."""
    return (not_after - (now - CLOCK_SKEW)) // timedelta(days=1)
