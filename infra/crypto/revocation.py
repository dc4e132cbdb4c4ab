"""CryptographyRevocation: the RevocationCrypto port (CRL signing, OCSP requests and responses) on pyca/cryptography."""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp

from commands.ports import OcspAnswer, OcspQuestion
from domain.algorithms import SIGNATURE_HASH
from domain.crl_publication import SignedCrl
from domain.errors import DomainError
from domain.revocation import REASONS, RevocationRecorded
from infra.crypto import der, keys, oqs
from infra.crypto.keys import KeyPair

log = logging.getLogger(__name__)
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha1": hashes.SHA1, "sha256": hashes.SHA256,
                                                  "sha384": hashes.SHA384, "sha512": hashes.SHA512}
_FAILURES = {"malformed_request": ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
             "internal_error": ocsp.OCSPResponseStatus.INTERNAL_ERROR,
             "try_later": ocsp.OCSPResponseStatus.TRY_LATER,
             "unauthorized": ocsp.OCSPResponseStatus.UNAUTHORIZED}
NONCE_OCTETS = (1, 32)  # RFC 8954 2.1: Nonce ::= OCTET STRING(SIZE(1..32)); longer or empty is malformedRequest
_STATUS = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
           "unknown": ocsp.OCSPCertStatus.UNKNOWN}


def _malformed(why: str) -> DomainError:
    return DomainError("malformed_ocsp_request", f"not an OCSP request this responder can answer: {why}",
                       field="request")


class CryptographyRevocation:
    """Implements ``commands.ports.RevocationCrypto``; stateless (each CRL entry is encoded once, in a module cache)."""

    def sign_crl(self, entries: Sequence[RevocationRecorded], *, issuer_key: Any, issuer_certificate: bytes,
                 number: int, this_update: datetime, next_update: datetime) -> bytes:
        pair = _pair(issuer_key)
        issuer = x509.load_der_x509_certificate(issuer_certificate)
        # Built with every entry at once: each add_revoked_certificate copies the list so far, which made a CRL
        # of n entries cost O(n^2) (30,000 entries: 905 ms against 199 ms). Long ones are spliced (SPLICE_FROM).
        spliced = len(entries) >= SPLICE_FROM and isinstance(pair.primary, _SPLICE_KEYS)
        builder = (x509.CertificateRevocationListBuilder(
                       revoked_certificates=[] if spliced else [_revoked(entry) for entry in entries])
                   .issuer_name(issuer.subject)
                   .last_update(this_update.astimezone(UTC))
                   .next_update(next_update.astimezone(UTC))
                   .add_extension(_authority_key_identifier(issuer), critical=False)
                   .add_extension(x509.CRLNumber(number), critical=False))
        signed = builder.sign(pair.primary, _hash_for(pair))
        if not spliced:
            return signed.public_bytes(serialization.Encoding.DER)
        return with_entries(signed, [_entry_der(entry) for entry in entries], pair.primary, issuer.public_key())

    def read_crl(self, data: bytes, issuer_certificate: bytes) -> SignedCrl:
        """A CRL signed elsewhere (an offline key's ceremony), checked: it decodes, names the CA certificate's
        subject as its issuer, and verifies with that certificate's key. Refusals name ``crl_pem`` and the rule."""
        issuer = x509.load_der_x509_certificate(issuer_certificate)
        try:
            crl = x509.load_der_x509_crl(data)
            reasons: dict[str, str] = {}
            for entry in crl:
                serial_hex = format(entry.serial_number, "x")
                if serial_hex in reasons:
                    raise _bad_crl("crl_invalid", f"the CRL lists serial {serial_hex} twice")
                try:
                    reasons[serial_hex] = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
                except x509.ExtensionNotFound:
                    reasons[serial_hex] = "unspecified"  # RFC 5280 5.3.1: unspecified SHOULD be absent
            number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
            this_update, next_update = crl.last_update_utc, crl.next_update_utc
        except x509.ExtensionNotFound:
            raise _bad_crl("crl_number_missing", "the CRL has no CRL number (RFC 5280 5.2.3 requires one)") from None
        except ValueError:
            raise _bad_crl("crl_invalid", "not a DER CRL (RFC 5280 5.1), or one with a malformed entry or "
                           "extension") from None
        if crl.issuer != issuer.subject:
            raise _bad_crl("crl_issuer_mismatch", f"the CRL's issuer is {crl.issuer.rfc4514_string()}, not the CA's "
                           f"subject {issuer.subject.rfc4514_string()}")
        try:
            valid = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
        except (TypeError, ValueError, UnsupportedAlgorithm):
            valid = False
        if not valid:
            raise _bad_crl("crl_signature_invalid", "the CRL's signature does not verify with the CA's key")
        return SignedCrl(crl_number=number, this_update=this_update, next_update=next_update, reasons=reasons,
                         signer_fingerprint=hashlib.sha256(issuer_certificate).hexdigest(),
                         sha256=hashlib.sha256(data).hexdigest())

    def parse_ocsp_request(self, data: bytes) -> OcspQuestion:
        try:
            request = ocsp.load_der_ocsp_request(data)
            algorithm = request.hash_algorithm.name
            question = OcspQuestion(hash_algorithm=algorithm, issuer_name_hash=request.issuer_name_hash,
                                    issuer_key_hash=request.issuer_key_hash, serial=request.serial_number,
                                    nonce=_nonce(request))
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            log.debug("OCSP request does not decode: %s", exc)
            raise _malformed("it does not decode as a DER OCSPRequest with one CertID") from exc
        if algorithm not in _HASHES:
            raise _malformed(f"CertID hash {algorithm} is not supported")
        if question.nonce is not None and not NONCE_OCTETS[0] <= len(question.nonce) <= NONCE_OCTETS[1]:
            # echoed into a signed response: a long one would have the responder sign what the client chose
            raise _malformed(f"the nonce is {len(question.nonce)} octets; RFC 8954 allows {NONCE_OCTETS[0]} to "
                             f"{NONCE_OCTETS[1]}")
        return question

    def issuer_hashes(self, issuer_certificate: bytes, hash_algorithm: str) -> tuple[bytes, bytes]:
        """RFC 6960 CertID issuerNameHash and issuerKeyHash: the CA's subject DN, and its subjectPublicKey bits."""
        issuer = x509.load_der_x509_certificate(issuer_certificate)
        spki = der.children(der.parse(issuer.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)))
        return (_digest(hash_algorithm, issuer.subject.public_bytes()),
                _digest(hash_algorithm, der.decode_bit_string(spki[1])))

    def ocsp_response(self, question: OcspQuestion, answer: OcspAnswer, *, signer_key: Any,
                      signer_certificate: bytes, this_update: datetime, next_update: datetime) -> bytes:
        pair = _pair(signer_key)
        signer = x509.load_der_x509_certificate(signer_certificate)
        revoked = answer.status == "revoked"
        reason = answer.reason if revoked and answer.reason not in (None, "unspecified") else None
        builder = (ocsp.OCSPResponseBuilder()
                   .add_response_by_hash(
                       issuer_name_hash=question.issuer_name_hash, issuer_key_hash=question.issuer_key_hash,
                       serial_number=question.serial, algorithm=_HASHES[question.hash_algorithm](),
                       cert_status=_STATUS[answer.status], this_update=this_update.astimezone(UTC),
                       next_update=next_update.astimezone(UTC),
                       revocation_time=answer.revoked_at.astimezone(UTC) if revoked and answer.revoked_at else None,
                       revocation_reason=x509.ReasonFlags[reason] if reason else None)
                   .responder_id(ocsp.OCSPResponderEncoding.HASH, signer)
                   .certificates([signer]))
        if question.nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(question.nonce), critical=False)
        return builder.sign(pair.primary, _hash_for(pair)).public_bytes(serialization.Encoding.DER)

    def ocsp_failure(self, status: str) -> bytes:
        return ocsp.OCSPResponseBuilder.build_unsuccessful(_FAILURES[status]).public_bytes(
            serialization.Encoding.DER)


