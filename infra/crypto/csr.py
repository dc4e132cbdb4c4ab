"""PKCS#10 request checking: strict PEM/DER decoding, proof of possession, and the facts policy needs."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

from commands.ports import PublicKeys
from domain.certspec import CsrFacts, SubjectAltNames
from domain.errors import DomainError
from infra.crypto import der, keys, names

# One PEM block and nothing else but surrounding whitespace: junk around a request is refused, not skipped.
_PEM = re.compile(rb"\A\s*-----BEGIN (NEW )?CERTIFICATE REQUEST-----\r?\n([A-Za-z0-9+/=\r\n]+)"
                  rb"-----END (NEW )?CERTIFICATE REQUEST-----\s*\Z")
_MAX_BYTES = 256 * 1024  # an ML-DSA-87 request is under 10 KiB; anything this big is not a CSR
# Exceptions cryptography raises for hostile input; anything else is a bug we want to see.
_DECODE_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion)


def _invalid(detail: str) -> DomainError:
    return DomainError("invalid_csr", f"not a usable certificate signing request: {detail}", field="csr")


def parse(data: bytes) -> tuple[CsrFacts, PublicKeys]:
    request = _load(bytes(data))
    public_key, algorithm, bits = _public_key(request)
    _check_signature(request, public_key)
    spki = keys.spki(public_key)
    facts = CsrFacts(
        subject=_subject(request),
        sans=_sans(request),
        algorithm=algorithm,
        key_bits=bits,
        rsa_exponent=keys.rsa_exponent(public_key),
        signature_hash=_signature_hash(request),
        public_key_der=spki,
        public_key_sha256=hashlib.sha256(spki).hexdigest(),
        requested_extensions=tuple(e.oid.dotted_string for e in _extensions(request)),
    )
    return facts, PublicKeys(primary=spki)


def _load(data: bytes) -> x509.CertificateSigningRequest:
    if len(data) > _MAX_BYTES:
        raise _invalid("larger than any request this service accepts")
    if data.lstrip().startswith(b"-----BEGIN"):
        data = _pem_body(data)
    try:
        der.parse(data)  # strict DER, no trailing bytes, before cryptography sees it
        return x509.load_der_x509_csr(data)
    except _DECODE_ERRORS as exc:
        raise _invalid(str(exc) or type(exc).__name__) from exc


def _pem_body(data: bytes) -> bytes:
    match = _PEM.match(data)
    if match is None or bool(match.group(1)) != bool(match.group(3)):
        raise _invalid("PEM must be exactly one CERTIFICATE REQUEST block")
    try:
        return base64.b64decode(re.sub(rb"\s", b"", match.group(2)), validate=True)
    except binascii.Error as exc:
        raise _invalid(f"PEM body is not base64 ({exc})") from exc


def _public_key(request: x509.CertificateSigningRequest) -> tuple[Any, str, int | None]:
    try:
        public_key = request.public_key()
    except _DECODE_ERRORS as exc:
        raise _invalid(f"public key cannot be read ({exc})") from exc
    described = keys.describe_public_key(public_key)
    if described is None:
        raise _invalid(f"public key of type {type(public_key).__name__} cannot be described")
    return public_key, described[0], described[1]


def _check_signature(request: x509.CertificateSigningRequest, public_key: Any) -> None:
    try:
        _verify(request, public_key)
    except InvalidSignature as exc:
        raise DomainError("csr_signature_invalid",
                          "the request's self-signature does not verify: no proof of possession of the key",
                          field="csr") from exc
    except _DECODE_ERRORS as exc:
        raise DomainError("csr_signature_invalid", f"the request's signature cannot be checked ({exc})",
                          field="csr") from exc


def _verify(request: x509.CertificateSigningRequest, public_key: Any) -> None:
    """Proof of possession, checked by hand for hashed signatures.

    cryptography's ``is_signature_valid`` answers False for a SHA-1 signature, which would hide a
    correct but weak request behind "no proof of possession"; policy must see "sha1" and refuse it by name.
    """
    signature, signed = request.signature, request.tbs_certrequest_bytes
    parameters, digest = request.signature_algorithm_parameters, request.signature_hash_algorithm
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, signed, parameters, digest)  # type: ignore[arg-type]
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, signed, parameters)  # type: ignore[arg-type]
    elif isinstance(public_key, dsa.DSAPublicKey):
        public_key.verify(signature, signed, digest)  # type: ignore[arg-type]
    elif not request.is_signature_valid:
        raise InvalidSignature()


def _signature_hash(request: x509.CertificateSigningRequest) -> str | None:
    try:
        algorithm = request.signature_hash_algorithm
    except _DECODE_ERRORS as exc:
        raise _invalid(f"signature algorithm not recognised ({exc})") from exc
    return algorithm.name if algorithm is not None else None


def _subject(request: x509.CertificateSigningRequest):
    try:
        return names.from_name(request.subject)
    except _DECODE_ERRORS as exc:
        raise _invalid(str(exc)) from exc


def _extensions(request: x509.CertificateSigningRequest) -> x509.Extensions:
    try:
        return request.extensions
    except _DECODE_ERRORS as exc:  # duplicate or undecodable extensions in the extensionRequest
        raise _invalid(f"extension request cannot be read ({exc})") from exc


def _sans(request: x509.CertificateSigningRequest) -> SubjectAltNames:
    try:
        extension = _extensions(request).get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return SubjectAltNames()
    try:
        return names.from_general_names(extension.value)
    except _DECODE_ERRORS as exc:
        raise _invalid(str(exc)) from exc
