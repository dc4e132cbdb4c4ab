"""The sessions read model: each local user's refresh-token families still open, so ending its sessions finds them."""

from __future__ import annotations

import sqlite3

from domain.events import EventEnvelope
from projections.base import Projector


class SessionsProjector(Projector):
    """Only sessions with a refresh token: an access token alone is ended by the user's sessions epoch."""

    name = "sessions"
    version = 1
    tables = ("sessions",)
    ddl = (
        """CREATE TABLE IF NOT EXISTS {sessions} (
            scope TEXT NOT NULL, session_id TEXT NOT NULL, subject TEXT NOT NULL, status TEXT NOT NULL,
            refresh_expires_at TEXT NOT NULL, started_at TEXT NOT NULL,
            PRIMARY KEY (scope, session_id)) WITHOUT ROWID""",
    )
    deferred = ("CREATE INDEX IF NOT EXISTS {ix}_subject ON {sessions} (subject, status, refresh_expires_at)",)

    def apply(self, conn: sqlite3.Connection, event: EventEnvelope) -> None:
        table, p = self.t("sessions"), event.payload
        if event.type == "session.started" and p["refresh_token_id"] and p["refresh_expires_at"]:
            conn.execute(f"INSERT OR REPLACE INTO {table} VALUES (?,?,?,?,?,?)",
                         (event.tenant_id, p["session_id"], p["subject"], "active", p["refresh_expires_at"],
                          event.occurred_at))
        elif event.type == "session.revoked":
            conn.execute(f"UPDATE {table} SET status = 'revoked' WHERE scope = ? AND session_id = ?",
                         (event.tenant_id, event.stream_id.removeprefix("session-")))


def open_sessions(conn: sqlite3.Connection, subject: str, now: str) -> list[tuple[str, str]]:
    """(scope, session_id) of the subject's families neither revoked nor expired at ``now`` (RFC 3339)."""
    return conn.execute("SELECT scope, session_id FROM sessions WHERE subject = ? AND status = 'active'"
                        " AND refresh_expires_at > ? ORDER BY started_at", (subject, now)).fetchall()
