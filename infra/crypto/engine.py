"""CryptographyPki: the PkiCrypto port on pyca/cryptography, with hybrid alternative signatures.

Building a certificate lives in ``issuance``, reading one (and the facts recorded of it) in ``x509_facts``; here,
the port: keys (generated, pooled, on the token, stored), CSRs, signing, describing and verifying certificates.

Refusals say what is wrong in this service's words, naming the field: a library's exception text describes its
parser (``ParseError { kind: ShortData ... }``), not the input, and is logged at debug, never put in a problem.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from commands.ports import PublicKeys
from domain.algorithms import ALGORITHMS
from domain.certspec import (CaCertificateInfo, CertificateFacts, CertificateSpec, CsrFacts, DistinguishedName,
                             SubjectKeyFacts)
from domain.errors import DomainError
from infra.crypto import csr, hybrid, keys, names, oqs, token_keys
from infra.crypto.issuance import Issuance, authority_key_identifier, check_issuer, signature_hash
from infra.crypto.keypool import RsaKeyPool
from infra.crypto.keys import KeyPair
from infra.crypto.token_keys import TOKEN_KEY_TYPES, TokenKeys
from infra.crypto.x509_facts import (BUILD_ERRORS, certificate_algorithm, certificate_facts, extension_value,
                                     load_certificate)

log = logging.getLogger(__name__)


class CryptographyPki:
    """Implements ``commands.ports.PkiCrypto``; stateless but for the optional pool of ready RSA keys and the
    PKCS#11 token of CA keys (``tokens``: none, unless CSM_PKCS11_* name one), so one instance serves every thread."""

    ISSUERS_CACHED = 64

    def __init__(self, rsa_pool: RsaKeyPool | None = None, tokens: TokenKeys | None = None) -> None:
        self.rsa_pool = rsa_pool
        self.tokens = tokens or TokenKeys(None)
        # issuer certificate DER -> (the key checked against it, weakly held, the parsed certificate, its AKI):
        # an online CA signs all day with one key and certificate, and reading and checking them cost 60 µs
        self._issuers: dict[bytes, tuple[weakref.ref, x509.Certificate, x509.AuthorityKeyIdentifier]] = {}

    def available_algorithms(self) -> frozenset[str]:
        built_in = {name for name, spec in ALGORITHMS.items() if spec.provider == "cryptography"}
        return frozenset(built_in) | oqs.available()

    def generate_key(self, algorithm: str) -> KeyPair:
        spec = ALGORITHMS.get(algorithm)
        if self.rsa_pool is not None and spec is not None and spec.family == "rsa" and spec.key_bits:
            ready = self.rsa_pool.take(spec.key_bits)
            if ready is not None:
                return KeyPair(algorithm, ready)
        return keys.generate(algorithm)

    def generate_token_key(self, algorithm: str, label: str) -> KeyPair:
        """A CA key generated on the PKCS#11 token (ECDSA P-256/P-384, RSA-4096), which never leaves it."""
        return KeyPair(algorithm, self.tokens.generate(algorithm, label))

    def private_key_bytes(self, key: Any) -> bytes:
        """What the vault keeps: the key's plaintext form, or, for a key on the token, only its reference."""
        pair = _key_pair(key)
        if isinstance(pair.primary, TOKEN_KEY_TYPES):
            return pair.primary.ref.to_bytes()
        return keys.to_bytes(pair)

    def load_private_key(self, material: bytes) -> KeyPair:
        if token_keys.is_reference(material):
            key = self.tokens.load(material)
            return KeyPair(key.ref.algorithm, key)
        return keys.from_bytes(material)

    def key_storage(self, key: Any) -> str:
        """"hsm" for a key on the PKCS#11 token, "vault" for any other."""
        return "hsm" if isinstance(_key_pair(key).primary, TOKEN_KEY_TYPES) else "vault"

    def close(self) -> None:
        self.tokens.close()

    def public_keys(self, key: Any) -> PublicKeys:
        pair = _key_pair(key)
        alternative = keys.public_spki(pair.alternative) if pair.alternative is not None else None
        return PublicKeys(primary=keys.public_spki(pair.primary), alternative=alternative)

    def parse_csr(self, data: bytes) -> tuple[CsrFacts, PublicKeys]:
        return csr.parse(data)

    def sign_certificate(self, spec: CertificateSpec, subject: PublicKeys, issuer_key: Any,
                         issuer_certificate: bytes | None) -> bytes:
        return self._issuance(spec, subject, issuer_key, issuer_certificate).run()

    def sign_described(self, spec: CertificateSpec, subject: PublicKeys, issuer_key: Any,
                       issuer_certificate: bytes | None) -> tuple[bytes, CertificateFacts]:
        """``sign_certificate`` and what ``describe`` would read back from it, taken from what was encoded
        instead of parsing the certificate again (110 µs of a worker's 1.2-1.5 ms per issuance here)."""
        issuance = self._issuance(spec, subject, issuer_key, issuer_certificate)
        certificate = issuance.run()
        return certificate, issuance.facts(certificate) or self.describe(certificate)

    def _issuance(self, spec: CertificateSpec, subject: PublicKeys, issuer_key: Any,
                  issuer_certificate: bytes | None) -> Issuance:
        issuer = _key_pair(issuer_key)
        if spec.not_before.tzinfo is None or spec.not_after.tzinfo is None:
            raise DomainError("invalid_certificate_spec", "validity times must be timezone-aware", field="spec")
        if isinstance(issuer.primary, oqs.OqsKey):
            raise keys.unavailable(issuer.algorithm, "X.509 signing with liboqs keys is not implemented")
        if issuer_certificate:
            issuer_cert, authority = self._checked_issuer(issuer, issuer_certificate)
        else:
            issuer_cert = None
            check_issuer(issuer, None, subject)
            authority = authority_key_identifier(issuer, None)
        algorithm = signature_hash(spec, issuer.primary)
        return Issuance(spec, subject, issuer, issuer_cert, authority, algorithm)

    def _checked_issuer(self, issuer: KeyPair, certificate: bytes
                        ) -> tuple[x509.Certificate, x509.AuthorityKeyIdentifier]:
        """The issuer certificate, parsed and checked to name ``issuer``'s key, and the AKI it gives; remembered
        for this very key object (the CA key cache hands out one per key), checked again for any other."""
        known = self._issuers.get(certificate)
        if known is not None and known[0]() is issuer:
            return known[1], known[2]
        cert = load_certificate(certificate, "issuer_certificate")
        check_issuer(issuer, cert, None)
        authority = authority_key_identifier(issuer, cert)
        if len(self._issuers) >= self.ISSUERS_CACHED:
            self._issuers.clear()  # a handful of CAs sign here; more than the cache holds is not the hot path
        self._issuers[certificate] = (weakref.ref(issuer), cert, authority)
        return cert, authority

    def certificate_public_keys(self, certificate: bytes) -> tuple[SubjectKeyFacts, PublicKeys]:
        """The subject's key(s) a DER certificate certifies (a renewal with the same key certifies them again), and
        the key's own size and RSA exponent: policy judges the key, not the name its certificate's facts give it."""
        cert = load_certificate(certificate, "certificate")
        public_key = cert.public_key()
        described = keys.describe_public_key(public_key)
        facts = SubjectKeyFacts(algorithm=certificate_algorithm(cert, public_key),
                                key_bits=described[1] if described else None,
                                rsa_exponent=keys.rsa_exponent(public_key))
        primary = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return facts, PublicKeys(primary=primary,
                                 alternative=hybrid.unrecognized(cert, hybrid.SUBJECT_ALT_PUBLIC_KEY_INFO))

    def describe(self, certificate: bytes) -> CertificateFacts:
        cert = load_certificate(certificate, "certificate")
        try:
            public_key = cert.public_key()
        except BUILD_ERRORS as exc:
            raise keys.unavailable(cert.public_key_algorithm_oid.dotted_string,
                                   "this engine cannot read the certificate's key") from exc
        ski = extension_value(cert, x509.SubjectKeyIdentifier) or x509.SubjectKeyIdentifier.from_public_key(public_key)
        return certificate_facts(certificate, serial=cert.serial_number, subject=cert.subject, issuer=cert.issuer,
                                 not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                                 algorithm=certificate_algorithm(cert, public_key), public_key=public_key, ski=ski,
                                 aki=extension_value(cert, x509.AuthorityKeyIdentifier))

    def verify_issued(self, certificate: bytes, issuer_certificate: bytes, field: str = "certificate") -> None:
        cert = load_certificate(certificate, field)
        issuer = load_certificate(issuer_certificate, "issuer_certificate")
        _check_chaining(cert, issuer, self_signed=certificate == issuer_certificate, field=field)
        try:
            cert.verify_directly_issued_by(issuer)
        except InvalidSignature as exc:
            raise DomainError("signature_invalid", "the certificate's signature does not verify with its issuer's "
                              "key", field=field) from exc
        except BUILD_ERRORS as exc:
            log.debug("certificate signature not checkable: %s", exc)
            raise DomainError("signature_invalid", "the certificate's signature cannot be checked: its signature "
                              "algorithm does not fit its issuer's key, or is not supported",
                              field=field) from exc
        hybrid.verify_alternative(cert, issuer, field)


    def describe_ca(self, certificate: bytes) -> CaCertificateInfo:
        """What an outside CA certificate says (offline roots, offline-signed intermediates)."""
        cert = load_certificate(certificate, "certificate_pem")
        facts = self.describe(certificate)
        try:
            subject_name, constraints_value = cert.subject, extension_value(cert, x509.NameConstraints)
        except BUILD_ERRORS as exc:
            log.debug("CA certificate names do not decode: %s", exc)
            raise DomainError("invalid_certificate", "the CA certificate cannot be used: its subject or name "
                              "constraints do not decode", field="certificate_pem") from None
        try:  # a name this service cannot model, or larger than a request may be, is refused, not a crash
            subject = names.from_name(subject_name)
            name_constraints = names.from_name_constraints(constraints_value)
        except ValueError as exc:  # names' own account of what it cannot model
            raise DomainError("invalid_certificate", f"the CA certificate cannot be used: {exc}",
                              field="certificate_pem") from None
        if subject is None:
            raise DomainError("invalid_certificate", "a CA certificate needs a subject", field="certificate_pem")
        public_key = cert.public_key()
        described = keys.describe_public_key(public_key)
        constraints = extension_value(cert, x509.BasicConstraints)
        return CaCertificateInfo(subject=subject, algorithm=facts.algorithm, key_bits=described[1] if described else None,
                                 rsa_exponent=keys.rsa_exponent(public_key),
                                 is_ca=bool(constraints and constraints.ca),
                                 path_length=constraints.path_length if constraints else None,
                                 name_constraints=name_constraints)

    def create_csr(self, subject: DistinguishedName, key: Any) -> bytes:
        """A PKCS#10 request for ``key``; a hybrid key's ML-DSA half rides along as extension 2.5.29.72."""
        pair = _key_pair(key)
        builder = x509.CertificateSigningRequestBuilder().subject_name(names.to_name(subject))
        if pair.alternative is not None:
            builder = builder.add_extension(x509.UnrecognizedExtension(
                hybrid.SUBJECT_ALT_PUBLIC_KEY_INFO, keys.public_spki(pair.alternative)), critical=False)
        digest = hashes.SHA384() if isinstance(pair.primary, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)) else None
        return builder.sign(pair.primary, digest).public_bytes(serialization.Encoding.DER)


def _check_chaining(cert: x509.Certificate, issuer: x509.Certificate, *, self_signed: bool, field: str) -> None:
    def refuse(detail: str) -> DomainError:
        return DomainError("issuer_mismatch", detail, field=field)

    if cert.issuer != issuer.subject:
        raise refuse("the certificate's issuer is not the issuer certificate's subject")
    aki = extension_value(cert, x509.AuthorityKeyIdentifier)
    ski = extension_value(issuer, x509.SubjectKeyIdentifier)
    if aki is not None and aki.key_identifier is not None and ski is not None and aki.key_identifier != ski.digest:
        raise refuse("the authority key identifier does not match the issuer's subject key identifier")
    constraints = extension_value(issuer, x509.BasicConstraints)
    if not self_signed and (constraints is None or not constraints.ca):
        raise refuse("the issuer certificate is not a CA certificate")


def _key_pair(key: Any) -> KeyPair:
    if not isinstance(key, KeyPair):
        raise DomainError("invalid_key_material", "not a key handle made by this engine", field="key")
    return key
