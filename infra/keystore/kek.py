"""Key-encryption-key providers: wrap a data key for a tenant (the local master key here; the hybrid
ML-KEM-768 + X25519 recipient in infra/keystore/hybrid.py, a PKCS#11 token in infra/keystore/pkcs11.py).

A provider is named in every row it wraps (``provider``, ``kek_id``), so rows written under
one provider stay readable after the default changes. A provider keeps every KEK version it
made until it is retired (``create_kek``, ``retire_kek``: ``RotatingKekProvider``); which
version wraps a tenant's new keys is the vault's KEK registry's to say (infra/keystore/keks.py).

Python cannot promise erasure: ``bytes`` are immutable, cryptography returns plaintext as
``bytes``, and the allocator may have copied buffers. We keep data keys in ``bytearray``
where we own them, wipe those after use, and hold no plaintext beyond the call that needs it.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import threading
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from infra.private_files import sync_directory, write_file

NONCE_BYTES = 12
KEY_BYTES = 32
MASTER_KEY_FILE = "master.key"
HYBRID_KEY_FILE = "kek-hybrid-mlkem768-x25519.key"
VERSIONS_DIR = "kek"  # <keys_dir>/kek/<provider>-<hex>.key: the versions rotation made
_SUFFIX = re.compile(r"[0-9a-f]{32}")


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


class RotatingKekProvider(KekProvider, Protocol):
    """A provider that keeps KEK versions: wraps under a named one, makes new ones, destroys retired ones.

    ``wrap(tenant, dek, kek_id=None)`` wraps under ``kek_id``, or under the provider's own default for the
    tenant (``current_kek_id``) when the registry names none. ``base_scope`` says for whom a KEK is that
    default: "" (every tenant: a key file), a tenant id (its key on a token), or None (a rotated version).
    """

    def wrap(self, tenant_id: str, dek: bytes | bytearray, kek_id: str | None = None) -> tuple[str, bytes]: ...

    def current_kek_id(self, tenant_id: str) -> str: ...

    def existing_kek_id(self, tenant_id: str) -> str | None:
        """``current_kek_id`` without making a key where the tenant has none yet (None then)."""
        ...

    def create_kek(self, tenant_id: str | None) -> str: ...

    def retire_kek(self, kek_id: str) -> None: ...

    def base_scope(self, kek_id: str) -> str | None: ...

    def check_kek(self, kek_id: str) -> None:
        """Whether ``kek_id`` can be used right now (KekUnavailable: why not), without unwrapping anything."""
        ...


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


def hkdf(ikm: bytes | bytearray, info: bytes) -> bytearray:
    return bytearray(HKDF(algorithm=hashes.SHA384(), length=KEY_BYTES, salt=None, info=info).derive(bytes(ikm)))


# key files with versions ----------------------------------------------------------------------

class VersionedKeyFiles:
    """A file provider's KEKs: the first in ``<keys_dir>/<BASE_FILE>``, rotated ones in ``<keys_dir>/kek/``.

    A version's file is named after its ``kek_id`` (``<provider>-<32 hex>.key``), read on first use
    and checked to be that key. The base file is created only where no key of this provider exists
    yet: once it is retired (deleted), the versions that replaced it are the provider's keys.
    Subclasses say how a secret becomes a key object (``SIZE``, ``_open``) with ``kek_id``, ``wrap``
    and ``unwrap``, and ``close``.
    """

    provider: str
    BASE_FILE: str
    SIZE: int

    def __init__(self, keys_dir: Path, *, create: bool = True) -> None:
        self.keys_dir = Path(keys_dir)
        self.path = self.keys_dir / self.BASE_FILE
        self._lock = threading.Lock()
        self._keys: dict[str, Any] = {}
        self.kek_id: str | None = None
        if self.path.exists() or not self._versions():
            secret = _load_or_create(self.path, self.SIZE, create)
            try:
                key = self._open(secret)
            finally:
                wipe(secret)
            self.kek_id, self._keys[key.kek_id] = key.kek_id, key

    def _open(self, secret: bytearray) -> Any:
        raise NotImplementedError

    def _versions(self) -> list[Path]:
        return sorted((self.keys_dir / VERSIONS_DIR).glob(f"{self.provider}-*.key"))

    def version_path(self, kek_id: str) -> Path:
        """Where a rotated version's file is; KekUnavailable for an id this provider never makes."""
        prefix, _, suffix = kek_id.partition(":")
        if prefix != self.provider or not _SUFFIX.fullmatch(suffix):
            raise KekUnavailable(f"{kek_id!r} does not name a {self.provider} KEK")
        return self.keys_dir / VERSIONS_DIR / f"{self.provider}-{suffix}.key"

    def kek_ids_on_disk(self) -> list[str]:
        """The base file's KEK and every version file's (by its name), whether or not anything uses them."""
        named = [f"{self.provider}:{path.stem.removeprefix(self.provider + '-')}" for path in self._versions()]
        return ([self.kek_id] if self.kek_id else []) + [kek_id for kek_id in named if _SUFFIX.fullmatch(
            kek_id.partition(":")[2])]

    def kek_path(self, kek_id: str) -> Path:
        return self.path if kek_id == self.kek_id else self.version_path(kek_id)

    def _key(self, kek_id: str | None) -> Any:
        if kek_id is None:
            kek_id = self.kek_id
            if kek_id is None:
                raise KekUnavailable(f"{self.path} was retired and no {self.provider} KEK replaces it here")
        with self._lock:
            key = self._keys.get(kek_id)
            if key is not None:
                return key
            path = self.version_path(kek_id)
            if not path.exists():
                raise KekUnavailable(f"this data key was wrapped under {self.provider} KEK {kek_id}, which is "
                                     f"neither {self.path} ({self.kek_id or 'retired'}) nor in {path.parent} "
                                     "(retired, or another installation's)")
            secret = _read_private_file(path, self.SIZE)
            try:
                key = self._open(secret)
            finally:
                wipe(secret)
            if key.kek_id != kek_id:
                key.close()
                raise KekUnavailable(f"key file {path} holds {key.kek_id}, not {kek_id}: renamed or damaged")
            self._keys[kek_id] = key
            return key

    def check_kek(self, kek_id: str) -> None:
        """Status: the KEK's file is on disk now (not only cached), ours, mode 0600, and holds that very key;
        KekUnavailable otherwise. The key is opened and closed at once: nothing is unwrapped."""
        path = self.kek_path(kek_id)
        secret = _read_private_file(path, self.SIZE)
        try:
            key = self._open(secret)
        finally:
            wipe(secret)
        try:
            if key.kek_id != kek_id:
                raise KekUnavailable(f"key file {path} holds {key.kek_id}, not {kek_id}: replaced or damaged")
        finally:
            key.close()

    def wrap(self, tenant_id: str, dek: bytes | bytearray, kek_id: str | None = None) -> tuple[str, bytes]:
        key = self._key(kek_id)
        return key.kek_id, key.wrap(tenant_id, dek)

    def unwrap(self, tenant_id: str, kek_id: str, wrapped: bytes) -> bytearray:
        return self._key(kek_id).unwrap(tenant_id, wrapped)

    def current_kek_id(self, tenant_id: str) -> str:
        return self._key(None).kek_id

    def existing_kek_id(self, tenant_id: str) -> str | None:
        return self.kek_id

    def base_scope(self, kek_id: str) -> str | None:
        return "" if kek_id == self.kek_id else None

    def create_kek(self, tenant_id: str | None = None) -> str:
        """A new version (fresh random key material) in ``<keys_dir>/kek/``, mode 0600; returns its id.

        The file is named after the key and written whole before it is linked into place, so a crash
        leaves either no version or a complete one, which no row uses until the registry names it.
        """
        secret = bytearray(secrets.token_bytes(self.SIZE))
        try:
            key = self._open(secret)
            _create_private_file(self.version_path(key.kek_id), secret)
        finally:
            wipe(secret)
        with self._lock:
            self._keys[key.kek_id] = key
        return key.kek_id

    def retire_kek(self, kek_id: str) -> None:
        """Destroy a KEK: forget it and delete its file (the vault checked that no row names it)."""
        path = self.kek_path(kek_id)
        with self._lock:
            key = self._keys.pop(kek_id, None)
            if kek_id == self.kek_id:
                self.kek_id = None
        if key is not None:
            key.close()
        try:
            path.unlink()
        except FileNotFoundError:
            return
        sync_directory(path.parent)

    def close(self) -> None:
        with self._lock:
            for key in self._keys.values():
                key.close()
            self._keys.clear()


