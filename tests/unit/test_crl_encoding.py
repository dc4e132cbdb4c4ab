"""infra.crypto.revocation: CRLs written from entries encoded once are the bytes cryptography writes, and verify."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings as hsettings, strategies as st

from domain.revocation import REASONS, RevocationRecorded
from infra.crypto import der, revocation
from infra.crypto.keys import KeyPair

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Acme Issuing CA")])
# (key, hash) as the engine's CAs sign: ECDSA and RSA with a hash, EdDSA without
KEYS = {"ecdsa-p384": (ec.generate_private_key(ec.SECP384R1()), hashes.SHA384()),
        "rsa-2048": (rsa.generate_private_key(public_exponent=65537, key_size=2048), hashes.SHA256()),
        "ed25519": (ed25519.Ed25519PrivateKey.generate(), None),
        "ed448": (ed448.Ed448PrivateKey.generate(), None)}

_ENTRY = st.builds(
    lambda serial, reason, revoked_at, invalid: RevocationRecorded(
        serial_hex=f"{serial:x}", certificate_id="c", subject_ca_id=None, reason=reason, revoked_at=revoked_at,
        invalidity_date=invalid, not_after=NOW + timedelta(days=90)),
    st.integers(1, 2**159 - 1), st.sampled_from(list(REASONS)),
    st.datetimes(min_value=datetime(1950, 1, 2), max_value=datetime(2200, 12, 31),  # cryptography: from 1950
                 timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))])),
    st.none() | st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)))


def builder(entries: list[x509.RevokedCertificate]) -> x509.CertificateRevocationListBuilder:
    return (x509.CertificateRevocationListBuilder(revoked_certificates=entries).issuer_name(NAME)
            .last_update(NOW).next_update(NOW + timedelta(days=7)).add_extension(x509.CRLNumber(7), critical=False))


@hsettings(max_examples=150, deadline=None)
@given(entries=st.lists(_ENTRY, max_size=6), algorithm=st.sampled_from(sorted(KEYS)))
def test_a_crl_written_from_encoded_entries_is_the_one_cryptography_writes(entries, algorithm):
    key, digest = KEYS[algorithm]
    reference = builder([revocation._revoked(e) for e in entries]).sign(key, digest)
    ours = revocation.with_entries(builder([]).sign(key, digest), [revocation._entry_der(e) for e in entries], key,
                                   key.public_key())
    tbs, signature_algorithm, _ = der.children(der.parse(ours))
    assert tbs.encode() == reference.tbs_certlist_bytes  # every entry byte for byte: serial, times, extensions
    parsed = x509.load_der_x509_crl(ours)
    assert parsed.signature_algorithm_oid == reference.signature_algorithm_oid
    assert signature_algorithm.encode() == der.children(der.parse(reference.public_bytes(
        serialization.Encoding.DER)))[1].encode()
    assert parsed.is_signature_valid(key.public_key())


def test_a_long_crl_is_spliced_lists_every_entry_and_openssl_verifies_it(tmp_path):
    key, _ = KEYS["ecdsa-p384"]
    issuer = (x509.CertificateBuilder().subject_name(NAME).issuer_name(NAME).public_key(key.public_key())
              .serial_number(1).not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=900))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                           data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                           crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
              .sign(key, hashes.SHA384()))
    reasons = list(REASONS)
    entries = [RevocationRecorded(serial_hex=f"{n * 7919 + 11:x}", certificate_id="c", subject_ca_id=None,
                                  reason=reasons[n % len(reasons)], revoked_at=NOW - timedelta(minutes=n),
                                  invalidity_date=NOW - timedelta(days=1) if n % 3 == 0 else None,
                                  not_after=NOW + timedelta(days=90)) for n in range(revocation.SPLICE_FROM + 44)]
    crl_der = revocation.CryptographyRevocation().sign_crl(
        entries, issuer_key=KeyPair("ecdsa-p384", key), issuer_certificate=issuer.public_bytes(serialization.Encoding.DER),
        number=3, this_update=NOW, next_update=NOW + timedelta(days=7))
    crl = x509.load_der_x509_crl(crl_der)
    assert crl.is_signature_valid(key.public_key()) and len(crl) == len(entries)
    listed = crl.get_revoked_certificate_by_serial_number(int(entries[1].serial_hex, 16))
    assert listed.extensions.get_extension_for_class(x509.CRLReason).value.reason.name == reasons[1]
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 3
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl CLI is not installed")
    (tmp_path / "ca.pem").write_bytes(issuer.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "crl.der").write_bytes(crl_der)
    done = subprocess.run([openssl, "crl", "-inform", "DER", "-in", tmp_path / "crl.der", "-CAfile",
                           tmp_path / "ca.pem", "-noout"], capture_output=True, text=True)
    assert done.returncode == 0 and "verify OK" in done.stdout + done.stderr, done.stdout + done.stderr
