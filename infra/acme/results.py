"""ACME validation results handed from the job that validated (any process, e.g. `csm worker`) to a process that
records them: the ``ValidationResults`` port and its two stores, one chosen at wiring time (``open_results``).

The job that checked a challenge's response puts its result here; a validator in a process that appends (the
single process, a server's primary) takes the oldest, appends ``acme.challenge_validated`` or
``acme.challenge_failed`` and marks them done. A result taken twice (a crash between the append and ``done``, or two
servers' validators taking it at once) is recorded once: the authorization takes only the first result.

- ``SQLiteValidationResults`` (in-process jobs, the embedded default): rows of ``acme-validations.db`` in the data
  directory, so a `csm worker` must share the server's data directory.
- ``RedisValidationResults`` (``CSM_JOBS=redis``): entries of a Redis stream, so results come back the way the jobs
  went: a `csm worker` on a data directory of its own, or another server's job threads, validates, and any server
  whose validator runs records into the store they all share (Cassandra). Servers sharing one Redis for jobs must
  share one event store: a result taken by a server whose store lacks the authorization records nothing there and
  is dropped, and its challenge is validated again at its next resend.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, Protocol

import msgspec

from domain.acme_authz import ChallengeFailed, ChallengeValidated

Result = ChallengeValidated | ChallengeFailed
REDIS_STREAM = "csm-acme-validations"


class ValidationResults(Protocol):
    def put(self, tenant_id: str, authz_id: str, result: Result) -> None: ...

    def take(self, limit: int = 100) -> list[tuple[Any, str, str, Result]]:
        """The oldest results: (seq, tenant, authorization, result); ``done(seq)`` once recorded."""

    def done(self, seq: Any) -> None: ...

    def close(self) -> None: ...


class SQLiteValidationResults:
    """Results in the data directory's ``acme-validations.db``, for the processes that share that directory."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS results (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                           "tenant_id TEXT NOT NULL, authz_id TEXT NOT NULL, result BLOB NOT NULL)")
        path.chmod(0o600)

    def put(self, tenant_id: str, authz_id: str, result: Result) -> None:
        encoded = _encode(result)
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


class RedisValidationResults:
    """Results in a Redis stream, for every process that reaches the Redis (servers, `csm worker` anywhere)."""

    def __init__(self, url: str, *, stream: str = REDIS_STREAM) -> None:
        import redis  # only a deployment with Redis jobs needs the client

        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.stream = stream

    def put(self, tenant_id: str, authz_id: str, result: Result) -> None:
        self._redis.xadd(self.stream, {"tenant_id": tenant_id, "authz_id": authz_id, "result": _encode(result)})

    def take(self, limit: int = 100) -> list[tuple[Any, str, str, Result]]:
        return [(entry_id.decode(), fields[b"tenant_id"].decode(), fields[b"authz_id"].decode(),
                 _decode(fields[b"result"])) for entry_id, fields in self._redis.xrange(self.stream, count=limit)]

    def done(self, seq: Any) -> None:
        self._redis.xdel(self.stream, seq)

    def close(self) -> None:
        self._redis.close()


def open_results(path: Path, jobs: str, redis_url: str | None) -> ValidationResults:
    """Redis when the jobs go through Redis (their results come back the same way), else the data directory's file."""
    if jobs == "redis" and redis_url:
        return RedisValidationResults(redis_url)
    return SQLiteValidationResults(path)


def _encode(result: Result) -> bytes:
    return msgspec.json.encode(msgspec.to_builtins(result) | {"type": type(result).event_type})


def _decode(blob: bytes) -> Result:
    raw = msgspec.json.decode(blob)
    kind = raw.pop("type")
    cls = ChallengeValidated if kind == ChallengeValidated.event_type else ChallengeFailed
    return msgspec.convert(raw, cls)
