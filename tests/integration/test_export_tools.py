"""Our exports opened by the tools that consume them: Java's keytool (as Cassandra loads stores) and openssl."""

from __future__ import annotations

import datetime
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12 as p12
from cryptography.x509.oid import NameOID

from infra.export import jks_keystore, jks_truststore, pem_bundle, pkcs12, pkcs12_truststore

KEYTOOL = shutil.which("keytool")
OPENSSL = shutil.which("openssl")
needs_keytool = pytest.mark.skipif(KEYTOOL is None, reason="Java keytool is not installed (apt install openjdk-17-jre-headless)")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl CLI is not installed")
DER, PEM = serialization.Encoding.DER, serialization.Encoding.PEM
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
PASSWORD = "cassandra-store"
KEYS = {"rsa": lambda: rsa.generate_private_key(65537, 3072), "ec": lambda: ec.generate_private_key(ec.SECP384R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate}


def _cert(subject: str, key, issuer: str, issuer_key, ca: bool) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                      key_encipherment=False, data_encipherment=False,
                                                      key_agreement=False, key_cert_sign=True, crl_sign=True,
                                                      encipher_only=False, decipher_only=False), critical=True)
    return builder.sign(issuer_key, hashes.SHA384()).public_bytes(DER)


def make_chain(kind: str) -> dict:
    """Root and issuing CA (ECDSA P-384), and a leaf of ``kind``."""
    root_key, inter_key, leaf_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(
        ec.SECP384R1()), KEYS[kind]()
    root = _cert("Test Root", root_key, "Test Root", root_key, True)
    inter = _cert("Test Issuing CA", inter_key, "Test Root", root_key, True)
    leaf = _cert("node1.example", leaf_key, "Test Issuing CA", inter_key, False)
    pkcs8 = leaf_key.private_bytes(DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return {"leaf": leaf, "chain": [inter, root], "key": pkcs8, "key_object": leaf_key}


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if ok:
        assert result.returncode == 0, f"{args[0]} exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def spki(key) -> bytes:
    return key.public_key().public_bytes(DER, SPKI)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# keytool reads our JKS as Cassandra's JVM would -------------------------------------------------

@needs_keytool
@pytest.mark.parametrize("kind", ["rsa", "ec", "ed25519"])
def test_keytool_lists_our_jks_keystore_and_converts_it_to_pkcs12(tmp_path, kind):
    pki = make_chain(kind)
    store = write(tmp_path / "keystore.jks", jks_keystore(pki["leaf"], pki["chain"], pki["key"], PASSWORD, "Node1"))
    listing = run(KEYTOOL, "-list", "-v", "-keystore", str(store), "-storepass", PASSWORD).stdout
    assert "Keystore type: JKS" in listing and "Your keystore contains 1 entry" in listing
    assert re.search(r"Alias name: node1\n", listing) and "Entry type: PrivateKeyEntry" in listing
    assert "Certificate chain length: 3" in listing
    assert [m for m in re.findall(r"Owner: CN=(.+)", listing)] == ["node1.example", "Test Issuing CA", "Test Root"]

    converted = tmp_path / "converted.p12"
    run(KEYTOOL, "-importkeystore", "-srckeystore", str(store), "-srcstoretype", "JKS", "-srcstorepass", PASSWORD,
        "-destkeystore", str(converted), "-deststoretype", "PKCS12", "-deststorepass", PASSWORD, "-noprompt")
    loaded = p12.load_pkcs12(converted.read_bytes(), PASSWORD.encode())
    assert spki(loaded.key) == spki(pki["key_object"])  # Java recovered exactly our key
    assert loaded.key.private_bytes(DER, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()) == pki["key"]
    assert loaded.cert.certificate.public_bytes(DER) == pki["leaf"]


@needs_keytool
def test_keytool_lists_our_jks_truststore_and_refuses_a_wrong_password(tmp_path):
    pki = make_chain("ec")
    store = write(tmp_path / "truststore.jks", jks_truststore([("Issuing-CA", pki["chain"][0]),
                                                               ("root-ca", pki["chain"][1])], PASSWORD))
    listing = run(KEYTOOL, "-list", "-v", "-keystore", str(store), "-storepass", PASSWORD).stdout
    assert "Your keystore contains 2 entries" in listing
    assert re.findall(r"Alias name: (.+)", listing) == ["issuing-ca", "root-ca"]
    assert listing.count("Entry type: trustedCertEntry") == 2
    wrong = run(KEYTOOL, "-list", "-keystore", str(store), "-storepass", PASSWORD + "x", ok=False)
    assert wrong.returncode != 0 and "password was incorrect" in wrong.stdout + wrong.stderr


@needs_keytool
def test_keytool_reads_our_pkcs12_keystore_and_truststore(tmp_path):
    pki = make_chain("rsa")
    store = write(tmp_path / "keystore.p12", pkcs12(pki["leaf"], pki["chain"], pki["key"], PASSWORD.encode(), "node1"))
    listing = run(KEYTOOL, "-list", "-v", "-keystore", str(store), "-storetype", "PKCS12",
                  "-storepass", PASSWORD).stdout
    assert "Alias name: node1" in listing and "Entry type: PrivateKeyEntry" in listing
    assert "Certificate chain length: 3" in listing
    trust = write(tmp_path / "truststore.p12", pkcs12_truststore(pki["chain"], PASSWORD.encode(), ["issuing", "root"]))
    listing = run(KEYTOOL, "-list", "-keystore", str(trust), "-storetype", "PKCS12", "-storepass", PASSWORD).stdout
    assert "Your keystore contains 2 entries" in listing and listing.count("trustedCertEntry") == 2


# openssl reads our PKCS#12 and PEM ------------------------------------------------------------

@needs_openssl
@pytest.mark.parametrize("kind", ["rsa", "ec", "ed25519"])
def test_openssl_opens_our_pkcs12_with_modern_algorithms_and_the_key_matches(tmp_path, kind):
    pki = make_chain(kind)
    store = write(tmp_path / "keystore.p12", pkcs12(pki["leaf"], pki["chain"], pki["key"], PASSWORD.encode(), "node1"))
    opened = run(OPENSSL, "pkcs12", "-in", str(store), "-passin", f"pass:{PASSWORD}", "-info", "-nodes")
    assert "MAC: sha256" in opened.stderr
    assert "PBES2, PBKDF2, AES-256-CBC, Iteration 600000, PRF hmacWithSHA256" in opened.stderr
    assert "RC2" not in opened.stderr and "3DES" not in opened.stderr and "sha1" not in opened.stderr.lower()
    key = serialization.load_pem_private_key(re.search(rb"-----BEGIN PRIVATE KEY-----.+?-----END PRIVATE KEY-----\n",
                                                       opened.stdout.encode(), re.S).group(0), None)
    certs = x509.load_pem_x509_certificates(opened.stdout.encode())
    assert spki(key) == spki(pki["key_object"])
    assert [c.public_bytes(DER) for c in certs] == [pki["leaf"], *pki["chain"]]
    refused = run(OPENSSL, "pkcs12", "-in", str(store), "-passin", "pass:wrong", "-nodes", ok=False)
    assert refused.returncode != 0 and "mac verify" in refused.stderr.lower()


@needs_openssl
def test_openssl_opens_our_pkcs12_truststore(tmp_path):
    pki = make_chain("ec")
    trust = write(tmp_path / "truststore.p12", pkcs12_truststore(pki["chain"], PASSWORD.encode(), ["issuing", "root"]))
    opened = run(OPENSSL, "pkcs12", "-in", str(trust), "-passin", f"pass:{PASSWORD}", "-nokeys")
    assert [c.public_bytes(DER) for c in x509.load_pem_x509_certificates(opened.stdout.encode())] == pki["chain"]
    assert "friendlyName: issuing" in opened.stdout and "PRIVATE KEY" not in opened.stdout


@needs_openssl
@pytest.mark.parametrize("kind", ["rsa", "ec", "ed25519"])
def test_openssl_decrypts_our_encrypted_pem_key_and_verifies_the_chain(tmp_path, kind):
    pki = make_chain(kind)
    bundle = pem_bundle(pki["leaf"], pki["chain"], pki["key"], PASSWORD.encode())
    key_pem = write(tmp_path / "key.pem", bundle[bundle.index(b"-----BEGIN ENCRYPTED PRIVATE KEY-----"):])
    structure = run(OPENSSL, "asn1parse", "-in", str(key_pem)).stdout
    for name in ("PBES2", "PBKDF2", "hmacWithSHA256", "aes-256-cbc"):
        assert f":{name}" in structure, name
    assert re.search(r"prim: INTEGER\s+:0927C0\b", structure)  # 600,000 PBKDF2 rounds
    public = run(OPENSSL, "pkey", "-in", str(key_pem), "-passin", f"pass:{PASSWORD}", "-pubout").stdout
    assert serialization.load_pem_public_key(public.encode()).public_bytes(DER, SPKI) == spki(pki["key_object"])
    assert run(OPENSSL, "pkey", "-in", str(key_pem), "-passin", "pass:wrong", "-noout", ok=False).returncode != 0

    certs = x509.load_pem_x509_certificates(bundle)
    leaf, inter, root = (write(tmp_path / f"{n}.pem", c.public_bytes(PEM)) for n, c in
                         zip(("leaf", "inter", "root"), certs, strict=True))
    verified = run(OPENSSL, "verify", "-CAfile", str(root), "-untrusted", str(inter), str(leaf))
    assert verified.stdout.strip().endswith(": OK")
