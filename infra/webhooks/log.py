"""The webhook delivery log (``<data_dir>/webhooks.db``): the dispatcher's checkpoint and one row per delivery.

Not in ``views.db`` on purpose: read models there are disposable and rebuilt from the log, but
losing this checkpoint would send every past notification again. The dispatcher inserts a
batch's delivery rows and advances its checkpoint in one transaction; workers then record
each attempt's outcome (status code, a short error, never a response body) on the row.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from infra.eventstore.sqlite import connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS dispatch_checkpoint (
    name TEXT PRIMARY KEY, position INTEGER NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, webhook_id TEXT NOT NULL, event_id TEXT NOT NULL,
    event_type TEXT NOT NULL, position INTEGER NOT NULL, body BLOB NOT NULL,
    status TEXT NOT NULL,                 -- pending | delivered | failed | cancelled
    attempts INTEGER NOT NULL DEFAULT 0, last_status_code INTEGER, last_error TEXT,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, delivered_at TEXT,
    enqueued INTEGER NOT NULL DEFAULT 0,  -- handed to the job broker
    reported INTEGER NOT NULL DEFAULT 0,  -- a final failure recorded as webhook.delivery_failed
    UNIQUE (event_id, webhook_id));
CREATE INDEX IF NOT EXISTS deliveries_by_webhook ON deliveries (tenant_id, webhook_id, position);
CREATE INDEX IF NOT EXISTS deliveries_to_enqueue ON deliveries (enqueued, status);
"""
PUBLIC = ("delivery_id", "webhook_id", "tenant_id", "event_id", "event_type", "position", "status", "attempts",
          "last_status_code", "last_error", "created_at", "updated_at", "delivered_at")
FINAL = frozenset({"delivered", "failed", "cancelled"})
MAX_ERROR = 300


def _private_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class DeliveryLog:
    """One connection per thread (the dispatcher's, each job worker's, the API's query threads)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        _private_file(self.path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._conn().executescript(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path)
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    # the dispatcher -----------------------------------------------------------------------
    def checkpoint(self, name: str = "webhooks") -> int:
        row = self._conn().execute("SELECT position FROM dispatch_checkpoint WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0

    def record_dispatch(self, rows: Iterable[tuple], position: int, name: str = "webhooks") -> list[str]:
        """Insert deliveries ``(delivery_id, tenant, webhook, event_id, type, position, body)`` and move the
        checkpoint to ``position``, in one transaction; returns the ids actually inserted."""
        conn, now, inserted = self._conn(), _now(), []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for row in rows:
                cursor = conn.execute("INSERT OR IGNORE INTO deliveries (delivery_id, tenant_id, webhook_id, event_id, "
                                      "event_type, position, body, status, created_at, updated_at) "
                                      "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)", (*row, now, now))
                if cursor.rowcount:
                    inserted.append(row[0])
            conn.execute("INSERT INTO dispatch_checkpoint VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
                         "SET position = excluded.position, updated_at = excluded.updated_at",
                         (name, position, time.time()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return inserted

    def to_enqueue(self, limit: int = 500) -> list[str]:
        rows = self._conn().execute("SELECT delivery_id FROM deliveries WHERE enqueued = 0 AND status = 'pending' "
                                    "ORDER BY position LIMIT ?", (limit,)).fetchall()
        return [delivery_id for (delivery_id,) in rows]

    def mark_enqueued(self, delivery_ids: list[str]) -> None:
        self._conn().executemany("UPDATE deliveries SET enqueued = 1 WHERE delivery_id = ?",
                                 [(d,) for d in delivery_ids])

    def forget_enqueued(self) -> int:
        """After a restart with an in-memory broker: its queued messages died with the process."""
        return self._conn().execute("UPDATE deliveries SET enqueued = 0 WHERE status = 'pending'").rowcount

    def unreported_failures(self, limit: int = 100) -> list[dict]:
        rows = self._conn().execute(f"SELECT {', '.join(PUBLIC)} FROM deliveries WHERE status = 'failed' AND "
                                    "reported = 0 ORDER BY position LIMIT ?", (limit,)).fetchall()
        return [dict(zip(PUBLIC, row)) for row in rows]

    def mark_reported(self, delivery_id: str) -> None:
        self._conn().execute("UPDATE deliveries SET reported = 1 WHERE delivery_id = ?", (delivery_id,))

    # the workers ----------------------------------------------------------------------------
    def get(self, delivery_id: str) -> dict | None:
        row = self._conn().execute(f"SELECT {', '.join(PUBLIC)}, body FROM deliveries WHERE delivery_id = ?",
                                   (delivery_id,)).fetchone()
        return dict(zip((*PUBLIC, "body"), row)) if row else None

    def record_attempt(self, delivery_id: str, *, status: str, status_code: int | None, error: str | None) -> int:
        """Count one attempt and its outcome; ``status`` pending (will retry) or final. Returns the attempt count."""
        now = _now()
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("UPDATE deliveries SET attempts = attempts + 1, status = ?, last_status_code = ?, "
                         "last_error = ?, updated_at = ?, delivered_at = CASE WHEN ? = 'delivered' THEN ? "
                         "ELSE delivered_at END WHERE delivery_id = ?",
                         (status, status_code, (error or None) and error[:MAX_ERROR], now, status, now, delivery_id))
            row = conn.execute("SELECT attempts FROM deliveries WHERE delivery_id = ?", (delivery_id,)).fetchone()
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return row[0] if row else 0

    def finish(self, delivery_id: str, status: str, error: str) -> None:
        """End a delivery without an attempt (its subscription was deleted or disabled meanwhile)."""
        self._conn().execute("UPDATE deliveries SET status = ?, last_error = ?, updated_at = ? WHERE delivery_id = ? "
                             "AND status = 'pending'", (status, error[:MAX_ERROR], _now(), delivery_id))

    # queries ----------------------------------------------------------------------------------
    def deliveries(self, tenant_id: str, webhook_id: str, *, limit: int = 100, before: int | None = None) -> list[dict]:
        """A subscription's deliveries, newest first (``before``: a position cursor); confined to one tenant."""
        rows = self._conn().execute(
            f"SELECT {', '.join(PUBLIC)} FROM deliveries WHERE tenant_id = ? AND webhook_id = ? AND position < ? "
            "ORDER BY position DESC LIMIT ?",
            (tenant_id, webhook_id, before if before is not None else 1 << 62, limit)).fetchall()
        return [dict(zip(PUBLIC, row)) for row in rows]
