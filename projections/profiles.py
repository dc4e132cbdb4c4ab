"""The profiles read model: each tenant's own certificate profiles (the built-in ones live in domain/profile.py)."""

from __future__ import annotations

import json
import sqlite3

from domain.events import EventEnvelope
from projections.base import Projector

COLUMNS = ("tenant_id", "name", "status", "profile", "updated_at", "version", "position")


class ProfilesProjector(Projector):
    name = "profiles"
    version = 1
    tables = ("profiles",)
    ddl = (
        """CREATE TABLE IF NOT EXISTS {profiles} (
            tenant_id TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL, profile TEXT NOT NULL,
            updated_at TEXT NOT NULL, version INTEGER NOT NULL, position INTEGER NOT NULL,
            PRIMARY KEY (tenant_id, name)) WITHOUT ROWID""",
    )

    def apply(self, conn: sqlite3.Connection, event: EventEnvelope) -> None:
        if event.stream_type != "profile":
            return
        name = event.stream_id.removeprefix("profile-")
        if event.type in ("profile.created", "profile.updated"):
            conn.execute(f"INSERT OR REPLACE INTO {self.t('profiles')} VALUES (?,?,?,?,?,?,?)",
                         (event.tenant_id, name, "active", json.dumps(event.payload["profile"], sort_keys=True),
                          event.occurred_at, event.version, event.global_position))
        elif event.type == "profile.retired":
            conn.execute(f"UPDATE {self.t('profiles')} SET status = 'retired', updated_at = ?, version = ?, "
                         "position = ? WHERE tenant_id = ? AND name = ?",
                         (event.occurred_at, event.version, event.global_position, event.tenant_id, name))


def _row(row: tuple) -> dict:
    item = dict(zip(COLUMNS, row))
    item["profile"] = json.loads(item["profile"])
    return item


def of_tenant(conn: sqlite3.Connection, tenant_id: str) -> list[dict]:
    rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM profiles WHERE tenant_id = ? ORDER BY name",
                        (tenant_id,)).fetchall()
    return [_row(row) for row in rows]
