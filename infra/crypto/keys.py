"""Key handles: generation, naming a public key, and the versioned plaintext and passphrase-protected forms."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InternalError, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, mldsa, rsa, x448, x25519

from domain.algorithms import ALGORITHMS
from domain.errors import DomainError
from infra.crypto import der, hybrid, oqs

_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "secp256r1": ec.SECP256R1, "secp384r1": ec.SECP384R1, "secp521r1": ec.SECP521R1,
}
_ML_DSA: dict[str, Any] = {
    "ml-dsa-44": mldsa.MLDSA44PrivateKey, "ml-dsa-65": mldsa.MLDSA65PrivateKey, "ml-dsa-87": mldsa.MLDSA87PrivateKey,
}
_FORMAT = "csm-private-key"  # first field of the plaintext form, so it can never be mistaken for bare PKCS#8
_VERSION = 1
_ALTERNATIVE_TAG = 0x80  # [0] IMPLICIT OCTET STRING
_PEM_BLOCK = re.compile(rb"-----BEGIN ENCRYPTED PRIVATE KEY-----\r?\n.+?-----END ENCRYPTED PRIVATE KEY-----\r?\n?",
                        re.DOTALL)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyPair:
    """An opaque private key handle: one key, or the classical and ML-DSA halves of a hybrid."""

    algorithm: str
    primary: Any = field(repr=False)
    alternative: Any = field(default=None, repr=False)


def unavailable(name: str, why: str = "unknown or unavailable algorithm") -> DomainError:
    return DomainError("algorithm_unavailable", f"{name}: {why}", field="algorithm")


def invalid_material(why: str) -> DomainError:
    return DomainError("invalid_key_material", f"private key material refused: {why}", field="key")


def generate(name: str) -> KeyPair:
    spec = ALGORITHMS.get(name)
    if spec is None:
        raise unavailable(name)
    if spec.provider == "liboqs":
        return KeyPair(name, oqs.generate(name))
    if spec.family == "hybrid":
        return KeyPair(name, _single(spec.classical or ""), _single(spec.alternative or ""))
    return KeyPair(name, _single(name))


def _single(name: str) -> Any:
    spec = ALGORITHMS[name]
    if spec.family == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=spec.key_bits or 0)
    if spec.family == "ecdsa":
        return ec.generate_private_key(_CURVES[spec.curve or ""]())
    if name == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if name == "ed448":
        return ed448.Ed448PrivateKey.generate()
    if name in _ML_DSA:
        return _ML_DSA[name].generate()
    raise unavailable(name)


def describe_public_key(key: Any) -> tuple[str, int | None] | None:
    """Catalogue name (or the closest description of a key outside it) and size; None if indescribable."""
    if isinstance(key, rsa.RSAPublicKey):
        return f"rsa-{key.key_size}", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        names = {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384", "secp521r1": "ecdsa-p521"}
        return names.get(key.curve.name, f"ecdsa-{key.curve.name}"), key.curve.key_size
    if isinstance(key, dsa.DSAPublicKey):
        return f"dsa-{key.key_size}", key.key_size
    simple = {ed25519.Ed25519PublicKey: ("ed25519", 256), ed448.Ed448PublicKey: ("ed448", 448),
              x25519.X25519PublicKey: ("x25519", 256), x448.X448PublicKey: ("x448", 448)}
    for kind, described in simple.items():
        if isinstance(key, kind):
            return described
    name = hybrid.ml_dsa_name(key)
    return (name, None) if name else None


def rsa_exponent(key: Any) -> int | None:
    """An RSA public key's exponent, None for any other key (policy refuses e < 65537 and even e)."""
    return key.public_numbers().e if isinstance(key, rsa.RSAPublicKey) else None


def hybrid_name(classical: str, alternative: str) -> str | None:
    for spec in ALGORITHMS.values():
        if spec.classical == classical and spec.alternative == alternative:
            return spec.name
    return None


def algorithm_of(primary: Any, alternative: Any = None) -> str | None:
    """The catalogue name a private key (or hybrid pair) belongs to, judged from the keys themselves."""
    if isinstance(primary, oqs.OqsKey):
        return primary.algorithm
    first = describe_public_key(primary.public_key())
    if first is None:
        return None
    if alternative is None:
        return first[0]
    second = hybrid.ml_dsa_name(alternative.public_key())
    return hybrid_name(first[0], second) if second else None


def spki(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_spki(private_key: Any) -> bytes:
    if isinstance(private_key, oqs.OqsKey):
        return oqs.subject_public_key_info(private_key)
    return spki(private_key.public_key())


def _pkcs8(private_key: Any) -> bytes:
    if isinstance(private_key, oqs.OqsKey):
        return oqs.to_bytes(private_key)
    return private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())


