"""The API-key read model: which keys are active, their service account, roles, scope and expiry."""

from __future__ import annotations

import json
import sqlite3

from domain.events import EventEnvelope
from projections.base import Projector


class ApiTokensProjector(Projector):
    name = "api_tokens"
    version = 2  # 2: the service account holding the key
    tables = ("api_tokens",)
    ddl = (
        """CREATE TABLE IF NOT EXISTS {api_tokens} (
            token_id TEXT PRIMARY KEY, name TEXT NOT NULL, roles TEXT NOT NULL, tenant_id TEXT,
            status TEXT NOT NULL, expires_at TEXT, issued_at TEXT NOT NULL, issued_by TEXT NOT NULL,
            revoked_at TEXT, service_account TEXT)""",
    )

    def apply(self, conn: sqlite3.Connection, event: EventEnvelope) -> None:
        table, p = self.t("api_tokens"), event.payload
        if event.type == "api_token.issued":
            conn.execute(f"INSERT OR REPLACE INTO {table} VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (p["token_id"], p["name"], json.dumps(p["roles"]), p["scope_tenant_id"], "active",
                          p["expires_at"], event.occurred_at, event.actor.principal, None,
                          p.get("service_account")))  # version 1 events had none
        elif event.type == "api_token.revoked":
            conn.execute(f"UPDATE {table} SET status = 'revoked', revoked_at = ? WHERE token_id = ?",
                         (event.occurred_at, event.stream_id.removeprefix("apitoken-")))


def get(conn: sqlite3.Connection, token_id: str) -> dict | None:
    row = conn.execute("SELECT token_id, name, roles, tenant_id, status, expires_at, issued_at, issued_by, revoked_at,"
                       " service_account FROM api_tokens WHERE token_id = ?", (token_id,)).fetchone()
    if row is None:
        return None
    keys = ("token_id", "name", "roles", "tenant_id", "status", "expires_at", "issued_at", "issued_by", "revoked_at",
            "service_account")
    item = dict(zip(keys, row))
    item["roles"] = json.loads(item["roles"])
    return item
