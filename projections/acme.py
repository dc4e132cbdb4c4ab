"""The ACME read model: each tenant's EAB keys (for listing, never their HMAC key), the challenges awaiting
validation (what the validator picks up, again after a crash), each account's orders, and its authorizations not
yet decided (what deactivating the account deactivates)."""

from __future__ import annotations

import json
import sqlite3

from domain.events import EventEnvelope
from projections.base import Projector

EAB_COLUMNS = ("tenant_id", "key_id", "ca_id", "profile", "allowed_names", "description", "status", "account_id",
               "created_at", "updated_at", "version")


class AcmeProjector(Projector):
    name = "acme"
    version = 2
    tables = ("acme_eab_keys", "acme_pending_challenges", "acme_orders", "acme_open_authorizations")
    ddl = (
        """CREATE TABLE IF NOT EXISTS {acme_eab_keys} (
            tenant_id TEXT NOT NULL, key_id TEXT NOT NULL, ca_id TEXT NOT NULL, profile TEXT NOT NULL,
            allowed_names TEXT NOT NULL, description TEXT NOT NULL, status TEXT NOT NULL, account_id TEXT,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL, version INTEGER NOT NULL,
            position INTEGER NOT NULL, PRIMARY KEY (tenant_id, key_id)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS {acme_pending_challenges} (
            tenant_id TEXT NOT NULL, authz_id TEXT NOT NULL, started_position INTEGER NOT NULL,
            PRIMARY KEY (tenant_id, authz_id)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS {acme_orders} (
            tenant_id TEXT NOT NULL, account_id TEXT NOT NULL, order_id TEXT NOT NULL, position INTEGER NOT NULL,
            PRIMARY KEY (tenant_id, account_id, order_id)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS {acme_open_authorizations} (
            tenant_id TEXT NOT NULL, account_id TEXT NOT NULL, authz_id TEXT NOT NULL, expires TEXT NOT NULL,
            PRIMARY KEY (tenant_id, authz_id)) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS {ix}_open_account ON {acme_open_authorizations} (tenant_id, account_id)",
    )

    def apply(self, conn: sqlite3.Connection, event: EventEnvelope) -> None:
        if event.stream_type == "acme_eab_key":
            self._eab(conn, event)
        elif event.type == "acme.order_created":
            conn.execute(f"INSERT OR REPLACE INTO {self.t('acme_orders')} VALUES (?,?,?,?)",
                         (event.tenant_id, event.payload["account_id"], event.payload["order_id"],
                          event.global_position))
        elif event.stream_type == "acme_authorization":
            self._authorization(conn, event)

    def _authorization(self, conn: sqlite3.Connection, event: EventEnvelope) -> None:
        pending, open_, authz_id = (self.t("acme_pending_challenges"), self.t("acme_open_authorizations"),
                                    event.stream_id.removeprefix("acme-authz-"))
        if event.type == "acme.authorization_created":
            conn.execute(f"INSERT OR REPLACE INTO {open_} VALUES (?,?,?,?)",
                         (event.tenant_id, event.payload["account_id"], authz_id, event.payload["expires"]))
        elif event.type == "acme.challenge_started":
            conn.execute(f"INSERT OR REPLACE INTO {pending} VALUES (?,?,?)",
                         (event.tenant_id, authz_id, event.global_position))
        elif event.type in ("acme.challenge_validated", "acme.challenge_failed", "acme.authorization_deactivated",
                            "acme.authorization_expired"):
            conn.execute(f"DELETE FROM {pending} WHERE tenant_id = ? AND authz_id = ?", (event.tenant_id, authz_id))
            conn.execute(f"DELETE FROM {open_} WHERE tenant_id = ? AND authz_id = ?", (event.tenant_id, authz_id))

    def _eab(self, conn: sqlite3.Connection, event: EventEnvelope) -> None:
        table, p = self.t("acme_eab_keys"), event.payload
        key = (event.tenant_id, event.stream_id.removeprefix("acme-eab-"))
        stamp = (event.occurred_at, event.version, event.global_position)
        if event.type == "acme.eab_key_created":
            conn.execute(f"INSERT OR REPLACE INTO {table} VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                         (*key, p["ca_id"], p["profile"], json.dumps(p["allowed_names"]), p["description"], "active",
                          None, event.occurred_at, *stamp))
        elif event.type == "acme.eab_key_bound":
            conn.execute(f"UPDATE {table} SET status = 'bound', account_id = ?, updated_at = ?, version = ?, "
                         "position = ? WHERE tenant_id = ? AND key_id = ?", (p["account_id"], *stamp, *key))
        elif event.type == "acme.eab_key_revoked":
            conn.execute(f"UPDATE {table} SET status = 'revoked', updated_at = ?, version = ?, position = ? "
                         "WHERE tenant_id = ? AND key_id = ?", (*stamp, *key))


def _row(row: tuple) -> dict:
    item = dict(zip(EAB_COLUMNS, row))
    item["allowed_names"] = json.loads(item["allowed_names"])
    return item


def eab_keys(conn: sqlite3.Connection, tenant_id: str) -> list[dict]:
    """A tenant's EAB keys, oldest first (revoked ones too); every query is confined to one tenant."""
    rows = conn.execute(f"SELECT {', '.join(EAB_COLUMNS)} FROM acme_eab_keys WHERE tenant_id = ? ORDER BY position",
                        (tenant_id,)).fetchall()
    return [_row(row) for row in rows]


def eab_key(conn: sqlite3.Connection, tenant_id: str, key_id: str) -> dict | None:
    row = conn.execute(f"SELECT {', '.join(EAB_COLUMNS)} FROM acme_eab_keys WHERE tenant_id = ? AND key_id = ?",
                       (tenant_id, key_id)).fetchone()
    return _row(row) if row else None


def pending_challenges(conn: sqlite3.Connection, *, after: int = -1, limit: int = 1000) -> list[tuple[int, str, str]]:
    """(started position, tenant, authorization) of challenges a client started and no validation has answered yet,
    oldest first, after position ``after`` (a page: the validator reads them all, page by page). For the validator
    only: it answers across tenants."""
    return conn.execute("SELECT started_position, tenant_id, authz_id FROM acme_pending_challenges "
                        "WHERE started_position > ? ORDER BY started_position LIMIT ?", (after, limit)).fetchall()


def orders_of(conn: sqlite3.Connection, tenant_id: str, account_id: str, limit: int = 1000) -> list[str]:
    """An account's order ids, newest first (at most ``limit``)."""
    rows = conn.execute("SELECT order_id FROM acme_orders WHERE tenant_id = ? AND account_id = ? "
                        "ORDER BY position DESC LIMIT ?", (tenant_id, account_id, limit)).fetchall()
    return [order_id for (order_id,) in rows]


def open_authorizations(conn: sqlite3.Connection, tenant_id: str, account_id: str, now: str) -> list[str]:
    """An account's authorizations neither validated, failed, deactivated nor expired (``now``: RFC 3339 UTC)."""
    rows = conn.execute("SELECT authz_id FROM acme_open_authorizations WHERE tenant_id = ? AND account_id = ? "
                        "AND expires > ?", (tenant_id, account_id, now)).fetchall()
    return [authz_id for (authz_id,) in rows]
