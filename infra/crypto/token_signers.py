"""The private halves of CA keys on a PKCS#11 token, as ``cryptography`` keys: ``TokenEcKey`` and ``TokenRsaKey``.

Each is a ``cryptography`` private key (EC or RSA) whose ``sign`` hashes on the host and has the token sign the
digest: cryptography's certificate, CRL, CSR and OCSP builders call back into it, so every signing path of the
engine works unchanged. ``private_bytes``, ``private_numbers`` (an export, a PKCS#8 copy) and decryption are refused by
name. Every signature the token returns is verified with the recorded public key before it is used.

ECDSA is CKM_ECDSA over the digest, cut to the group order's length. RSA is CKM_RSA_PKCS over the DigestInfo built
here (PKCS #1 v1.5, what X.509 certificates, CRLs and OCSP answers are signed with by default; every token has it).
The store (``token_keys.TokenKeys``) finds the object on the token and runs the mechanism.
"""

from __future__ import annotations

from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from domain.errors import DomainError, KeyUnavailable

# DER of DigestInfo up to the digest (RFC 8017 9.2, note 1): AlgorithmIdentifier with NULL parameters, OCTET STRING
_DIGEST_INFO = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}


_NAMES = {"sha256": "SHA-256", "sha384": "SHA-384", "sha512": "SHA-512"}


class TokenUnavailable(KeyUnavailable):
    """The token that holds a CA's key cannot sign now (gone, not logged in, the key missing): 503, retry later."""

    def __init__(self, why: str) -> None:
        super().__init__("hsm_unavailable", f"the CA key on the PKCS#11 token cannot be used: {why}",
                         field="key_storage")


def not_extractable(what: str) -> DomainError:
    return DomainError("key_not_extractable", f"{what}: the CA key was generated on a PKCS#11 token and never "
                       "leaves it (it is sensitive and not extractable)", field="key")


def sign_only() -> DomainError:
    return DomainError("key_sign_only", "a CA key on the PKCS#11 token only signs", field="key")


class _Store(Protocol):
    def sign(self, ref: Any, data: bytes, mechanism: str) -> bytes: ...


def _digest(data: Any, algorithm: Any) -> tuple[bytes, hashes.HashAlgorithm]:
    """(digest, hash algorithm) of what a builder asks to be signed, prehashed or not."""
    if isinstance(algorithm, utils.Prehashed):
        hashed = algorithm._algorithm  # noqa: SLF001 - cryptography keeps the hash here
        if len(data) != hashed.digest_size:  # before the token signs it: a DigestInfo of the wrong length is no digest
            raise TypeError(f"{len(data)} bytes is not a {_NAMES.get(hashed.name, hashed.name)} digest "
                            f"({hashed.digest_size} bytes)")
        return bytes(data), hashed
    hasher = hashes.Hash(algorithm)
    hasher.update(bytes(data))
    return hasher.finalize(), algorithm


class _OnToken:
    """What every key on the token shares: its reference, and refusing to be read out. A copy is the same key."""

    ref: Any

    def private_numbers(self) -> Any:
        raise not_extractable("the private numbers cannot be read")

    def private_bytes(self, encoding: Any, format: Any, encryption_algorithm: Any) -> bytes:  # noqa: A002
        raise not_extractable("the private key cannot be exported")

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict) -> Any:
        return self

    def __repr__(self) -> str:
        ref = self.ref
        return f"<{type(self).__name__} {ref.algorithm} {ref.label} id={ref.key_id.hex()} serial={ref.serial}>"


class TokenEcKey(_OnToken, ec.EllipticCurvePrivateKey):
    """An EC private key that lives on the token: it signs there, and refuses to be exported or copied out."""

    def __init__(self, store: _Store, ref: Any, public: ec.EllipticCurvePublicKey) -> None:
        self._store, self.ref, self._public = store, ref, public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.curve.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign(self, data: Any, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise TypeError("a token EC key signs with ECDSA only")
        digest, algorithm = _digest(data, signature_algorithm.algorithm)
        # ECDSA uses the leftmost bits of the digest, as many as the group order has (a whole number of octets for
        # P-256 and P-384): cut here, since tokens differ in what they do with a longer CKM_ECDSA input.
        raw = self._store.sign(self.ref, digest[:(self.key_size + 7) // 8], "ECDSA")
        half = len(raw) // 2
        signature = utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))
        try:
            self._public.verify(signature, digest, ec.ECDSA(utils.Prehashed(algorithm)))
        except InvalidSignature:
            raise TokenUnavailable(f"the token's signature with {self.ref.label} does not verify") from None
        return signature

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise sign_only()


class TokenRsaKey(_OnToken, rsa.RSAPrivateKey):
    """An RSA private key that lives on the token: it signs there (PKCS #1 v1.5), and refuses to be exported,
    copied out, or to decrypt."""

    def __init__(self, store: _Store, ref: Any, public: rsa.RSAPublicKey) -> None:
        self._store, self.ref, self._public = store, ref, public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    def sign(self, data: Any, padding_: padding.AsymmetricPadding, algorithm: Any) -> bytes:
        if not isinstance(padding_, padding.PKCS1v15):
            raise TypeError("a token RSA key signs with PKCS #1 v1.5 only")
        digest, hashed = _digest(data, algorithm)
        prefix = _DIGEST_INFO.get(hashed.name)
        if prefix is None:
            raise TypeError(f"a token RSA key signs SHA-256, SHA-384 or SHA-512 digests, not {hashed.name}")
        signature = self._store.sign(self.ref, prefix + digest, "RSA_PKCS")
        try:
            self._public.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(hashed))
        except InvalidSignature:
            raise TokenUnavailable(f"the token's signature with {self.ref.label} does not verify") from None
        return signature

    def decrypt(self, ciphertext: bytes, padding_: padding.AsymmetricPadding) -> bytes:
        raise sign_only()


TOKEN_KEY_TYPES = (TokenEcKey, TokenRsaKey)  # isinstance: a key on the token
