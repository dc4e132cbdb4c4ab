"""Java KeyStore (JKS) writer: a key entry with its chain, or trusted-certificate entries, as keytool reads them.

JKS is what older Cassandra configurations name (``store_type: JKS``). Prefer PKCS#12
(``formats.pkcs12``): JKS is inherently SHA-1 based and that cannot be configured away.
Its key protection is Sun's proprietary "KeyProtector" (OID 1.3.6.1.4.1.42.2.17.1.1): a
SHA-1 keystream over the password and a 20-byte salt XORed with the PKCS#8 key, plus a
SHA-1 check value; the file's integrity check is SHA-1 over the password (UTF-16BE),
"Mighty Aphrodite" and the content. Both are cheap to brute-force, so the store password
is the only real protection and the file must be kept private. We write it because
Cassandra deployments still ask for it, and only for keys Java 17 can load (RSA, EC,
EdDSA): ML-DSA keys are refused (export them as PEM).

Layout (big-endian, per sun.security.provider.JavaKeyStore): magic 0xFEEDFEED, version 2,
entry count; each entry: tag (1 key, 2 trusted cert), alias (Java modified UTF-8), creation
time in ms; a key entry then holds the protected key and its chain ("X.509" + DER each), a
trusted entry one certificate; then the 20-byte SHA-1 digest.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from infra.export.formats import (der_null, der_octets, der_oid, der_sequence, load_certificate, load_chain,
                                  load_private_key, require_matching_key)

MAGIC = 0xFEEDFEED
VERSION = 2
PRIVATE_KEY_TAG = 1
TRUSTED_CERT_TAG = 2
KEY_PROTECTOR_OID = "1.3.6.1.4.1.42.2.17.1.1"
INTEGRITY_SALT = b"Mighty Aphrodite"
MIN_PASSWORD = 6  # keytool refuses shorter passwords when it creates a store
JAVA_KEY_TYPES = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey,
                  ed448.Ed448PrivateKey, dsa.DSAPrivateKey)


def java_password(password: str | bytes, name: str) -> bytes:
    """A Java ``char[]`` password as the JKS digests take it: each UTF-16 code unit, big-endian."""
    text = password.decode() if isinstance(password, bytes) else password
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a string")
    units = text.encode("utf-16-be")
    if len(units) // 2 < MIN_PASSWORD:
        raise ValueError(f"{name} must be at least {MIN_PASSWORD} characters (keytool's minimum)")
    return units


def modified_utf8(text: str) -> bytes:
    """Java's ``DataOutput.writeUTF``: a 2-byte length, then modified UTF-8 of the UTF-16 code units."""
    out = bytearray()
    units = text.encode("utf-16-be")
    for (unit,) in struct.iter_unpack(">H", units):
        if 0 < unit < 0x80:
            out.append(unit)
        elif unit < 0x800:  # includes NUL, which Java writes as C0 80
            out += bytes([0xC0 | unit >> 6, 0x80 | unit & 0x3F])
        else:  # surrogates are written one by one, never combined into 4-byte UTF-8
            out += bytes([0xE0 | unit >> 12, 0x80 | unit >> 6 & 0x3F, 0x80 | unit & 0x3F])
    if len(out) > 0xFFFF:
        raise ValueError("alias is too long for a Java keystore")
    return struct.pack(">H", len(out)) + bytes(out)


def _alias(alias: str) -> str:
    # JavaKeyStore looks aliases up lower-cased (Locale.ENGLISH) but stores them as read:
    # an upper-case alias in the file could never be found. ASCII keeps Python's and Java's
    # lower-casing identical.
    if not alias or not alias.isascii() or not alias.isprintable():
        raise ValueError(f"alias {alias!r} must be non-empty printable ASCII")
    return alias.lower()


def protect_key(private_key_pkcs8_der: bytes, password: bytes, salt: bytes | None = None) -> bytes:
    """Sun's JKS KeyProtector over a PKCS#8 key, as EncryptedPrivateKeyInfo DER (SHA-1: that is the format)."""
    salt = os.urandom(20) if salt is None else salt
    stream = bytearray()
    block = salt
    while len(stream) < len(private_key_pkcs8_der):
        block = hashlib.sha1(password + block).digest()
        stream += block
    masked = bytes(a ^ b for a, b in zip(private_key_pkcs8_der, stream, strict=False))
    check = hashlib.sha1(password + private_key_pkcs8_der).digest()
    return der_sequence(der_sequence(der_oid(KEY_PROTECTOR_OID), der_null()), der_octets(salt + masked + check))


def _certificate(der: bytes) -> bytes:
    return modified_utf8("X.509") + struct.pack(">I", len(der)) + der


def _store(entries: list[bytes], password: bytes) -> bytes:
    body = struct.pack(">III", MAGIC, VERSION, len(entries)) + b"".join(entries)
    return body + hashlib.sha1(password + INTEGRITY_SALT + body).digest()


def _now_ms(timestamp_ms: int | None) -> int:
    return int(time.time() * 1000) if timestamp_ms is None else timestamp_ms


def jks_keystore(certificate_der: bytes, chain_der: Sequence[bytes], private_key_pkcs8_der: bytes,
                 password: str | bytes, alias: str, *, key_password: str | bytes | None = None,
                 timestamp_ms: int | None = None) -> bytes:
    """A JKS keystore with one private-key entry: the key and its chain (the certificate, then ``chain_der``).

    ``key_password`` defaults to the store password, as keytool and Cassandra expect.
    """
    store_pass = java_password(password, "password")
    key_pass = store_pass if key_password is None else java_password(key_password, "key_password")
    certificate = load_certificate(certificate_der)
    chain = load_chain(chain_der)  # checked, then written as given
    key = load_private_key(private_key_pkcs8_der)
    if not isinstance(key, JAVA_KEY_TYPES):
        raise ValueError(f"JKS cannot carry a {type(key).__name__}: Java 17's keytool cannot load non-classical "
                         "(ML-DSA) keys; export this key as PEM")
    require_matching_key(certificate, key)
    protected = protect_key(private_key_pkcs8_der, key_pass)
    entry = (struct.pack(">I", PRIVATE_KEY_TAG) + modified_utf8(_alias(alias))
             + struct.pack(">qI", _now_ms(timestamp_ms), len(protected)) + protected
             + struct.pack(">I", 1 + len(chain)) + _certificate(certificate_der)
             + b"".join(_certificate(der) for der in chain_der))
    return _store([entry], store_pass)


def jks_truststore(certificates: Sequence[tuple[str, bytes]], password: str | bytes, *,
                   timestamp_ms: int | None = None) -> bytes:
    """A JKS truststore: one trusted-certificate entry per ``(alias, certificate DER)``."""
    store_pass = java_password(password, "password")
    if not certificates:
        raise ValueError("certificates must name at least one certificate")
    seen: set[str] = set()
    entries = []
    for index, (alias, der) in enumerate(certificates):
        name = _alias(alias)
        if name in seen:
            raise ValueError(f"alias {name!r} appears twice (JKS aliases are case-insensitive)")
        seen.add(name)
        load_certificate(der, f"certificates[{index}]")
        entries.append(struct.pack(">I", TRUSTED_CERT_TAG) + modified_utf8(name)
                       + struct.pack(">q", _now_ms(timestamp_ms)) + _certificate(der))
    return _store(entries, store_pass)
