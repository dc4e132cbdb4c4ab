"""Key-encryption-key providers: wrap a data key for a tenant (local master key, hybrid ML-KEM-768 + X25519).

A provider is named in every row it wraps (``provider``, ``kek_id``), so rows written under
one provider stay readable after the default changes. The PKCS#11 token provider
(infra/keystore/pkcs11.py: a tenant key on the token, AES-GCM with the tenant as associated
data, ``kek_id`` = token serial + key id + label) implements the same ``KekProvider``.

Python cannot promise erasure: ``bytes`` are immutable, cryptography returns plaintext as
``bytes``, and the allocator may have copied buffers. We keep data keys in ``bytearray``
where we own them, wipe those after use, and hold no plaintext beyond the call that needs it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from infra.private_files import write_file

NONCE_BYTES = 12
KEY_BYTES = 32
MASTER_KEY_FILE = "master.key"
HYBRID_KEY_FILE = "kek-hybrid-mlkem768-x25519.key"


class KekError(Exception):
    """Base of the providers' refusals; the vault turns these into domain errors."""


class KekUnavailable(KekError):
    """The provider's key material is missing, unreadable, unsafe, or not the key a row names."""


class UnwrapFailed(KekError):
    """A wrapped data key failed authentication: corrupted, tampered with, or moved between tenants."""


class KekProvider(Protocol):
    """Wraps and unwraps 256-bit data keys under a tenant's key-encryption key."""

    provider: str

    def wrap(self, tenant_id: str, dek: bytes | bytearray) -> tuple[str, bytes]: ...

    def unwrap(self, tenant_id: str, kek_id: str, wrapped: bytes) -> bytearray: ...


def bind(*fields: str | bytes) -> bytes:
    """Unambiguous associated data: each field length-prefixed, so no two field lists encode alike."""
    out = bytearray()
    for value in fields:
        raw = value.encode() if isinstance(value, str) else bytes(value)
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def wipe(buffer: bytearray | None) -> None:
    if buffer is not None:
        buffer[:] = bytes(len(buffer))


# key files ---------------------------------------------------------------------------------

def _open_private_file(path: Path) -> int:
    """An open descriptor on a regular file only this process's uid owns and can read, or KekUnavailable."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise KekUnavailable(f"cannot open key file {path}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KekUnavailable(f"key file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise KekUnavailable(f"key file {path} has mode {stat.S_IMODE(info.st_mode):04o}: group/other may "
                                 f"access it; refusing to use it (chmod 600 {path} after checking who read it)")
        if info.st_uid != os.getuid():
            raise KekUnavailable(f"key file {path} is owned by uid {info.st_uid}, not by this process's uid")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_private_file(path: Path, size: int) -> bytearray:
    """Read a key file, refusing one that others could read or that is not what we wrote."""
    fd = _open_private_file(path)
    try:
        data = bytearray(size + 1)
        with os.fdopen(os.dup(fd), "rb", buffering=0) as handle:
            read = handle.readinto(data)
        if read != size:
            wipe(data)
            raise KekUnavailable(f"key file {path} holds {read} bytes, not the {size} of a key: damaged or not ours")
        del data[size:]
        return data
    finally:
        os.close(fd)


def read_secret_line(path: Path, limit: int = 256) -> str:
    """The first line of a secret file (a token PIN), with the key files' checks: 0600, ours, a regular file."""
    fd = _open_private_file(path)
    try:
        with os.fdopen(os.dup(fd), "rb", buffering=0) as handle:
            raw = handle.read(limit + 1)
    finally:
        os.close(fd)
    line = raw.split(b"\n", 1)[0].rstrip(b"\r")
    if not line or len(raw) > limit:
        raise KekUnavailable(f"secret file {path} must hold one non-empty line of at most {limit} bytes")
    try:
        return line.decode()
    except UnicodeDecodeError:
        raise KekUnavailable(f"secret file {path} is not UTF-8 text") from None


