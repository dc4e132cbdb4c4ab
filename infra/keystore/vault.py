"""SQLiteKeyVault: envelope-encrypted private keys in ``<data_dir>/keys.db``, confined to a tenant."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from commands.runtime import rfc3339
from domain.errors import DomainError, KeyUnavailable, NotFound
from domain.vault import StoredKey
from infra.keystore.hybrid import HybridKemProvider
from infra.keystore.kek import (KEY_BYTES, NONCE_BYTES, VERSIONS_DIR, KekProvider, KekUnavailable,
                                LocalMasterKeyProvider, UnwrapFailed, bind, wipe)
from infra.keystore.keks import NOT_RETIRED, KekAdministration, assigned_kek
from infra.keystore.keks import SCHEMA as KEK_SCHEMA
from projections.sqlite_wal import use_wal

log = logging.getLogger(__name__)
BUILTIN: dict[str, Callable[..., KekProvider]] = {"local": LocalMasterKeyProvider, "hybrid": HybridKemProvider}

DB_FILE = "keys.db"
FORMAT_VERSION = "1"  # bound into every ciphertext's associated data
KEY_ID_RE = re.compile(r"key_[0-9a-f]{32}")
SCHEMA = """
CREATE TABLE IF NOT EXISTS private_keys (
    key_id       TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    algorithm    TEXT NOT NULL,
    purpose      TEXT NOT NULL,
    kek_provider TEXT NOT NULL,
    kek_id       TEXT NOT NULL,
    wrapped_dek  BLOB NOT NULL,
    nonce        BLOB NOT NULL,
    ciphertext   BLOB NOT NULL,
    created_at   TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS private_keys_tenant ON private_keys (tenant_id);
CREATE INDEX IF NOT EXISTS private_keys_provider ON private_keys (kek_provider, kek_id);
"""


class KeyMaterialCorrupt(DomainError):
    """A stored key cannot be decrypted: a server-side fault, never the caller's."""

    status = 500

    def __init__(self, key_id: str, why: str) -> None:
        super().__init__("key_material_corrupt", f"key {key_id} cannot be decrypted: {why}", field="key_id")


class KekUnavailableError(KeyUnavailable):
    """The KEK a key was wrapped under is not configured or not readable here."""

    def __init__(self, key_id: str, why: str, *, action: str = "unwrapped") -> None:
        super().__init__("kek_unavailable", f"key {key_id} cannot be {action}: {why}", field="key_id")


def content_aad(tenant_id: str, key_id: str, algorithm: str, purpose: str) -> bytes:
    """What a key's ciphertext is bound to: moved to another row or tenant, it no longer decrypts."""
    return bind("csm/private-key", FORMAT_VERSION, tenant_id, key_id, algorithm, purpose)


def _not_found(key_id: str) -> NotFound:
    return NotFound("key_not_found", f"key {key_id} does not exist", field="key_id")


def _prepare_db_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:  # SQLite gives its -wal and -shm files the database file's mode, so 0600 here covers them
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KekUnavailable(f"{path} has mode {mode:04o}: group/other may access it; refusing to use it "
                             f"(chmod 600 {path})")


class UnopenedProvider:
    """Stands in for a default provider that could not be opened (``csm keys status``): every use says why."""

    def __init__(self, provider: str, reason: str) -> None:
        self.provider, self.reason = provider, reason

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise KekUnavailable(self.reason)

    wrap = unwrap = check = check_kek = _refuse


class SQLiteKeyVault(KekAdministration):
    """The ``KeyVault`` port on a separate SQLite file (WAL, synchronous=FULL, mode 0600).

    ``kek_provider`` chooses who wraps new data keys ("local", "hybrid" or "pkcs11"), under the
    KEK the registry assigns the tenant (infra/keystore/keks.py: rotation, re-wrap, retirement); rows
    record their provider and KEK id, and are unwrapped by whichever provider wrote them, so
    switching the default keeps old rows readable. ``providers`` adds open providers by their
    ``provider`` name; ``factories`` adds providers opened on first use (a PKCS#11 token, which
    only the default must reach at startup). One connection, guarded by a lock, used from
    worker threads: the event loop never waits on SQLite or on a KEM.

    A key file provider makes its first key file only where keys.db names none of its KEKs: a missing
    ``master.key`` under which rows are wrapped is refused (restore it), never replaced. With
    ``require_default=False`` (``csm keys status``) a default provider that cannot be opened is no
    refusal: it stands in as ``UnopenedProvider``, and ``default_unavailable`` says why.
    """

    def __init__(self, data_dir: Path | str, *, kek_provider: str = "local",
                 providers: Iterable[KekProvider] = (),
                 factories: Mapping[str, Callable[[], KekProvider]] | None = None,
                 require_default: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.keys_dir = self.data_dir / "keys"
        self.path = self.data_dir / DB_FILE
        self._providers: dict[str, KekProvider] = {p.provider: p for p in providers}
        self._factories = dict(factories or {})
        if kek_provider not in {*self._providers, *self._factories, *BUILTIN}:
            raise ValueError(f"kek_provider must be one of {sorted({*BUILTIN, *self._providers, *self._factories})}, "
                             f"not {kek_provider!r}")
        self.kek_provider = kek_provider
        self._lock = threading.Lock()
        self._providers_lock = threading.Lock()
        self._first_keks = {}
        _prepare_db_file(self.path)
        self._conn: sqlite3.Connection | None = sqlite3.connect(self.path, isolation_level=None,
                                                                check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout = 30000")
        use_wal(self._conn)
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.executescript(SCHEMA + KEK_SCHEMA)
        self.default_unavailable: str | None = None  # why the default provider could not be opened (status only)
        try:  # refuses to start on unsafe or missing key files, or a token that does not log in
            self._default = self._provider(kek_provider, create=True)
        except KekUnavailable as exc:
            if require_default:
                self.close()
                raise
            self.default_unavailable = " ".join(str(exc).split())
            self._default = self._providers[kek_provider] = UnopenedProvider(kek_provider, self.default_unavailable)

    def _provider(self, name: str, *, create: bool = False) -> KekProvider:
        """The provider named by a row; built-ins open lazily, and only the default (or a rotation or re-wrap
        to one, ``KekAdministration._rotating``) may create key files."""
        with self._providers_lock:
            provider = self._providers.get(name)
            if provider is None:
                if name in self._factories:
                    provider = self._providers[name] = self._factories[name]()
                    return provider
                factory = BUILTIN.get(name)
                if factory is None:
                    raise KekUnavailable(f"no KEK provider {name!r} is configured")
                provider = self._providers[name] = self._open_key_files(name, factory, create)
            return provider

    def _open_key_files(self, name: str, factory: Callable[..., KekProvider], create: bool) -> KekProvider:
        """A key file provider; its first key file is made only if ``create`` and keys.db names none of its KEKs:
        a new key could unwrap none of the rows, and would hide that their KEK was lost."""
        named = self._named_keks(name)
        try:
            return factory(self.keys_dir, create=create and not named)
        except KekUnavailable as exc:
            base = self.keys_dir / getattr(factory, "BASE_FILE", "")
            if not named or base.exists():
                raise
            named = self._rows_under(name, named)
            shown = sorted(named, key=lambda kek_id: (-named[kek_id], kek_id))[:3]  # those under most rows
            more = f" and {len(named) - len(shown)} more" if len(named) > len(shown) else ""
            versions = [str(self.keys_dir / VERSIONS_DIR / f"{name}-{kek_id.partition(':')[2]}.key") for kek_id in shown]
            raise KekUnavailable(
                f"{exc}; keys.db names {len(named)} {name} KEKs ({', '.join(shown)}{more}), under which "
                f"{sum(named.values())} stored keys are wrapped, and no key file here holds them: restore {base} or "
                f"the rotated versions ({', '.join(versions)}{more}), mode 0600, from a backup (csm restore). No new "
                "key file is made: it could unwrap none of them") from None

    def _named_keks(self, name: str) -> set[str]:
        """The KEKs of ``name`` that rows name or that wrap new keys, retired ones aside. Every process start asks,
        so the rows' KEKs are read by skipping from one to the next in the (provider, KEK) index: a few lookups
        however many keys are stored (counting them walked the whole index: 250 ms at 500,000 keys)."""
        with self._lock:
            conn = self._connection()
            named, after = set(), ""
            while found := conn.execute("SELECT kek_id FROM private_keys WHERE kek_provider = ? AND kek_id > ? "
                                        "ORDER BY kek_id LIMIT 1", (name, after)).fetchone():
                named.add(after := found[0])
            named.update(kek_id for (kek_id,) in conn.execute(
                "SELECT DISTINCT kek_id FROM kek_assignments WHERE provider = ? AND kek_id NOT IN "
                "(SELECT kek_id FROM retired_keks)", (name,)))
        return named

    def _rows_under(self, name: str, keks: set[str]) -> dict[str, int]:
        """How many stored keys each of ``keks`` wraps (for the refusal's message only)."""
        with self._lock:
            conn = self._connection()
            return {kek_id: conn.execute("SELECT COUNT(*) FROM private_keys WHERE kek_provider = ? AND kek_id = ?",
                                         (name, kek_id)).fetchone()[0] for kek_id in keks}

    def check(self) -> None:
        """Readiness of the default provider's key material (a token answers); KekUnavailable otherwise."""
        self._connection()
        check = getattr(self._default, "check", None)
        if check is not None:
            check()

    # the port ----------------------------------------------------------------------------

    async def put(self, tenant_id: str, material: bytes, *, algorithm: str, purpose: str) -> str:
        return await asyncio.to_thread(self.put_sync, tenant_id, material, algorithm=algorithm, purpose=purpose)

    async def get(self, tenant_id: str, key_id: str) -> bytes:
        return await asyncio.to_thread(self.get_sync, tenant_id, key_id)

    # the work, on a worker thread --------------------------------------------------------

    def put_sync(self, tenant_id: str, material: bytes, *, algorithm: str, purpose: str) -> str:
        for name, value in (("tenant_id", tenant_id), ("algorithm", algorithm), ("purpose", purpose)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string")
        if not material:
            raise ValueError("material must not be empty")
        self._connection()  # refuse before any crypto: close() has wiped the providers' keys
        key_id = f"key_{secrets.token_hex(16)}"
        dek = bytearray(secrets.token_bytes(KEY_BYTES))
        try:
            nonce = secrets.token_bytes(NONCE_BYTES)
            ciphertext = AESGCM(dek).encrypt(nonce, bytes(material), content_aad(tenant_id, key_id, algorithm, purpose))
            for _ in range(2):  # once more if the KEK the registry named was retired before the row was written
                kek_id, wrapped = self._wrap_new(key_id, tenant_id, dek)
                row = (key_id, tenant_id, algorithm, purpose, self._default.provider, kek_id, wrapped, nonce,
                       ciphertext, rfc3339(datetime.now(UTC)), kek_id)
                with self._lock:
                    if self._connection().execute(f"INSERT INTO private_keys SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ? "
                                                  f"WHERE {NOT_RETIRED}", row).rowcount:
                        break
            else:
                raise KekUnavailableError(key_id, f"{kek_id} was retired while the key was being stored",
                                          action="stored")
        finally:
            wipe(dek)
        log.debug("stored key %s for tenant %s (%s, %s) under %s", key_id, tenant_id, algorithm, purpose, kek_id)
        return key_id

    def _wrap_new(self, key_id: str, tenant_id: str, dek: bytearray) -> tuple[str, bytes]:
        """Wrap a new key's data key under the KEK the registry assigns the tenant, else the one its rows name on the
        token (``_stored_first_kek``), else the provider's own (a token makes the tenant's first key now)."""
        with self._lock:
            assigned = assigned_kek(self._connection(), self._default.provider, tenant_id)
        try:
            assigned = assigned or self._stored_first_kek(self._default, tenant_id)
            if assigned is None:
                return self._default.wrap(tenant_id, dek)
            return self._default.wrap(tenant_id, dek, assigned)  # type: ignore[call-arg]
        except KekUnavailable as exc:  # a token that stopped answering: the request may be retried
            log.error("key %s: KEK unavailable: %s", key_id, exc)
            raise KekUnavailableError(key_id, str(exc), action="stored") from None

    def get_sync(self, tenant_id: str, key_id: str) -> bytes:
        if not isinstance(key_id, str) or not KEY_ID_RE.fullmatch(key_id):
            raise _not_found(str(key_id))
        self._connection()
        with self._lock:
            row = self._connection().execute(
                "SELECT algorithm, purpose, kek_provider, kek_id, wrapped_dek, nonce, ciphertext FROM private_keys "
                "WHERE key_id = ? AND tenant_id = ?", (key_id, tenant_id)).fetchone()
        if row is None:  # another tenant's key reads exactly like a missing one
            raise _not_found(key_id)
        algorithm, purpose, provider_name, kek_id, wrapped, nonce, ciphertext = row
        dek = None
        try:
            dek = self._provider(provider_name).unwrap(tenant_id, kek_id, bytes(wrapped))
            if len(dek) != KEY_BYTES or len(nonce) != NONCE_BYTES:
                raise UnwrapFailed("the data key or nonce has the wrong length")
            return AESGCM(dek).decrypt(bytes(nonce), bytes(ciphertext),
                                       content_aad(tenant_id, key_id, algorithm, purpose))
        except KekUnavailable as exc:
            log.error("key %s: KEK unavailable: %s", key_id, exc)
            raise KekUnavailableError(key_id, str(exc)) from None
        except (UnwrapFailed, InvalidTag, ValueError) as exc:
            log.error("key %s of tenant %s fails authentication: %s", key_id, tenant_id, type(exc).__name__)
            raise KeyMaterialCorrupt(key_id, "its data key or ciphertext fails authentication "
                                     "(corrupted or tampered with)") from None
        finally:
            wipe(dek)

    async def stored_before(self, cutoff: datetime) -> list[StoredKey]:
        return await asyncio.to_thread(self.stored_before_sync, cutoff)

    async def delete(self, key_ids: Sequence[str]) -> int:
        return await asyncio.to_thread(self.delete_sync, key_ids)

    def stored_before_sync(self, cutoff: datetime) -> list[StoredKey]:
        """Every key stored before ``cutoff`` (any tenant), oldest first: ids, tenants and purposes only."""
        bound = rfc3339(cutoff)  # as put_sync writes created_at: fixed width, so the strings compare as instants
        with self._lock:
            rows = self._connection().execute("SELECT key_id, tenant_id, purpose, created_at FROM private_keys "
                                              "WHERE created_at < ? ORDER BY created_at, key_id", (bound,)).fetchall()
        return [StoredKey(key_id=key_id, tenant_id=tenant_id, purpose=purpose,
                          created_at=datetime.fromisoformat(created_at)) for key_id, tenant_id, purpose, created_at in rows]

    def delete_sync(self, key_ids: Sequence[str]) -> int:
        """Delete these keys, in one transaction; returns how many there were."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                deleted = sum(conn.execute("DELETE FROM private_keys WHERE key_id = ?", (key_id,)).rowcount
                              for key_id in key_ids)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        log.info("deleted %d keys from the vault", deleted)
        return deleted

    def key_ids(self, tenant_id: str) -> list[str]:
        """The tenant's key ids, oldest first (for inventory and tests; never the material)."""
        with self._lock:
            rows = self._connection().execute("SELECT key_id FROM private_keys WHERE tenant_id = ? "
                                              "ORDER BY created_at, key_id", (tenant_id,)).fetchall()
        return [key_id for (key_id,) in rows]

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the key vault is closed")
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        with self._providers_lock:
            for provider in self._providers.values():
                close = getattr(provider, "close", None)
                if close:
                    close()
