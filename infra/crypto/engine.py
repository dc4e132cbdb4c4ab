"""CryptographyPki: the PkiCrypto port on pyca/cryptography, with hybrid alternative signatures.

Refusals say what is wrong in this service's words, naming the field: a library's exception text describes its
parser (``ParseError { kind: ShortData ... }``), not the input, and is logged at debug, never put in a problem.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from datetime import datetime, timezone
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID

from commands.ports import PublicKeys
from domain.algorithms import ALGORITHMS
from domain.certspec import (EXTENDED_KEY_USAGES, KEY_USAGES, CaCertificateInfo, CertificateFacts, CertificateSpec,
                             CsrFacts, DistinguishedName, SubjectKeyFacts)
from domain.errors import DomainError
from infra.crypto import csr, hybrid, keys, names, oqs, token_keys
from infra.crypto.keypool import RsaKeyPool
from infra.crypto.keys import KeyPair
from infra.crypto.token_keys import TOKEN_KEY_TYPES, TokenKeys

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha256": hashes.SHA256, "sha384": hashes.SHA384,
                                                  "sha512": hashes.SHA512}
_ALL_KEY_USAGES = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                   "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
_BUILD_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion)
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
                  issuer_certificate: bytes | None) -> _Issuance:
        issuer = _key_pair(issuer_key)
        if spec.not_before.tzinfo is None or spec.not_after.tzinfo is None:
            raise DomainError("invalid_certificate_spec", "validity times must be timezone-aware", field="spec")
        if isinstance(issuer.primary, oqs.OqsKey):
            raise keys.unavailable(issuer.algorithm, "X.509 signing with liboqs keys is not implemented")
        if issuer_certificate:
            issuer_cert, authority = self._checked_issuer(issuer, issuer_certificate)
        else:
            issuer_cert = None
            _check_issuer(issuer, None, subject)
            authority = _authority_key_identifier(issuer, None)
        algorithm = _signature_hash(spec, issuer.primary)
        return _Issuance(spec, subject, issuer, issuer_cert, authority, algorithm)

    def _checked_issuer(self, issuer: KeyPair, certificate: bytes
                        ) -> tuple[x509.Certificate, x509.AuthorityKeyIdentifier]:
        """The issuer certificate, parsed and checked to name ``issuer``'s key, and the AKI it gives; remembered
        for this very key object (the CA key cache hands out one per key), checked again for any other."""
        known = self._issuers.get(certificate)
        if known is not None and known[0]() is issuer:
            return known[1], known[2]
        cert = _load_certificate(certificate, "issuer_certificate")
        _check_issuer(issuer, cert, None)
        authority = _authority_key_identifier(issuer, cert)
        if len(self._issuers) >= self.ISSUERS_CACHED:
            self._issuers.clear()  # a handful of CAs sign here; more than the cache holds is not the hot path
        self._issuers[certificate] = (weakref.ref(issuer), cert, authority)
        return cert, authority

    def certificate_public_keys(self, certificate: bytes) -> tuple[SubjectKeyFacts, PublicKeys]:
        """The subject's key(s) a DER certificate certifies (a renewal with the same key certifies them again), and
        the key's own size and RSA exponent: policy judges the key, not the name its certificate's facts give it."""
        cert = _load_certificate(certificate, "certificate")
        public_key = cert.public_key()
        described = keys.describe_public_key(public_key)
        facts = SubjectKeyFacts(algorithm=_certificate_algorithm(cert, public_key),
                                key_bits=described[1] if described else None,
                                rsa_exponent=keys.rsa_exponent(public_key))
        primary = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return facts, PublicKeys(primary=primary,
                                 alternative=hybrid.unrecognized(cert, hybrid.SUBJECT_ALT_PUBLIC_KEY_INFO))

    def describe(self, certificate: bytes) -> CertificateFacts:
        cert = _load_certificate(certificate, "certificate")
        try:
            public_key = cert.public_key()
        except _BUILD_ERRORS as exc:
            raise keys.unavailable(cert.public_key_algorithm_oid.dotted_string,
                                   "this engine cannot read the certificate's key") from exc
        ski = _extension(cert, x509.SubjectKeyIdentifier) or x509.SubjectKeyIdentifier.from_public_key(public_key)
        return _facts(certificate, serial=cert.serial_number, subject=cert.subject, issuer=cert.issuer,
                      not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                      algorithm=_certificate_algorithm(cert, public_key), public_key=public_key, ski=ski,
                      aki=_extension(cert, x509.AuthorityKeyIdentifier))

    def verify_issued(self, certificate: bytes, issuer_certificate: bytes, field: str = "certificate") -> None:
        cert = _load_certificate(certificate, field)
        issuer = _load_certificate(issuer_certificate, "issuer_certificate")
        _check_chaining(cert, issuer, self_signed=certificate == issuer_certificate, field=field)
        try:
            cert.verify_directly_issued_by(issuer)
        except InvalidSignature as exc:
            raise DomainError("signature_invalid", "the certificate's signature does not verify with its issuer's "
                              "key", field=field) from exc
        except _BUILD_ERRORS as exc:
            log.debug("certificate signature not checkable: %s", exc)
            raise DomainError("signature_invalid", "the certificate's signature cannot be checked: its signature "
                              "algorithm does not fit its issuer's key, or is not supported",
                              field=field) from exc
        hybrid.verify_alternative(cert, issuer, field)


    def describe_ca(self, certificate: bytes) -> CaCertificateInfo:
        """What an outside CA certificate says (offline roots, offline-signed intermediates)."""
        cert = _load_certificate(certificate, "certificate_pem")
        facts = self.describe(certificate)
        try:
            subject_name, constraints_value = cert.subject, _extension(cert, x509.NameConstraints)
        except _BUILD_ERRORS as exc:
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
        constraints = _extension(cert, x509.BasicConstraints)
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


class _Issuance:
    """One certificate being built: the shared inputs of the draft and final builds of a hybrid."""

    def __init__(self, spec: CertificateSpec, subject: PublicKeys, issuer: KeyPair,
                 issuer_cert: x509.Certificate | None, authority: x509.AuthorityKeyIdentifier,
                 algorithm: hashes.HashAlgorithm | None) -> None:
        self.spec, self.subject, self.issuer, self.algorithm = spec, subject, issuer, algorithm
        self.subject_key = _load_public(subject.primary, "subject.primary")
        self.issuer_cert, self.authority = issuer_cert, authority
        # what ``run`` encoded, for ``facts``
        self.subject_name: x509.Name | None = None
        self.issuer_name: x509.Name | None = None
        self.extensions: list[x509.Extension] = []

    def run(self) -> bytes:
        try:
            return self._run()
        except _BUILD_ERRORS as exc:
            log.debug("certificate not built: %s", exc)
            raise DomainError("invalid_certificate_spec", "the certificate cannot be built: a name, key or extension "
                              "it would carry cannot be encoded", field="spec") from exc

    def facts(self, certificate: bytes) -> CertificateFacts | None:
        """``describe(certificate)`` for the certificate ``run`` made, from the objects it encoded: the names,
        the key and the key identifiers it was given, and its times as encoded (whole seconds). None where
        that is not known without reading the certificate (a key outside the catalogue)."""
        described = keys.describe_public_key(self.subject_key)
        if described is None or self.subject_name is None or self.issuer_name is None:
            return None
        alternative = self.subject.alternative
        ski = next(e.value for e in self.extensions if isinstance(e.value, x509.SubjectKeyIdentifier))
        return _facts(certificate, serial=self.spec.serial, subject=self.subject_name, issuer=self.issuer_name,
                      not_before=_encoded_time(self.spec.not_before), not_after=_encoded_time(self.spec.not_after),
                      algorithm=_algorithm(described[0], _load_public(alternative, "subject.alternative")
                                           if alternative is not None else None),
                      public_key=self.subject_key, ski=ski, aki=self.authority)

    def _run(self) -> bytes:
        self.subject_name = names.to_name(self.spec.subject)
        self.issuer_name = self.issuer_cert.subject if self.issuer_cert else self.subject_name
        extensions = self.extensions = _extensions(self.spec, self.subject_key, self.authority)
        if self.subject.alternative is not None:
            _require_ml_dsa(self.subject.alternative, "subject.alternative")
            extensions.append(_unrecognized(hybrid.SUBJECT_ALT_PUBLIC_KEY_INFO, self.subject.alternative))
        alternative = self.issuer.alternative
        if alternative is None:
            return self._build(extensions).public_bytes(serialization.Encoding.DER)
        alt_name = hybrid.ml_dsa_name(alternative.public_key()) or ""
        extensions.append(_unrecognized(hybrid.ALT_SIGNATURE_ALGORITHM, hybrid.algorithm_identifier(alt_name)))
        signed = hybrid.pre_tbs_certificate(self._build(extensions).tbs_certificate_bytes)
        extensions.append(_unrecognized(hybrid.ALT_SIGNATURE_VALUE, hybrid.signature_value(alternative.sign(signed))))
        final = self._build(extensions)
        # The alternative signature is only worth anything if the final TBS is exactly what it covers.
        if hybrid.pre_tbs_certificate(final.tbs_certificate_bytes) != signed:
            raise RuntimeError("final TBSCertificate differs from the PreTBSCertificate that was signed")
        return final.public_bytes(serialization.Encoding.DER)

    def _build(self, extensions: list[x509.Extension]) -> x509.Certificate:
        spec = self.spec
        builder = (x509.CertificateBuilder()
                   .subject_name(self.subject_name)
                   .issuer_name(self.issuer_name)
                   .public_key(self.subject_key)
                   .serial_number(spec.serial)
                   .not_valid_before(spec.not_before.astimezone(timezone.utc))
                   .not_valid_after(spec.not_after.astimezone(timezone.utc)))
        for extension in extensions:
            builder = builder.add_extension(extension.value, critical=extension.critical)
        return builder.sign(self.issuer.primary, self.algorithm)  # type: ignore[arg-type]


def _encoded_time(moment: datetime) -> datetime:
    """A validity time as a certificate holds it: UTC, whole seconds."""
    return moment.astimezone(timezone.utc).replace(microsecond=0)


def _extensions(spec: CertificateSpec, subject_key: Any,
                authority: x509.AuthorityKeyIdentifier) -> list[x509.Extension]:
    """The spec's extensions, in a fixed order; hybrid ones are appended after these."""
    out: list[x509.Extension] = []

    def add(value: x509.ExtensionType, critical: bool = False) -> None:
        out.append(x509.Extension(value.oid, critical, value))

    add(x509.BasicConstraints(ca=spec.is_ca, path_length=spec.path_length if spec.is_ca else None), critical=True)
    if spec.key_usage:
        add(_key_usage(spec.key_usage), critical=True)
    if spec.extended_key_usage:
        add(_extended_key_usage(spec.extended_key_usage))
    if not spec.sans.is_empty():
        add(x509.SubjectAlternativeName(names.to_general_names(spec.sans)))
    if not spec.name_constraints.is_empty():
        add(names.to_name_constraints(spec.name_constraints), critical=True)
    add(x509.SubjectKeyIdentifier.from_public_key(subject_key))
    add(authority)
    if spec.crl_urls:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(u) for u in spec.crl_urls], None, None, None)
        add(x509.CRLDistributionPoints([point]))
    access = [x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(u))
              for u in spec.ocsp_urls]
    access += [x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(u))
               for u in spec.ca_issuer_urls]
    if access:
        add(x509.AuthorityInformationAccess(access))
    if spec.ocsp_no_check:
        add(x509.OCSPNoCheck())
    return out


