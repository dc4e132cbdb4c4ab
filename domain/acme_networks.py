"""Where ACME validation may connect: the validation networks setting and the address rule (the SSRF guard's)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from domain.names import embedded_ipv4, ip_host_problem, metadata_problem

# Validation connects where the server is: only into the networks the operator lists, and never into these
# special-purpose blocks (the IANA IPv4 and IPv6 special-purpose registries, RFC 6890), whatever is listed (even
# 0.0.0.0/0 or ::/0). Blocks where no host is numbered at all (0.0.0.0/8, 240.0.0.0/4, documentation, discard-only)
# are domain.names.ip_host_problem's; the 6to4, Teredo and NAT64 blocks carry an IPv4 address, judged in its turn.
_TEREDO = ipaddress.ip_network("2001::/32")
_NEVER = tuple((ipaddress.ip_network(block), why) for block, why in (
    ("169.254.0.0/16", "link-local (cloud metadata services answer there)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated by RFC 3879)"),
    ("100.64.0.0/10", "shared address space (RFC 6598, carrier-grade NAT): the provider's network, not a node's"),
    ("192.0.0.0/24", "IETF protocol assignments (RFC 6890: DS-Lite, PCP and TURN anycast, NAT64 discovery)"),
    ("192.31.196.0/24", "AS112 (RFC 7535): a sink for stray DNS queries"),
    ("192.175.48.0/24", "AS112 direct delegation (RFC 7534)"),
    ("2620:4f:8000::/48", "AS112 direct delegation (RFC 7534)"),
    ("192.52.193.0/24", "AMT relay anycast (RFC 7450)"),
    ("192.88.99.0/24", "the deprecated 6to4 relay anycast (RFC 7526)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation (RFC 8215): where it leads is not known here"),
    ("100:0:0:1::/64", "the dummy prefix (RFC 9780)"),
    ("5f00::/16", "SRv6 segment identifiers (RFC 9602)"),
    *((str(block), "IETF protocol assignments (RFC 2928: anycast services, benchmarking, ORCHID, AMT, AS112)")
      for block in ipaddress.ip_network("2001::/23").address_exclude(_TEREDO)),
))
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(texts: Iterable[str]) -> tuple[IpNetwork, ...]:
    """The validation networks setting; ValueError names a network that is not one."""
    networks = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ValueError(f"CSM_ACME_VALIDATION_NETWORKS: {text!r} is not a network (address/prefix)") from None
    return tuple(networks)


def _special_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if problem := ip_host_problem(str(address)):
        return f"{problem}: never validated"
    if problem := metadata_problem(address):
        return f"{problem}: never validated"
    for block, why in _NEVER:
        if address.version == block.version and address in block:
            return f"{address} is in {block}, {why}: never validated"
    return None


def validation_address_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                               networks: tuple[IpNetwork, ...]) -> str | None:
    """Why validation may not connect to ``address``, or None. Special-purpose blocks (link-local: cloud metadata;
    carrier-grade NAT, IETF protocol assignments, benchmarking, AS112, documentation, reserved; unspecified,
    multicast and broadcast addresses) never; loopback only inside a listed loopback network (``0.0.0.0/0`` or
    ``::/0`` does not list it); anything else only inside a listed network. An IPv6 address that carries an IPv4
    one (NAT64, 6to4, Teredo, IPv4-compatible) must pass as that IPv4 address too."""
    address = getattr(address, "ipv4_mapped", None) or address
    if problem := _special_problem(address):
        return problem
    if address.is_loopback and not any(n.is_loopback and address in n for n in networks
                                       if n.version == address.version):
        return f"{address} is loopback: validated only when a loopback network is listed"
    if not any(address.version == n.version and address in n for n in networks):
        return f"{address} is outside the validation networks (CSM_ACME_VALIDATION_NETWORKS)"
    embedded = embedded_ipv4(address) if address.version == 6 else None
    if embedded is not None and (problem := validation_address_problem(embedded, networks)):
        return f"{address} reaches {embedded}: {problem}"
    return None
