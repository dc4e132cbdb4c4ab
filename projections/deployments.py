"""The deployments read model: per node, what the store says it holds, and per (certificate, node), its deployment.

Folded from the certificate streams' deployment events (``csm cluster deploy``, ``verify``, ``rollback``):

- ``deployment_nodes``, one row per (tenant, node): the certificate the node holds now (None: files no recorded
  deployment installed, put back by a rollback), since when, by whom (the event's actor), from which host and port,
  the files and their SHA-256, the last verification of that certificate there, the generations the node keeps of
  earlier files (``generations``: newest first, as ``NAME.previous``, ``NAME.previous.2`` ... hold them, up to the
  deployment's ``keep``), and a deployment started there and never recorded as done (``started_*``), if any, with
  its recorded failure (``failed_*``: when, at which step, why), if one was recorded;
- ``certificate_deployments``, one row per (tenant, certificate, node): ``current`` (the node holds it),
  ``replaced`` (another deployment followed), ``rolled_back``, ``started`` (a first deployment there never recorded
  as done) or ``failed`` (one recorded as failed); when first and last deployed, by whom, how often, its last
  verification there, a deployment of it there started (``started_at``) and failed (``failed_*``).

``csm cluster verify`` and ``rollback`` read a node's row here (which certificate, which deployment started and
never completed); ``GET /v1/certificates/{id}/deployments`` and ``GET /v1/deployments`` serve both tables.
"""

from __future__ import annotations

import base64
import json
import sqlite3

from domain.events import EventEnvelope
from projections.base import Projector

FAILED_COLUMNS = ("failed_at", "failed_step", "failed_reason")
NODE_COLUMNS = ("tenant_id", "node", "certificate_id", "state", "since", "actor", "user", "host", "port", "format",
                "files", "keep", "generations", "verified", "verified_at", "started_certificate_id", "started_at",
                "started_actor", "started_files", "started_position", *FAILED_COLUMNS, "position")
CERTIFICATE_COLUMNS = ("tenant_id", "certificate_id", "node", "state", "first_deployed_at", "last_deployed_at",
                       "last_actor", "deployments", "host", "port", "verified", "verified_at", "rolled_back_at",
                       "started_at", *FAILED_COLUMNS, "position")
EVENTS = ("certificate.deployment_started", "certificate.deployment_failed", "certificate.deployed",
          "certificate.deployment_verified", "certificate.deployment_rolled_back")
NOT_FAILED = dict.fromkeys(FAILED_COLUMNS)


def _files(files: list[dict]) -> str:
    return json.dumps([{"path": f["path"], "sha256": f["sha256"]} for f in files])


