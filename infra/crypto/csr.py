"""PKCS#10 request checking: strict PEM/DER decoding, proof of possession, and the facts policy needs.

Refusals reaching a client say what is wrong in this service's words: a library's exception text
(cryptography's, binascii's) describes its internals, not the request, and is never passed on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa

from commands.ports import PublicKeys
from domain import key_rules, violations
from domain.certspec import CsrFacts, SubjectAltNames
from domain.errors import DomainError
from infra.crypto import der, keys, names

# One PEM block and nothing else but surrounding whitespace: junk around a request is refused, not skipped.
_PEM = re.compile(rb"\A\s*-----BEGIN (NEW )?CERTIFICATE REQUEST-----\r?\n([A-Za-z0-9+/=\r\n]+)"
                  rb"-----END (NEW )?CERTIFICATE REQUEST-----\s*\Z")
_MAX_BYTES = 256 * 1024  # an ML-DSA-87 request is under 10 KiB; anything this big is not a CSR
# Exceptions cryptography raises for hostile input; anything else is a bug we want to see.
_DECODE_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion)
# Signature algorithm OID arcs: PKCS #1 v1.5 (RSASSA-PSS, 1.2.840.113549.1.1.10, carries its own parameters) and ECDSA.
_PKCS1_ARC, _ECDSA_ARC = "1.2.840.113549.1.1.", "1.2.840.10045.4."
# Hashes no library still checks a signature over: refused by name, before proof of possession.
_UNCHECKABLE_HASHES = {"1.2.840.113549.1.1.2": "md2", "1.2.840.113549.1.1.3": "md4"}  # md2/md4WithRSAEncryption


def _invalid(detail: str) -> DomainError:
    return DomainError("invalid_csr", f"not a usable certificate signing request: {detail}", field="csr")


def parse(data: bytes) -> tuple[CsrFacts, PublicKeys]:
    request = _load(bytes(data))
    public_key, algorithm, bits = _public_key(request)
    signature_hash = _signature_hash(request)
    _check_signature(request, public_key)
    spki = keys.spki(public_key)
    facts = CsrFacts(
        subject=_subject(request),
        sans=_sans(request),
        algorithm=algorithm,
        key_bits=bits,
        rsa_exponent=keys.rsa_exponent(public_key),
        signature_hash=signature_hash,
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
    except ValueError as exc:  # this service's own DER reader: its messages describe the bytes
        raise _invalid(f"not DER ({exc})") from exc
    try:
        return x509.load_der_x509_csr(data)
    except _DECODE_ERRORS as exc:
        raise _invalid("not a PKCS#10 CertificationRequest") from exc


def _pem_body(data: bytes) -> bytes:
    match = _PEM.match(data)
    if match is None or bool(match.group(1)) != bool(match.group(3)):
        raise _invalid("PEM must be exactly one CERTIFICATE REQUEST block")
    try:
        return base64.b64decode(match.group(2).translate(None, b"\r\n"), validate=True)  # the only blanks _PEM lets in
    except binascii.Error as exc:
        raise _invalid("PEM body is not base64") from exc


def _public_key(request: x509.CertificateSigningRequest) -> tuple[Any, str, int | None]:
    try:
        public_key = request.public_key()
    except _DECODE_ERRORS as exc:
        raise _invalid("its public key cannot be read") from exc
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
    except _DECODE_ERRORS as exc:  # e.g. an RSA key under an ECDSA signature algorithm
        raise DomainError("csr_signature_invalid", "the request's signature cannot be checked: its signature "
                          "algorithm does not fit its key, or is not supported", field="csr") from exc


def _verify(request: x509.CertificateSigningRequest, public_key: Any) -> None:
    """Proof of possession, checked by hand for hashed signatures.

    cryptography's ``is_signature_valid`` answers False for a SHA-1 or MD5 signature, which would hide a
    correct but weak request behind "no proof of possession"; policy must see "sha1" and refuse it by name.
    """
    signature, signed = request.signature, request.tbs_certrequest_bytes
    digest = request.signature_hash_algorithm
    parameters = request.signature_algorithm_parameters or _weak_hash_parameters(request, public_key, digest)
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, signed, parameters, digest)  # type: ignore[arg-type]
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, signed, parameters)  # type: ignore[arg-type]
    elif isinstance(public_key, dsa.DSAPublicKey):
        public_key.verify(signature, signed, digest)  # type: ignore[arg-type]
    elif not request.is_signature_valid:
        raise InvalidSignature()


def _weak_hash_parameters(request: x509.CertificateSigningRequest, public_key: Any, digest: Any) -> Any:
    """What cryptography leaves out for md5WithRSAEncryption and ecdsa-with-SHA1: PKCS #1 v1.5 padding, ECDSA.

    Only where the signature algorithm is of the key's own family; otherwise None, and verifying fails.
    """
    oid = request.signature_algorithm_oid.dotted_string
    if digest is None:
        return None
    if isinstance(public_key, rsa.RSAPublicKey) and oid.startswith(_PKCS1_ARC) and oid != "1.2.840.113549.1.1.10":
        return padding.PKCS1v15()
    if isinstance(public_key, ec.EllipticCurvePublicKey) and oid.startswith(_ECDSA_ARC):
        return ec.ECDSA(digest)
    return None


def _signature_hash(request: x509.CertificateSigningRequest) -> str | None:
    """The signature's hash; MD2 and MD4, which nothing can check any more, are refused here as weak_hash."""
    oid = request.signature_algorithm_oid.dotted_string
    if oid in _UNCHECKABLE_HASHES:
        violations.raise_for(key_rules.check_csr_hash(_UNCHECKABLE_HASHES[oid]))
    try:
        algorithm = request.signature_hash_algorithm
    except _DECODE_ERRORS as exc:
        raise _invalid(f"signature algorithm {oid} is not supported") from exc
    return algorithm.name if algorithm is not None else None


def _subject(request: x509.CertificateSigningRequest):
    try:
        subject = request.subject
    except _DECODE_ERRORS as exc:
        raise _invalid("its subject does not decode") from exc
    try:
        return names.from_name(subject)
    except ValueError as exc:  # names.from_name's own account of what does not fit a DistinguishedName
        raise _invalid(str(exc)) from exc


def _extensions(request: x509.CertificateSigningRequest) -> x509.Extensions:
    try:
        return request.extensions
    except (*_DECODE_ERRORS, x509.DuplicateExtension) as exc:  # DuplicateExtension is no ValueError
        raise _invalid("its extension request cannot be read (an extension is repeated or does not decode)") from exc


def _sans(request: x509.CertificateSigningRequest) -> SubjectAltNames:
    try:
        extension = _extensions(request).get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return SubjectAltNames()
    try:
        return names.from_general_names(extension.value)
    except ValueError as exc:  # names.from_general_names' own account: a kind of name this service does not issue
        raise _invalid(str(exc)) from exc
