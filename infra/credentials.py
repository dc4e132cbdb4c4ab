"""The credential vault: secret verifiers (API token hashes), kept out of events and read models."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from infra.eventstore.sqlite import connect


class SQLiteCredentialVault:
    """A table beside the event log in the same private (0600) database file.

    A verifier is written once under a fresh id and never changed or deleted (revoking a token is an
    event; the read model's status is checked on every request), so verifiers found are kept in memory:
    authenticating a request then reads no table of the busiest database file. Ids not found are not
    remembered, so a token created by another process is seen at once.
    """

    CACHED = 10_000  # verifiers kept in memory; past that the cache starts again empty

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._known: dict[str, bytes] = {}
        conn = connect(path)
        conn.execute("CREATE TABLE IF NOT EXISTS credential_verifiers ("
                     "token_id TEXT PRIMARY KEY, verifier BLOB NOT NULL, created_at REAL NOT NULL) WITHOUT ROWID")
        conn.close()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path)
        return conn

    def put_verifier(self, token_id: str, verifier: bytes) -> None:
        self._conn().execute("INSERT INTO credential_verifiers VALUES (?, ?, ?)", (token_id, verifier, time.time()))

    def delete_verifier(self, token_id: str) -> None:
        self._known.pop(token_id, None)
        self._conn().execute("DELETE FROM credential_verifiers WHERE token_id = ?", (token_id,))

    def get_verifier(self, token_id: str) -> bytes | None:
        known = self._known.get(token_id)
        if known is not None:
            return known
        row = self._conn().execute("SELECT verifier FROM credential_verifiers WHERE token_id = ?",
                                   (token_id,)).fetchone()
        if row is None:
            return None
        if len(self._known) >= self.CACHED:
            self._known.clear()
        self._known[token_id] = row[0]
        return row[0]