# local master key ----------------------------------------------------------------------------

class _MasterKey:
    """One 256-bit master key: tenant KEKs derive from it."""

    provider = "local"

    def __init__(self, secret: bytearray) -> None:
        self._master = bytearray(secret)
        fingerprint = hkdf(self._master, b"csm/v1/kek-id")
        self.kek_id = f"local:{bytes(fingerprint[:16]).hex()}"
        wipe(fingerprint)

    def _kek(self, tenant_id: str) -> bytearray:
        return hkdf(self._master, b"csm/v1/kek\0" + tenant_id.encode())

    def _aad(self, tenant_id: str) -> bytes:
        return bind("csm/v1/wrap", self.provider, self.kek_id, tenant_id)

    def wrap(self, tenant_id: str, dek: bytes | bytearray) -> bytes:
        kek = self._kek(tenant_id)
        try:
            nonce = secrets.token_bytes(NONCE_BYTES)
            return nonce + AESGCM(kek).encrypt(nonce, bytes(dek), self._aad(tenant_id))
        finally:
            wipe(kek)

    def unwrap(self, tenant_id: str, wrapped: bytes) -> bytearray:
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


class LocalMasterKeyProvider(VersionedKeyFiles):
    """The embedded default: a 256-bit master key in ``<keys_dir>/master.key`` (mode 0600), and the
    versions rotation made in ``<keys_dir>/kek/local-<hex>.key``.

    Tenant KEK = HKDF-SHA-384(master, salt=None, info="csm/v1/kek\\0" + tenant_id), 32 bytes.
    The DEK is wrapped with AES-256-GCM (not AES-KW: GCM lets us bind the tenant and the
    KEK id as associated data), under a random 96-bit nonce. Wrapped = nonce || ciphertext || tag
    (60 bytes). ``kek_id`` is "local:" + a 128-bit HKDF fingerprint of the master key.
    """

    provider = "local"
    BASE_FILE = MASTER_KEY_FILE
    SIZE = KEY_BYTES

    def _open(self, secret: bytearray) -> _MasterKey:
        return _MasterKey(secret)
