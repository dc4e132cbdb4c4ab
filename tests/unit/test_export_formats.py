"""Export formats: PEM bundles, DER, PKCS#12 and JKS, read back with cryptography and a JKS reader of our own."""

from __future__ import annotations

import datetime
import hashlib
import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, rsa
from cryptography.hazmat.primitives.serialization import pkcs12 as p12
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import DomainError
from infra.export import der_certificate, jks_keystore, jks_truststore, pem_bundle, pkcs12, pkcs12_truststore
from infra.export.formats import der_integer, der_oid
from infra.crypto import keys
from infra.export.bundle import MIN_PASSWORD, preflight, render
from infra.export.jks import modified_utf8

DER = serialization.Encoding.DER
FAST = 1_000  # PBKDF2 rounds for tests that are not about the cost


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key, issuer: str, issuer_key, ca: bool) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    algorithm = None if isinstance(issuer_key, (ed25519.Ed25519PrivateKey, mldsa.MLDSA65PrivateKey)) \
        else hashes.SHA384()
    return builder.sign(issuer_key, algorithm).public_bytes(DER)


KEYS = {
    "rsa": lambda: rsa.generate_private_key(65537, 2048),
    "ec": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
    "ml-dsa-65": mldsa.MLDSA65PrivateKey.generate,
}


