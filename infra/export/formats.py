"""Certificate and key export as PEM, DER and PKCS#12: pure functions over DER bytes.

Private keys arrive as unencrypted PKCS#8 DER (what the key vault returns) and leave
encrypted whenever a passphrase is given. The encrypted PKCS#8 is PBES2 (RFC 8018):
PBKDF2-HMAC-SHA256 + AES-256-CBC, as cryptography's ``BestAvailableEncryption`` writes it,
but with ``kdf_rounds`` iterations (600,000 by default) instead of its fixed 2,048, which is
too few for a file that leaves the server. PKCS#12 uses PBES2 (PBKDF2-SHA256, AES-256-CBC)
for keys and certificates and an HMAC-SHA256 MAC: OpenSSL 3 and Java 11.0.12+ read it, and
nothing in it is SHA-1 or RC2/3DES.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.serialization import pkcs12 as p12  # the module; `pkcs12` is our function

KDF_ROUNDS = 600_000  # PBKDF2-HMAC-SHA256 iterations (OWASP's 2023 figure); a keystore loads once per start
PKCS12_KEY_TYPES = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey,
                    ed448.Ed448PrivateKey, dsa.DSAPrivateKey)

# object identifiers, as DER contents
_PBES2 = "1.2.840.113549.1.5.13"
_PBKDF2 = "1.2.840.113549.1.5.12"
_HMAC_SHA256 = "1.2.840.113549.2.9"
_AES256_CBC = "2.16.840.1.101.3.4.1.42"


# a minimal DER writer: only what EncryptedPrivateKeyInfo (here and in jks.py) needs -----------

def der_tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def der_sequence(*items: bytes) -> bytes:
    return der_tlv(0x30, b"".join(items))


def der_octets(value: bytes) -> bytes:
    return der_tlv(0x04, value)


def der_null() -> bytes:
    return b"\x05\x00"


def der_integer(value: int) -> bytes:
    if value < 0:
        raise ValueError("only non-negative integers are needed here")
    return der_tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def der_oid(dotted: str) -> bytes:
    arcs = [int(arc) for arc in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        while arc := arc >> 7:
            chunk.append(0x80 | (arc & 0x7F))
        out += bytes(reversed(chunk))
    return der_tlv(0x06, bytes(out))


# input checks --------------------------------------------------------------------------------

def load_certificate(data: bytes, name: str = "certificate_der") -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(data)
    except (TypeError, ValueError):  # cryptography's parser text is no description of the input
        raise ValueError(f"{name} is not a DER X.509 certificate") from None


def load_chain(chain_der: Sequence[bytes]) -> list[x509.Certificate]:
    return [load_certificate(der, f"chain_der[{index}]") for index, der in enumerate(chain_der)]


def load_private_key(private_key_pkcs8_der: bytes):
    try:
        return serialization.load_der_private_key(private_key_pkcs8_der, password=None)
    except (TypeError, ValueError):
        raise ValueError("private_key_pkcs8_der is not an unencrypted PKCS#8 private key") from None


def require_matching_key(certificate: x509.Certificate, key) -> None:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if (certificate.public_key().public_bytes(serialization.Encoding.DER, spki)
            != key.public_key().public_bytes(serialization.Encoding.DER, spki)):
        raise ValueError("private_key_pkcs8_der does not belong to the certificate's public key")


def _secret(value: bytes | str, name: str) -> bytes:
    raw = value.encode() if isinstance(value, str) else bytes(value)
    if not raw:
        raise ValueError(f"{name} must not be empty")
    return raw


# PEM and DER ---------------------------------------------------------------------------------

def encrypt_pkcs8(private_key_pkcs8_der: bytes, passphrase: bytes, *, kdf_rounds: int = KDF_ROUNDS) -> bytes:
    """EncryptedPrivateKeyInfo DER: PBES2 with PBKDF2-HMAC-SHA256 (``kdf_rounds``) and AES-256-CBC."""
    salt, iv = os.urandom(16), os.urandom(16)
    key = PBKDF2HMAC(hashes.SHA256(), 32, salt, kdf_rounds).derive(_secret(passphrase, "passphrase"))
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    sealed = encryptor.update(padder.update(private_key_pkcs8_der) + padder.finalize()) + encryptor.finalize()
    kdf = der_sequence(der_oid(_PBKDF2), der_sequence(der_octets(salt), der_integer(kdf_rounds),
                                                      der_sequence(der_oid(_HMAC_SHA256), der_null())))
    scheme = der_sequence(der_oid(_AES256_CBC), der_octets(iv))
    return der_sequence(der_sequence(der_oid(_PBES2), der_sequence(kdf, scheme)), der_octets(sealed))


def _pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return b"".join([f"-----BEGIN {label}-----\n".encode(), *(line + b"\n" for line in lines),
                     f"-----END {label}-----\n".encode()])


def pem_bundle(certificate_der: bytes, chain_der: Sequence[bytes], private_key_pkcs8_der: bytes | None,
               passphrase: bytes | None, *, kdf_rounds: int = KDF_ROUNDS) -> bytes:
    """The certificate, its chain (leaf to root, as given), then the PKCS#8 key if any (encrypted with a passphrase)."""
    certificate = load_certificate(certificate_der)
    chain = load_chain(chain_der)
    parts = [c.public_bytes(serialization.Encoding.PEM) for c in (certificate, *chain)]
    if private_key_pkcs8_der is not None:
        require_matching_key(certificate, load_private_key(private_key_pkcs8_der))
        if passphrase is None:
            parts.append(_pem("PRIVATE KEY", private_key_pkcs8_der))
        else:
            parts.append(_pem("ENCRYPTED PRIVATE KEY",
                              encrypt_pkcs8(private_key_pkcs8_der, passphrase, kdf_rounds=kdf_rounds)))
    elif passphrase is not None:
        raise ValueError("passphrase was given but there is no private key to encrypt")
    return b"".join(parts)


