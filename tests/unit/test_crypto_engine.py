"""CryptographyPki: keys, chains for every family, hybrid alternative signatures, signing refusals."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
from datetime import datetime, timedelta, timezone

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtensionOID
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from domain.algorithms import ALGORITHMS, SIGNATURE_HASH
from domain.certspec import CertificateSpec, DistinguishedName, NameConstraints, SubjectAltNames
from domain.errors import DomainError
from infra.crypto import CryptographyPki, KeyPair, der, hybrid, oqs, protect, unprotect

pki = CryptographyPki()
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
BUILT_IN = sorted(n for n, a in ALGORITHMS.items() if a.provider == "cryptography")
LIBOQS = sorted(n for n, a in ALGORITHMS.items() if a.provider == "liboqs")


@functools.cache
def key(algorithm: str, index: int = 0) -> KeyPair:
    """Keys are slow to make (RSA above all): one per (algorithm, index) for the whole module."""
    return pki.generate_key(algorithm)


def spec(cn: str, algorithm: str, *, ca: bool, serial: int = 1, **fields) -> CertificateSpec:
    usage = {"key_cert_sign", "crl_sign"} if ca else {"digital_signature"}
    return CertificateSpec(subject=DistinguishedName(common_name=cn, organization="Example", country="DE"),
                           serial=serial, not_before=NOW, not_after=NOW + timedelta(days=90), is_ca=ca,
                           key_usage=frozenset(usage), signature_hash=SIGNATURE_HASH.get(algorithm), **fields)


def chain(root_alg: str, inter_alg: str, leaf_alg: str, tag: str = "") -> tuple[bytes, bytes, bytes]:
    root_key, inter_key, leaf_key = key(root_alg), key(inter_alg, 1), key(leaf_alg, 2)
    root = pki.sign_certificate(spec(f"{tag}root", root_alg, ca=True), pki.public_keys(root_key), root_key, None)
    inter = pki.sign_certificate(spec(f"{tag}inter", root_alg, ca=True, serial=2, path_length=0),
                                 pki.public_keys(inter_key), root_key, root)
    leaf = pki.sign_certificate(spec(f"{tag}leaf", inter_alg, ca=False, serial=3,
                                     sans=SubjectAltNames(dns=("node1.example",))),
                                pki.public_keys(leaf_key), inter_key, inter)
    return root, inter, leaf


@contextlib.contextmanager
def refused(code: str, field: str | None = None):
    """A DomainError with this rule code (and field, if given)."""
    with pytest.raises(DomainError) as info:
        yield info
    assert info.value.code == code, info.value.detail
    if field is not None:
        assert info.value.field == field


# --- algorithms and keys -------------------------------------------------------------------------------

def test_available_algorithms_are_the_built_in_ones_plus_installed_liboqs():
    available = pki.available_algorithms()
    assert set(BUILT_IN) <= available
    assert available - set(BUILT_IN) == oqs.available()


@pytest.mark.parametrize("name", ["rsa-2048", "dsa-2048", "x25519", "", "ML-DSA-65"])
def test_unknown_algorithms_are_unavailable(name):
    with refused("algorithm_unavailable", "algorithm"):
        pki.generate_key(name)


@pytest.mark.skipif(bool(oqs.available()), reason="liboqs is installed here")
@pytest.mark.parametrize("name", LIBOQS)
def test_liboqs_algorithms_are_cleanly_unavailable_without_liboqs(name):
    with refused("algorithm_unavailable", "algorithm"):
        pki.generate_key(name)


def test_liboqs_handles_serialise_but_refuse_x509_signing():
    # Exercises the liboqs code path that needs no library: storage, SPKI, and the clean refusal to sign.
    handle = KeyPair("slh-dsa-sha2-128s", oqs.OqsKey("slh-dsa-sha2-128s", b"P" * 32, b"S" * 64))
    material = pki.private_key_bytes(handle)
    assert pki.load_private_key(material) == handle
    spki = der.children(der.parse(pki.public_keys(handle).primary))
    assert der.decode_oid(der.children(spki[0])[0]) == "2.16.840.1.101.3.4.3.20"
    assert der.decode_bit_string(spki[1]) == b"P" * 32
    with refused("algorithm_unavailable", "algorithm"):
        pki.sign_certificate(spec("x", "ed25519", ca=True), pki.public_keys(key("ed25519")), handle, None)
    with refused("algorithm_unavailable", "algorithm"):
        pki.public_keys(KeyPair("falcon-512", oqs.OqsKey("falcon-512", b"P", b"S")))


@pytest.mark.parametrize("name", BUILT_IN)
def test_private_key_bytes_round_trip_exactly(name):
    handle = key(name)
    material = pki.private_key_bytes(handle)
    loaded = pki.load_private_key(material)
    assert loaded.algorithm == name
    assert pki.private_key_bytes(loaded) == material
    assert pki.public_keys(loaded) == pki.public_keys(handle)


@pytest.mark.parametrize("name", BUILT_IN)
def test_public_keys_are_spki_der_with_an_alternative_only_for_hybrids(name):
    keys = pki.public_keys(key(name))
    serialization.load_der_public_key(keys.primary)
    assert (keys.alternative is not None) == (ALGORITHMS[name].family == "hybrid")
    if keys.alternative is not None:
        assert hybrid.ml_dsa_name(serialization.load_der_public_key(keys.alternative)) == ALGORITHMS[name].alternative


def test_key_material_with_a_false_label_is_refused():
    material = pki.private_key_bytes(key("ecdsa-p256"))
    relabelled = material.replace(b"ecdsa-p256", b"ecdsa-p384")
    with refused("invalid_key_material"):
        pki.load_private_key(relabelled)


def test_hybrid_material_without_its_alternative_is_refused():
    pair = key("hybrid-p256-ml-dsa-44")
    material = pki.private_key_bytes(KeyPair(pair.algorithm, pair.primary))
    with refused("invalid_key_material"):
        pki.load_private_key(material)


@hsettings(max_examples=300)
@given(st.binary(max_size=300))
def test_garbage_key_material_is_refused_cleanly(data):
    with refused("invalid_key_material"):
        pki.load_private_key(data)


@hsettings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_corrupted_key_material_is_refused_or_still_exact(data):
    material = bytearray(pki.private_key_bytes(key("ed25519")))
    index = data.draw(st.integers(0, len(material) - 1))
    material[index] ^= data.draw(st.integers(1, 255))
    try:
        loaded = pki.load_private_key(bytes(material))
    except DomainError as exc:
        assert exc.code == "invalid_key_material"
    else:  # a flipped bit inside the key itself is just another valid key
        assert pki.private_key_bytes(loaded) == bytes(material)


def test_foreign_handles_are_refused():
    with refused("invalid_key_material"):
        pki.public_keys(ed25519.Ed25519PrivateKey.generate())


@pytest.mark.parametrize("name", ["ecdsa-p384", "ml-dsa-65", "hybrid-p384-ml-dsa-65"])
def test_passphrase_protected_file_round_trips(name):
    blob = protect(key(name), b"correct horse")
    assert blob.count(b"BEGIN ENCRYPTED PRIVATE KEY") == (2 if "hybrid" in name else 1)
    loaded = unprotect(blob, b"correct horse")
    assert pki.private_key_bytes(loaded) == pki.private_key_bytes(key(name))
    with refused("invalid_key_material"):
        unprotect(blob, b"wrong")


# --- chains ---------------------------------------------------------------------------------------------

CHAINS = {
    "rsa": ("rsa-4096", "rsa-3072", "rsa-3072"),
    "ecdsa": ("ecdsa-p521", "ecdsa-p384", "ecdsa-p256"),
    "eddsa": ("ed448", "ed25519", "ed25519"),
    "ml-dsa": ("ml-dsa-87", "ml-dsa-65", "ml-dsa-44"),
    "hybrid": ("hybrid-p521-ml-dsa-87", "hybrid-p384-ml-dsa-65", "hybrid-p256-ml-dsa-44"),
}


@pytest.mark.parametrize("family", CHAINS)
def test_three_level_chain_verifies(family):
    root, inter, leaf = chain(*CHAINS[family])
    pki.verify_issued(root, root)
    pki.verify_issued(inter, root)
    pki.verify_issued(leaf, inter)
    assert [pki.describe(c).algorithm for c in (root, inter, leaf)] == list(CHAINS[family])


@pytest.mark.parametrize("family", CHAINS)
def test_wrong_issuer_is_refused(family):
    root, inter, leaf = chain(*CHAINS[family])
    with refused("issuer_mismatch", "certificate"):
        pki.verify_issued(leaf, root)


def test_same_name_other_key_is_refused():
    _, inter, leaf = chain(*CHAINS["ecdsa"])
    impostor_key = key("ecdsa-p384", 9)
    impostor = pki.sign_certificate(spec("inter", "ecdsa-p384", ca=True), pki.public_keys(impostor_key),
                                    impostor_key, None)
    with refused("issuer_mismatch", "certificate"):
        pki.verify_issued(leaf, impostor)


def test_a_non_ca_issuer_is_refused():
    _, _, leaf = chain(*CHAINS["eddsa"])
    leaf_key = key("ed25519", 2)
    below = pki.sign_certificate(spec("below", "ed25519", ca=False, serial=4), pki.public_keys(key("ed25519", 5)),
                                 leaf_key, leaf)
    with refused("issuer_mismatch"):
        pki.verify_issued(below, leaf)


def test_a_flipped_signature_byte_is_refused():
    root, inter, _ = chain(*CHAINS["ml-dsa"])
    tampered = bytearray(inter)
    tampered[-10] ^= 0x01
    with refused("signature_invalid", "certificate"):
        pki.verify_issued(bytes(tampered), root)


def test_certificate_contains_exactly_what_the_spec_says():
    issuer_key = key("ecdsa-p384")
    issuer_der = pki.sign_certificate(spec("ca", "ecdsa-p384", ca=True), pki.public_keys(issuer_key), issuer_key, None)
    wanted = spec("svc", "ecdsa-p384", ca=True, serial=2**158 + 7, path_length=1,
                  sans=SubjectAltNames(dns=("a.example",), ip=("10.0.0.1", "2001:db8::1"), email=("ops@example.com",),
                                       uri=("spiffe://example/svc",)),
                  extended_key_usage=("server_auth", "client_auth"),
                  name_constraints=NameConstraints(permitted_dns=("example.com",), excluded_ip=("10.9.0.0/16",)),
                  crl_urls=("http://crl.example/ca.crl",), ocsp_urls=("http://ocsp.example",),
                  ca_issuer_urls=("http://ca.example/ca.der",), ocsp_no_check=True)
    cert = x509.load_der_x509_certificate(
        pki.sign_certificate(wanted, pki.public_keys(key("ecdsa-p256", 3)), issuer_key, issuer_der))
    ext = {e.oid: e for e in cert.extensions}
    assert cert.serial_number == 2**158 + 7
    assert cert.not_valid_before_utc == NOW and cert.not_valid_after_utc == NOW + timedelta(days=90)
    assert cert.subject.rfc4514_string() == "CN=svc,O=Example,C=DE"
    assert cert.issuer.rfc4514_string() == "CN=ca,O=Example,C=DE"
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA384)
    assert ext[ExtensionOID.BASIC_CONSTRAINTS].critical and ext[ExtensionOID.BASIC_CONSTRAINTS].value.path_length == 1
    assert ext[ExtensionOID.KEY_USAGE].critical and ext[ExtensionOID.KEY_USAGE].value.key_cert_sign
    assert not ext[ExtensionOID.KEY_USAGE].value.digital_signature
    assert [o.dotted_string for o in ext[ExtensionOID.EXTENDED_KEY_USAGE].value] == ["1.3.6.1.5.5.7.3.1",
                                                                                       "1.3.6.1.5.5.7.3.2"]
    san = ext[ExtensionOID.SUBJECT_ALTERNATIVE_NAME].value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.1"),
                                                       ipaddress.ip_address("2001:db8::1")]
    assert san.get_values_for_type(x509.RFC822Name) == ["ops@example.com"]
    nc = ext[ExtensionOID.NAME_CONSTRAINTS]
    assert nc.critical and nc.value.permitted_subtrees == [x509.DNSName("example.com")]
    assert nc.value.excluded_subtrees == [x509.IPAddress(ipaddress.ip_network("10.9.0.0/16"))]
    issuer = x509.load_der_x509_certificate(issuer_der)
    assert ext[ExtensionOID.AUTHORITY_KEY_IDENTIFIER].value.key_identifier == \
        issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert ext[ExtensionOID.CRL_DISTRIBUTION_POINTS].value[0].full_name[0].value == "http://crl.example/ca.crl"
    assert len(ext[ExtensionOID.AUTHORITY_INFORMATION_ACCESS].value) == 2
    assert ExtensionOID.OCSP_NO_CHECK in ext
    assert not any(o.dotted_string.startswith("2.5.29.7") for o in ext)  # classical: no hybrid extensions


def test_a_leaf_without_optional_fields_has_only_the_mandatory_extensions():
    issuer_key = key("ed25519")
    cert = x509.load_der_x509_certificate(pki.sign_certificate(
        spec("x", "ed25519", ca=False), pki.public_keys(issuer_key), issuer_key, None))
    assert [e.oid for e in cert.extensions] == [ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE,
                                                ExtensionOID.SUBJECT_KEY_IDENTIFIER,
                                                ExtensionOID.AUTHORITY_KEY_IDENTIFIER]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_describe_reports_the_certificate_facts():
    root, inter, _ = chain(*CHAINS["hybrid"])
    facts = pki.describe(inter)
    cert = x509.load_der_x509_certificate(inter)
    assert facts.serial_hex == "2"
    assert facts.fingerprint_sha256 == hashlib.sha256(inter).hexdigest()
    assert facts.subject_dn == "CN=inter,O=Example,C=DE" and facts.issuer_dn == "CN=root,O=Example,C=DE"
    assert facts.algorithm == "hybrid-p384-ml-dsa-65"
    inter_keys = pki.public_keys(key("hybrid-p384-ml-dsa-65", 1))
    assert facts.public_key_sha256 == hashlib.sha256(inter_keys.primary).hexdigest()
    assert facts.authority_key_identifier == pki.describe(root).subject_key_identifier
    assert facts.subject_key_identifier == \
        cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()


# The text a subject may hold: letters from several scripts and every character RFC 4514 escapes.
dn_text = st.text(alphabet=st.sampled_from('aZ09 ,+"\\<>;#=\x00é中\U0001F600-._'), min_size=1, max_size=12)
DESCRIBED_FAMILIES = ("ecdsa-p256", "ecdsa-p384", "ed25519", "ed448", "rsa-3072", "ml-dsa-44", "hybrid-p256-ml-dsa-44")
ISSUING_FAMILIES = ("ecdsa-p384", "ed25519", "ml-dsa-65", "hybrid-p384-ml-dsa-65")


@hsettings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(common_name=dn_text, organization=st.none() | dn_text, unit=st.none() | dn_text,
       country=st.sampled_from([None, "DE", "US"]), issuer_name=dn_text,
       subject_algorithm=st.sampled_from(DESCRIBED_FAMILIES), issuer_algorithm=st.sampled_from(ISSUING_FAMILIES),
       self_signed=st.booleans(), serial=st.integers(1, 2**159 - 1),
       start=st.datetimes(datetime(1990, 1, 1), datetime(2060, 1, 1), timezones=st.just(timezone.utc)),
       days=st.integers(1, 4000), dns=st.lists(st.sampled_from(["a.example", "b.example"]), max_size=2))
def test_the_facts_given_with_a_signature_are_what_describe_reads_back(
        common_name, organization, unit, country, issuer_name, subject_algorithm, issuer_algorithm, self_signed,
        serial, start, days, dns):
    subject = DistinguishedName(common_name=common_name, organization=organization, organizational_unit=unit,
                                country=country)
    leaf = CertificateSpec(subject=subject, serial=serial, not_before=start, not_after=start + timedelta(days=days),
                           is_ca=self_signed, key_usage=frozenset({"digital_signature"}),
                           sans=SubjectAltNames(dns=tuple(dns)))
    if self_signed:
        signer, issuer_der = key(issuer_algorithm), None
        subject_keys = pki.public_keys(signer)
    else:
        signer = key(issuer_algorithm, 1)
        issuer_der = pki.sign_certificate(
            CertificateSpec(subject=DistinguishedName(common_name=issuer_name), serial=7, not_before=NOW,
                            not_after=NOW + timedelta(days=9), is_ca=True,
                            key_usage=frozenset({"key_cert_sign", "crl_sign"}),
                            signature_hash=SIGNATURE_HASH.get(issuer_algorithm)),
            pki.public_keys(signer), signer, None)
        subject_keys = pki.public_keys(key(subject_algorithm, 2))
    leaf = msgspec.structs.replace(leaf, signature_hash=SIGNATURE_HASH.get(issuer_algorithm))
    certificate, facts = pki.sign_described(leaf, subject_keys, signer, issuer_der)
    assert facts == pki.describe(certificate)
    assert facts.not_before.microsecond == 0 and facts.serial_hex == format(serial, "x")


# --- hybrid ---------------------------------------------------------------------------------------------

def _unrecognized(cert: bytes, oid) -> bytes | None:
    return hybrid.unrecognized(x509.load_der_x509_certificate(cert), oid)


def test_hybrid_certificate_carries_the_alternative_key_and_signature():
    root, inter, leaf = chain(*CHAINS["hybrid"])
    for cert, alt_alg in ((root, "ml-dsa-87"), (inter, "ml-dsa-87"), (leaf, "ml-dsa-65")):
        parsed = x509.load_der_x509_certificate(cert)
        oids = [e.oid.dotted_string for e in parsed.extensions]
        assert oids[-3:] == ["2.5.29.72", "2.5.29.73", "2.5.29.74"]
        assert not any(e.critical for e in parsed.extensions if e.oid.dotted_string.startswith("2.5.29.7"))
        assert hybrid.algorithm_from_identifier(_unrecognized(cert, hybrid.ALT_SIGNATURE_ALGORITHM)) == alt_alg
    leaf_keys = pki.public_keys(key("hybrid-p256-ml-dsa-44", 2))
    assert _unrecognized(leaf, hybrid.SUBJECT_ALT_PUBLIC_KEY_INFO) == leaf_keys.alternative


def test_pre_tbs_removes_only_the_signature_field_and_alt_signature_value():
    _, inter, _ = chain(*CHAINS["hybrid"])
    tbs = der.parse(x509.load_der_x509_certificate(inter).tbs_certificate_bytes)
    pre = der.parse(hybrid.pre_tbs_certificate(tbs.encode()))
    tbs_fields, pre_fields = der.children(tbs), der.children(pre)
    assert [f.tag for f in pre_fields] == [f.tag for f in tbs_fields[:2] + tbs_fields[3:]]
    assert pre_fields[:-1] == tbs_fields[:2] + tbs_fields[3:-1]
    extensions = der.children(der.parse(pre_fields[-1].value))
    assert len(extensions) == len(der.children(der.parse(tbs_fields[-1].value))) - 1
    assert der.decode_oid(der.children(extensions[-1])[0]) == "2.5.29.73"


def test_classical_issuer_certifies_a_hybrid_subject_without_signing_it_twice():
    root, _, _ = chain(*CHAINS["ecdsa"])
    subject = pki.public_keys(key("hybrid-p384-ml-dsa-65", 4))
    cert = pki.sign_certificate(spec("h", "ecdsa-p521", ca=False, serial=9), subject, key("ecdsa-p521"), root)
    assert _unrecognized(cert, hybrid.SUBJECT_ALT_PUBLIC_KEY_INFO) == subject.alternative
    assert _unrecognized(cert, hybrid.ALT_SIGNATURE_VALUE) is None
    pki.verify_issued(cert, root)
    assert pki.describe(cert).algorithm == "hybrid-p384-ml-dsa-65"


def test_hybrid_issuer_dual_signs_a_classical_subject():
    _, inter, _ = chain(*CHAINS["hybrid"])
    cert = pki.sign_certificate(spec("c", "hybrid-p384-ml-dsa-65", ca=False, serial=10),
                                pki.public_keys(key("ed25519", 6)), key("hybrid-p384-ml-dsa-65", 1), inter)
    assert _unrecognized(cert, hybrid.SUBJECT_ALT_PUBLIC_KEY_INFO) is None
    assert _unrecognized(cert, hybrid.ALT_SIGNATURE_VALUE) is not None
    pki.verify_issued(cert, inter)
    assert pki.describe(cert).algorithm == "ed25519"


def _resign(cert_der: bytes, issuer_key: KeyPair, change) -> bytes:
    """Re-issue a certificate with its extensions passed through ``change``, classically signed as before."""
    cert = x509.load_der_x509_certificate(cert_der)
    builder = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
               .public_key(cert.public_key()).serial_number(cert.serial_number)
               .not_valid_before(cert.not_valid_before_utc).not_valid_after(cert.not_valid_after_utc))
    for extension in change(list(cert.extensions)):
        builder = builder.add_extension(extension.value, extension.critical)
    return builder.sign(issuer_key.primary, cert.signature_hash_algorithm).public_bytes(serialization.Encoding.DER)


def _replace(oid: str, value: bytes | None):
    def change(extensions):
        out = [e for e in extensions if e.oid.dotted_string != oid]
        if value is not None:
            target = x509.ObjectIdentifier(oid)
            out.append(x509.Extension(target, False, x509.UnrecognizedExtension(target, value)))
        return out
    return change


def test_resigning_unchanged_keeps_both_signatures_valid():
    root, inter, _ = chain(*CHAINS["hybrid"])
    pki.verify_issued(_resign(inter, key("hybrid-p521-ml-dsa-87"), lambda e: e), root)


def test_flipped_alt_signature_byte_is_refused_though_the_classical_one_is_good():
    root, inter, _ = chain(*CHAINS["hybrid"])
    value = bytearray(_unrecognized(inter, hybrid.ALT_SIGNATURE_VALUE))
    value[100] ^= 0x40
    tampered = _resign(inter, key("hybrid-p521-ml-dsa-87"), _replace("2.5.29.74", bytes(value)))
    x509.load_der_x509_certificate(tampered).verify_directly_issued_by(x509.load_der_x509_certificate(root))
    with refused("alt_signature_invalid", "certificate"):
        pki.verify_issued(tampered, root)


@pytest.mark.parametrize("oid, value", [
    ("2.5.29.74", None),  # algorithm without value
    ("2.5.29.73", hybrid.algorithm_identifier("ml-dsa-65")),  # names another level than the key's
    ("2.5.29.73", der.sequence(der.encode_oid("1.2.840.10045.4.3.3"))),  # not ML-DSA at all
    ("2.5.29.74", b"\x04\x03abc"),  # not a BIT STRING
])
def test_malformed_alternative_signatures_are_refused(oid, value):
    root, inter, _ = chain(*CHAINS["hybrid"])
    tampered = _resign(inter, key("hybrid-p521-ml-dsa-87"), _replace(oid, value))
    with refused("alt_signature_invalid", "certificate"):
        pki.verify_issued(tampered, root)


def test_alt_signature_checked_against_the_issuers_alternative_key():
    root, inter, _ = chain(*CHAINS["hybrid"])
    other = pki.public_keys(key("hybrid-p521-ml-dsa-87", 7)).alternative
    fake_root = _resign(root, key("hybrid-p521-ml-dsa-87"), _replace("2.5.29.72", other))
    with refused("alt_signature_invalid"):
        pki.verify_issued(inter, fake_root)


# --- signing refusals -----------------------------------------------------------------------------------

def test_self_signed_certificate_must_certify_the_issuer_key():
    with refused("issuer_mismatch", "subject"):
        pki.sign_certificate(spec("r", "ed25519", ca=True), pki.public_keys(key("ed25519", 1)), key("ed25519"), None)


def test_issuer_key_must_match_the_issuer_certificate():
    root, _, _ = chain(*CHAINS["ecdsa"])
    with refused("issuer_mismatch", "issuer_certificate"):
        pki.sign_certificate(spec("x", "ecdsa-p521", ca=False), pki.public_keys(key("ed25519")),
                             key("ecdsa-p521", 8), root)


def test_an_issuer_certificate_checked_once_is_checked_again_for_any_other_key_object():
    """The engine remembers an issuer certificate it has checked against one key object; another key, even
    right after, is checked again (refused if it is not the certificate's), and the same key in a new object
    is accepted."""
    root, _, _ = chain(*CHAINS["ecdsa"])
    root_key, subject = key(CHAINS["ecdsa"][0]), pki.public_keys(key("ecdsa-p256", 6))
    pki.sign_certificate(spec("first", "ecdsa-p384", ca=False, serial=20), subject, root_key, root)
    with refused("issuer_mismatch", "issuer_certificate"):
        pki.sign_certificate(spec("x", "ecdsa-p384", ca=False, serial=21), subject, key("ecdsa-p384", 8), root)
    same_key_again = pki.load_private_key(pki.private_key_bytes(root_key))
    pki.verify_issued(pki.sign_certificate(spec("again", "ecdsa-p384", ca=False, serial=22), subject,
                                           same_key_again, root), root)


@pytest.mark.parametrize("algorithm, signature_hash", [("ecdsa-p256", None), ("rsa-3072", "sha1"),
                                                        ("ed25519", "sha384"), ("ml-dsa-44", "sha512")])
def test_signature_hash_must_fit_the_issuer(algorithm, signature_hash):
    issuer_key = key(algorithm)
    wanted = spec("x", algorithm, ca=True)
    wanted = CertificateSpec(**{**{f: getattr(wanted, f) for f in wanted.__struct_fields__},
                                "signature_hash": signature_hash})
    with refused("invalid_signature_hash", "signature_hash"):
        pki.sign_certificate(wanted, pki.public_keys(issuer_key), issuer_key, None)


@pytest.mark.parametrize("fields", [
    {"sans": SubjectAltNames(ip=("10.0.0.300",))},
    {"serial": 0},
    {"key_usage": frozenset({"world_domination"})},
    {"extended_key_usage": ("1.2.3",)},
    {"subject": DistinguishedName(common_name="x", country="Germany")},
    {"not_before": datetime(2026, 1, 1)},  # naive: which zone would it be in?
])
def test_impossible_specs_are_refused_cleanly(fields):
    issuer_key = key("ed25519")
    wanted = spec("x", "ed25519", ca=False)
    wanted = CertificateSpec(**{**{f: getattr(wanted, f) for f in wanted.__struct_fields__}, **fields})
    with refused("invalid_certificate_spec"):
        pki.sign_certificate(wanted, pki.public_keys(issuer_key), issuer_key, None)


def test_a_non_ml_dsa_alternative_subject_key_is_refused():
    issuer_key = key("ecdsa-p256")
    subject = pki.public_keys(key("ed25519"))
    subject = type(subject)(primary=subject.primary, alternative=pki.public_keys(key("ed448")).primary)
    with refused("invalid_key_material", "subject.alternative"):
        pki.sign_certificate(spec("x", "ecdsa-p256", ca=False), subject, issuer_key,
                             pki.sign_certificate(spec("r", "ecdsa-p256", ca=True), pki.public_keys(issuer_key),
                                                  issuer_key, None))


@pytest.mark.parametrize("data", [b"", b"\x30\x00", b"not a certificate"])
def test_garbage_certificates_are_refused(data):
    with refused("invalid_certificate"):
        pki.describe(data)
    with refused("invalid_certificate"):
        pki.verify_issued(data, data)


# --- refusals in our words -------------------------------------------------------------------------------

# Phrases of cryptography's, msgspec's and binascii's own exception text: they describe a parser, not the input.
LIBRARY_PHRASES = ("ParseError", "asn1", "ASN.1", "Could not deserialize", "Expected `", "Country name must",
                   "Incorrect password", "codec can't")


def _csm_key_with(pkcs8: bytes) -> bytes:
    """The vault's plaintext form (keys.to_bytes) around PKCS#8 bytes that do not load."""
    return der.sequence(der.encode_tlv(der.UTF8_STRING, b"csm-private-key"), der.encode_tlv(der.INTEGER, b"\x01"),
                        der.encode_tlv(der.UTF8_STRING, b"ecdsa-p256"), der.encode_tlv(der.OCTET_STRING, pkcs8))


def _large_subject_ca() -> bytes:
    issuer_key = key("ecdsa-p256")
    certificate = x509.load_der_x509_certificate(pki.sign_certificate(spec("r", "ecdsa-p256", ca=True),
                                                                      pki.public_keys(issuer_key), issuer_key, None))
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "big"),
                      x509.NameAttribute(x509.oid.NameOID.ORGANIZATION_NAME, "x" * 300)])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(certificate.public_key())
            .serial_number(7).not_valid_before(NOW).not_valid_after(NOW + timedelta(days=9))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(issuer_key.primary, hashes.SHA256()).public_bytes(serialization.Encoding.DER))


