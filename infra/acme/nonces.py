"""ACME nonces (RFC 8555 6.5): the ``NonceStore`` port and its two stores, one chosen at wiring time (``open_nonces``).

A nonce is 128 random bits, accepted once within ``lifetime`` seconds (an hour) by whichever process sees it first,
and refused afterwards (a replay), when expired, and when no process that shares the store issued it.

- ``SQLiteNonceStore`` (the embedded default): rows of ``acme-nonces.db``, which every process of one server opens.
  Issuing inserts a row; consuming deletes it, and only the one delete that finds the row succeeds. Expired rows
  are pruned as new ones are issued.
- ``RedisNonceStore`` (``CSM_REDIS_URL`` set): one key per nonce, ``SET ... EX lifetime NX`` on issue and ``DEL`` on
  consume, which returns 1 to exactly one caller; Redis expires the key. Every server that shares the Redis accepts
  a nonce any of them issued: several servers on separate data directories behind one load balancer.

Nonces are not secrets, but neither store logs one; an error names at most its first characters.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)
LIFETIME = 3600.0
PRUNE_EVERY = 256  # issues between two prunes of expired rows
MAX_LENGTH = 64  # a longer "nonce" is no nonce of ours (ours are 22 characters): refused without a look-up
REDIS_PREFIX = "csm-acme-nonce:"


class NoncesUnavailable(Exception):
    """The nonce store cannot be reached (Redis down): no nonce can be issued, and none is accepted."""


class NonceStore(Protocol):
    def issue(self) -> str:
        """A fresh nonce, accepted once by ``consume`` within the lifetime, in any process sharing this store."""

    def consume(self, nonce: str) -> bool:
        """True once for a nonce issued through this store and not expired; False otherwise, a replay included."""

    def close(self) -> None: ...


def shown(nonce: str) -> str:
    """A nonce as a log line may name it: its first four characters."""
    return nonce[:4] + "…"


class SQLiteNonceStore:
    """Nonces shared by the processes of one server, in one SQLite file (WAL)."""

    def __init__(self, path: Path, lifetime: float = LIFETIME) -> None:
        self.path = path
        self.lifetime = lifetime
        self._lock = threading.Lock()
        self._issued = 0
        self._conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")  # a nonce lost in a power cut is only a client's retry
        self._conn.execute("CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, expires REAL NOT NULL) "
                           "WITHOUT ROWID")
        path.chmod(0o600)

    def issue(self) -> str:
        nonce = secrets.token_urlsafe(16)
        now = time.time()
        with self._lock:
            self._conn.execute("INSERT INTO nonces VALUES (?, ?)", (nonce, now + self.lifetime))
            self._issued += 1
            if self._issued % PRUNE_EVERY == 0:
                self._conn.execute("DELETE FROM nonces WHERE expires < ?", (now,))
        return nonce

    def consume(self, nonce: str) -> bool:
        if not nonce or len(nonce) > MAX_LENGTH:
            return False
        with self._lock:
            deleted = self._conn.execute("DELETE FROM nonces WHERE nonce = ? AND expires >= ?",
                                         (nonce, time.time())).rowcount
        return deleted == 1

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class RedisNonceStore:
    """Nonces shared by every server connected to one Redis: a key per nonce, expired by Redis itself."""

    def __init__(self, url: str, lifetime: float = LIFETIME, *, prefix: str = REDIS_PREFIX) -> None:
        import redis  # only a deployment with Redis needs the client

        self._errors = redis.RedisError
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.lifetime_ms = max(1, round(lifetime * 1000))
        self.prefix = prefix

    def issue(self) -> str:
        nonce = secrets.token_urlsafe(16)
        try:
            # NX: 128 random bits do not collide, and if they did the older nonce would keep its single use
            if not self._redis.set(self.prefix + nonce, b"1", px=self.lifetime_ms, nx=True):
                raise NoncesUnavailable(f"a fresh nonce ({shown(nonce)}) was already in Redis")
        except self._errors as exc:
            raise NoncesUnavailable(f"Redis does not answer: {type(exc).__name__}") from exc
        return nonce

    def consume(self, nonce: str) -> bool:
        if not nonce or len(nonce) > MAX_LENGTH:
            return False
        try:
            # DEL is atomic on the Redis server: of any number of servers consuming one nonce, one is told 1
            return self._redis.delete(self.prefix + nonce) == 1
        except self._errors as exc:
            raise NoncesUnavailable(f"Redis does not answer: {type(exc).__name__}") from exc

    def close(self) -> None:
        self._redis.close()


def open_nonces(data_dir_file: Path, redis_url: str | None, lifetime: float = LIFETIME) -> NonceStore:
    """Redis when the service has one (every server shares the nonces), else the data directory's SQLite file."""
    if redis_url:
        return RedisNonceStore(redis_url, lifetime)
    return SQLiteNonceStore(data_dir_file, lifetime)