def _key_usage(usages: frozenset[str]) -> x509.KeyUsage:
    unknown = usages - KEY_USAGES
    if unknown:
        raise DomainError("invalid_certificate_spec", f"unknown key usage {sorted(unknown)}", field="key_usage")
    return x509.KeyUsage(**{name: name in usages for name in _ALL_KEY_USAGES})


def _extended_key_usage(usages: tuple[str, ...]) -> x509.ExtendedKeyUsage:
    unknown = [u for u in usages if u not in EXTENDED_KEY_USAGES]
    if unknown:
        raise DomainError("invalid_certificate_spec", f"unknown extended key usage {unknown}",
                          field="extended_key_usage")
    return x509.ExtendedKeyUsage([x509.ObjectIdentifier(EXTENDED_KEY_USAGES[u]) for u in usages])


def _unrecognized(oid: x509.ObjectIdentifier, value: bytes) -> x509.Extension:
    return x509.Extension(oid, False, x509.UnrecognizedExtension(oid, value))


def _authority_key_identifier(issuer: KeyPair, issuer_cert: x509.Certificate | None) -> x509.AuthorityKeyIdentifier:
    # RFC 5280 4.2.1.1: the AKI repeats the issuer's SKI when it has one, whatever method made it.
    ski = _extension(issuer_cert, x509.SubjectKeyIdentifier) if issuer_cert else None
    if ski is not None:
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.primary.public_key())