def der_certificate(certificate_der: bytes) -> bytes:
    """The certificate alone, as DER (checked to be one)."""
    return load_certificate(certificate_der).public_bytes(serialization.Encoding.DER)


# PKCS#12 -------------------------------------------------------------------------------------

def _pkcs12_encryption(passphrase: bytes | str, kdf_rounds: int):
    return (serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(kdf_rounds)
            .key_cert_algorithm(p12.PBES.PBESv2SHA256AndAES256CBC).hmac_hash(hashes.SHA256())
            .build(_secret(passphrase, "passphrase")))


def pkcs12(certificate_der: bytes, chain_der: Sequence[bytes], private_key_pkcs8_der: bytes | None,
           passphrase: bytes | str, friendly_name: str, *, kdf_rounds: int = KDF_ROUNDS) -> bytes:
    """A PKCS#12 keystore: the key (if any) and certificate under ``friendly_name``, then the chain.

    Without a key this is a plain certificate bag, which Java ignores: for Java trust
    anchors use ``pkcs12_truststore``.

    cryptography 50 cannot put ML-DSA (or ML-KEM) keys in a PKCS#12, so those are refused
    with a ValueError naming the key type: export them as PEM.
    """
    if not friendly_name:
        raise ValueError("friendly_name must not be empty")
    certificate = load_certificate(certificate_der)
    chain = load_chain(chain_der)
    key = None
    if private_key_pkcs8_der is not None:
        key = load_private_key(private_key_pkcs8_der)
        require_matching_key(certificate, key)
        if not isinstance(key, PKCS12_KEY_TYPES):
            raise ValueError(f"PKCS#12 cannot carry a {type(key).__name__} here (cryptography supports RSA, EC, "
                             "EdDSA and DSA keys only): export this key as PEM")
    cas = [p12.PKCS12Certificate(c, None) for c in chain]
    return p12.serialize_key_and_certificates(friendly_name.encode(), key, certificate, cas or None,
                                                 _pkcs12_encryption(passphrase, kdf_rounds))


def pkcs12_truststore(ca_certificates_der: Sequence[bytes], passphrase: bytes | str,
                      friendly_names: Sequence[str] | None = None, *, kdf_rounds: int = KDF_ROUNDS) -> bytes:
    """A PKCS#12 truststore: CA certificates only, each marked trusted for Java (its trustedCertEntry)."""
    certificates = [load_certificate(der, f"ca_certificates_der[{i}]") for i, der in enumerate(ca_certificates_der)]
    if not certificates:
        raise ValueError("ca_certificates_der must name at least one certificate")
    names = list(friendly_names) if friendly_names is not None else [f"ca-{i}" for i in range(len(certificates))]
    if len(names) != len(certificates) or len({n.lower() for n in names}) != len(names) or not all(names):
        raise ValueError("friendly_names must be distinct, non-empty, one per certificate")
    bags = [p12.PKCS12Certificate(c, n.encode()) for c, n in zip(certificates, names, strict=True)]
    return p12.serialize_java_truststore(bags, _pkcs12_encryption(passphrase, kdf_rounds))
