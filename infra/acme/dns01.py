"""dns-01 validation (RFC 8555 8.4): the TXT records at ``_acme-challenge.NAME``, asked of the configured resolvers.

Only the resolvers the operator lists (``CSM_ACME_DNS_RESOLVERS``) are asked, never one a client names, so dns-01
connects nowhere a client chooses. One timeout bounds the whole lookup (every resolver, UDP and its TCP retry of
a truncated answer), each resolver having its share of it, in the order listed; no cache, no search list. A record proves the name when its character-strings, joined, are
exactly the base64url SHA-256 of the key authorization (``domain.acme_challenges.txt_matches``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from domain import acme_challenges
from infra.acme.http01 import ValidationFailed

if TYPE_CHECKING:
    import dns.resolver

DEFAULT_PORT = 53
MAX_RECORDS = 100  # TXT records compared at most; more fail the challenge
SHOWN = 3  # wrong values quoted in the failure, each cut to 64 characters


def _host_port(text: str) -> tuple[str, str | None]:
    if text.startswith("["):  # [IPv6]:port
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(text)
        return host, rest[1:] if rest else None
    if text.count(":") == 1:  # IPv4:port (a bare IPv6 address has more colons)
        host, port = text.split(":")
        return host, port
    return text, None


def parse_resolvers(texts: Iterable[str]) -> tuple[tuple[str, int], ...]:
    """``CSM_ACME_DNS_RESOLVERS``: "address", "address:port", "[IPv6]:port" or a bare IPv6 address (port 53);
    ValueError names an entry that is none of them. Addresses only: naming a resolver would need a resolver."""
    resolvers = []
    for text in (t.strip() for t in texts):
        try:
            host, port = _host_port(text)
            address, number = ipaddress.ip_address(host), DEFAULT_PORT if port is None else int(port)
            if not 0 < number < 65536:
                raise ValueError(port)
        except ValueError:
            raise ValueError(f"CSM_ACME_DNS_RESOLVERS: {text!r} is not address[:port] ([IPv6]:port)") from None
        resolvers.append((str(address), number))
    return tuple(resolvers)


@dataclass(frozen=True)
class Dns01:
    resolvers: tuple[tuple[str, int], ...]
    timeout: float

    def check(self, name: str, key_authorization: str) -> str:
        """The resolver that answered with the digest of ``key_authorization`` at ``_acme-challenge.NAME`` (a
        wildcard's base name); ValidationFailed otherwise."""
        record = acme_challenges.record_name(name)
        if not self.resolvers:
            raise ValidationFailed("serverInternal", "dns-01 cannot be validated here: this process has no "
                                   "CSM_ACME_DNS_RESOLVERS")
        answer = self._query(record)
        values = [b"".join(rdata.strings) for rdata in answer]
        if len(values) > MAX_RECORDS:
            raise ValidationFailed("unauthorized", f"{record} has more than {MAX_RECORDS} TXT records")
        if not acme_challenges.txt_matches(values, acme_challenges.digest(key_authorization)):
            shown = ", ".join(repr(v[:64].decode("ascii", "replace")) for v in values[:SHOWN])
            raise ValidationFailed("incorrectResponse", f"no TXT record at {record} is the key authorization's "
                                   f"digest (base64url SHA-256): found {shown}"
                                   + (f" and {len(values) - SHOWN} more" if len(values) > SHOWN else ""))
        return str(answer.nameserver)

    def _query(self, record: str) -> dns.resolver.Answer:
        # dnspython imported here, by the validator's first dns-01 lookup: every `csm` process imports this module
        import dns.exception
        import dns.name
        import dns.nameserver
        import dns.rdatatype
        import dns.resolver

        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(address, port) for address, port in self.resolvers]
        resolver.cache = None
        resolver.lifetime = self.timeout  # for the whole lookup
        resolver.timeout = self.timeout / len(self.resolvers)  # each resolver's share: a silent one leaves time
        try:
            return resolver.resolve(dns.name.from_text(record), dns.rdatatype.TXT, search=False)
        except dns.resolver.NXDOMAIN:
            raise ValidationFailed("dns", f"{record} does not exist (NXDOMAIN)") from None
        except dns.resolver.NoAnswer:
            raise ValidationFailed("unauthorized", f"{record} has no TXT record") from None
        except dns.resolver.LifetimeTimeout:
            raise ValidationFailed("dns", f"no resolver answered for {record} within {self.timeout:g} s") from None
        except dns.resolver.NoNameservers as exc:
            raise ValidationFailed("dns", f"no resolver answered for {record}: {exc}") from None
        except dns.exception.DNSException as exc:
            raise ValidationFailed("dns", f"looking up {record} failed: {type(exc).__name__}: {exc}") from None