def _create_private_file(path: Path, data: bytes | bytearray) -> bool:
    """Publish ``data`` at ``path`` mode 0600 unless it exists; return whether we created it.

    ``write_file`` links a whole, fsynced temporary file into place: two processes starting at once agree
    on one key, and no reader ever sees a half-written one.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        write_file(path, data, replace=False)
    except FileExistsError:
        return False
    return True


def _load_or_create(path: Path, size: int, create: bool) -> bytearray:
    if create and not path.exists():
        fresh = bytearray(secrets.token_bytes(size))
        try:
            _create_private_file(path, fresh)
        finally:
            wipe(fresh)
    return _read_private_file(path, size)


def _hkdf(ikm: bytes | bytearray, info: bytes) -> bytearray:
    return bytearray(HKDF(algorithm=hashes.SHA384(), length=KEY_BYTES, salt=None, info=info).derive(bytes(ikm)))


# local master key ----------------------------------------------------------------------------

class LocalMasterKeyProvider:
    """The embedded default: one 256-bit master key in ``<keys_dir>/master.key`` (mode 0600).

    Tenant KEK = HKDF-SHA-384(master, salt=None, info="csm/v1/kek\\0" + tenant_id), 32 bytes.
    The DEK is wrapped with AES-256-GCM (not AES-KW: GCM lets us bind the tenant and the
    KEK id as associated data), under a random 96-bit nonce. Wrapped = nonce || ciphertext || tag
    (60 bytes). ``kek_id`` is "local:" + a 128-bit HKDF fingerprint of the master key.
    """

    provider = "local"

    def __init__(self, keys_dir: Path, *, create: bool = True) -> None:
        self.path = Path(keys_dir) / MASTER_KEY_FILE
        self._master = _load_or_create(self.path, KEY_BYTES, create)
        fingerprint = _hkdf(self._master, b"csm/v1/kek-id")
        self.kek_id = f"local:{bytes(fingerprint[:16]).hex()}"
        wipe(fingerprint)

    def _kek(self, tenant_id: str) -> bytearray:
        return _hkdf(self._master, b"csm/v1/kek\0" + tenant_id.encode())

    def _aad(self, tenant_id: str) -> bytes:
        return bind("csm/v1/wrap", self.provider, self.kek_id, tenant_id)

    def wrap(self, tenant_id: str, dek: bytes | bytearray) -> tuple[str, bytes]:
        kek = self._kek(tenant_id)
        try:
            nonce = secrets.token_bytes(NONCE_BYTES)
            return self.kek_id, nonce + AESGCM(kek).encrypt(nonce, bytes(dek), self._aad(tenant_id))
        finally:
            wipe(kek)

    def unwrap(self, tenant_id: str, kek_id: str, wrapped: bytes) -> bytearray:
        if kek_id != self.kek_id:
            raise KekUnavailable(f"this data key was wrapped by master key {kek_id}; {self.path} is {self.kek_id}")
        if len(wrapped) != NONCE_BYTES + KEY_BYTES + 16:
            raise UnwrapFailed("the wrapped data key has the wrong length")
        kek = self._kek(tenant_id)
        try:
            return bytearray(AESGCM(kek).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], self._aad(tenant_id)))
        except InvalidTag as exc:
            raise UnwrapFailed("the wrapped data key fails authentication") from exc
        finally:
            wipe(kek)

    def close(self) -> None:
        wipe(self._master)


# hybrid ML-KEM-768 + X25519 ------------------------------------------------------------------

class HybridKemProvider:
    """Post-quantum hybrid wrap to a static recipient: ML-KEM-768 + X25519, X-Wing-style combiner.

    The recipient key pair lives in one 0600 file ``<keys_dir>/kek-hybrid-mlkem768-x25519.key``:
    the 64-byte ML-KEM-768 seed followed by the 32-byte X25519 private key. To wrap:

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
    VERSION = b"\x01"
    CT_M, CT_X = 1088, 32

    def __init__(self, keys_dir: Path, *, create: bool = True) -> None:
        self.path = Path(keys_dir) / HYBRID_KEY_FILE
        secret = _load_or_create(self.path, 64 + 32, create)
        try:
            self._kem = mlkem.MLKEM768PrivateKey.from_seed_bytes(bytes(secret[:64]))
            self._dh = x25519.X25519PrivateKey.from_private_bytes(bytes(secret[64:]))
        finally:
            wipe(secret)
        self._pk_m = self._kem.public_key().public_bytes_raw()
        self._pk_x = self._dh.public_key().public_bytes_raw()
        self.kek_id = f"hybrid:{hashlib.sha256(self._pk_m + self._pk_x).hexdigest()[:32]}"
        self._length = 1 + self.CT_M + self.CT_X + NONCE_BYTES + KEY_BYTES + 16

    def _combine(self, ss_m: bytes, ss_x: bytes, ct_m: bytes, ct_x: bytes, tenant_id: str) -> bytearray:
        ikm = bytearray(ss_m + ss_x)
        try:
            return _hkdf(ikm, bind("csm/v1/hybrid-kek", ct_m, ct_x, self._pk_x, self._pk_m, tenant_id))
        finally:
            wipe(ikm)

    def _aad(self, tenant_id: str) -> bytes:
        return bind("csm/v1/wrap", self.provider, self.kek_id, tenant_id)

    def wrap(self, tenant_id: str, dek: bytes | bytearray) -> tuple[str, bytes]:
        ss_m, ct_m = self._kem.public_key().encapsulate()
        ephemeral = x25519.X25519PrivateKey.generate()
        ct_x = ephemeral.public_key().public_bytes_raw()
        key = self._combine(ss_m, ephemeral.exchange(self._dh.public_key()), ct_m, ct_x, tenant_id)
        try:
            nonce = secrets.token_bytes(NONCE_BYTES)
            sealed = AESGCM(key).encrypt(nonce, bytes(dek), self._aad(tenant_id))
        finally:
            wipe(key)
        return self.kek_id, self.VERSION + ct_m + ct_x + nonce + sealed

    def unwrap(self, tenant_id: str, kek_id: str, wrapped: bytes) -> bytearray:
        if kek_id != self.kek_id:
            raise KekUnavailable(f"this data key was wrapped to recipient {kek_id}; {self.path} is {self.kek_id}")
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


BUILTIN = {"local": LocalMasterKeyProvider, "hybrid": HybridKemProvider}
