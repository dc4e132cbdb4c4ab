"""Reading X.509 certificates and keys in this service's terms: DER decoding refused with the field named, the
facts recorded of a certificate, the catalogue name of its key(s), and the ML-DSA key a hybrid CA's CSR carries.

A library's exception text describes its parser, not the input: it is logged at debug, never put in a problem.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from commands.ports import PublicKeys
from domain.certspec import CertificateFacts
from domain.errors import DomainError
from infra.crypto import hybrid, keys

# What cryptography raises for input it cannot decode or encode; anything else is a bug we want to see.
BUILD_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion)
log = logging.getLogger(__name__)


def certificate_facts(certificate: bytes, *, serial: int, subject: x509.Name, issuer: x509.Name,
                      not_before: datetime, not_after: datetime, algorithm: str, public_key: Any,
                      ski: x509.SubjectKeyIdentifier, aki: x509.AuthorityKeyIdentifier | None) -> CertificateFacts:
    """The facts recorded of a certificate, in one form whether read from it (``describe``) or from what built
    it (``sign_described``)."""
    return CertificateFacts(
        serial_hex=format(serial, "x"),
        fingerprint_sha256=hashlib.sha256(certificate).hexdigest(),
        subject_dn=subject.rfc4514_string(),
        issuer_dn=issuer.rfc4514_string(),
        not_before=not_before,
        not_after=not_after,
        algorithm=algorithm,
        public_key_sha256=hashlib.sha256(keys.spki(public_key)).hexdigest(),
        subject_key_identifier=ski.digest.hex(),
        authority_key_identifier=aki.key_identifier.hex() if aki and aki.key_identifier else None,
    )


def certificate_algorithm(cert: x509.Certificate, public_key: Any) -> str:
    described = keys.describe_public_key(public_key)
    name = described[0] if described else cert.public_key_algorithm_oid.dotted_string
    try:
        alternative = hybrid.alternative_public_key(cert)
    except DomainError:
        return name
    return algorithm_name(name, alternative)


def algorithm_name(name: str, alternative: Any | None) -> str:
    """The catalogue name of a key, or of the hybrid it makes with an ML-DSA alternative key."""
    alt_name = hybrid.ml_dsa_name(alternative) if alternative is not None else None
    return (keys.hybrid_name(name, alt_name) or name) if alt_name else name


def extension_value(cert: x509.Certificate, kind: type) -> Any:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def load_certificate(data: bytes, field: str) -> x509.Certificate:
    try:
        cert = x509.load_der_x509_certificate(data)
        cert.extensions  # noqa: B018 - decoded lazily; surface a malformed extension here, as invalid input
        return cert
    except BUILD_ERRORS as exc:
        log.debug("%s does not decode: %s", field, exc)
        raise DomainError("invalid_certificate", "not an X.509 certificate: its DER encoding does not decode",
                          field=field) from exc


def load_public(spki: bytes, field: str) -> Any:
    try:
        return serialization.load_der_public_key(spki)
    except BUILD_ERRORS as exc:
        log.debug("%s does not load: %s", field, exc)
        raise DomainError("invalid_key_material", f"{field} is not a DER SubjectPublicKeyInfo of a supported key type",
                          field=field) from exc


def require_ml_dsa(spki: bytes, field: str) -> None:
    if hybrid.ml_dsa_name(load_public(spki, field)) is None:
        raise DomainError("invalid_key_material", "the alternative public key must be ML-DSA", field=field)


def csr_alternative_key(data: bytes) -> bytes | None:
    """The ML-DSA SubjectPublicKeyInfo a hybrid CA's CSR carries in extension 2.5.29.72 (see ``create_csr``).

    Only for the offline ceremony, where the CSR comes from this service's own key vault:
    PKCS#10 proves possession of the classical key only.
    """
    request = x509.load_der_x509_csr(data) if not data.lstrip().startswith(b"-----") else x509.load_pem_x509_csr(data)
    try:
        value = request.extensions.get_extension_for_oid(hybrid.SUBJECT_ALT_PUBLIC_KEY_INFO).value
    except x509.ExtensionNotFound:
        return None
    require_ml_dsa(value.value, "csr")
    return value.value


def algorithm_of(public: PublicKeys) -> str | None:
    """The catalogue name of a subject's key(s): a hybrid name when an ML-DSA half is present."""
    described = keys.describe_public_key(load_public(public.primary, "public_key"))
    if described is None:
        return None
    if public.alternative is None:
        return described[0]
    return keys.hybrid_name(described[0], hybrid.ml_dsa_name(load_public(public.alternative, "public_key")) or "")
