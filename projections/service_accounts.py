"""The service-accounts read model: accounts per tenant; their keys come from the api_tokens view."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from domain.events import SYSTEM_TENANT, EventEnvelope
from projections.base import Projector

_COLUMNS = ("name", "tenant_id", "description", "status", "created_at", "created_by")


class ServiceAccountsProjector(Projector):
    name = "service_accounts"
    version = 1
    tables = ("service_accounts",)
    ddl = (
        """CREATE TABLE IF NOT EXISTS {service_accounts} (
            scope TEXT NOT NULL, name TEXT NOT NULL, tenant_id TEXT, description TEXT NOT NULL, status TEXT NOT NULL,
            created_at TEXT NOT NULL, created_by TEXT NOT NULL, PRIMARY KEY (scope, name)) WITHOUT ROWID""",
    )

    def apply(self, conn: sqlite3.Connection, event: EventEnvelope) -> None:
        table, p = self.t("service_accounts"), event.payload
        if event.type == "service_account.created":
            conn.execute(f"INSERT OR REPLACE INTO {table} VALUES (?,?,?,?,?,?,?)",
                         (event.tenant_id, p["name"], p["tenant_id"], p["description"], "active", event.occurred_at,
                          event.actor.principal))
        elif event.type in _STATUS:
            conn.execute(f"UPDATE {table} SET status = ? WHERE scope = ? AND name = ?",
                         (_STATUS[event.type], event.tenant_id, event.stream_id.removeprefix("serviceaccount-")))


_STATUS = {"service_account.disabled": "disabled", "service_account.enabled": "active"}


def active_keys(conn: sqlite3.Connection, tenant_id: str | None, name: str) -> list[str]:
    """The ids of an account's keys the api_tokens view lists as active (expired ones too: they are revoked alike)."""
    rows = conn.execute("SELECT token_id FROM api_tokens WHERE service_account = ? AND tenant_id IS ?"
                        " AND status = 'active' ORDER BY token_id", (name, tenant_id)).fetchall()
    return [row[0] for row in rows]


def _keys(conn: sqlite3.Connection, scope: str, name: str) -> list[dict[str, Any]]:
    tenant = None if scope == SYSTEM_TENANT else scope
    rows = conn.execute("SELECT token_id, name, roles, status, expires_at, issued_at, issued_by, revoked_at"
                        " FROM api_tokens WHERE service_account = ? AND tenant_id IS ? ORDER BY issued_at",
                        (name, tenant)).fetchall()
    keys = ("key_id", "name", "roles", "status", "expires_at", "issued_at", "issued_by", "revoked_at")
    return [{**dict(zip(keys, row)), "roles": json.loads(row[2])} for row in rows]


def search(conn: sqlite3.Connection, visible: str | None, *, tenant_id: str | None, after: str | None = None,
           limit: int = 100) -> list[dict[str, Any]]:
    """Accounts of one tenant (None: the platform's own); ``visible`` confines a tenant principal."""
    if visible is not None and tenant_id != visible:
        return []
    scope = tenant_id or SYSTEM_TENANT
    sql = f"SELECT {', '.join(_COLUMNS)} FROM service_accounts WHERE scope = ?"
    args: list[Any] = [scope]
    if after:
        sql += " AND name > ?"
        args.append(after)
    rows = conn.execute(sql + " ORDER BY name LIMIT ?", (*args, limit)).fetchall()
    return [{**dict(zip(_COLUMNS, row)), "keys": _keys(conn, scope, row[0])} for row in rows]


def get(conn: sqlite3.Connection, tenant_id: str | None, name: str, visible: str | None) -> dict[str, Any] | None:
    if visible is not None and tenant_id != visible:
        return None
    scope = tenant_id or SYSTEM_TENANT
    row = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM service_accounts WHERE scope = ? AND name = ?",
                       (scope, name)).fetchone()
    return None if row is None else {**dict(zip(_COLUMNS, row)), "keys": _keys(conn, scope, name)}