class DeploymentsProjector(Projector):
    name = "deployments"
    version = 2  # 2: failed_* (certificate.deployment_failed), the certificate index
    tables = ("deployment_nodes", "certificate_deployments")
    ddl = (
        """CREATE TABLE IF NOT EXISTS {deployment_nodes} (
            tenant_id TEXT NOT NULL, node TEXT NOT NULL, certificate_id TEXT, state TEXT NOT NULL, since TEXT,
            actor TEXT, user TEXT, host TEXT, port INTEGER, format TEXT, files TEXT NOT NULL, keep INTEGER NOT NULL,
            generations TEXT NOT NULL, verified INTEGER, verified_at TEXT, started_certificate_id TEXT,
            started_at TEXT, started_actor TEXT, started_files TEXT, started_position INTEGER, failed_at TEXT,
            failed_step TEXT, failed_reason TEXT, position INTEGER NOT NULL, PRIMARY KEY (tenant_id, node))
            WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS {certificate_deployments} (
            tenant_id TEXT NOT NULL, certificate_id TEXT NOT NULL, node TEXT NOT NULL, state TEXT NOT NULL,
            first_deployed_at TEXT, last_deployed_at TEXT, last_actor TEXT, deployments INTEGER NOT NULL,
            host TEXT, port INTEGER, verified INTEGER, verified_at TEXT, rolled_back_at TEXT, started_at TEXT,
            failed_at TEXT, failed_step TEXT, failed_reason TEXT, position INTEGER NOT NULL,
            PRIMARY KEY (tenant_id, certificate_id, node)) WITHOUT ROWID""",
    )
    # deploy and rollback find the node's other certificates through this (state changes by node)
    deferred = ("CREATE INDEX IF NOT EXISTS {ix}_node ON {certificate_deployments} (tenant_id, node)",
                # a certificate's nodes, page by page, for a caller who sees every tenant
                "CREATE INDEX IF NOT EXISTS {ix}_certificate ON {certificate_deployments} (certificate_id, tenant_id, "
                "node)")

    def apply(self, conn: sqlite3.Connection, event: EventEnvelope) -> None:
        if event.stream_type != "certificate" or event.type not in EVENTS:
            return
        p = event.payload
        certificate_id, node = event.stream_id.removeprefix("certificate-"), p["node"]
        row = self._node(conn, event.tenant_id, node)
        if event.type == "certificate.deployment_started":
            self._started(conn, event, certificate_id, row)
        elif event.type == "certificate.deployment_failed":
            self._failed(conn, event, certificate_id, row)
        elif event.type == "certificate.deployed":
            self._deployed(conn, event, certificate_id, row)
        elif event.type == "certificate.deployment_verified":
            self._verified(conn, event, certificate_id, row)
        else:
            self._rolled_back(conn, event, certificate_id, row)

    # the tables' rows ------------------------------------------------------------------------------------------
    def _node(self, conn: sqlite3.Connection, tenant_id: str, node: str) -> dict | None:
        found = conn.execute(f"SELECT {', '.join(NODE_COLUMNS)} FROM {self.t('deployment_nodes')} "
                             "WHERE tenant_id = ? AND node = ?", (tenant_id, node)).fetchone()
        return dict(zip(NODE_COLUMNS, found)) if found else None

    def _put_node(self, conn: sqlite3.Connection, row: dict) -> None:
        conn.execute(f"INSERT OR REPLACE INTO {self.t('deployment_nodes')} ({', '.join(NODE_COLUMNS)}) "
                     f"VALUES ({', '.join('?' * len(NODE_COLUMNS))})", tuple(row[c] for c in NODE_COLUMNS))

    def _certificate(self, conn: sqlite3.Connection, event: EventEnvelope, certificate_id: str, node: str,
                     **changes) -> None:
        """Upsert the (certificate, node) row with ``changes`` (``deployments`` adds)."""
        table = self.t("certificate_deployments")
        key = (event.tenant_id, certificate_id, node)
        found = conn.execute(f"SELECT {', '.join(CERTIFICATE_COLUMNS)} FROM {table} WHERE tenant_id = ? "
                             "AND certificate_id = ? AND node = ?", key).fetchone()
        row = dict(zip(CERTIFICATE_COLUMNS, found)) if found else {
            **dict.fromkeys(CERTIFICATE_COLUMNS), **dict(zip(("tenant_id", "certificate_id", "node"), key)),
            "state": "started", "deployments": 0}
        row["deployments"] += changes.pop("deployments", 0)
        row.update(changes, position=event.global_position)
        conn.execute(f"INSERT OR REPLACE INTO {table} ({', '.join(CERTIFICATE_COLUMNS)}) "
                     f"VALUES ({', '.join('?' * len(CERTIFICATE_COLUMNS))})", tuple(row[c] for c in CERTIFICATE_COLUMNS))

    def _blank(self, event: EventEnvelope) -> dict:
        p = event.payload
        return {"tenant_id": event.tenant_id, "node": p["node"], "certificate_id": None, "state": "none",
                "since": None, "actor": None, "user": p.get("user"), "host": p.get("host"), "port": p.get("port"),
                "format": p.get("format"), "files": "[]", "keep": 1, "generations": "[]", "verified": None,
                "verified_at": None, "started_certificate_id": None, "started_at": None, "started_actor": None,
                "started_files": None, "started_position": None, **NOT_FAILED, "position": event.global_position}

    # one event each --------------------------------------------------------------------------------------------
    def _started(self, conn, event: EventEnvelope, certificate_id: str, row: dict | None) -> None:
        row = row or self._blank(event)
        row.update(started_certificate_id=certificate_id, started_at=event.occurred_at,
                   started_actor=event.actor.principal, started_files=_files(event.payload["files"]),
                   started_position=event.global_position, **NOT_FAILED, position=event.global_position)
        self._put_node(conn, row)
        self._certificate(conn, event, certificate_id, event.payload["node"], started_at=event.occurred_at,
                          **NOT_FAILED)

    def _failed(self, conn, event: EventEnvelope, certificate_id: str, row: dict | None) -> None:
        """The started deployment failed: still unfinished (its files may be half in place), now with the step and
        the reason; a certificate whose only deployment there it was is ``failed`` there."""
        p = event.payload
        failure = {"failed_at": event.occurred_at, "failed_step": p["step"], "failed_reason": p["reason"]}
        if row is not None and row["started_certificate_id"] == certificate_id:
            row.update(failure, position=event.global_position)
            self._put_node(conn, row)
        found = conn.execute(f"SELECT state FROM {self.t('certificate_deployments')} WHERE tenant_id = ? AND "
                             "certificate_id = ? AND node = ?", (event.tenant_id, certificate_id, p["node"])).fetchone()
        self._certificate(conn, event, certificate_id, p["node"], **failure,
                          **({"state": "failed"} if found is None or found[0] == "started" else {}))

    def _deployed(self, conn, event: EventEnvelope, certificate_id: str, row: dict | None) -> None:
        p, keep = event.payload, event.payload.get("keep", 1)
        generations = json.loads(row["generations"]) if row else []
        if row is not None and (row["certificate_id"] is not None or row["files"] != "[]"):
            generations.insert(0, {"certificate_id": row["certificate_id"], "files": json.loads(row["files"]),
                                   "since": row["since"]})
            if row["certificate_id"] not in (None, certificate_id):
                self._certificate(conn, event, row["certificate_id"], p["node"], state="replaced")
        new = self._blank(event)
        new.update(certificate_id=certificate_id, state="deployed", since=event.occurred_at,
                   actor=event.actor.principal, files=_files(p["files"]), keep=keep,
                   generations=json.dumps(generations[:keep]))
        self._put_node(conn, new)  # the node's files are this deployment's: any deployment started before is moot
        conn.execute(f"UPDATE {self.t('certificate_deployments')} SET started_at = NULL WHERE tenant_id = ? "
                     "AND node = ? AND started_at IS NOT NULL", (event.tenant_id, p["node"]))  # failed_*: history
        found = conn.execute(f"SELECT first_deployed_at FROM {self.t('certificate_deployments')} WHERE tenant_id = ? "
                             "AND certificate_id = ? AND node = ?", (event.tenant_id, certificate_id, p["node"])
                             ).fetchone()
        self._certificate(conn, event, certificate_id, p["node"], state="current", deployments=1,
                          first_deployed_at=found[0] if found and found[0] else event.occurred_at,
                          last_deployed_at=event.occurred_at, last_actor=event.actor.principal, host=p["host"],
                          port=p["port"], verified=None, verified_at=None, rolled_back_at=None, started_at=None,
                          **NOT_FAILED)

    def _verified(self, conn, event: EventEnvelope, certificate_id: str, row: dict | None) -> None:
        verified = int(event.payload["verified"])
        if row is not None and row["certificate_id"] == certificate_id:
            row.update(verified=verified, verified_at=event.occurred_at, position=event.global_position)
            self._put_node(conn, row)
        self._certificate(conn, event, certificate_id, event.payload["node"], verified=verified,
                          verified_at=event.occurred_at)

    def _rolled_back(self, conn, event: EventEnvelope, certificate_id: str, row: dict | None) -> None:
        p = event.payload
        generation, restored = p.get("generation", 1), p.get("restored_certificate_id")
        row = row or self._blank(event)
        generations = json.loads(row["generations"])
        row.update(certificate_id=restored, state="rolled_back", since=event.occurred_at,
                   actor=event.actor.principal, files=_files(p["files"]),
                   generations=json.dumps(generations[generation:]), verified=None, verified_at=None,
                   user=p["user"], host=p["host"], port=p["port"], position=event.global_position,
                   # a rollback (forced over it) replaced the files of a deployment left unfinished too
                   started_certificate_id=None, started_at=None, started_actor=None, started_files=None,
                   started_position=None, **NOT_FAILED)
        self._put_node(conn, row)
        self._certificate(conn, event, certificate_id, p["node"], state="rolled_back", rolled_back_at=event.occurred_at)
        if restored is not None:
            self._certificate(conn, event, restored, p["node"], state="current", verified=None, verified_at=None)


