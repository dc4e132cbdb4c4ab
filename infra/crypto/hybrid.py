"""X.509 alternative signatures (ITU-T X.509 (10/2019) 9.8): the 2.5.29.72-74 extensions and the PreTBSCertificate."""

from __future__ import annotations

import logging

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mldsa

from domain.errors import DomainError
from infra.crypto import der

SUBJECT_ALT_PUBLIC_KEY_INFO = x509.ObjectIdentifier("2.5.29.72")
ALT_SIGNATURE_ALGORITHM = x509.ObjectIdentifier("2.5.29.73")
ALT_SIGNATURE_VALUE = x509.ObjectIdentifier("2.5.29.74")

# NIST CSOR sigAlgs arcs (FIPS 204, RFC 9881): pure ML-DSA, no parameters.
ML_DSA_OIDS: dict[str, str] = {
    "ml-dsa-44": "2.16.840.1.101.3.4.3.17",
    "ml-dsa-65": "2.16.840.1.101.3.4.3.18",
    "ml-dsa-87": "2.16.840.1.101.3.4.3.19",
}
ML_DSA_PUBLIC_TYPES: dict[str, type] = {
    "ml-dsa-44": mldsa.MLDSA44PublicKey,
    "ml-dsa-65": mldsa.MLDSA65PublicKey,
    "ml-dsa-87": mldsa.MLDSA87PublicKey,
}
log = logging.getLogger(__name__)
_EXTENSIONS_TAG = 0xA3  # [3] EXPLICIT Extensions in TBSCertificate
_VERSION_TAG = 0xA0  # [0] EXPLICIT Version


def ml_dsa_name(public_key: object) -> str | None:
    """The catalogue name of an ML-DSA public key, None for any other key."""
    for name, kind in ML_DSA_PUBLIC_TYPES.items():
        if isinstance(public_key, kind):
            return name
    return None


def algorithm_identifier(name: str) -> bytes:
    """AlgorithmIdentifier DER for an ML-DSA level: the OID alone, parameters absent."""
    return der.sequence(der.encode_oid(ML_DSA_OIDS[name]))


def algorithm_from_identifier(data: bytes) -> str:
    """The ML-DSA name an altSignatureAlgorithm value denotes; ValueError for anything else."""
    fields = der.children(der.parse(data))
    if len(fields) != 1:
        raise ValueError("ML-DSA AlgorithmIdentifier must have no parameters")
    oid = der.decode_oid(fields[0])
    for name, known in ML_DSA_OIDS.items():
        if known == oid:
            return name
    raise ValueError(f"alternative signature algorithm {oid} is not ML-DSA")


def signature_value(signature: bytes) -> bytes:
    """altSignatureValue extension value: a BIT STRING."""
    return der.encode_bit_string(signature)


def pre_tbs_certificate(tbs: bytes) -> bytes:
    """The PreTBSCertificate: the TBSCertificate without its ``signature`` field and altSignatureValue extension."""
    fields = der.children(_sequence(tbs))
    index = 2 if fields and fields[0].tag == _VERSION_TAG else 1
    if len(fields) <= index or fields[index].tag != der.SEQUENCE:
        raise ValueError("TBSCertificate has no signature AlgorithmIdentifier where expected")
    del fields[index]
    kept: list[bytes] = []
    for field in fields:
        if field.tag == _EXTENSIONS_TAG:
            extensions = _without_alt_signature_value(field)
            if extensions is not None:
                kept.append(extensions)
        else:
            kept.append(field.encode())
    return der.sequence(*kept)


def _sequence(data: bytes) -> der.TLV:
    element = der.parse(data)
    if element.tag != der.SEQUENCE:
        raise ValueError("not a SEQUENCE")
    return element


def _without_alt_signature_value(explicit: der.TLV) -> bytes | None:
    extensions = der.children(_sequence(explicit.value))
    kept = [e.encode() for e in extensions if _extension_oid(e) != ALT_SIGNATURE_VALUE.dotted_string]
    # Extensions is SIZE (1..MAX): with nothing left the field itself goes.
    return der.encode_tlv(_EXTENSIONS_TAG, der.sequence(*kept)) if kept else None


def _extension_oid(extension: der.TLV) -> str:
    fields = der.children(extension)
    if extension.tag != der.SEQUENCE or not fields:
        raise ValueError("malformed Extension")
    return der.decode_oid(fields[0])


def unrecognized(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    """The raw value of an extension cryptography does not interpret, or None if absent."""
    try:
        value = certificate.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    return value.value if isinstance(value, x509.UnrecognizedExtension) else None


def alternative_public_key(certificate: x509.Certificate) -> object | None:
    """The subjectAltPublicKeyInfo key of a certificate, loaded; None if it has none."""
    spki = unrecognized(certificate, SUBJECT_ALT_PUBLIC_KEY_INFO)
    if spki is None:
        return None
    try:
        return serialization.load_der_public_key(spki)
    except (ValueError, TypeError) as exc:  # cryptography's text describes its parser: logged, not passed on
        log.debug("subjectAltPublicKeyInfo does not load: %s", exc)
        raise DomainError("alt_signature_invalid", "subjectAltPublicKeyInfo is not a public key this service can "
                          "load", field="certificate") from exc


def verify_alternative(certificate: x509.Certificate, issuer: x509.Certificate, field: str = "certificate") -> None:
    """Check 2.5.29.73/74 against the issuer's ML-DSA key; a certificate carrying neither passes. ``field`` names
    where the certificate came from, for refusals."""
    algorithm = unrecognized(certificate, ALT_SIGNATURE_ALGORITHM)
    value = unrecognized(certificate, ALT_SIGNATURE_VALUE)
    if algorithm is None and value is None:
        return
    try:
        if algorithm is None or value is None:
            raise ValueError("altSignatureAlgorithm and altSignatureValue must come together")
        name = algorithm_from_identifier(algorithm)
        signature = der.decode_bit_string(der.parse(value))
        message = pre_tbs_certificate(certificate.tbs_certificate_bytes)
        key = _issuer_alternative_key(issuer)
        if ml_dsa_name(key) != name:
            raise ValueError(f"issuer's alternative key is not {name}")
    except ValueError as exc:  # this module's and der's own account of the extensions
        raise DomainError("alt_signature_invalid", f"alternative signature does not verify: {exc}",
                          field=field) from exc
    try:
        key.verify(signature, message)  # type: ignore[attr-defined]
    except (ValueError, InvalidSignature) as exc:
        log.debug("alternative signature refused: %r", exc)
        raise DomainError("alt_signature_invalid", "alternative signature does not verify with the issuer's "
                          f"{name} key", field=field) from exc


def _issuer_alternative_key(issuer: x509.Certificate) -> object:
    key = alternative_public_key(issuer)
    if key is not None:
        return key
    own = issuer.public_key()
    if ml_dsa_name(own) is None:
        raise ValueError("issuer has no ML-DSA key to check an alternative signature with")
    return own
