"""The users read model: local accounts, their role grants (expired ones never count), lockouts and TOTP state."""

from __future__ import annotations

import sqlite3
from typing import Any

from domain.events import SYSTEM_TENANT, EventEnvelope
from projections.base import Projector

_COLUMNS = ("tenant_id", "username", "display_name", "status", "created_at", "created_by", "totp_enabled",
            "locked_until", "failures", "last_login_at", "password_changed_at")


class UsersProjector(Projector):
    name = "users"
    version = 1
    tables = ("users", "user_grants")
    ddl = (
        """CREATE TABLE IF NOT EXISTS {users} (
            scope TEXT NOT NULL, username TEXT NOT NULL, tenant_id TEXT, display_name TEXT, status TEXT NOT NULL,
            created_at TEXT NOT NULL, created_by TEXT NOT NULL, totp_enabled INTEGER NOT NULL DEFAULT 0,
            locked_until TEXT, failures INTEGER NOT NULL DEFAULT 0, last_login_at TEXT, password_changed_at TEXT,
            PRIMARY KEY (scope, username)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS {user_grants} (
            scope TEXT NOT NULL, username TEXT NOT NULL, role TEXT NOT NULL, expires_at TEXT,
            granted_at TEXT NOT NULL, granted_by TEXT NOT NULL, PRIMARY KEY (scope, username, role)) WITHOUT ROWID""",
    )

    def apply(self, conn: sqlite3.Connection, event: EventEnvelope) -> None:
        users, grants, p = self.t("users"), self.t("user_grants"), event.payload
        scope, at = event.tenant_id, event.occurred_at
        username = event.stream_id.removeprefix("user-")
        match event.type:
            case "user.created":
                conn.execute(f"INSERT OR REPLACE INTO {users} (scope, username, tenant_id, display_name, status,"
                             " created_at, created_by, password_changed_at) VALUES (?,?,?,?,?,?,?,?)",
                             (scope, p["username"], p["tenant_id"], p["display_name"], "active", at,
                              event.actor.principal, at))
            case "user.role_granted":
                conn.execute(f"INSERT OR REPLACE INTO {grants} VALUES (?,?,?,?,?,?)",
                             (scope, username, p["role"], p["expires_at"], at, event.actor.principal))
            case "user.role_revoked":
                conn.execute(f"DELETE FROM {grants} WHERE scope = ? AND username = ? AND role = ?",
                             (scope, username, p["role"]))
            case "user.disabled" | "user.enabled":
                conn.execute(f"UPDATE {users} SET status = ? WHERE scope = ? AND username = ?",
                             ("disabled" if event.type == "user.disabled" else "active", scope, username))
            case "user.password_reset":
                conn.execute(f"UPDATE {users} SET password_changed_at = ? WHERE scope = ? AND username = ?",
                             (at, scope, username))
            case _:
                self._apply_login(conn, users, event)

    def _apply_login(self, conn: sqlite3.Connection, users: str, event: EventEnvelope) -> None:
        p, scope = event.payload, event.tenant_id
        if event.type == "auth.login_failed":
            conn.execute(f"UPDATE {users} SET failures = failures + 1 WHERE scope = ? AND username = ?",
                         (scope, p["username"]))
        elif event.type == "auth.login_succeeded":
            conn.execute(f"UPDATE {users} SET failures = 0, locked_until = NULL, last_login_at = ? WHERE scope = ?"
                         " AND username = ?", (event.occurred_at, scope, p["username"]))
        elif event.type == "auth.account_locked":
            conn.execute(f"UPDATE {users} SET failures = 0, locked_until = ? WHERE scope = ? AND username = ?",
                         (p["until"], scope, p["username"]))
        elif event.type == "auth.account_unlocked":
            conn.execute(f"UPDATE {users} SET failures = 0, locked_until = NULL WHERE scope = ? AND username = ?",
                         (scope, p["username"]))
        elif event.type in ("mfa.totp_enabled", "mfa.totp_removed") and p["subject"].startswith("user:"):
            _, subject_scope, name = p["subject"].split(":", 2)
            conn.execute(f"UPDATE {users} SET totp_enabled = ? WHERE scope = ? AND username = ?",
                         (1 if event.type == "mfa.totp_enabled" else 0, subject_scope, name))


def _roles(conn: sqlite3.Connection, scope: str, username: str, now: str) -> list[dict[str, Any]]:
    """Grants still in force at ``now`` (RFC 3339, as events store them): an expired grant is simply absent."""
    rows = conn.execute("SELECT role, expires_at, granted_at, granted_by FROM user_grants WHERE scope = ? AND"
                        " username = ? AND (expires_at IS NULL OR expires_at > ?) ORDER BY role",
                        (scope, username, now)).fetchall()
    return [dict(zip(("role", "expires_at", "granted_at", "granted_by"), row)) for row in rows]


def _row(conn: sqlite3.Connection, scope: str, values: tuple, now: str) -> dict[str, Any]:
    item = dict(zip(_COLUMNS, values))
    item["totp_enabled"] = bool(item["totp_enabled"])
    if item["locked_until"] and item["locked_until"] <= now:
        item["locked_until"] = None
    item["grants"] = _roles(conn, scope, item["username"], now)
    item["roles"] = [grant["role"] for grant in item["grants"]]
    return item


def search(conn: sqlite3.Connection, visible: str | None, *, tenant_id: str | None, now: str,
           after: str | None = None, limit: int = 100, platform: bool = False) -> list[dict[str, Any]]:
    """Users of one tenant (or the platform's own, ``platform``); ``visible`` confines a tenant principal."""
    scope = SYSTEM_TENANT if platform else tenant_id
    if visible is not None and scope != visible:
        return []
    sql = f"SELECT {', '.join(_COLUMNS)} FROM users WHERE scope = ?"
    args: list[Any] = [scope]
    if after:
        sql += " AND username > ?"
        args.append(after)
    rows = conn.execute(sql + " ORDER BY username LIMIT ?", (*args, limit)).fetchall()
    return [_row(conn, scope, row, now) for row in rows]


def get(conn: sqlite3.Connection, tenant_id: str | None, username: str, visible: str | None,
        now: str) -> dict[str, Any] | None:
    if visible is not None and tenant_id != visible:
        return None
    scope = tenant_id or SYSTEM_TENANT
    row = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM users WHERE scope = ? AND username = ?",
                       (scope, username)).fetchone()
    return None if row is None else _row(conn, scope, row, now)