def to_bytes(key: KeyPair) -> bytes:
    """SEQUENCE { "csm-private-key", version 1, algorithm, primary PKCS#8, [0] alternative PKCS#8 OPTIONAL }."""
    parts = [der.encode_tlv(der.UTF8_STRING, _FORMAT.encode()), der.encode_tlv(der.INTEGER, bytes([_VERSION])),
             der.encode_tlv(der.UTF8_STRING, key.algorithm.encode()),
             der.encode_tlv(der.OCTET_STRING, _pkcs8(key.primary))]
    if key.alternative is not None:
        parts.append(der.encode_tlv(_ALTERNATIVE_TAG, _pkcs8(key.alternative)))
    return der.sequence(*parts)


def from_bytes(material: bytes) -> KeyPair:
    try:
        outer = der.parse(material)
        if outer.tag != der.SEQUENCE:
            raise ValueError("not a SEQUENCE")
        name, primary, alternative = _fields(der.children(outer))
    except ValueError as exc:  # der's and _fields' own account of the structure
        raise invalid_material(str(exc)) from exc
    try:
        spec = ALGORITHMS.get(name)
        if spec is not None and spec.provider == "liboqs":
            return KeyPair(name, oqs.from_bytes(name, primary))
        key = KeyPair(name, _load_pkcs8(primary), _load_pkcs8(alternative) if alternative else None)
    except (ValueError, TypeError, UnsupportedAlgorithm, InternalError) as exc:
        log.debug("a %s key does not load: %s", type(exc).__name__, exc)  # the library's words, never the material
        raise invalid_material("the private key inside does not load (damaged, or of a kind this engine cannot "
                               "read)") from exc
    _check_algorithm(key)
    return key


def _fields(fields: list[der.TLV]) -> tuple[str, bytes, bytes | None]:
    tags = [f.tag for f in fields]
    expected = [der.UTF8_STRING, der.INTEGER, der.UTF8_STRING, der.OCTET_STRING]
    if tags not in (expected, [*expected, _ALTERNATIVE_TAG]):
        raise ValueError("not a csm-private-key structure")
    if fields[0].value != _FORMAT.encode() or fields[1].value != bytes([_VERSION]):
        raise ValueError("unknown format or version")
    try:
        name = fields[2].value.decode()
    except UnicodeDecodeError:
        raise ValueError("the algorithm name is not UTF-8") from None
    return name, fields[3].value, fields[4].value if len(fields) == 5 else None


def _load_pkcs8(data: bytes) -> Any:
    return serialization.load_der_private_key(data, password=None)


def _check_algorithm(key: KeyPair) -> None:
    actual = algorithm_of(key.primary, key.alternative)
    if actual != key.algorithm or key.algorithm not in ALGORITHMS:
        raise invalid_material(f"labelled {key.algorithm!r} but the keys are {actual or 'of an unknown kind'}")


def protect(key: KeyPair, passphrase: bytes) -> bytes:
    """Passphrase-protected file for the offline root ceremony.

    A comment line naming the algorithm, then one PKCS#8 "ENCRYPTED PRIVATE KEY" PEM block per
    half (classical first, ML-DSA second for a hybrid), each with BestAvailableEncryption. OpenSSL
    reads the first block as an ordinary encrypted key; ``unprotect`` needs all of them.
    """
    if isinstance(key.primary, oqs.OqsKey):
        raise unavailable(key.algorithm, "liboqs keys cannot be exported as PKCS#8")
    encryption = serialization.BestAvailableEncryption(passphrase)
    blocks = [k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
              for k in (key.primary, key.alternative) if k is not None]
    return f"# Cassandra Security Manager private key: {key.algorithm}\n".encode() + b"".join(blocks)


def unprotect(data: bytes, passphrase: bytes) -> KeyPair:
    blocks = _PEM_BLOCK.findall(data)
    if len(blocks) not in (1, 2):
        raise invalid_material("expected one or two ENCRYPTED PRIVATE KEY blocks")
    try:
        keys = [serialization.load_pem_private_key(block, password=passphrase) for block in blocks]
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        log.debug("a protected key file does not open: %s", type(exc).__name__)
        raise invalid_material("wrong passphrase or damaged file") from exc
    name = algorithm_of(*keys)
    if name is None:
        raise invalid_material("the keys are of an unknown kind")
    key = KeyPair(name, *keys)
    _check_algorithm(key)
    return key
