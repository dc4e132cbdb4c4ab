"""Name syntax and matching for policy: DNS names, tenant patterns, RFC 5280 subtrees, IPs, emails."""

from __future__ import annotations

import ipaddress
import re

from domain.certspec import NameConstraints

MAX_DNS_LENGTH = 253
MAX_URI_LENGTH = 2048  # the request limit (domain.certspec.UriText): longer ones would not decode again
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s]+")
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
# Special-purpose blocks (RFC 6890 and the IANA registries it set up) that no server can be reached at: each is
# "Destination: False" there, or, for 100::/64, set aside only to discard what is sent to it. Private (RFC 1918,
# fc00::/7), loopback and link-local blocks are not here: they are forwarded to hosts, and Cassandra nodes use them.
_NO_HOST_BLOCKS = tuple((ipaddress.ip_network(block), why) for block, why in (
    ("0.0.0.0/8", "'this network' (RFC 1122): a source while a host starts up, never a destination"),
    ("240.0.0.0/4", "reserved for future use (RFC 1112): no host is numbered there"),
    ("192.0.2.0/24", "kept for documentation (RFC 5737): no host is numbered there"),
    ("198.51.100.0/24", "kept for documentation (RFC 5737): no host is numbered there"),
    ("203.0.113.0/24", "kept for documentation (RFC 5737): no host is numbered there"),
    ("2001:db8::/32", "kept for documentation (RFC 3849): no host is numbered there"),
    ("3fff::/20", "kept for documentation (RFC 9637): no host is numbered there"),
    ("100::/64", "discard-only (RFC 6666): what is sent there is dropped, by design"),
))


def _is_a_label(encoded: str) -> bool:
    """Punycode that round-trips to printable non-ASCII (RFC 5891 5.4, structurally; no IDNA2008 tables)."""
    try:
        decoded = encoded.encode("ascii").decode("punycode")
    except (UnicodeError, ValueError, IndexError):
        return False
    return not decoded.isascii() and decoded.isprintable() and decoded.encode("punycode") == encoded.encode()


def _label_problem(label: str) -> str | None:
    if not label.isascii():
        return f"label {label!r} is not ASCII: use its A-label (xn--) form"
    if not _LABEL.fullmatch(label.lower()):
        return f"label {label!r} is not 1-63 letters, digits and inner hyphens"
    if label[2:4] == "--":
        if not label.lower().startswith("xn--"):
            return f"label {label!r} has '--' in positions 3-4, reserved by RFC 5890"
        if not _is_a_label(label[4:].lower()):
            return f"label {label!r} is not a valid A-label"
    return None


def dns_name_problem(name: str, *, wildcard: bool = True) -> str | None:
    """Why ``name`` is not a certificate DNS name (RFC 1035 LDH, RFC 5890 A-labels), or None.

    A wildcard is only a whole left-most "*" label over at least two more labels; a trailing
    dot, an empty label, and an all-numeric top label (an IP address in disguise) are refused.
    """
    if not name or len(name) > MAX_DNS_LENGTH:
        return f"a DNS name is 1-{MAX_DNS_LENGTH} characters"
    labels = name.split(".")
    if labels[0] == "*":
        if not wildcard:
            return "a wildcard is not allowed here"
        labels = labels[1:]
        if len(labels) < 2:
            return "a wildcard must stand over at least two labels"
    for label in labels:
        problem = _label_problem(label)
        if problem:
            return problem
    if labels[-1].isdigit():
        return "the top-level label is all digits (an IP address belongs in sans.ip)"
    return None


def looks_like_hostname(text: str) -> bool:
    """Whether a common name is read as a host name by TLS clients (valid DNS name with a dot)."""
    return "." in text and dns_name_problem(text) is None


def ip_problem(text: str) -> str | None:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return f"{text!r} is not an IPv4 or IPv6 address"
    if "%" in text:  # a zone id has no encoding in an iPAddress SAN
        return f"{text!r} carries a zone id, which a certificate cannot hold"
    return None


