"""Where ACME validation may connect: the validation networks setting and the address rule (the SSRF guard's)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

# Validation connects where the server is: only into the networks the operator lists.
_NEVER = tuple(ipaddress.ip_network(n) for n in ("0.0.0.0/8", "169.254.0.0/16", "fe80::/10", "224.0.0.0/4",
                                                 "ff00::/8", "255.255.255.255/32"))
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


def validation_address_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                               networks: tuple[IpNetwork, ...]) -> str | None:
    """Why validation may not connect to ``address``, or None. Link-local (cloud metadata), unspecified,
    multicast and broadcast addresses never; loopback only inside a listed loopback network; anything else only
    inside a listed network."""
    address = getattr(address, "ipv4_mapped", None) or address
    if address.is_unspecified or any(address in n for n in _NEVER if n.version == address.version):
        return f"{address} is link-local, unspecified, multicast or broadcast: never validated"
    if not any(address.version == n.version and address in n for n in networks):
        return f"{address} is outside the validation networks (CSM_ACME_VALIDATION_NETWORKS)"
    return None
