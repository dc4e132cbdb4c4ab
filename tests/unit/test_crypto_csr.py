"""CryptographyPki.parse_csr: every family, weak-but-describable keys, refusals by rule, and fuzzing."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import traceback
from datetime import datetime, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from domain.certspec import CertificateSpec, DistinguishedName, SubjectAltNames
from domain.errors import DomainError
from domain.violations import PolicyViolation
from infra.crypto import CryptographyPki, KeyPair, der

pki = CryptographyPki()


@functools.cache
def key(algorithm: str) -> KeyPair:
    return pki.generate_key(algorithm)


@contextlib.contextmanager
def refused(code: str, field: str | None = None):
    """A DomainError with this rule code (and field, if given)."""
    with pytest.raises(DomainError) as info:
        yield info
    assert info.value.code == code, info.value.detail
    if field is not None:
        assert info.value.field == field


def csr(private_key, *, algorithm=hashes.SHA256(), name=None, sans=None, extra=()) -> x509.CertificateSigningRequest:
    name = name if name is not None else x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
                              x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
                              x509.NameAttribute(NameOID.COMMON_NAME, "node1.example")])
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    for extension in extra:
        builder = builder.add_extension(extension, critical=False)
    needs_hash = isinstance(private_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | dsa.DSAPrivateKey)
    return builder.sign(private_key, algorithm if needs_hash else None)


CSR_FAMILIES = {"rsa-3072": 3072, "ecdsa-p384": 384, "ed25519": 256, "ed448": 448, "ml-dsa-65": None}


@pytest.mark.parametrize("algorithm", CSR_FAMILIES)
@pytest.mark.parametrize("encoding", [serialization.Encoding.PEM, serialization.Encoding.DER])
def test_good_csrs_parse(algorithm, encoding):
    request = csr(key(algorithm).primary, sans=[x509.DNSName("node1.example"),
                                                x509.IPAddress(ipaddress.ip_address("10.1.2.3"))],
                  extra=[x509.BasicConstraints(ca=True, path_length=None)])
    facts, keys = pki.parse_csr(request.public_bytes(encoding))
    assert facts.algorithm == algorithm and facts.key_bits == CSR_FAMILIES[algorithm]
    assert facts.subject == DistinguishedName(common_name="node1.example", organization="Example", country="DE")
    assert facts.sans == SubjectAltNames(dns=("node1.example",), ip=("10.1.2.3",))
    assert facts.signature_hash == ("sha256" if algorithm.startswith(("rsa", "ecdsa")) else None)
    assert facts.public_key_der == keys.primary == pki.public_keys(key(algorithm)).primary
    assert facts.public_key_sha256 == hashlib.sha256(keys.primary).hexdigest()
    assert facts.requested_extensions == ("2.5.29.17", "2.5.29.19")
    assert facts.rsa_exponent == (65537 if algorithm.startswith("rsa") else None)
    assert keys.alternative is None


def _hand_signed_csr(private_key, oid: str, sign, *, null_parameters: bool, info: bytes | None = None) -> bytes:
    # cryptography 50 no longer signs with SHA-1 or MD5, so sign the CertificationRequestInfo by hand.
    info = info if info is not None else csr(private_key).tbs_certrequest_bytes
    parameters = [der.encode_tlv(der.NULL, b"")] if null_parameters else []
    return der.sequence(info, der.sequence(der.encode_oid(oid), *parameters), der.encode_bit_string(sign(info)))


def _sha1_rsa_csr(private_key: rsa.RSAPrivateKey) -> bytes:
    return _hand_signed_csr(private_key, "1.2.840.113549.1.1.5",
                            lambda info: private_key.sign(info, padding.PKCS1v15(), hashes.SHA1()),
                            null_parameters=True)


def _weak_csr(kind: str) -> bytes:
    """A correctly self-signed request over a broken hash, as `openssl req -sha1` / `-md5` makes them."""
    if kind == "ecdsa-with-SHA1":
        private = key("ecdsa-p256").primary
        return _hand_signed_csr(private, "1.2.840.10045.4.1", lambda info: private.sign(info, ec.ECDSA(hashes.SHA1())),
                                null_parameters=False)
    if kind == "md5WithRSAEncryption":
        private = key("rsa-3072").primary
        return _hand_signed_csr(private, "1.2.840.113549.1.1.4",
                                lambda info: private.sign(info, padding.PKCS1v15(), hashes.MD5()), null_parameters=True)
    private = dsa.generate_private_key(2048)
    return _hand_signed_csr(private, "1.2.840.10040.4.3", lambda info: private.sign(info, hashes.SHA1()),
                            null_parameters=False)


def test_weak_but_recognisable_csrs_are_described_not_refused():
    facts, _ = pki.parse_csr(_sha1_rsa_csr(rsa.generate_private_key(65537, 2048)))
    assert (facts.algorithm, facts.key_bits, facts.signature_hash) == ("rsa-2048", 2048, "sha1")
    facts, _ = pki.parse_csr(csr(ec.generate_private_key(ec.SECP256K1())).public_bytes(serialization.Encoding.DER))
    assert (facts.algorithm, facts.key_bits) == ("ecdsa-secp256k1", 256)
    facts, _ = pki.parse_csr(csr(dsa.generate_private_key(2048)).public_bytes(serialization.Encoding.DER))
    assert (facts.algorithm, facts.key_bits) == ("dsa-2048", 2048)


@pytest.mark.parametrize("kind, algorithm, hash_name", [("ecdsa-with-SHA1", "ecdsa-p256", "sha1"),
                                                        ("md5WithRSAEncryption", "rsa-3072", "md5"),
                                                        ("dsa-with-sha1", "dsa-2048", "sha1")])
def test_weak_hash_csrs_of_every_family_are_checked_and_reported_for_policy_to_refuse(kind, algorithm, hash_name):
    data = _weak_csr(kind)
    facts, _ = pki.parse_csr(data)
    assert (facts.algorithm, facts.signature_hash) == (algorithm, hash_name)
    tampered = data.replace(b"node1.example", b"node2.example")  # still proof of possession, or nothing
    with refused("csr_signature_invalid", "csr") as info:
        pki.parse_csr(tampered)
    assert "does not verify" in info.value.detail


@pytest.mark.parametrize("oid, hash_name", [("1.2.840.113549.1.1.2", "md2"), ("1.2.840.113549.1.1.3", "md4")])
def test_hashes_too_broken_to_check_are_refused_as_weak_hash(oid, hash_name):
    data = _hand_signed_csr(key("rsa-3072").primary, oid, lambda info: b"\x01" * 384, null_parameters=True)
    with pytest.raises(PolicyViolation) as info:
        pki.parse_csr(data)
    assert [(v.field, v.rule) for v in info.value.violations] == [("csr", "weak_hash")]
    assert hash_name in info.value.detail


def test_a_signature_algorithm_of_another_key_family_is_refused_in_the_services_words():
    private = key("ecdsa-p256").primary  # an ECDSA signature labelled sha256WithRSAEncryption
    data = _hand_signed_csr(private, "1.2.840.113549.1.1.11",
                            lambda info: private.sign(info, ec.ECDSA(hashes.SHA256())), null_parameters=True)
    with refused("csr_signature_invalid", "csr") as info:
        pki.parse_csr(data)
    assert "does not fit its key" in info.value.detail and "Padding" not in info.value.detail


def test_an_rsa_csr_reports_its_public_exponent_for_policy():
    facts, _ = pki.parse_csr(csr(rsa.generate_private_key(3, 3072)).public_bytes(serialization.Encoding.DER))
    assert (facts.algorithm, facts.key_bits, facts.rsa_exponent) == ("rsa-3072", 3072, 3)


@pytest.mark.parametrize("algorithm", ["ecdsa-p384", "ed25519", "ml-dsa-65"])
def test_csr_with_a_broken_signature_is_refused(algorithm):
    data = csr(key(algorithm).primary).public_bytes(serialization.Encoding.DER)
    tampered = data.replace(b"node1.example", b"node2.example")
    with refused("csr_signature_invalid", "csr"):
        pki.parse_csr(tampered)


def test_sha1_csr_with_a_broken_signature_is_still_refused():
    data = _sha1_rsa_csr(key("rsa-3072").primary)
    with refused("csr_signature_invalid", "csr"):
        pki.parse_csr(data.replace(b"node1.example", b"node2.example"))


def test_empty_subject_is_none():
    facts, _ = pki.parse_csr(csr(key("ed25519").primary, name=x509.Name([]),
                                 sans=[x509.DNSName("a.example")]).public_bytes(serialization.Encoding.DER))
    assert facts.subject is None and facts.sans.dns == ("a.example",)


@pytest.mark.parametrize("attributes, named", [
    ([(NameOID.COMMON_NAME, "a"), (NameOID.COMMON_NAME, "b")], "more than one common_name"),
    ([(NameOID.COMMON_NAME, "a"), (NameOID.SERIAL_NUMBER, "42")], "serialNumber"),
    ([(NameOID.COMMON_NAME, "a"), (x509.ObjectIdentifier("1.2.3.4"), "x")], "1.2.3.4"),
    ([(NameOID.ORGANIZATION_NAME, "Example")], "no common name"),
])
def test_subjects_outside_distinguished_name_are_refused_by_name(attributes, named):
    name = x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])
    with refused("invalid_csr", "csr") as info:
        pki.parse_csr(csr(key("ed25519").primary, name=name).public_bytes(serialization.Encoding.DER))
    assert named in info.value.detail


def test_unsupported_san_kinds_are_refused():
    directory = x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
    with refused("invalid_csr", "csr") as info:
        pki.parse_csr(csr(key("ed25519").primary, sans=[directory]).public_bytes(serialization.Encoding.DER))
    assert "DirectoryName" in info.value.detail


@functools.cache
def _good_csr() -> bytes:
    """One fixed request: ECDSA signatures vary in length, and hypothesis needs the same bytes every run."""
    return csr(key("ecdsa-p256").primary).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("make", [
    lambda pem: b"",
    lambda pem: b"hello",
    lambda pem: b"junk\n" + pem,
    lambda pem: pem + b"junk",
    lambda pem: pem + pem,
    lambda pem: pem.replace(b"CERTIFICATE REQUEST", b"CERTIFICATE"),
    lambda pem: pem.replace(b"-----END CERTIFICATE REQUEST", b"-----END NEW CERTIFICATE REQUEST"),
    lambda pem: pem[:40] + b"!" + pem[41:],
    lambda pem: x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER) + b"\x00",
    lambda pem: x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)[:-1],
    lambda pem: b"0" * 300_000,
])
def test_garbage_and_pem_with_junk_are_invalid_csrs(make):
    with refused("invalid_csr", "csr"):
        pki.parse_csr(make(_good_csr()))


def test_a_certificate_is_not_a_csr():
    handle = key("ed25519")
    spec = CertificateSpec(subject=DistinguishedName(common_name="root"), serial=1, is_ca=True,
                           not_before=datetime(2026, 1, 1, tzinfo=timezone.utc),
                           not_after=datetime(2027, 1, 1, tzinfo=timezone.utc))
    root = pki.sign_certificate(spec, pki.public_keys(handle), handle, None)
    with refused("invalid_csr", "csr"):
        pki.parse_csr(root)


def _repeated_extension_csr() -> bytes:
    private = key("ed25519").primary
    twins = [x509.UnrecognizedExtension(x509.ObjectIdentifier(f"1.2.3.{i}"), b"\x05\x00") for i in (4, 5)]
    info = csr(private, extra=twins).tbs_certrequest_bytes
    info = info.replace(der.encode_oid("1.2.3.5"), der.encode_oid("1.2.3.4"))
    return _hand_signed_csr(private, "1.3.101.112", private.sign, null_parameters=False, info=info)


_OWN_MESSAGES = ("infra/crypto/der.py", "infra/crypto/names.py")  # their ValueErrors describe the request


def _no_library_text(exc: DomainError) -> None:
    """A refusal's detail never carries the text of a library exception behind it (binascii, cryptography)."""
    cause = exc.__cause__
    while cause is not None:
        raised_in = traceback.extract_tb(cause.__traceback__)[-1].filename if cause.__traceback__ else ""
        text = str(cause)
        if len(text) > 3 and not raised_in.endswith(_OWN_MESSAGES):
            assert text not in exc.detail, (type(cause), raised_in, exc.detail)
        cause = cause.__cause__