_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052's well-known prefix
_COMPATIBLE = ipaddress.ip_network("::/96")  # RFC 4291's deprecated IPv4-compatible addresses
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT's IPv4-translated addresses (RFC 2765)
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")  # local-use translation (RFC 8215), any prefix length
# RFC 6052 2.2: where the IPv4 address's four bytes sit after a prefix of each length (byte 8 is always zero)
_RFC6052_BYTES = {48: (6, 7, 9, 10), 56: (7, 9, 10, 11), 64: (9, 10, 11, 12), 96: (12, 13, 14, 15)}


# Cloud metadata endpoints that are not link-local (169.254.169.254 is, and fd00:ec2::254 is not): AWS's IMDS over
# IPv6, Alibaba Cloud's metadata service, Azure's wireserver. No server a webhook or an ACME validation should
# reach lives there, and a request to one is the SSRF the guards exist for.
CLOUD_METADATA = frozenset(ipaddress.ip_address(text) for text in ("fd00:ec2::254", "100.100.100.200",
                                                                    "168.63.129.16"))


def metadata_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``address`` (IPv4-mapped read as its IPv4 address) is a cloud metadata endpoint, or None."""
    address = getattr(address, "ipv4_mapped", None) or address
    if address in CLOUD_METADATA:
        return f"a cloud metadata endpoint ({address})"
    return None


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches through a translator or tunnel (NAT64, 6to4, Teredo's client,
    IPv4-compatible), or None: an address rule must judge that one too (the SSRF guards of webhooks and ACME)."""
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or address in _TRANSLATED or (address in _COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def local_nat64_ipv4s(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an address of the local-use NAT64 block (64:ff9b:1::/48) may reach: its prefix length
    is the network's choice (/48 to /96), so each RFC 6052 reading; none outside the block. A guard that admits
    such an address must admit every reading."""
    if address not in _LOCAL_NAT64:
        return ()
    packed = address.packed
    return tuple(dict.fromkeys(ipaddress.IPv4Address(bytes(packed[i] for i in where))
                               for where in _RFC6052_BYTES.values()))


def ip_host_problem(text: str) -> str | None:
    """Why a valid address (``ip_problem`` None) names no single host: unspecified, multicast, the IPv4 limited
    broadcast, or in a special-purpose block no server is reached at (reserved, documentation, discard-only), also
    written as IPv4-mapped IPv6. Loopback, private and link-local addresses are hosts (Cassandra nodes use them)."""
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return f"{text} is the unspecified address: no host has it"
    if address.is_multicast:
        return f"{text} is a multicast address: it names a group, not a host"
    if address == _BROADCAST:
        return f"{text} is the broadcast address: it names every host on a link, not one"
    for block, why in _NO_HOST_BLOCKS:
        if address.version == block.version and address in block:
            return f"{text} is in {block}, {why}"
    return None


def comparable(kind: str, value: str) -> str:
    """A SAN as certificate users compare it: DNS names and email domains case-insensitively, addresses by value."""
    if kind == "dns":
        return value.lower()
    if kind == "email":
        local, at, domain = value.rpartition("@")
        return f"{local}{at}{domain.lower()}"
    if kind == "ip":
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            return value
    return value


def email_problem(text: str) -> str | None:
    local, at, domain = text.rpartition("@")
    if not at or not _EMAIL_LOCAL.fullmatch(local) or local.startswith(".") or local.endswith("."):
        return f"{text!r} is not an email address (local@domain, ASCII)"
    if dns_name_problem(domain, wildcard=False) or "." not in domain:
        return f"{text!r} has no valid domain after '@'"
    return None


def uri_problem(text: str) -> str | None:
    if len(text) > MAX_URI_LENGTH:
        return f"a URI is at most {MAX_URI_LENGTH} characters"
    ok = text.isascii() and _URI.fullmatch(text)  # IRIs must be sent percent-encoded (RFC 5280 4.2.1.6)
    return None if ok else f"{text!r} is not an absolute ASCII URI (scheme:rest, no spaces)"


def email_domain(email: str) -> str:
    return email.rpartition("@")[2]


# Tenant allow-list patterns: "a.example.com" exact, "*.example.com" exactly one label below,
# ".example.com" any depth below. A SAN's own "*" is compared as a literal label, so
# "*.example.com" is allowed by "*.example.com" and ".example.com" but not by "a.example.com".


def pattern_problem(pattern: str) -> str | None:
    if pattern.startswith("."):
        return dns_name_problem(pattern[1:], wildcard=False)
    if pattern.startswith("*."):
        return dns_name_problem(pattern[2:], wildcard=False)
    return dns_name_problem(pattern, wildcard=False)


def matches_pattern(name: str, pattern: str) -> bool:
    name, pattern = name.lower(), pattern.lower()
    if pattern.startswith("."):
        return name.endswith(pattern) and len(name) > len(pattern)
    if pattern.startswith("*."):
        head, dot, rest = name.partition(".")
        return bool(dot and head) and rest == pattern[2:]
    return name == pattern


def matches_any_pattern(name: str, patterns: tuple[str, ...]) -> bool:
    return any(matches_pattern(name, p) for p in patterns)


# RFC 5280 4.2.1.10 DNS subtrees: "example.com" is the name and every name below it;
# ".example.com" only names below it. Names and subtrees compare case-insensitively.


def _below_or_equal(name: str, base: str) -> bool:
    return name == base or name.endswith("." + base)


def dns_within(name: str, subtree: str) -> bool:
    """Whether every name ``name`` stands for (a wildcard stands for all its one-label names) is in ``subtree``."""
    name, subtree = name.lower(), subtree.lower()
    if name.startswith("*."):
        # "*.B" stands for x.B: all inside iff B is the subtree's base or below it, either form
        return _below_or_equal(name[2:], subtree.lstrip("."))
    if subtree.startswith("."):
        return name.endswith(subtree)
    return _below_or_equal(name, subtree)


def dns_touches(name: str, subtree: str) -> bool:
    """Whether at least one name ``name`` stands for is in ``subtree`` (for excluded subtrees)."""
    if dns_within(name, subtree):
        return True
    name, subtree = name.lower(), subtree.lower()
    if not name.startswith("*.") or subtree.startswith("."):
        return False
    head, _, rest = subtree.partition(".")
    return bool(head) and head != "*" and rest == name[2:]


def subtree_within(child: str, parent: str) -> bool:
    """Whether DNS subtree ``child`` is inside subtree ``parent`` (both in either form)."""
    child, parent = child.lower(), parent.lower()
    base = child.lstrip(".")
    if parent.startswith(".") and not child.startswith("."):
        return base.endswith(parent)  # child includes its own base, which must be strictly below
    return _below_or_equal(base, parent.lstrip("."))


def parse_network(text: str) -> IpNetwork | None:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        return None


def ip_in_networks(ip: str, networks: tuple[str, ...]) -> bool:
    address = ipaddress.ip_address(ip)
    return any(address in net for net in map(parse_network, networks) if net is not None)


def network_within(child: IpNetwork, parents: tuple[str, ...]) -> bool:
    for parent in map(parse_network, parents):
        if parent is not None and parent.version == child.version and child.subnet_of(parent):  # type: ignore[arg-type]
            return True
    return False


def constraint_problems(nc: NameConstraints) -> list[str]:
    """Why entries of a CA's own name constraints are malformed (DNS subtrees, address/prefix networks)."""
    out = [f"DNS subtree {t!r}: {problem}" for t in (*nc.permitted_dns, *nc.excluded_dns)
           if (problem := dns_name_problem(t.removeprefix("."), wildcard=False))]
    out += [f"{n!r} is not an IP network (address/prefix)" for n in (*nc.permitted_ip, *nc.excluded_ip)
            if parse_network(n) is None]
    return out


def widenings(parent: NameConstraints, child: NameConstraints) -> list[str]:
    """How a sub-CA's permitted subtrees reach beyond its issuer's: a sub-CA may narrow them, never widen."""
    out = []
    if parent.permitted_dns and (not child.permitted_dns or not all(
            any(subtree_within(t, p) for p in parent.permitted_dns) for t in child.permitted_dns)):
        out.append(f"DNS subtrees must lie within {', '.join(parent.permitted_dns)}")
    networks = [n for n in map(parse_network, child.permitted_ip) if n is not None]
    if parent.permitted_ip and (not child.permitted_ip or not all(
            network_within(n, parent.permitted_ip) for n in networks)):
        out.append(f"IP networks must lie within {', '.join(parent.permitted_ip)}")
    return out