# queries ----------------------------------------------------------------------------------------------------------
def _node_row(row: tuple) -> dict:
    item = dict(zip(NODE_COLUMNS, row))
    for column in ("files", "generations", "started_files"):
        item[column] = json.loads(item[column]) if item[column] else ([] if column != "started_files" else None)
    item["verified"] = None if item["verified"] is None else bool(item["verified"])
    return item


def _certificate_row(row: tuple) -> dict:
    item = dict(zip(CERTIFICATE_COLUMNS, row))
    item["verified"] = None if item["verified"] is None else bool(item["verified"])
    return item


def node(conn: sqlite3.Connection, tenant_id: str, name: str) -> dict | None:
    """The node's row: what it holds as far as the store knows, or None if nothing was ever deployed there."""
    found = conn.execute(f"SELECT {', '.join(NODE_COLUMNS)} FROM deployment_nodes WHERE tenant_id = ? AND node = ?",
                         (tenant_id, name)).fetchone()
    return _node_row(found) if found else None


def certificates_on(conn: sqlite3.Connection, tenant_id: str, name: str) -> list[str]:
    """Every certificate ever deployed to the node, the most recently changed first (rollback's candidates)."""
    rows = conn.execute("SELECT certificate_id FROM certificate_deployments WHERE tenant_id = ? AND node = ? "
                        "ORDER BY position DESC LIMIT 32", (tenant_id, name)).fetchall()
    return [r[0] for r in rows]


