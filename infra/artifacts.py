"""SQLiteArtifactStore: published documents (CRLs) in ``<data_dir>/artifacts.db``, named by their SHA-256.

A CRL superseded by the next one of its CA is kept as the difference from it (``infra/crypto/crl_delta.py``),
so a CA's CRLs take space in proportion to its revocations, not to their square; the latest is kept whole.
Reading an older one undoes the deltas from the nearest whole document, at most ``MAX_DEPTH`` of them, and
checks every step against the SHA-256 that names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from commands.crl import CRL_MEDIA_TYPE
from commands.runtime import rfc3339
from infra.crypto import crl_delta
from projections.sqlite_wal import use_wal

log = logging.getLogger(__name__)
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
# ``base``: the artifact this row's body is a delta from (NULL: the body is the document itself); ``depth``, on a
# whole document: the longest chain of deltas that resolves through it. Added to files made before deltas.
DELTA_COLUMNS = (("base", "TEXT"), ("depth", "INTEGER NOT NULL DEFAULT 0"))
DELTAS = {CRL_MEDIA_TYPE: crl_delta}  # media type -> codec with encode(newer, older) and decode(newer, delta)
MAX_DEPTH = 256  # an old CRL is at most this many deltas from a whole one


class CorruptArtifact(RuntimeError):
    """A stored artifact no longer yields the bytes its name promises."""


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
        self._add_delta_columns()

    def _add_delta_columns(self) -> None:
        conn = self._connection()
        with _transaction(conn, "BEGIN IMMEDIATE"):  # two processes opening an old file add them once
            present = {row[1] for row in conn.execute("PRAGMA table_info(artifacts)")}
            for name, declaration in DELTA_COLUMNS:
                if name not in present:
                    conn.execute(f"ALTER TABLE artifacts ADD COLUMN {name} {declaration}")

    async def put(self, data: bytes, media_type: str) -> str:
        return await asyncio.to_thread(self.put_sync, data, media_type)

    async def get(self, sha256: str) -> bytes | None:
        return await asyncio.to_thread(self.get_sync, sha256)

    async def supersede(self, newer: str, older: Sequence[str]) -> int:
        return await asyncio.to_thread(self.supersede_sync, newer, older)

    def put_sync(self, data: bytes, media_type: str) -> str:
        digest = hashlib.sha256(data).hexdigest()
        created = rfc3339(datetime.now(UTC))
        with self._lock:
            self._connection().execute("INSERT OR IGNORE INTO artifacts (sha256, media_type, body, created_at) "
                                       "VALUES (?, ?, ?, ?)", (digest, media_type, data, created))
        return digest

    def supersede_sync(self, newer: str, older: Sequence[str]) -> int:
        """Keep each of ``older`` (stored whole) as its difference from the artifact ``newer`` (stored whole), where
        their media type has a delta codec; returns how many were. Content is never lost: a row is rewritten only
        with a delta checked to give its bytes back, in one transaction."""
        with self._lock:
            conn = self._connection()
            with _transaction(conn, "BEGIN IMMEDIATE"):
                row = conn.execute("SELECT media_type, body, base, depth FROM artifacts WHERE sha256 = ?",
                                   (newer,)).fetchone()
                codec = DELTAS.get(row[0]) if row is not None and row[2] is None else None
                if codec is None:
                    return 0
                media_type, document, depth, done = row[0], _checked(newer, bytes(row[1])), row[3], 0
                for name in dict.fromkeys(older):
                    old = conn.execute("SELECT media_type, body, base, depth FROM artifacts WHERE sha256 = ?",
                                       (name,)).fetchone()
                    if name == newer or old is None or old[0] != media_type or old[2] is not None or old[3] >= MAX_DEPTH:
                        continue  # missing, already a delta, or at the end of a chain: it stays as it is
                    body = bytes(old[1])
                    try:
                        delta = codec.encode(document, body)  # checked to give ``body`` back
                    except Exception:  # a codec's bug must not cost the publication: the row stays whole
                        log.exception("artifact %s stays whole: its delta from %s did not give it back", name, newer)
                        continue
                    if delta is None or len(delta) >= len(body):
                        continue
                    conn.execute("UPDATE artifacts SET body = ?, base = ? WHERE sha256 = ?", (delta, newer, name))
                    depth, done = max(depth, old[3] + 1), done + 1
                if done:
                    conn.execute("UPDATE artifacts SET depth = ? WHERE sha256 = ?", (depth, newer))
        return done

    def get_sync(self, sha256: str) -> bytes | None:
        if not SHA256_RE.fullmatch(sha256):
            return None
        with self._lock:
            conn = self._connection()
            with _transaction(conn, "BEGIN"):  # one snapshot: a concurrent put may turn a whole row into a delta
                deltas, name = [], sha256
                for _ in range(MAX_DEPTH + 1):
                    row = conn.execute("SELECT media_type, body, base FROM artifacts WHERE sha256 = ?",
                                       (name,)).fetchone()
                    if row is None:
                        if deltas:
                            raise CorruptArtifact(f"artifact {deltas[-1][0]} is a delta from {name}, which is missing")
                        return None
                    if row[2] is None:
                        break
                    deltas.append((name, row[0], bytes(row[1])))
                    name = row[2]
                else:
                    raise CorruptArtifact(f"artifact {sha256} is more than {MAX_DEPTH} deltas from a whole document")
        body = _checked(name, bytes(row[1]))
        for name, media_type, delta in reversed(deltas):
            codec = DELTAS.get(media_type)
            if codec is None:
                raise CorruptArtifact(f"artifact {name} is a delta of a media type with no codec: {media_type}")
            try:
                body = _checked(name, codec.decode(body, delta))
            except ValueError as exc:
                raise CorruptArtifact(f"artifact {name} is corrupt: {exc}") from exc
        return body

    def stored_bytes(self) -> tuple[int, int]:
        """(artifacts, bytes their bodies take), deltas as stored."""
        with self._lock:
            count, size = self._connection().execute("SELECT count(*), coalesce(sum(length(body)), 0) "
                                                     "FROM artifacts").fetchone()
        return count, size

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the artifact store is closed")
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _checked(name: str, body: bytes) -> bytes:
    # Content addressing is only worth something if it is checked on the way out.
    if hashlib.sha256(body).hexdigest() != name:
        raise CorruptArtifact(f"artifact {name} is corrupt: its content no longer hashes to its name")
    return body


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, begin: str) -> Iterator[None]:
    conn.execute(begin)
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
