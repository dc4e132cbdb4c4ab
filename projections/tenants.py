"""The tenants read model: one row per tenant, and the queries over it."""

from __future__ import annotations

import json
import sqlite3

from domain.events import EventEnvelope
from projections.base import Projector


class TenantsProjector(Projector):
    name = "tenants"
    version = 1
    tables = ("tenants",)
    ddl = (
        """CREATE TABLE IF NOT EXISTS {tenants} (
            tenant_id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, quotas TEXT NOT NULL,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL, version INTEGER NOT NULL, position INTEGER NOT NULL)""",
    )

    def apply(self, conn: sqlite3.Connection, event: EventEnvelope) -> None:
        if event.stream_type != "tenant":
            return
        table, p = self.t("tenants"), event.payload
        if event.type == "tenant.created":
            conn.execute(
                f"INSERT OR REPLACE INTO {table} VALUES (?,?,?,?,?,?,?,?)",
                (p["tenant_id"], p["name"], "active", json.dumps(p["quotas"], sort_keys=True),
                 event.occurred_at, event.occurred_at, event.version, event.global_position))
            return
        changes = {
            "tenant.renamed": ("name", p.get("new_name")),
            "tenant.quotas_set": ("quotas", json.dumps(p.get("quotas"), sort_keys=True)),
            "tenant.suspended": ("status", "suspended"),
            "tenant.resumed": ("status", "active"),
        }.get(event.type)
        if changes:
            column, value = changes
            conn.execute(
                f"UPDATE {table} SET {column} = ?, updated_at = ?, version = ?, position = ? WHERE tenant_id = ?",
                (value, event.occurred_at, event.version, event.global_position, event.tenant_id))


COLUMNS = ("tenant_id", "name", "status", "quotas", "created_at", "updated_at", "version", "position")


def _row(row: tuple) -> dict:
    item = dict(zip(COLUMNS, row))
    item["quotas"] = json.loads(item["quotas"])
    return item


def get(conn: sqlite3.Connection, tenant_id: str, scope: str | None) -> dict | None:
    """One tenant, or None if absent or outside the caller's tenant scope."""
    if scope is not None and scope != tenant_id:
        return None
    row = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone()
    return _row(row) if row else None


def search(conn: sqlite3.Connection, scope: str | None, *, status: str | None = None, after: str | None = None,
           limit: int = 100) -> list[dict]:
    """Tenants ordered by id, keyset-paginated after ``after``; confined to ``scope`` if set."""
    clauses, args = [], []
    if scope is not None:
        clauses.append("tenant_id = ?")
        args.append(scope)
    if status:
        clauses.append("status = ?")
        args.append(status)
    if after:
        clauses.append("tenant_id > ?")
        args.append(after)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM tenants {where} ORDER BY tenant_id LIMIT ?",
                        (*args, limit)).fetchall()
    return [_row(row) for row in rows]
