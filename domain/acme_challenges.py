"""Which ACME challenges prove a name or an address, and the dns-01 rules (RFC 8555 8.4): the TXT record's name, the key
authorization's digest, and the exact comparison of what the resolvers answered.

A wildcard identifier (``*.example.internal``) is proved by dns-01 alone, at ``_acme-challenge.example.internal``
(RFC 8555 7.1.3); an ordinary name by http-01, tls-alpn-01, and dns-01 when this server has resolvers to ask; an
IP address (RFC 8738) by http-01 and tls-alpn-01 only (never dns-01: RFC 8738 7), the tls-alpn-01 handshake naming
its reverse-DNS name (RFC 8738 6).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable

from domain.jose import b64url_encode

HTTP_01 = "http-01"
TLS_ALPN_01 = "tls-alpn-01"
DNS_01 = "dns-01"
CHALLENGE_TYPES = (HTTP_01, TLS_ALPN_01, DNS_01)
RECORD_PREFIX = "_acme-challenge."
DIGEST_LENGTH = 43  # base64url of 32 bytes, unpadded


def is_wildcard(name: str) -> bool:
    return name.startswith("*.")


def base_name(name: str) -> str:
    """The name an authorization proves: a wildcard's without its ``*.`` (RFC 8555 7.1.4)."""
    return name[2:] if is_wildcard(name) else name


def offered(name: str, *, dns01: bool, ip: bool = False) -> tuple[str, ...]:
    """The challenge types an authorization for ``name`` offers (a wildcard: dns-01 only; the caller has refused a
    wildcard when dns-01 is not offered; an IP address, ``ip``: http-01 and tls-alpn-01, never dns-01)."""
    if ip:
        return (HTTP_01, TLS_ALPN_01)
    if is_wildcard(name):
        return (DNS_01,)
    return (HTTP_01, TLS_ALPN_01, DNS_01) if dns01 else (HTTP_01, TLS_ALPN_01)


def reverse_name(address: str) -> str:
    """The SNI of a tls-alpn-01 handshake for an IP identifier (RFC 8738 6): its reverse-DNS name, e.g.
    ``5.0.0.10.in-addr.arpa`` or the 32 nibbles of an IPv6 address under ``ip6.arpa``."""
    return ipaddress.ip_address(address).reverse_pointer


def record_name(name: str) -> str:
    """Where dns-01 looks: ``_acme-challenge.`` before the authorization's (base) name, absolute."""
    return f"{RECORD_PREFIX}{base_name(name).rstrip('.')}."


def digest(key_authorization: str) -> str:
    """RFC 8555 8.4: the TXT record's value, base64url (unpadded) of the SHA-256 of the key authorization."""
    return b64url_encode(hashlib.sha256(key_authorization.encode("ascii")).digest())


def txt_matches(values: Iterable[bytes], expected: str) -> bool:
    """Whether one TXT record (its character-strings joined, as RFC 8555 8.4 has the server read it) is exactly
    ``expected``: no trimming, no case folding, no padding. Every record is compared (in constant time each)."""
    wanted = expected.encode("ascii")
    found = False
    for value in values:
        found |= hmac.compare_digest(value, wanted)
    return found
