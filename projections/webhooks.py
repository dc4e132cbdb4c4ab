"""The webhooks read model: each tenant's subscriptions (URL, event filter, enabled), for listing and dispatch."""

from __future__ import annotations

import json
import sqlite3

from domain.events import EventEnvelope
from projections.base import Projector

COLUMNS = ("tenant_id", "webhook_id", "url", "event_types", "enabled", "status", "description", "secret_ref",
           "created_at", "updated_at", "secret_rotated_at", "version", "subscribed_position", "position")
PUBLIC = tuple(c for c in COLUMNS if c not in ("secret_ref",))  # what the API shows


class WebhooksProjector(Projector):
    name = "webhooks"
    version = 1
    tables = ("webhooks",)
    ddl = (
        """CREATE TABLE IF NOT EXISTS {webhooks} (
            tenant_id TEXT NOT NULL, webhook_id TEXT NOT NULL, url TEXT NOT NULL, event_types TEXT NOT NULL,
            enabled INTEGER NOT NULL, status TEXT NOT NULL, description TEXT NOT NULL, secret_ref TEXT NOT NULL,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL, secret_rotated_at TEXT,
            version INTEGER NOT NULL, subscribed_position INTEGER NOT NULL, position INTEGER NOT NULL,
            PRIMARY KEY (tenant_id, webhook_id)) WITHOUT ROWID""",
    )

    def apply(self, conn: sqlite3.Connection, event: EventEnvelope) -> None:
        if event.stream_type != "webhook":
            return
        table, p = self.t("webhooks"), event.payload
        key = (event.tenant_id, event.stream_id.removeprefix("webhook-"))
        stamp = (event.occurred_at, event.version, event.global_position)
        if event.type == "webhook.subscribed":
            conn.execute(f"INSERT OR REPLACE INTO {table} VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                         (*key, p["url"], json.dumps(sorted(p["event_types"])), int(p["enabled"]), "active",
                          p["description"], p["secret_ref"], event.occurred_at, event.occurred_at, None,
                          event.version, event.global_position, event.global_position))
        elif event.type == "webhook.updated":
            conn.execute(f"UPDATE {table} SET url = ?, event_types = ?, enabled = ?, description = ?, updated_at = ?, "
                         "version = ?, position = ? WHERE tenant_id = ? AND webhook_id = ?",
                         (p["url"], json.dumps(sorted(p["event_types"])), int(p["enabled"]), p["description"],
                          *stamp, *key))
        elif event.type == "webhook.secret_rotated":
            conn.execute(f"UPDATE {table} SET secret_ref = ?, secret_rotated_at = ?, updated_at = ?, version = ?, "
                         "position = ? WHERE tenant_id = ? AND webhook_id = ?",
                         (p["secret_ref"], event.occurred_at, *stamp, *key))
        elif event.type == "webhook.deleted":
            conn.execute(f"UPDATE {table} SET status = 'deleted', enabled = 0, updated_at = ?, version = ?, "
                         "position = ? WHERE tenant_id = ? AND webhook_id = ?", (*stamp, *key))


def _row(row: tuple, columns: tuple[str, ...] = PUBLIC) -> dict:
    item = dict(zip(columns, row))
    item["event_types"] = json.loads(item["event_types"])
    item["enabled"] = bool(item["enabled"])
    return item


def of_tenant(conn: sqlite3.Connection, tenant_id: str, *, include_deleted: bool = False) -> list[dict]:
    """A tenant's subscriptions, oldest first; every query is confined to one tenant."""
    where = "" if include_deleted else " AND status = 'active'"
    rows = conn.execute(f"SELECT {', '.join(PUBLIC)} FROM webhooks WHERE tenant_id = ?{where} "
                        "ORDER BY subscribed_position", (tenant_id,)).fetchall()
    return [_row(row) for row in rows]


def get(conn: sqlite3.Connection, tenant_id: str, webhook_id: str) -> dict | None:
    """One subscription of the tenant (deleted ones too), without its secret reference."""
    row = conn.execute(f"SELECT {', '.join(PUBLIC)} FROM webhooks WHERE tenant_id = ? AND webhook_id = ?",
                       (tenant_id, webhook_id)).fetchone()
    return _row(row) if row else None


def for_delivery(conn: sqlite3.Connection, tenant_id: str, webhook_id: str) -> dict | None:
    """What a delivery needs now: URL, enabled, status and the secret's vault id."""
    row = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM webhooks WHERE tenant_id = ? AND webhook_id = ?",
                       (tenant_id, webhook_id)).fetchone()
    return _row(row, COLUMNS) if row else None


def any_subscription_before(conn: sqlite3.Connection, position: int) -> bool:
    """Whether any tenant has an enabled subscription made before ``position``. For the dispatcher only (it
    answers across tenants, with nothing but a yes or no): without one, no event up to ``position`` has a
    subscriber, and the events need not be read at all."""
    return conn.execute("SELECT 1 FROM webhooks WHERE status = 'active' AND enabled = 1 AND subscribed_position < ? "
                        "LIMIT 1", (position,)).fetchone() is not None


def subscribers(conn: sqlite3.Connection, tenant_id: str, event_type: str, position: int) -> list[str]:
    """Ids of the tenant's enabled subscriptions to ``event_type`` that existed before ``position``."""
    rows = conn.execute("SELECT webhook_id, event_types FROM webhooks WHERE tenant_id = ? AND status = 'active' "
                        "AND enabled = 1 AND subscribed_position < ? ORDER BY subscribed_position",
                        (tenant_id, position)).fetchall()
    return [webhook_id for webhook_id, types in rows if event_type in json.loads(types)]
