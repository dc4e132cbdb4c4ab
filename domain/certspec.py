"""What a certificate will say, decided by policy before anything is signed; and what a CSR said.

A ``CertificateSpec`` is the complete, validated content of a certificate except its keys:
the command side builds one from the profile, the request and the issuer, the policy engine
checks it, and the crypto adapter turns it into DER without adding anything of its own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

# Field limits: a bound on what a request may carry. Policy applies the tighter RFC 5280 bounds to what is issued;
# names made elsewhere (CSRs, imported CA certificates) are held to these limits by the crypto adapter, so every
# recorded event decodes again.
MAX_NAMES = 100  # per SAN type (policy: at most 100 in all)
MAX_SUBTREES = 256  # per name-constraints list
DnText = Annotated[str, msgspec.Meta(max_length=256)]
DnsText = Annotated[str, msgspec.Meta(max_length=255)]
IpText = Annotated[str, msgspec.Meta(max_length=64)]  # an address, or a network in address/prefix form
EmailText = Annotated[str, msgspec.Meta(max_length=320)]
UriText = Annotated[str, msgspec.Meta(max_length=2048)]

# Key usage names (RFC 5280 4.2.1.3), as cryptography's x509.KeyUsage keyword arguments.
KEY_USAGES = frozenset({"digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                        "key_agreement", "key_cert_sign", "crl_sign"})
# Extended key usage names and their OIDs (RFC 5280 4.2.1.12).
EXTENDED_KEY_USAGES: dict[str, str] = {
    "server_auth": "1.3.6.1.5.5.7.3.1",
    "client_auth": "1.3.6.1.5.5.7.3.2",
    "code_signing": "1.3.6.1.5.5.7.3.3",
    "email_protection": "1.3.6.1.5.5.7.3.4",
    "time_stamping": "1.3.6.1.5.5.7.3.8",
    "ocsp_signing": "1.3.6.1.5.5.7.3.9",
}


class DistinguishedName(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """A subject or issuer name: the attributes Cassandra operators use, in RFC 4514 order (C … CN)."""

    common_name: DnText
    organization: DnText | None = None
    organizational_unit: DnText | None = None
    locality: DnText | None = None
    state: DnText | None = None
    country: DnText | None = None  # ISO 3166 two letters (policy checks)
    email: DnText | None = None


class SubjectAltNames(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    dns: Annotated[tuple[DnsText, ...], msgspec.Meta(max_length=MAX_NAMES)] = ()
    ip: Annotated[tuple[IpText, ...], msgspec.Meta(max_length=MAX_NAMES)] = ()  # IPv4 or IPv6 text form
    email: Annotated[tuple[EmailText, ...], msgspec.Meta(max_length=MAX_NAMES)] = ()
    uri: Annotated[tuple[UriText, ...], msgspec.Meta(max_length=MAX_NAMES)] = ()

    def is_empty(self) -> bool:
        return not (self.dns or self.ip or self.email or self.uri)


class NameConstraints(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """RFC 5280 4.2.1.10: DNS subtrees ("example.com", ".example.com") and IP networks ("10.0.0.0/8")."""

    permitted_dns: Annotated[tuple[DnsText, ...], msgspec.Meta(max_length=MAX_SUBTREES)] = ()
    excluded_dns: Annotated[tuple[DnsText, ...], msgspec.Meta(max_length=MAX_SUBTREES)] = ()
    permitted_ip: Annotated[tuple[IpText, ...], msgspec.Meta(max_length=MAX_SUBTREES)] = ()
    excluded_ip: Annotated[tuple[IpText, ...], msgspec.Meta(max_length=MAX_SUBTREES)] = ()

    def is_empty(self) -> bool:
        return not (self.permitted_dns or self.excluded_dns or self.permitted_ip or self.excluded_ip)


class CertificateSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a certificate will contain apart from its public key(s) and signature(s).

    ``serial`` is a positive integer below 2**159 (20 DER octets at most). ``not_before`` and
    ``not_after`` are timezone-aware UTC. ``signature_hash`` is the issuer's classical
    signature hash ("sha384" or "sha512"), None for EdDSA and ML-DSA issuers. Subject and
    authority key identifiers are always added by the adapter (SHA-1 of the public key
    BIT STRING, RFC 5280 4.2.1.2 method 1: an identifier, not a signature).
    """

    subject: DistinguishedName
    serial: int
    not_before: datetime
    not_after: datetime
    sans: SubjectAltNames = SubjectAltNames()
    is_ca: bool = False
    path_length: int | None = None  # only for CAs; None = unlimited
    key_usage: frozenset[str] = frozenset()
    extended_key_usage: tuple[str, ...] = ()  # names from EXTENDED_KEY_USAGES
    name_constraints: NameConstraints = NameConstraints()
    crl_urls: tuple[str, ...] = ()
    ocsp_urls: tuple[str, ...] = ()
    ca_issuer_urls: tuple[str, ...] = ()
    ocsp_no_check: bool = False  # id-pkix-ocsp-nocheck on delegated OCSP signers
    signature_hash: str | None = None


class CsrFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What a certificate signing request asks for, after its self-signature was checked.

    ``algorithm`` is a name from ``domain.algorithms.ALGORITHMS`` (the CSR's key), or the
    closest description of an unsupported key ("rsa-2048", "dsa-2048", "ecdsa-secp256k1")
    so policy can name it in its refusal. ``signature_hash`` is the CSR signature's hash
    ("sha1" is reported, then refused by policy). ``rsa_exponent`` is an RSA key's public exponent (policy
    refuses an even one, or one below 65537), None for other keys.
    """

    subject: DistinguishedName | None
    sans: SubjectAltNames
    algorithm: str
    key_bits: int | None
    signature_hash: str | None
    public_key_der: bytes  # SubjectPublicKeyInfo, DER
    public_key_sha256: str  # hex, of the SubjectPublicKeyInfo DER
    rsa_exponent: int | None = None
    requested_extensions: tuple[str, ...] = ()  # OIDs of extensions the CSR asked for (ignored: profile decides)


class SubjectKeyFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What key policy judges of a key a certificate already certifies (a same-key renewal certifies it again).

    ``algorithm`` as in ``CsrFacts``; ``key_bits`` the key's own size; ``rsa_exponent`` None for other keys.
    """

    algorithm: str
    key_bits: int | None
    rsa_exponent: int | None = None


class CertificateFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What the read models and events record about an issued certificate (all public)."""

    serial_hex: str  # lower-case, no separators
    fingerprint_sha256: str  # hex of SHA-256 over the DER certificate
    subject_dn: str  # RFC 4514
    issuer_dn: str
    not_before: datetime
    not_after: datetime
    algorithm: str  # name from ALGORITHMS
    public_key_sha256: str
    subject_key_identifier: str  # hex
    authority_key_identifier: str | None  # hex; None only for a self-signed root built elsewhere


class CaCertificateInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a CA certificate made elsewhere (an offline root, an offline-signed intermediate) says."""

    subject: DistinguishedName
    algorithm: str
    key_bits: int | None
    rsa_exponent: int | None  # an RSA key's public exponent (policy checks it), None for other keys
    is_ca: bool
    path_length: int | None
    name_constraints: NameConstraints