def make_chain(kind: str = "ec") -> dict:
    """A root CA, an intermediate and a leaf of ``kind``: the test's own PKI, nobody else's code."""
    root_key, inter_key, leaf_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(
        ec.SECP384R1()), KEYS[kind]()
    root = _cert("Test Root", root_key, "Test Root", root_key, True)
    inter = _cert("Test Issuing CA", inter_key, "Test Root", root_key, True)
    leaf = _cert("node1.example", leaf_key, "Test Issuing CA", inter_key, False)
    pkcs8 = leaf_key.private_bytes(DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return {"leaf": leaf, "chain": [inter, root], "key": pkcs8, "key_object": leaf_key}


@pytest.fixture(scope="module")
def pki() -> dict:
    return make_chain("ec")


def _same_key(a, b) -> bool:
    raw = serialization.PublicFormat.SubjectPublicKeyInfo
    return a.public_key().public_bytes(DER, raw) == b.public_key().public_bytes(DER, raw)


# PEM and DER ---------------------------------------------------------------------------------

def test_pem_bundle_orders_certificate_chain_then_key(pki):
    bundle = pem_bundle(pki["leaf"], pki["chain"], pki["key"], None)
    certs = x509.load_pem_x509_certificates(bundle)
    assert [c.public_bytes(DER) for c in certs] == [pki["leaf"], *pki["chain"]]
    assert bundle.index(b"-----BEGIN PRIVATE KEY-----") > bundle.rindex(b"-----END CERTIFICATE-----")
    key = serialization.load_pem_private_key(bundle[bundle.index(b"-----BEGIN PRIVATE KEY"):], None)
    assert key.private_bytes(DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()) == pki["key"]


def test_a_passphrase_encrypts_the_key_with_pbes2_aes256_and_many_pbkdf2_rounds(pki):
    bundle = pem_bundle(pki["leaf"], pki["chain"], pki["key"], b"correct horse", kdf_rounds=FAST)
    assert b"-----BEGIN PRIVATE KEY-----" not in bundle
    block = bundle[bundle.index(b"-----BEGIN ENCRYPTED PRIVATE KEY"):]
    key = serialization.load_pem_private_key(block, b"correct horse")
    assert _same_key(key, pki["key_object"])
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(block, b"wrong horse")
    assert len(x509.load_pem_x509_certificates(bundle)) == 3  # the certificates still parse around the key


def test_the_encrypted_key_names_pbes2_pbkdf2_sha256_aes256_cbc_and_the_round_count(pki):
    import base64

    bundle = pem_bundle(pki["leaf"], [], pki["key"], b"passphrase")  # the default cost
    body = bundle[bundle.index(b"-----BEGIN ENCRYPTED PRIVATE KEY-----"):].splitlines()[1:-1]
    der = base64.b64decode(b"".join(body))
    for oid in ("1.2.840.113549.1.5.13", "1.2.840.113549.1.5.12", "1.2.840.113549.2.9", "2.16.840.1.101.3.4.1.42"):
        assert der_oid(oid) in der, oid
    assert der_integer(600_000) in der


def test_pem_and_der_refuse_what_they_cannot_honestly_export(pki):
    other = make_chain("ec")
    with pytest.raises(ValueError, match="does not belong to the certificate"):
        pem_bundle(pki["leaf"], [], other["key"], None)
    with pytest.raises(ValueError, match=r"chain_der\[1\] is not a DER X.509 certificate"):
        pem_bundle(pki["leaf"], [pki["chain"][0], b"junk"], None, None)
    with pytest.raises(ValueError, match="no private key"):
        pem_bundle(pki["leaf"], [], None, b"passphrase")
    with pytest.raises(ValueError, match="passphrase must not be empty"):
        pem_bundle(pki["leaf"], [], pki["key"], b"")
    with pytest.raises(ValueError, match="not an unencrypted PKCS#8"):
        pem_bundle(pki["leaf"], [], b"\x30\x00", None)
    assert der_certificate(pki["leaf"]) == pki["leaf"]
    with pytest.raises(ValueError, match="certificate_der is not a DER X.509"):
        der_certificate(pki["leaf"][:-1])


def test_ml_dsa_keys_export_as_pem():
    pq = make_chain("ml-dsa-65")
    bundle = pem_bundle(pq["leaf"], pq["chain"], pq["key"], b"passphrase", kdf_rounds=FAST)
    key = serialization.load_pem_private_key(bundle[bundle.index(b"-----BEGIN ENCRYPTED"):], b"passphrase")
    assert isinstance(key, mldsa.MLDSA65PrivateKey) and _same_key(key, pq["key_object"])


# PKCS#12 -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["rsa", "ec", "ed25519"])
def test_pkcs12_round_trips_key_certificate_chain_and_name(kind):
    pki = make_chain(kind)
    data = pkcs12(pki["leaf"], pki["chain"], pki["key"], b"s3cret-pass", "Node1", kdf_rounds=FAST)
    loaded = p12.load_pkcs12(data, b"s3cret-pass")
    assert _same_key(loaded.key, pki["key_object"])
    assert loaded.cert.certificate.public_bytes(DER) == pki["leaf"] and loaded.cert.friendly_name == b"Node1"
    assert [c.certificate.public_bytes(DER) for c in loaded.additional_certs] == pki["chain"]
    with pytest.raises(ValueError):
        p12.load_pkcs12(data, b"wrong-pass")


def test_pkcs12_without_a_key_and_the_truststore(pki):
    data = pkcs12(pki["leaf"], [], None, "text passphrases work too", "leaf", kdf_rounds=FAST)
    loaded = p12.load_pkcs12(data, b"text passphrases work too")
    assert loaded.key is None and loaded.cert is None  # with no key, readers list the certificate as "additional"
    assert [(c.certificate.public_bytes(DER), c.friendly_name) for c in loaded.additional_certs] == [
        (pki["leaf"], b"leaf")]
    trust = p12.load_pkcs12(pkcs12_truststore(pki["chain"], b"trustpass", ["issuing", "root"], kdf_rounds=FAST),
                            b"trustpass")
    assert trust.key is None and trust.cert is None
    assert [(c.certificate.public_bytes(DER), c.friendly_name) for c in trust.additional_certs] == [
        (pki["chain"][0], b"issuing"), (pki["chain"][1], b"root")]


def test_pkcs12_refusals(pki):
    pq = make_chain("ml-dsa-65")
    with pytest.raises(ValueError, match="MLDSA65PrivateKey.*export this key as PEM"):
        pkcs12(pq["leaf"], pq["chain"], pq["key"], b"passphrase", "pq", kdf_rounds=FAST)
    alone = p12.load_pkcs12(pkcs12(pq["leaf"], [], None, b"passphrase", "pq", kdf_rounds=FAST), b"passphrase")
    assert alone.additional_certs[0].certificate.public_bytes(DER) == pq["leaf"]  # an ML-DSA certificate is fine
    with pytest.raises(ValueError, match="passphrase must not be empty"):
        pkcs12(pki["leaf"], [], pki["key"], b"", "node1")
    with pytest.raises(ValueError, match="friendly_name"):
        pkcs12(pki["leaf"], [], pki["key"], b"passphrase", "")
    with pytest.raises(ValueError, match="distinct"):
        pkcs12_truststore(pki["chain"], b"passphrase", ["Root", "root"])
    with pytest.raises(ValueError, match="at least one"):
        pkcs12_truststore([], b"passphrase")


# JKS, read back by a reader that lives only here -----------------------------------------------

def _read_utf(data: bytes, at: int) -> tuple[str, int]:
    (size,) = struct.unpack_from(">H", data, at)
    raw = data[at + 2:at + 2 + size].replace(b"\xc0\x80", b"\x00")
    return raw.decode("utf-8", "surrogatepass").encode("utf-16", "surrogatepass").decode("utf-16"), at + 2 + size


def _read_cert(data: bytes, at: int) -> tuple[bytes, int]:
    kind, at = _read_utf(data, at)
    assert kind == "X.509"
    (size,) = struct.unpack_from(">I", data, at)
    return data[at + 4:at + 4 + size], at + 4 + size


def _tlv(data: bytes, at: int = 0) -> tuple[int, bytes, int]:
    """One DER element at ``at``: (tag, contents, offset after it)."""
    tag, size, at = data[at], data[at + 1], at + 2
    if size & 0x80:
        count = size & 0x7F
        size, at = int.from_bytes(data[at:at + count], "big"), at + count
    return tag, data[at:at + size], at + size


def _unprotect(protected: bytes, password: bytes) -> bytes:
    """The inverse of Sun's KeyProtector, from its published description, with its SHA-1 check."""
    tag, info, end = _tlv(protected)
    assert tag == 0x30 and end == len(protected)
    tag, algorithm, at = _tlv(info)
    assert tag == 0x30 and algorithm == bytes.fromhex("060a2b060104012a021101010500")  # 1.3.6.1.4.1.42.2.17.1.1, NULL
    tag, blob, at = _tlv(info, at)
    assert tag == 0x04 and at == len(info)
    salt, masked, check = blob[:20], blob[20:-20], blob[-20:]
    stream, block = b"", salt
    while len(stream) < len(masked):
        block = hashlib.sha1(password + block).digest()
        stream += block
    plain = bytes(a ^ b for a, b in zip(masked, stream, strict=False))
    assert hashlib.sha1(password + plain).digest() == check, "wrong key password"
    return plain


def read_jks(data: bytes, password: str, key_password: str | None = None) -> list[dict]:
    secret = password.encode("utf-16-be")
    key_secret = secret if key_password is None else key_password.encode("utf-16-be")
    body, digest = data[:-20], data[-20:]
    assert hashlib.sha1(secret + b"Mighty Aphrodite" + body).digest() == digest, "keystore integrity digest"
    magic, version, count = struct.unpack_from(">III", body, 0)
    assert (magic, version) == (0xFEEDFEED, 2)
    at, entries = 12, []
    for _ in range(count):
        (tag,) = struct.unpack_from(">I", body, at)
        alias, at = _read_utf(body, at + 4)
        (stamp,) = struct.unpack_from(">q", body, at)
        at += 8
        entry = {"tag": tag, "alias": alias, "timestamp_ms": stamp}
        if tag == 1:
            (size,) = struct.unpack_from(">I", body, at)
            entry["key"] = _unprotect(body[at + 4:at + 4 + size], key_secret)
            at += 4 + size
            (length,) = struct.unpack_from(">I", body, at)
            at += 4
            entry["chain"] = []
            for _ in range(length):
                cert, at = _read_cert(body, at)
                entry["chain"].append(cert)
        else:
            assert tag == 2
            entry["certificate"], at = _read_cert(body, at)
        entries.append(entry)
    assert at == len(body), "trailing bytes"
    return entries


@pytest.mark.parametrize("kind", ["rsa", "ec", "ed25519"])
def test_jks_keystore_round_trips(kind):
    pki = make_chain(kind)
    data = jks_keystore(pki["leaf"], pki["chain"], pki["key"], "changeit", "Node1.Example", timestamp_ms=1234567)
    [entry] = read_jks(data, "changeit")
    assert entry == {"tag": 1, "alias": "node1.example", "timestamp_ms": 1234567, "key": pki["key"],
                     "chain": [pki["leaf"], *pki["chain"]]}
    with pytest.raises(AssertionError, match="integrity"):
        read_jks(data, "changeiT")


def test_jks_key_password_may_differ_from_the_store_password(pki):
    data = jks_keystore(pki["leaf"], [], pki["key"], "store-pass", "n", key_password="key-pass")
    with pytest.raises(AssertionError, match="wrong key password"):
        read_jks(data, "store-pass")
    [entry] = read_jks(data, "store-pass", key_password="key-pass")
    assert entry["key"] == pki["key"]


def test_jks_truststore_round_trips(pki):
    data = jks_truststore([("Issuing", pki["chain"][0]), ("root", pki["chain"][1])], "truststore")
    assert [(e["tag"], e["alias"], e["certificate"]) for e in read_jks(data, "truststore")] == [
        (2, "issuing", pki["chain"][0]), (2, "root", pki["chain"][1])]


def test_jks_refusals(pki):
    with pytest.raises(ValueError, match="password must be at least 6 characters"):
        jks_keystore(pki["leaf"], [], pki["key"], "short", "a")
    with pytest.raises(ValueError, match="key_password must be at least 6"):
        jks_keystore(pki["leaf"], [], pki["key"], "long enough", "a", key_password="12345")
    with pytest.raises(ValueError, match="password must be at least 6"):
        jks_truststore([("root", pki["chain"][1])], "")
    pq = make_chain("ml-dsa-65")
    with pytest.raises(ValueError, match="JKS cannot carry a MLDSA65PrivateKey.*export this key as PEM"):
        jks_keystore(pq["leaf"], pq["chain"], pq["key"], "changeit", "pq")
    with pytest.raises(ValueError, match="does not belong"):
        jks_keystore(pki["leaf"], [], make_chain()["key"], "changeit", "a")
    with pytest.raises(ValueError, match="appears twice"):
        jks_truststore([("Root", pki["chain"][1]), ("root", pki["chain"][0])], "changeit")
    for alias in ("", "nœud", "tab\there"):
        with pytest.raises(ValueError, match="printable ASCII"):
            jks_truststore([(alias, pki["chain"][1])], "changeit")
    with pytest.raises(ValueError, match=r"certificates\[0\]"):
        jks_truststore([("root", b"junk")], "changeit")


def test_modified_utf8_matches_java_writeutf():
    assert modified_utf8("ab") == b"\x00\x02ab"
    assert modified_utf8("\0") == b"\x00\x02\xc0\x80"  # NUL is two bytes in Java
    assert modified_utf8("é") == b"\x00\x02\xc3\xa9"
    assert modified_utf8("\U0001F600") == b"\x00\x06\xed\xa0\xbd\xed\xb8\x80"  # surrogates, 3 bytes each


@settings(max_examples=40, deadline=None)
@given(password=st.text(min_size=6, max_size=40),
       alias=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=30))
