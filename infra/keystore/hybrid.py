"""HybridKemProvider: data keys wrapped to a static ML-KEM-768 + X25519 recipient (post-quantum hybrid)."""

from __future__ import annotations

import hashlib
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from infra.keystore.kek import (HYBRID_KEY_FILE, KEY_BYTES, NONCE_BYTES, UnwrapFailed, VersionedKeyFiles, hkdf,
                                bind, wipe)


class _Recipient:
    """One ML-KEM-768 + X25519 recipient key pair (the format below)."""

    provider = "hybrid"
    VERSION = b"\x01"
    CT_M, CT_X = 1088, 32

    def __init__(self, secret: bytearray) -> None:
        self._kem = mlkem.MLKEM768PrivateKey.from_seed_bytes(bytes(secret[:64]))
        self._dh = x25519.X25519PrivateKey.from_private_bytes(bytes(secret[64:]))
        self._pk_m = self._kem.public_key().public_bytes_raw()
        self._pk_x = self._dh.public_key().public_bytes_raw()
        self.kek_id = f"hybrid:{hashlib.sha256(self._pk_m + self._pk_x).hexdigest()[:32]}"
        self._length = 1 + self.CT_M + self.CT_X + NONCE_BYTES + KEY_BYTES + 16

    def _combine(self, ss_m: bytes, ss_x: bytes, ct_m: bytes, ct_x: bytes, tenant_id: str) -> bytearray:
        ikm = bytearray(ss_m + ss_x)
        try:
            return hkdf(ikm, bind("csm/v1/hybrid-kek", ct_m, ct_x, self._pk_x, self._pk_m, tenant_id))
        finally:
            wipe(ikm)

    def _aad(self, tenant_id: str) -> bytes:
        return bind("csm/v1/wrap", self.provider, self.kek_id, tenant_id)

    def wrap(self, tenant_id: str, dek: bytes | bytearray) -> bytes:
        ss_m, ct_m = self._kem.public_key().encapsulate()
        ephemeral = x25519.X25519PrivateKey.generate()
        ct_x = ephemeral.public_key().public_bytes_raw()
        key = self._combine(ss_m, ephemeral.exchange(self._dh.public_key()), ct_m, ct_x, tenant_id)
        try:
            nonce = secrets.token_bytes(NONCE_BYTES)
            sealed = AESGCM(key).encrypt(nonce, bytes(dek), self._aad(tenant_id))
        finally:
            wipe(key)
        return self.VERSION + ct_m + ct_x + nonce + sealed

    def unwrap(self, tenant_id: str, wrapped: bytes) -> bytearray:
        if len(wrapped) != self._length or wrapped[:1] != self.VERSION:
            raise UnwrapFailed("the wrapped data key has the wrong length or version")
        ct_m = wrapped[1:1 + self.CT_M]
        ct_x = wrapped[1 + self.CT_M:1 + self.CT_M + self.CT_X]
        nonce = wrapped[1 + self.CT_M + self.CT_X:1 + self.CT_M + self.CT_X + NONCE_BYTES]
        try:
            # ML-KEM decapsulation never fails on a well-sized ciphertext (implicit rejection):
            # a tampered ct_M yields a pseudo-random secret, which GCM then refuses.
            ss_m = self._kem.decapsulate(ct_m)
            ss_x = self._dh.exchange(x25519.X25519PublicKey.from_public_bytes(ct_x))
        except ValueError as exc:  # e.g. a low-order X25519 point: the exchange yields all zeroes
            raise UnwrapFailed(f"the wrapped data key's KEM ciphertext is invalid: {exc}") from exc
        key = self._combine(ss_m, ss_x, ct_m, ct_x, tenant_id)
        try:
            return bytearray(AESGCM(key).decrypt(nonce, wrapped[-(KEY_BYTES + 16):], self._aad(tenant_id)))
        except InvalidTag as exc:
            raise UnwrapFailed("the wrapped data key fails authentication") from exc
        finally:
            wipe(key)

    def close(self) -> None:
        """Nothing to wipe that we own: cryptography holds the private keys in OpenSSL memory."""


class HybridKemProvider(VersionedKeyFiles):
    """Post-quantum hybrid wrap to a static recipient: ML-KEM-768 + X25519, X-Wing-style combiner.

    The first recipient key pair lives in one 0600 file ``<keys_dir>/kek-hybrid-mlkem768-x25519.key``
    (rotated ones in ``<keys_dir>/kek/hybrid-<hex>.key``): the 64-byte ML-KEM-768 seed followed by
    the 32-byte X25519 private key. To wrap:

    1. ``(ss_M, ct_M) = ML-KEM-768.Encaps(pk_M)``;
    2. a fresh X25519 key ``e``; ``ss_X = X25519(e, pk_X)``; ``ct_X = e.public``;
    3. ``k = HKDF-SHA-384(ikm = ss_M || ss_X, salt = none, info = bind("csm/v1/hybrid-kek",
       ct_M, ct_X, pk_X, pk_M, tenant_id))``. Like X-Wing, the combiner hashes the X25519
       ciphertext and recipient key alongside both secrets (so the classical half cannot be
       swapped or re-randomised); unlike X-Wing it also hashes ct_M and pk_M, which costs
       nothing and does not rely on ML-KEM's ciphertext binding. Either shared secret alone,
       if unbroken, keeps ``k`` secret;
    4. ``AES-256-GCM(k, nonce, dek, aad = bind("csm/v1/wrap", "hybrid", kek_id, tenant_id))``.

    Wrapped = 0x01 || ct_M (1088) || ct_X (32) || nonce (12) || ciphertext+tag (48).
    ``kek_id`` is "hybrid:" + the first 128 bits of SHA-256(pk_M || pk_X).
    """

    provider = "hybrid"
    BASE_FILE = HYBRID_KEY_FILE
    SIZE = 64 + 32
    VERSION = _Recipient.VERSION
    CT_M, CT_X = _Recipient.CT_M, _Recipient.CT_X

    def _open(self, secret: bytearray) -> _Recipient:
        return _Recipient(secret)
