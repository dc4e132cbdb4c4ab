"""The audit-log read model (Epic A3's audit table): every event, indexed for audit queries.

Queryable by day bucket, time range, stream, actor, type and tenant; it holds the envelope
metadata, and the payload is read from the event store itself by position.
"""

from __future__ import annotations

import sqlite3

from domain.events import EventEnvelope
from projections.base import Projector


class AuditLogProjector(Projector):
    name = "audit_log"
    version = 1
    tables = ("audit_log",)
    ddl = (
        """CREATE TABLE IF NOT EXISTS {audit_log} (
            position INTEGER PRIMARY KEY, day_bucket TEXT NOT NULL, occurred_at TEXT NOT NULL,
            event_id TEXT NOT NULL, tenant_id TEXT NOT NULL, stream_id TEXT NOT NULL, stream_type TEXT NOT NULL,
            version INTEGER NOT NULL, type TEXT NOT NULL, actor TEXT NOT NULL, auth_method TEXT NOT NULL,
            correlation_id TEXT)""",
    )
    deferred = (  # apply only inserts: every index is for the audit queries
        "CREATE INDEX IF NOT EXISTS {ix}_day ON {audit_log} (day_bucket, occurred_at)",
        "CREATE INDEX IF NOT EXISTS {ix}_tenant ON {audit_log} (tenant_id, position)",
        "CREATE INDEX IF NOT EXISTS {ix}_stream ON {audit_log} (stream_id, version)",
        "CREATE INDEX IF NOT EXISTS {ix}_actor ON {audit_log} (actor, position)",
        "CREATE INDEX IF NOT EXISTS {ix}_type ON {audit_log} (type, position)",
        "CREATE INDEX IF NOT EXISTS {ix}_correlation ON {audit_log} (correlation_id)",
    )

    def apply(self, conn: sqlite3.Connection, event: EventEnvelope) -> None:
        conn.execute(
            f"INSERT OR REPLACE INTO {self.t('audit_log')} VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (event.global_position, event.occurred_at[:10], event.occurred_at, event.event_id, event.tenant_id,
             event.stream_id, event.stream_type, event.version, event.type, event.actor.principal,
             event.actor.auth_method, event.correlation_id))


COLUMNS = ("position", "day_bucket", "occurred_at", "event_id", "tenant_id", "stream_id", "stream_type",
           "version", "type", "actor", "auth_method", "correlation_id")


def search(conn: sqlite3.Connection, scope: str | None, *, day: str | None = None, since: str | None = None,
           until: str | None = None, stream_id: str | None = None, actor: str | None = None,
           type_: str | None = None, tenant_id: str | None = None, correlation_id: str | None = None,
           after_position: int = 0, limit: int = 100) -> list[dict]:
    """Audit entries in global order after ``after_position``; confined to ``scope`` if set."""
    # A stream's or a day's entries are found through their own index, then sorted: "+" keeps SQLite, which
    # without statistics takes any tenant's entries for a few, from walking the tenant's (tenant, position) index
    # or the log's positions instead (100 ms for a tenant of 80,000 entries; docs/architecture.md, "Query plans").
    plus = "+" if stream_id is not None or day is not None else ""
    clauses, args = [f"{plus}position > ?"], [after_position]
    for column, value in ((f"{plus}tenant_id", scope), (f"{plus}tenant_id", tenant_id), ("day_bucket", day),
                          ("stream_id", stream_id), ("actor", actor), ("type", type_),
                          ("correlation_id", correlation_id)):
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    if since:
        clauses.append("occurred_at >= ?")
        args.append(since)
    if until:
        clauses.append("occurred_at < ?")
        args.append(until)
    rows = conn.execute(
        f"SELECT {', '.join(COLUMNS)} FROM audit_log WHERE {' AND '.join(clauses)} ORDER BY position LIMIT ?",
        (*args, limit)).fetchall()
    return [dict(zip(COLUMNS, row)) for row in rows]