def _refusal_cases():
    from infra.crypto import keys
    from infra.crypto.revocation import CryptographyRevocation

    ed = key("ed25519")
    country = spec("x", "ed25519", ca=False)
    country = CertificateSpec(**{**{f: getattr(country, f) for f in country.__struct_fields__},
                                 "subject": DistinguishedName(common_name="x", country="Germany")})
    return [
        ("a certificate that is not DER", lambda: pki.describe(b"\x30\x03\x02\x01\x01"),
         "invalid_certificate", "certificate", "DER encoding does not decode"),
        ("a subject key that is not SPKI", lambda: pki.sign_certificate(
            spec("x", "ed25519", ca=False), type(pki.public_keys(ed))(primary=b"\x30\x00"), ed,
            pki.sign_certificate(spec("r", "ed25519", ca=True), pki.public_keys(ed), ed, None)),
         "invalid_key_material", "subject.primary", "not a DER SubjectPublicKeyInfo"),
        ("a name cryptography cannot encode", lambda: pki.sign_certificate(country, pki.public_keys(ed), ed, None),
         "invalid_certificate_spec", "spec", "cannot be encoded"),
        ("a CA subject larger than a request may be", lambda: pki.describe_ca(_large_subject_ca()),
         "invalid_certificate", "certificate_pem", "subject (organization) is larger than a request may carry"),
        ("vault material whose PKCS#8 does not load", lambda: keys.from_bytes(_csm_key_with(b"\x30\x03\x02\x01\x00")),
         "invalid_key_material", "key", "the private key inside does not load"),
        ("a protected key under the wrong passphrase", lambda: unprotect(protect(key("ecdsa-p256"), b"right"), b"wrong"),
         "invalid_key_material", "key", "wrong passphrase or damaged file"),
        ("an OCSP request that is not DER", lambda: CryptographyRevocation().parse_ocsp_request(b"\x30\x00"),
         "malformed_ocsp_request", "request", "does not decode as a DER OCSPRequest"),
    ]


@pytest.mark.parametrize("case", range(7), ids=lambda i: _refusal_cases()[i][0])
def test_refusals_of_bad_input_are_in_our_words_not_the_librarys(case):
    what, call, code, field, ours = _refusal_cases()[case]
    with refused(code, field) as caught:
        call()
    detail = caught.value.detail
    assert ours in detail, (what, detail)
    assert not [p for p in LIBRARY_PHRASES if p in detail], (what, detail)
