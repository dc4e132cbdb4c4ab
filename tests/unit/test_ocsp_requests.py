"""infra.crypto.revocation: reading OCSP requests; a nonce must be 1-32 octets (RFC 8954), anything unreadable is a
malformed request (a DomainError the responder answers as malformedRequest), never another exception."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from hypothesis import example, given
from hypothesis import strategies as st

from domain.errors import DomainError
from infra.crypto.revocation import NONCE_OCTETS, CryptographyRevocation

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
KEY = ec.generate_private_key(ec.SECP256R1())


def _certificate(name: str, issuer: str, serial: int) -> x509.Certificate:
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(KEY.public_key()).serial_number(serial)
            .not_valid_before(NOW).not_valid_after(NOW + timedelta(days=1)).sign(KEY, hashes.SHA256()))


ISSUER = _certificate("Acme CA", "Acme CA", 1)
LEAF = _certificate("leaf.acme.example", "Acme CA", 4242)


def request(nonce: bytes | None = None) -> bytes:
    """A request as clients build it, with cryptography's OCSPRequestBuilder and (maybe) a nonce extension."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(LEAF, ISSUER, hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("size", [1, 16, 32])
def test_a_nonce_of_1_to_32_octets_is_read(size):
    question = CryptographyRevocation().parse_ocsp_request(request(b"\x5a" * size))
    assert question.nonce == b"\x5a" * size and question.serial == 4242


def test_a_request_without_a_nonce_is_read():
    assert CryptographyRevocation().parse_ocsp_request(request()).nonce is None


@pytest.mark.parametrize("size", [0, 33, 200])
def test_an_empty_or_longer_nonce_is_a_malformed_request(size):
    """The responder echoed a 200-octet nonce into its signed answer; RFC 8954 2.1 says malformedRequest."""
    with pytest.raises(DomainError) as refused:
        CryptographyRevocation().parse_ocsp_request(request(b"\x00" * size))
    assert refused.value.code == "malformed_ocsp_request" and f"{size} octets" in refused.value.detail


@given(nonce=st.binary(max_size=80))
def test_a_nonce_is_read_exactly_when_rfc_8954_allows_its_length(nonce):
    allowed = NONCE_OCTETS[0] <= len(nonce) <= NONCE_OCTETS[1]
    try:
        question = CryptographyRevocation().parse_ocsp_request(request(nonce))
    except DomainError:
        assert not allowed
    else:
        assert allowed and question.nonce == nonce


@given(data=st.binary(max_size=200), cut=st.integers(0, 200))
@example(data=b"", cut=0)
def test_any_bytes_are_a_question_or_a_malformed_request(data, cut):
    """Whatever arrives (noise, or a real request cut short or with noise appended) never raises anything else."""
    for candidate in (data, request(b"n" * 8)[:cut] + data):
        try:
            CryptographyRevocation().parse_ocsp_request(candidate)
        except DomainError as refused:
            assert refused.code == "malformed_ocsp_request"
