"""SQLiteArtifactStore: published documents (CRLs) in ``<data_dir>/artifacts.db``, named by their SHA-256."""

from __future__ import annotations

import asyncio
import hashlib
import re
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

from commands.runtime import rfc3339
from projections.sqlite_wal import use_wal

DB_FILE = "artifacts.db"
SHA256_RE = re.compile(r"[0-9a-f]{64}")
SCHEMA = """
CREATE TABLE IF NOT EXISTS artifacts (
    sha256     TEXT PRIMARY KEY,
    media_type TEXT NOT NULL,
    body       BLOB NOT NULL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;
"""


class SQLiteArtifactStore:
    """Implements ``commands.ports.ArtifactStore``. One connection behind a lock; writes are fsynced.

    Artifacts are public (a CRL is served to anyone), so the file needs no 0600; durability
    matters instead: WAL with ``synchronous = FULL``, because the event naming an artifact
    is appended right after ``put`` returns.
    """

    def __init__(self, data_dir: Path | str) -> None:
        self.path = Path(data_dir) / DB_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = sqlite3.connect(self.path, isolation_level=None,
                                                                check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout = 30000")
        use_wal(self._conn)
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.executescript(SCHEMA)

    async def put(self, data: bytes, media_type: str) -> str:
        return await asyncio.to_thread(self.put_sync, data, media_type)

    async def get(self, sha256: str) -> bytes | None:
        return await asyncio.to_thread(self.get_sync, sha256)

    def put_sync(self, data: bytes, media_type: str) -> str:
        digest = hashlib.sha256(data).hexdigest()
        created = rfc3339(datetime.now(UTC))
        with self._lock:
            self._connection().execute("INSERT OR IGNORE INTO artifacts VALUES (?, ?, ?, ?)",
                                       (digest, media_type, data, created))
        return digest

    def get_sync(self, sha256: str) -> bytes | None:
        if not SHA256_RE.fullmatch(sha256):
            return None
        with self._lock:
            row = self._connection().execute("SELECT body FROM artifacts WHERE sha256 = ?", (sha256,)).fetchone()
        if row is None:
            return None
        body = bytes(row[0])
        # Content addressing is only worth something if it is checked on the way out.
        if hashlib.sha256(body).hexdigest() != sha256:
            raise RuntimeError(f"artifact {sha256} is corrupt: its content no longer hashes to its name")
        return body

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the artifact store is closed")
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
