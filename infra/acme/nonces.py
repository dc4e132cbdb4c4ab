"""ACME nonces (RFC 8555 6.5): issued and consumed in one SQLite file that every process of a server opens.

A nonce is 128 random bits. Issuing inserts it; consuming deletes it, and only the one delete that finds the row
succeeds, so a nonce issued by one HTTP worker is accepted once by any worker, and a replay is refused. Nonces
expire after ``lifetime`` seconds; expired rows are pruned as new ones are issued.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from pathlib import Path

LIFETIME = 3600.0
PRUNE_EVERY = 256  # issues between two prunes of expired rows


class NonceStore:
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
        """True once for a nonce this server issued and has not expired; False for any other, and for a replay."""
        if not nonce or len(nonce) > 64:
            return False
        with self._lock:
            deleted = self._conn.execute("DELETE FROM nonces WHERE nonce = ? AND expires >= ?",
                                         (nonce, time.time())).rowcount
        return deleted == 1

    def close(self) -> None:
        with self._lock:
            self._conn.close()
