"""ACME validation results handed from the job that validated (any process, e.g. `csm worker`) to the process that
owns the event store, which records them: rows of ``acme-validations.db`` in the data directory.

The job that fetched a challenge's response writes its result here; the validator in the store's process reads the
rows, appends ``acme.challenge_validated`` or ``acme.challenge_failed`` and deletes them. A row read twice (a crash
between the append and the delete) is recorded once: the authorization takes only the first result.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import msgspec

from domain.acme_authz import ChallengeFailed, ChallengeValidated

Result = ChallengeValidated | ChallengeFailed


class ValidationResults:
    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS results (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                           "tenant_id TEXT NOT NULL, authz_id TEXT NOT NULL, result BLOB NOT NULL)")
        path.chmod(0o600)

    def put(self, tenant_id: str, authz_id: str, result: Result) -> None:
        encoded = msgspec.json.encode(msgspec.to_builtins(result) | {"type": type(result).event_type})
        with self._lock:
            self._conn.execute("INSERT INTO results (tenant_id, authz_id, result) VALUES (?, ?, ?)",
                               (tenant_id, authz_id, encoded))

    def take(self, limit: int = 100) -> list[tuple[int, str, str, Result]]:
        """The oldest results: (seq, tenant, authorization, result); ``done(seq)`` once recorded."""
        with self._lock:
            rows = self._conn.execute("SELECT seq, tenant_id, authz_id, result FROM results ORDER BY seq LIMIT ?",
                                      (limit,)).fetchall()
        return [(seq, tenant_id, authz_id, _decode(blob)) for seq, tenant_id, authz_id, blob in rows]

    def done(self, seq: int) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM results WHERE seq = ?", (seq,))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _decode(blob: bytes) -> Result:
    raw = msgspec.json.decode(blob)
    kind = raw.pop("type")
    cls = ChallengeValidated if kind == ChallengeValidated.event_type else ChallengeFailed
    return msgspec.convert(raw, cls)
