"""CryptographyPki against independent implementations: the openssl CLI and the pure-Python dilithium-py."""

from __future__ import annotations

import functools
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from dilithium_py.ml_dsa import ML_DSA_44, ML_DSA_65, ML_DSA_87

from domain.algorithms import SIGNATURE_HASH
from domain.certspec import CertificateSpec, DistinguishedName, NameConstraints, SubjectAltNames
from infra.crypto import CryptographyPki, KeyPair, der, hybrid, protect

pki = CryptographyPki()
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")
DILITHIUM = {"ml-dsa-44": ML_DSA_44, "ml-dsa-65": ML_DSA_65, "ml-dsa-87": ML_DSA_87}
NOW = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)


@functools.cache
def key(algorithm: str, index: int = 0) -> KeyPair:
    return pki.generate_key(algorithm)


def spec(cn: str, issuer_alg: str, serial: int, *, ca: bool, **fields) -> CertificateSpec:
    usage = {"key_cert_sign", "crl_sign"} if ca else {"digital_signature", "key_encipherment"}
    return CertificateSpec(subject=DistinguishedName(common_name=cn, organization="Example"), serial=serial,
                           not_before=NOW, not_after=NOW + timedelta(days=30), is_ca=ca, key_usage=frozenset(usage),
                           signature_hash=SIGNATURE_HASH.get(issuer_alg), **fields)


def chain(root_alg: str, inter_alg: str, leaf_alg: str) -> tuple[bytes, bytes, bytes]:
    root_key, inter_key = key(root_alg), key(inter_alg, 1)
    root = pki.sign_certificate(spec("Root", root_alg, 1, ca=True), pki.public_keys(root_key), root_key, None)
    inter = pki.sign_certificate(spec("Intermediate", root_alg, 2, ca=True, path_length=0),
                                 pki.public_keys(inter_key), root_key, root)
    leaf = pki.sign_certificate(
        spec("node1.example", inter_alg, 3, ca=False, extended_key_usage=("server_auth", "client_auth"),
             sans=SubjectAltNames(dns=("node1.example",), ip=("10.0.0.1",))),
        pki.public_keys(key(leaf_alg, 2)), inter_key, inter)
    return root, inter, leaf


def pem(path: Path, der_bytes: bytes) -> Path:
    cert = x509.load_der_x509_certificate(der_bytes)
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    return path