def test_any_password_and_alias_round_trip(pki, password, alias):
    data = jks_truststore([(alias, pki["chain"][1])], password, timestamp_ms=0)
    [entry] = read_jks(data, password)
    assert entry["alias"] == alias.lower() and entry["certificate"] == pki["chain"][1]


@pytest.mark.parametrize("format_, include_key", [("pem", False), ("pem", True), ("pkcs12", False), ("jks", False),
                                                  ("pkcs12-truststore", False), ("jks-truststore", False)])
def test_every_export_password_has_the_same_minimum(format_, include_key):
    with pytest.raises(DomainError) as refused:
        preflight(format_, "x" * (MIN_PASSWORD - 1), include_key, password_field="--password-file")
    assert (refused.value.code, refused.value.field) == ("password_too_short", "--password-file")
    preflight(format_, "x" * MIN_PASSWORD, include_key)


def test_a_key_is_exported_only_by_formats_that_carry_one():
    for format_ in ("der", "pkcs12-truststore", "jks-truststore"):
        with pytest.raises(DomainError) as refused:
            preflight(format_, "long enough", True, include_key_field="--include-key")
        assert refused.value.field == "--include-key"
    preflight("pem", None, True)  # an unencrypted PEM key, as asked (audited; key:export)
    preflight("der", None, False)