def _bad_crl(rule: str, why: str) -> DomainError:
    return DomainError(rule, why, field="crl_pem")


def _digest(algorithm: str, data: bytes) -> bytes:
    digest = hashes.Hash(_HASHES[algorithm]())
    digest.update(data)
    return digest.finalize()


def _pair(key: Any) -> KeyPair:
    if not isinstance(key, KeyPair):
        raise DomainError("invalid_key_material", "not a key handle made by this engine", field="key")
    if isinstance(key.primary, oqs.OqsKey):
        raise keys.unavailable(key.algorithm, "CRL and OCSP signing with liboqs keys is not implemented")
    return key


def _hash_for(pair: KeyPair) -> hashes.HashAlgorithm | None:
    """The CA's classical signature hash (never below SHA-384); EdDSA and ML-DSA hash internally."""
    name = SIGNATURE_HASH.get(pair.algorithm)
    return _HASHES[name]() if name else None


def _authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


# From this many entries a CRL is written from entries encoded once (``_entry_der``) into the header that
# cryptography signed without them, and signed again. cryptography encodes every entry of every CRL anew, twice
# (signing, then ``public_bytes``): 0.7 us an entry, 2.8 us with a reason (10,000 entries: 7 and 28 ms a CRL).
# Below it the extra signature of the header is not worth saving that.
SPLICE_FROM = 256
_SPLICE_KEYS = (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)
_UTC_TIME, _GENERALIZED_TIME, _ENUMERATED, _EXTENSIONS = 0x17, 0x18, 0x0A, 0xA0
_CRL_REASON, _INVALIDITY_DATE = der.encode_oid("2.5.29.21"), der.encode_oid("2.5.29.24")