def openssl(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([OPENSSL or "openssl", *args], input=stdin, capture_output=True, timeout=60)


CLASSICAL_AND_HYBRID = {
    "rsa": ("rsa-4096", "rsa-3072", "rsa-3072"),
    "ecdsa": ("ecdsa-p384", "ecdsa-p256", "ecdsa-p521"),
    "ed25519": ("ed25519", "ed25519", "ed25519"),
    "ed448": ("ed448", "ed448", "ecdsa-p256"),
    "hybrid": ("hybrid-p521-ml-dsa-87", "hybrid-p384-ml-dsa-65", "hybrid-p256-ml-dsa-44"),
}


@needs_openssl
@pytest.mark.parametrize("family", CLASSICAL_AND_HYBRID)
def test_openssl_verifies_the_chain(family, tmp_path):
    root, inter, leaf = chain(*CLASSICAL_AND_HYBRID[family])
    result = openssl("verify", "-x509_strict", "-purpose", "sslserver",
                     "-CAfile", str(pem(tmp_path / "root.pem", root)),
                     "-untrusted", str(pem(tmp_path / "inter.pem", inter)), str(pem(tmp_path / "leaf.pem", leaf)))
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    assert result.stdout.strip().endswith(b": OK")


@needs_openssl
def test_openssl_refuses_a_leaf_from_another_hierarchy(tmp_path):
    root, _, _ = chain(*CLASSICAL_AND_HYBRID["ecdsa"])
    _, other_inter, other_leaf = chain("ecdsa-p256", "ecdsa-p384", "ecdsa-p256")
    result = openssl("verify", "-CAfile", str(pem(tmp_path / "root.pem", root)),
                     "-untrusted", str(pem(tmp_path / "inter.pem", other_inter)),
                     str(pem(tmp_path / "leaf.pem", other_leaf)))
    assert result.returncode != 0


@needs_openssl
def test_openssl_shows_the_extensions(tmp_path):
    issuer_key = key("ecdsa-p384")
    root = pki.sign_certificate(spec("Root", "ecdsa-p384", 1, ca=True), pki.public_keys(issuer_key), issuer_key, None)
    wanted = spec("Issuing CA", "ecdsa-p384", 0x1234, ca=True, path_length=2,
                  name_constraints=NameConstraints(permitted_dns=("example.com",), excluded_ip=("10.9.0.0/16",)),
                  crl_urls=("http://crl.example/root.crl",), ocsp_urls=("http://ocsp.example",),
                  ca_issuer_urls=("http://pki.example/root.der",), ocsp_no_check=True)
    cert = pki.sign_certificate(wanted, pki.public_keys(key("ecdsa-p256", 3)), issuer_key, root)
    text = openssl("x509", "-noout", "-text", "-in", str(pem(tmp_path / "ca.pem", cert))).stdout.decode()
    for expected in ("X509v3 Basic Constraints: critical", "CA:TRUE, pathlen:2",
                     "X509v3 Key Usage: critical", "Certificate Sign, CRL Sign",
                     "X509v3 Name Constraints: critical", "DNS:example.com", "IP:10.9.0.0/255.255.0.0",
                     "X509v3 CRL Distribution Points", "URI:http://crl.example/root.crl",
                     "Authority Information Access", "OCSP - URI:http://ocsp.example",
                     "CA Issuers - URI:http://pki.example/root.der", "OCSP No Check",
                     "X509v3 Subject Key Identifier", "X509v3 Authority Key Identifier",
                     "Signature Algorithm: ecdsa-with-SHA384", "Serial Number: 4660 (0x1234)"):
        assert expected in text, expected


def _raw_public_key(spki: bytes) -> bytes:
    return der.decode_bit_string(der.children(der.parse(spki))[1])


@pytest.mark.parametrize("algorithms", [("ml-dsa-87", "ml-dsa-65", "ml-dsa-44"),
                                        ("ml-dsa-44", "ml-dsa-44", "ml-dsa-87")])
def test_ml_dsa_chain_signatures_check_out_in_dilithium_py(algorithms):
    # OpenSSL 3.0 cannot verify ML-DSA, so the second opinion comes from an independent pure-Python ML-DSA.
    root, inter, leaf = chain(*algorithms)
    for cert_der, issuer_der, issuer_alg in ((root, root, algorithms[0]), (inter, root, algorithms[0]),
                                             (leaf, inter, algorithms[1])):
        pki.verify_issued(cert_der, issuer_der)
        cert, issuer = x509.load_der_x509_certificate(cert_der), x509.load_der_x509_certificate(issuer_der)
        public = _raw_public_key(_spki(issuer))
        assert DILITHIUM[issuer_alg].verify(public, cert.tbs_certificate_bytes, cert.signature, ctx=b"")
        assert not DILITHIUM[issuer_alg].verify(public, cert.tbs_certificate_bytes + b"x", cert.signature, ctx=b"")


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def test_hybrid_alt_signatures_check_out_in_dilithium_py():
    algorithms = CLASSICAL_AND_HYBRID["hybrid"]
    root, inter, leaf = chain(*algorithms)
    for cert_der, issuer_der, alt_alg in ((root, root, "ml-dsa-87"), (inter, root, "ml-dsa-87"),
                                          (leaf, inter, "ml-dsa-65")):
        cert, issuer = x509.load_der_x509_certificate(cert_der), x509.load_der_x509_certificate(issuer_der)
        public = _raw_public_key(hybrid.unrecognized(issuer, hybrid.SUBJECT_ALT_PUBLIC_KEY_INFO))
        signature = der.decode_bit_string(der.parse(hybrid.unrecognized(cert, hybrid.ALT_SIGNATURE_VALUE)))
        pre_tbs = hybrid.pre_tbs_certificate(cert.tbs_certificate_bytes)
        assert DILITHIUM[alt_alg].verify(public, pre_tbs, signature, ctx=b"")
        # The signature covers the PreTBS, not the TBS it is embedded in.
        assert not DILITHIUM[alt_alg].verify(public, cert.tbs_certificate_bytes, signature, ctx=b"")


@needs_openssl
def test_openssl_parses_the_pre_tbs_certificate_as_der():
    _, inter, _ = chain(*CLASSICAL_AND_HYBRID["hybrid"])
    pre_tbs = hybrid.pre_tbs_certificate(x509.load_der_x509_certificate(inter).tbs_certificate_bytes)
    result = openssl("asn1parse", "-inform", "DER", stdin=pre_tbs)
    assert result.returncode == 0, result.stderr.decode()
    text = result.stdout.decode()
    assert "ecdsa-with-SHA384" not in text  # the TBS signature field is gone
    assert "2.5.29.73" in text and "2.5.29.74" not in text


@needs_openssl
@pytest.mark.parametrize("newkey, digest, algorithm, bits, hash_name", [
    (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"], "-sha384", "ecdsa-p384", 384, "sha384"),
    (["-newkey", "ed25519"], None, "ed25519", 256, None),
    (["-newkey", "rsa:2048"], "-sha1", "rsa-2048", 2048, "sha1"),
    (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], "-sha1", "ecdsa-p256", 256, "sha1"),
    (["-newkey", "rsa:2048"], "-md5", "rsa-2048", 2048, "md5"),
])
def test_csrs_made_by_openssl_parse(newkey, digest, algorithm, bits, hash_name, tmp_path):
    args = ["req", "-new", *newkey, "-nodes", "-keyout", str(tmp_path / "k.pem"),
            "-subj", "/O=Example/CN=node1.example",
            "-addext", "subjectAltName=DNS:node1.example,IP:10.1.2.3", "-out", str(tmp_path / "r.pem")]
    result = openssl(*args, *([digest] if digest else []))
    assert result.returncode == 0, result.stderr.decode()
    facts, _ = pki.parse_csr((tmp_path / "r.pem").read_bytes())
    assert (facts.algorithm, facts.key_bits, facts.signature_hash) == (algorithm, bits, hash_name)
    assert facts.subject == DistinguishedName(common_name="node1.example", organization="Example")
    assert facts.sans == SubjectAltNames(dns=("node1.example",), ip=("10.1.2.3",))


@needs_openssl
@pytest.mark.parametrize("algorithm", ["ecdsa-p384", "hybrid-p384-ml-dsa-65"])
def test_openssl_reads_the_protected_key_file(algorithm, tmp_path):
    handle = key(algorithm)
    path = tmp_path / "root.key"
    path.write_bytes(protect(handle, b"ceremony passphrase"))
    result = openssl("pkey", "-in", str(path), "-passin", "pass:ceremony passphrase", "-pubout", "-outform", "DER")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == pki.public_keys(handle).primary
    assert openssl("pkey", "-in", str(path), "-passin", "pass:wrong", "-noout").returncode != 0
