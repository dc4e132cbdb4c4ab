"""tls-alpn-01 validation (RFC 8737): a TLS handshake with NAME:PORT offering only ALPN ``acme-tls/1``.

The server must answer with that protocol and a certificate for exactly NAME carrying the critical
id-pe-acmeIdentifier extension, whose value is the SHA-256 of the key authorization. The same guard as http-01
applies (``infra/acme/http01.allowed_addresses``): only checked addresses are connected to, with SNI the name,
one timeout for the connection and the handshake; nothing but the handshake is exchanged. An IP identifier
(RFC 8738 6): the address itself is connected to, the SNI is its reverse-DNS name (``in-addr.arpa``/``ip6.arpa``),
and the certificate names exactly that address (one iPAddress SAN).
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from domain import acme_networks
from domain.acme_challenges import reverse_name
from infra.acme.http01 import ValidationFailed, allowed_addresses

ACME_TLS = "acme-tls/1"
ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")


@dataclass(frozen=True)
class TlsAlpn01:
    port: int
    networks: tuple[acme_networks.IpNetwork, ...]
    hosts_file: Path | None
    timeout: float

    def check(self, name: str, key_authorization: str, *, ip: bool = False) -> str:
        """The address that proved ``name`` (``ip``: an IP identifier's address); ValidationFailed otherwise."""
        expected = b"\x04\x20" + hashlib.sha256(key_authorization.encode("ascii")).digest()  # DER OCTET STRING
        failure: ValidationFailed | None = None
        for address in allowed_addresses(name, self.port, self.networks, self.hosts_file, self.timeout, ip=ip):
            try:
                der = self._handshake(address, reverse_name(name) if ip else name)
            except ValidationFailed as exc:
                if exc.error_type != "connection":
                    raise
                failure = exc
                continue
            _check_certificate(der, name, expected, ip=ip)
            return address
        assert failure is not None
        raise failure

    def _handshake(self, address: str, name: str) -> bytes:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # a self-signed certificate by design: its extension is the proof
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols([ACME_TLS])
        try:
            with socket.create_connection((address, self.port), timeout=self.timeout) as raw:
                with context.wrap_socket(raw, server_hostname=name) as tls:
                    if tls.selected_alpn_protocol() != ACME_TLS:
                        raise ValidationFailed("unauthorized", f"{name} at {address}:{self.port} did not negotiate "
                                               f"ALPN {ACME_TLS}")
                    der = tls.getpeercert(binary_form=True)
        except (OSError, ssl.SSLError) as exc:
            raise ValidationFailed("connection", f"TLS to {address}:{self.port} for {name} failed: "
                                   f"{type(exc).__name__}: {exc}") from None
        if not der:
            raise ValidationFailed("unauthorized", f"{name} at {address}:{self.port} sent no certificate")
        return der


def _check_certificate(der: bytes, name: str, expected: bytes, *, ip: bool = False) -> None:
    try:
        certificate = x509.load_der_x509_certificate(der)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        extension = certificate.extensions.get_extension_for_oid(ACME_IDENTIFIER)
    except (ValueError, x509.ExtensionNotFound) as exc:
        raise ValidationFailed("unauthorized", f"the tls-alpn-01 certificate for {name} is not one: {exc}") from None
    if ip:
        named = names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(name)]
    else:
        named = [n.lower() for n in names.get_values_for_type(x509.DNSName)] == [name.lower()]
    if not named or len(list(names)) != 1:
        raise ValidationFailed("unauthorized", f"the tls-alpn-01 certificate must name exactly {name}"
                               + (" (one iPAddress)" if ip else ""))
    if not extension.critical or extension.value.value != expected:
        raise ValidationFailed("incorrectResponse", f"the acmeIdentifier of {name}'s tls-alpn-01 certificate is not "
                               "the SHA-256 of the key authorization (or is not critical)")