def _rows(chain: dict) -> tuple[dict, list[dict]]:
    """A certificate read-model row and its chain's rows, as bundle.render takes them."""
    def pem_of(der: bytes) -> str:
        return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM).decode()

    row = {"certificate_pem": pem_of(chain["leaf"]), "common_name": "node1.example", "certificate_id": "01"}
    return row, [{"certificate_pem": pem_of(der), "fingerprint": hashlib.sha256(der).hexdigest()}
                 for der in chain["chain"]]


@pytest.mark.parametrize("format_, kind, foreign", [("pkcs12", "ec", True), ("jks", "ec", True),
                                                    ("pem", "ec", True), ("pkcs12", "ml-dsa-65", False),
                                                    ("jks", "ml-dsa-65", False)])
def test_an_export_the_format_cannot_hold_is_refused_in_our_words(format_, kind, foreign):
    """What preflight cannot see (a key that is not the certificate's, a key type a keystore cannot carry when a
    caller skips preflight) is export_refused on field format with our sentence, not the writers' ValueError text
    (which names their arguments, private_key_pkcs8_der, or a library class, MLDSA65PrivateKey)."""
    chain = make_chain(kind)
    key = KEYS[kind]() if foreign else chain["key_object"]
    material = keys.to_bytes(keys.KeyPair("ecdsa-p256" if kind == "ec" else kind, key))
    row, chain_rows = _rows(chain)
    with pytest.raises(DomainError) as refused:
        render(format_, row, chain_rows, material, "long enough")
    assert (refused.value.code, refused.value.field) == ("export_refused", "format")
    assert refused.value.detail == (f"a {format_} export of this certificate cannot be written: its stored key "
                                    f"does not match it, or {format_} cannot hold that kind of key (pem holds any)")
