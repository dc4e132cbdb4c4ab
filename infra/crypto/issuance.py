"""Building one X.509 certificate from a CertificateSpec: the issuer-key checks, the signature hash, the
extensions in their fixed order, and a hybrid issuer's alternative signature over the PreTBSCertificate."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID

from commands.ports import PublicKeys
from domain.certspec import EXTENDED_KEY_USAGES, KEY_USAGES, CertificateFacts, CertificateSpec
from domain.errors import DomainError
from infra.crypto import hybrid, keys, names
from infra.crypto.keys import KeyPair
from infra.crypto.x509_facts import (BUILD_ERRORS, algorithm_name, certificate_facts, extension_value, load_public,
                                     require_ml_dsa)

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha256": hashes.SHA256, "sha384": hashes.SHA384,
                                                  "sha512": hashes.SHA512}
_ALL_KEY_USAGES = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                   "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
log = logging.getLogger(__name__)


class Issuance:
    """One certificate being built: the shared inputs of the draft and final builds of a hybrid."""

    def __init__(self, spec: CertificateSpec, subject: PublicKeys, issuer: KeyPair,
                 issuer_cert: x509.Certificate | None, authority: x509.AuthorityKeyIdentifier,
                 algorithm: hashes.HashAlgorithm | None) -> None:
        self.spec, self.subject, self.issuer, self.algorithm = spec, subject, issuer, algorithm
        self.subject_key = load_public(subject.primary, "subject.primary")
        self.issuer_cert, self.authority = issuer_cert, authority
        # what ``run`` encoded, for ``facts``
        self.subject_name: x509.Name | None = None
        self.issuer_name: x509.Name | None = None
        self.extensions: list[x509.Extension] = []

    def run(self) -> bytes:
        try:
            return self._run()
        except BUILD_ERRORS as exc:
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
        return certificate_facts(certificate, serial=self.spec.serial, subject=self.subject_name,
                                 issuer=self.issuer_name, not_before=_encoded_time(self.spec.not_before),
                                 not_after=_encoded_time(self.spec.not_after),
                                 algorithm=algorithm_name(described[0], load_public(alternative, "subject.alternative")
                                                          if alternative is not None else None),
                                 public_key=self.subject_key, ski=ski, aki=self.authority)

    def _run(self) -> bytes:
        self.subject_name = names.to_name(self.spec.subject)
        self.issuer_name = self.issuer_cert.subject if self.issuer_cert else self.subject_name
        extensions = self.extensions = _extensions(self.spec, self.subject_key, self.authority)
        if self.subject.alternative is not None:
            require_ml_dsa(self.subject.alternative, "subject.alternative")
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


def authority_key_identifier(issuer: KeyPair, issuer_cert: x509.Certificate | None) -> x509.AuthorityKeyIdentifier:
    # RFC 5280 4.2.1.1: the AKI repeats the issuer's SKI when it has one, whatever method made it.
    ski = extension_value(issuer_cert, x509.SubjectKeyIdentifier) if issuer_cert else None
    if ski is not None:
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.primary.public_key())


def signature_hash(spec: CertificateSpec, issuer_primary: Any) -> hashes.HashAlgorithm | None:
    hashed = isinstance(issuer_primary, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    if hashed and spec.signature_hash not in _HASHES:
        raise DomainError("invalid_signature_hash", f"an RSA or ECDSA issuer needs a signature hash out of "
                          f"{sorted(_HASHES)}, not {spec.signature_hash!r}", field="signature_hash")
    if not hashed and spec.signature_hash is not None:
        raise DomainError("invalid_signature_hash", "EdDSA and ML-DSA issuers sign without a separate hash",
                          field="signature_hash")
    return _HASHES[spec.signature_hash]() if hashed and spec.signature_hash else None


def check_issuer(issuer: KeyPair, issuer_cert: x509.Certificate | None, subject: PublicKeys | None) -> None:
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
