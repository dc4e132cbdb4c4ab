"""Where ACME validation may connect: the validation networks setting and the address rule (the SSRF guard's)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

# Validation connects where the server is: only into the networks the operator lists.
_NEVER = tuple(ipaddress.ip_network(n) for n in ("0.0.0.0/8", "169.254.0.0/16", "fe80::/10", "224.0.0.0/4",
                                                 "ff00::/8", "255.255.255.255/32"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052's well-known prefix
_COMPATIBLE = ipaddress.ip_network("::/96")  # RFC 4291's deprecated IPv4-compatible addresses
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


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches through a translator or tunnel (NAT64, 6to4, Teredo's client,
    IPv4-compatible), or None."""
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or (address in _COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def validation_address_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                               networks: tuple[IpNetwork, ...]) -> str | None:
    """Why validation may not connect to ``address``, or None. Link-local (cloud metadata), unspecified,
    multicast and broadcast addresses never; loopback only inside a listed loopback network (``0.0.0.0/0`` or
    ``::/0`` does not list it); anything else only inside a listed network. An IPv6 address that carries an IPv4
    one (NAT64, 6to4, Teredo, IPv4-compatible) must pass as that IPv4 address too."""
    address = getattr(address, "ipv4_mapped", None) or address
    if address.is_unspecified or any(address in n for n in _NEVER if n.version == address.version):
        return f"{address} is link-local, unspecified, multicast or broadcast: never validated"
    if address.is_loopback and not any(n.is_loopback and address in n for n in networks
                                       if n.version == address.version):
        return f"{address} is loopback: validated only when a loopback network is listed"
    if not any(address.version == n.version and address in n for n in networks):
        return f"{address} is outside the validation networks (CSM_ACME_VALIDATION_NETWORKS)"
    embedded = _embedded_ipv4(address) if address.version == 6 else None
    if embedded is not None and (problem := validation_address_problem(embedded, networks)):
        return f"{address} reaches {embedded}: {problem}"
    return None