def with_entries(header: x509.CertificateRevocationList, entries: Sequence[bytes], key: Any, public_key: Any) -> bytes:
    """``header`` (a CRL cryptography signed with no entries) with ``entries`` (DER, in order) as its
    revokedCertificates, signed again by ``key`` with the header's own algorithm (RFC 5280 5.1); the signature is
    checked with the issuer's ``public_key`` before the CRL is returned (about 1 ms: a CRL that relying parties
    reject would be worse than none)."""
    fields = der.children(der.parse(header.tbs_certlist_bytes))
    # version, signature, issuer, thisUpdate, nextUpdate, then [0] crlExtensions; no revokedCertificates yet
    if len(fields) != 6 or fields[5].tag != _EXTENSIONS or fields[4].tag not in (_UTC_TIME, _GENERALIZED_TIME):
        raise ValueError("not the TBSCertList of a CRL with extensions and no entries")
    before = b"".join(field.encode() for field in fields[:5])
    listed = der.encode_tlv(der.SEQUENCE, b"".join(entries)) if entries else b""
    tbs = der.encode_tlv(der.SEQUENCE, before + listed + fields[5].encode())
    digest = header.signature_hash_algorithm
    signature = key.sign(tbs, *_scheme(key, digest))
    public_key.verify(signature, tbs, *_scheme(public_key, digest))  # raises InvalidSignature
    # the outer signatureAlgorithm is the TBSCertList's own ``signature`` field, byte for byte (RFC 5280 5.1.1.2)
    return der.sequence(tbs, fields[1].encode(), der.encode_bit_string(signature))


def _scheme(key: Any, digest: Any) -> tuple:
    """What follows the data in ``sign`` and ``verify`` as cryptography signs a CRL: ECDSA, RSA PKCS#1 v1.5 (the
    builder's default padding), or nothing (EdDSA)."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return (ec.ECDSA(digest),)
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return (padding.PKCS1v15(), digest)
    return ()


@functools.lru_cache(maxsize=1 << 16)
def _entry_der(entry: RevocationRecorded) -> bytes:
    """One revokedCertificates entry, DER, as cryptography encodes ``_revoked(entry)`` (a property test compares
    them): serial, revocation date (UTCTime from 1950 through 2049, else GeneralizedTime; whole seconds), the reason
    (absent for unspecified) and the invalidity date (always GeneralizedTime). Made once per entry."""
    serial = int(entry.serial_hex, 16)
    parts = [der.encode_tlv(der.INTEGER, serial.to_bytes(serial.bit_length() // 8 + 1, "big")),
             _time(entry.revoked_at)]
    extensions = []
    if entry.reason != "unspecified":
        value = der.encode_tlv(_ENUMERATED, bytes([REASONS[entry.reason]]))
        extensions.append(der.sequence(_CRL_REASON, der.encode_tlv(der.OCTET_STRING, value)))
    if entry.invalidity_date is not None:
        value = _time(entry.invalidity_date, generalized=True)
        extensions.append(der.sequence(_INVALIDITY_DATE, der.encode_tlv(der.OCTET_STRING, value)))
    if extensions:
        parts.append(der.sequence(*extensions))
    return der.sequence(*parts)


def _time(moment: datetime, generalized: bool = False) -> bytes:
    at = moment.astimezone(UTC)
    clock = f"{at.month:02d}{at.day:02d}{at.hour:02d}{at.minute:02d}{at.second:02d}Z"
    if generalized or not 1950 <= at.year < 2050:  # RFC 5280 4.1.2.5
        return der.encode_tlv(_GENERALIZED_TIME, f"{at.year:04d}{clock}".encode())
    return der.encode_tlv(_UTC_TIME, f"{at.year % 100:02d}{clock}".encode())


@functools.lru_cache(maxsize=1 << 16)
def _revoked(entry: RevocationRecorded) -> x509.RevokedCertificate:
    """An entry as cryptography encodes it: made once, since every later CRL of the CA lists it again (an entry
    costs about 5 us to make, a cached one a lookup; about 200 bytes each, so this holds at most some 25 MB)."""
    builder = (x509.RevokedCertificateBuilder()
               .serial_number(int(entry.serial_hex, 16))
               .revocation_date(entry.revoked_at.astimezone(UTC)))
    if entry.reason != "unspecified":  # RFC 5280 5.3.1: reason code unspecified SHOULD be absent
        builder = builder.add_extension(x509.CRLReason(x509.ReasonFlags[entry.reason]), critical=False)
    if entry.invalidity_date is not None:
        builder = builder.add_extension(x509.InvalidityDate(entry.invalidity_date.astimezone(UTC).replace(
            tzinfo=None)), critical=False)
    return builder.build()


def _nonce(request: ocsp.OCSPRequest) -> bytes | None:
    try:
        return request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None