def of_certificate(conn: sqlite3.Connection, certificate_id: str, scope: str | None, *,
                   after: tuple[str, str] | None = None, limit: int = 1000) -> list[dict]:
    """The certificate's deployments, one per node it was deployed to, by tenant and node (after ``after``, a
    decoded cursor as :func:`nodes` takes it); confined to ``scope``."""
    sql, args = f"SELECT {', '.join(CERTIFICATE_COLUMNS)} FROM certificate_deployments WHERE certificate_id = ?", \
        [certificate_id]
    if scope is not None:
        sql, args = sql + " AND tenant_id = ?", [*args, scope]
    if after is not None:
        sql, args = sql + " AND (tenant_id, node) > (?, ?)", [*args, *after]
    return [_certificate_row(r) for r in conn.execute(sql + " ORDER BY tenant_id, node LIMIT ?", [*args, limit])]


def nodes(conn: sqlite3.Connection, scope: str | None, *, tenant_id: str | None = None, name: str | None = None,
          after: tuple[str, str] | None = None, limit: int = 100) -> list[dict]:
    """Nodes by tenant and name (after ``after``), each with what it holds; confined to ``scope``."""
    sql, args = f"SELECT {', '.join(NODE_COLUMNS)} FROM deployment_nodes WHERE 1 = 1", []
    for column, value in (("tenant_id", scope), ("tenant_id", tenant_id), ("node", name)):
        if value is not None:
            sql, args = sql + f" AND {column} = ?", [*args, value]
    if after is not None:
        sql, args = sql + " AND (tenant_id, node) > (?, ?)", [*args, *after]
    return [_node_row(r) for r in conn.execute(sql + " ORDER BY tenant_id, node LIMIT ?", [*args, limit])]


def encode_cursor(row: dict) -> str:
    """Where the next page starts: after this row's (tenant, node); a row of either table (nodes, of_certificate)."""
    return base64.urlsafe_b64encode(json.dumps([row["tenant_id"], row["node"]]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """The (tenant, node) a cursor points after; ValueError if it is not one of ours."""
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("not a cursor from this API") from exc
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise ValueError("not a cursor from this API")
    return value[0], value[1]