def _signature_hash(spec: CertificateSpec, issuer_primary: Any) -> hashes.HashAlgorithm | None:
    hashed = isinstance(issuer_primary, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    if hashed and spec.signature_hash not in _HASHES:
        raise DomainError("invalid_signature_hash", f"an RSA or ECDSA issuer needs a signature hash out of "
                          f"{sorted(_HASHES)}, not {spec.signature_hash!r}", field="signature_hash")
    if not hashed and spec.signature_hash is not None:
        raise DomainError("invalid_signature_hash", "EdDSA and ML-DSA issuers sign without a separate hash",
                          field="signature_hash")
    return _HASHES[spec.signature_hash]() if hashed and spec.signature_hash else None


def _check_issuer(issuer: KeyPair, issuer_cert: x509.Certificate | None, subject: PublicKeys | None) -> None:
    """The issuer key must be the one its certificate names (or, self-signed, the subject's own)."""
    own = PublicKeys(primary=keys.public_spki(issuer.primary),
                     alternative=keys.public_spki(issuer.alternative) if issuer.alternative is not None else None)
    if issuer_cert is None:
        assert subject is not None
        if own.primary != subject.primary or own.alternative not in (None, subject.alternative):
            raise DomainError("issuer_mismatch", "a self-signed certificate must certify the issuer's own key(s)",
                              field="subject")
        return
    named_alternative = hybrid.unrecognized(issuer_cert, hybrid.SUBJECT_ALT_PUBLIC_KEY_INFO)
    if keys.spki(issuer_cert.public_key()) != own.primary or (
            own.alternative is not None and named_alternative != own.alternative):
        raise DomainError("issuer_mismatch", "the issuer key does not belong to the issuer certificate",
                          field="issuer_certificate")


def _check_chaining(cert: x509.Certificate, issuer: x509.Certificate, *, self_signed: bool, field: str) -> None:
    def refuse(detail: str) -> DomainError:
        return DomainError("issuer_mismatch", detail, field=field)

    if cert.issuer != issuer.subject:
        raise refuse("the certificate's issuer is not the issuer certificate's subject")
    aki = _extension(cert, x509.AuthorityKeyIdentifier)
    ski = _extension(issuer, x509.SubjectKeyIdentifier)
    if aki is not None and aki.key_identifier is not None and ski is not None and aki.key_identifier != ski.digest:
        raise refuse("the authority key identifier does not match the issuer's subject key identifier")
    constraints = _extension(issuer, x509.BasicConstraints)
    if not self_signed and (constraints is None or not constraints.ca):
        raise refuse("the issuer certificate is not a CA certificate")


def _facts(certificate: bytes, *, serial: int, subject: x509.Name, issuer: x509.Name, not_before: datetime,
           not_after: datetime, algorithm: str, public_key: Any, ski: x509.SubjectKeyIdentifier,
           aki: x509.AuthorityKeyIdentifier | None) -> CertificateFacts:
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


def _certificate_algorithm(cert: x509.Certificate, public_key: Any) -> str:
    described = keys.describe_public_key(public_key)
    name = described[0] if described else cert.public_key_algorithm_oid.dotted_string
    try:
        alternative = hybrid.alternative_public_key(cert)
    except DomainError:
        return name
    return _algorithm(name, alternative)


def _algorithm(name: str, alternative: Any | None) -> str:
    """The catalogue name of a key, or of the hybrid it makes with an ML-DSA alternative key."""
    alt_name = hybrid.ml_dsa_name(alternative) if alternative is not None else None
    return (keys.hybrid_name(name, alt_name) or name) if alt_name else name


def _extension(cert: x509.Certificate, kind: type) -> Any:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _key_pair(key: Any) -> KeyPair:
    if not isinstance(key, KeyPair):
        raise DomainError("invalid_key_material", "not a key handle made by this engine", field="key")
    return key


def _load_certificate(data: bytes, field: str) -> x509.Certificate:
    try:
        cert = x509.load_der_x509_certificate(data)
        cert.extensions  # noqa: B018 - decoded lazily; surface a malformed extension here, as invalid input
        return cert
    except _BUILD_ERRORS as exc:
        log.debug("%s does not decode: %s", field, exc)
        raise DomainError("invalid_certificate", "not an X.509 certificate: its DER encoding does not decode",
                          field=field) from exc


def _load_public(spki: bytes, field: str) -> Any:
    try:
        return serialization.load_der_public_key(spki)
    except _BUILD_ERRORS as exc:
        log.debug("%s does not load: %s", field, exc)
        raise DomainError("invalid_key_material", f"{field} is not a DER SubjectPublicKeyInfo of a supported key type",
                          field=field) from exc


def _require_ml_dsa(spki: bytes, field: str) -> None:
    if hybrid.ml_dsa_name(_load_public(spki, field)) is None:
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
    _require_ml_dsa(value.value, "csr")
    return value.value


def algorithm_of(public: PublicKeys) -> str | None:
    """The catalogue name of a subject's key(s): a hybrid name when an ML-DSA half is present."""
    described = keys.describe_public_key(_load_public(public.primary, "public_key"))
    if described is None:
        return None
    if public.alternative is None:
        return described[0]
    return keys.hybrid_name(described[0], hybrid.ml_dsa_name(_load_public(public.alternative, "public_key")) or "")