def _only_csr_refusals(data: bytes) -> None:
    try:
        pki.parse_csr(data)
    except PolicyViolation as exc:
        assert [(v.field, v.rule) for v in exc.violations] == [("csr", "weak_hash")]
    except DomainError as exc:
        assert exc.field == "csr" and exc.code in {"invalid_csr", "csr_signature_invalid"}
        _no_library_text(exc)


@pytest.mark.parametrize("data", [
    b"-----BEGIN CERTIFICATE REQUEST-----\nAAA=A\n-----END CERTIFICATE REQUEST-----\n",  # binascii: padding
    der.sequence(der.encode_tlv(0x02, b"\x01")),  # DER, but not a CertificationRequest
    _hand_signed_csr(key("ecdsa-p256").primary, "1.2.840.113549.1.1.4", lambda info: b"\x00" * 64,
                     null_parameters=True),  # an EC key under md5WithRSAEncryption
    _hand_signed_csr(key("ecdsa-p256").primary, "1.2.3.4", lambda info: b"\x00" * 64, null_parameters=False),
    _repeated_extension_csr(),
], ids=["bad-base64", "not-a-csr", "ec-key-md5-rsa", "unknown-signature-oid", "repeated-extension"])
def test_refusals_of_what_the_library_cannot_read_carry_no_library_text(data):
    with pytest.raises(DomainError) as info:
        pki.parse_csr(data)
    assert info.value.field == "csr"
    _no_library_text(info.value)


@hsettings(max_examples=400)
@given(st.binary(max_size=400))
def test_random_bytes_never_raise_anything_but_domain_error(data):
    _only_csr_refusals(data)


@hsettings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_csrs_never_raise_anything_but_domain_error(data):
    good = x509.load_pem_x509_csr(_good_csr()).public_bytes(serialization.Encoding.DER)
    mutated = bytearray(good)
    for _ in range(data.draw(st.integers(1, 4))):
        mutated[data.draw(st.integers(0, len(mutated) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    _only_csr_refusals(bytes(mutated[:cut]))
