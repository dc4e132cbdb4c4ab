"""The discovery read model: the latest observation of each endpoint a tenant scanned, and what it matches.

One row per (tenant, host, port): what the endpoint served when last observed (or why it served nothing; the chain it
sent after its leaf, and whether it required a client certificate, when the scan recorded them), when it was
first observed, when it last served a certificate, and since when it has served the one it serves. Observations are
applied by their own time, not their arrival: a scan recorded late never hides a newer one. Which certificate of the
tenant an endpoint serves (by SHA-256 fingerprint) is joined at query time from the certificates read model, so that a
revocation or renewal shows in the listing and in the compliance report without replaying the scans.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from datetime import datetime

import msgspec

from commands.runtime import rfc3339
from domain.compliance import DiscoveredRecord
from domain.discovery import ChainCertificate, endpoint_name
from domain.events import EventEnvelope
from projections.base import Projector

COLUMNS = ("tenant_id", "host", "port", "observed_at", "scan_id", "error", "reason", "fingerprint", "subject_dn",
           "issuer_dn", "serial_hex", "not_before", "not_after", "tls_version", "cipher", "certificate_pem",
           "first_seen", "last_served_at", "served_since", "position", "chain", "client_certificate")
# what a listing shows of the certificate the endpoint serves, when this tenant's (certificates read model), and
# the kind of CA that issued it (cas read model)
MATCH = ("certificate_id", "ca_id", "status", "revocation_reason", "superseded_by")


def _time(text: str | None) -> str | None:
    return rfc3339(datetime.fromisoformat(text)) if text else None


class DiscoveryProjector(Projector):
    name = "discovery"
    version = 2  # 2: the chain an endpoint sent after its leaf, and whether it requires a client certificate
    tables = ("discovered_endpoints",)
    ddl = (
        """CREATE TABLE IF NOT EXISTS {discovered_endpoints} (
            tenant_id TEXT NOT NULL, host TEXT NOT NULL, port INTEGER NOT NULL, observed_at TEXT NOT NULL,
            scan_id TEXT NOT NULL, error TEXT, reason TEXT, fingerprint TEXT, subject_dn TEXT, issuer_dn TEXT,
            serial_hex TEXT, not_before TEXT, not_after TEXT, tls_version TEXT, cipher TEXT, certificate_pem TEXT,
            first_seen TEXT NOT NULL, last_served_at TEXT, served_since TEXT, position INTEGER NOT NULL,
            chain TEXT, client_certificate TEXT, PRIMARY KEY (tenant_id, host, port)) WITHOUT ROWID""",
    )
    deferred = ("CREATE INDEX IF NOT EXISTS {ix}_observed ON {discovered_endpoints} (tenant_id, observed_at)",)

    def apply(self, conn: sqlite3.Connection, event: EventEnvelope) -> None:
        if event.type != "discovery.observed":
            return
        table = self.t("discovered_endpoints")
        for o in event.payload["observations"]:
            self._observe(conn, table, event, o)

    def _observe(self, conn: sqlite3.Connection, table: str, event: EventEnvelope, o: dict) -> None:
        key = (event.tenant_id, o["host"], o["port"])
        at = _time(o["observed_at"])
        fingerprint = o.get("fingerprint_sha256")
        served_at = at if fingerprint else None
        row = conn.execute(f"SELECT observed_at, fingerprint, first_seen, last_served_at, served_since FROM {table} "
                           "WHERE tenant_id = ? AND host = ? AND port = ?", key).fetchone()
        if row is not None and at < row[0]:  # older than what is known: only the first and last-served times move
            last_served = max((t for t in (row[3], served_at) if t), default=None)
            conn.execute(f"UPDATE {table} SET first_seen = ?, last_served_at = ? WHERE tenant_id = ? AND host = ? "
                         "AND port = ?", (min(row[2], at), last_served, *key))
            return
        first_seen = at if row is None else min(row[2], at)
        last_served = max((t for t in (row[3] if row else None, served_at) if t), default=None)
        same = row is not None and fingerprint is not None and row[1] == fingerprint
        served_since = (row[4] if same else at) if fingerprint else None
        conn.execute(
            f"INSERT OR REPLACE INTO {table} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
            (*key, at, event.payload["scan_id"], o.get("error"), o.get("reason"), fingerprint, o.get("subject_dn"),
             o.get("issuer_dn"), o.get("serial_hex"), _time(o.get("not_before")), _time(o.get("not_after")),
             o.get("tls_version"), o.get("cipher"), o.get("certificate_pem"), first_seen, last_served, served_since,
             event.global_position, None if o.get("chain") is None else json.dumps(o["chain"]),
             o.get("client_certificate")))


# "+c.tenant_id": the certificate is found through its fingerprint's index. Without statistics SQLite took the
# tenant's common-name index instead and read every certificate of the tenant per endpoint (11 s for a tenant of
# 56,000 certificates and as many endpoints; docs/architecture.md, "Query plans").
_SELECT = (f"SELECT {', '.join('d.' + c for c in COLUMNS)}, {', '.join('c.' + c for c in MATCH)}, a.kind "
           "FROM discovered_endpoints d LEFT JOIN certificates c ON +c.tenant_id = d.tenant_id "
           "AND c.fingerprint = d.fingerprint LEFT JOIN cas a ON a.tenant_id = c.tenant_id AND a.ca_id = c.ca_id")


def _row(row: tuple) -> dict:
    item = dict(zip((*COLUMNS, *MATCH, "ca_kind"), row))
    item["endpoint"] = endpoint_name(item["host"], item["port"])
    item["chain"] = None if item["chain"] is None else json.loads(item["chain"])
    return item


def encode_cursor(row: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps([row["host"], row["port"]]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int]:
    """The (host, port) a cursor points after; ValueError if it is not one of ours."""
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("not a cursor from this API") from exc
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)):
        raise ValueError("not a cursor from this API")
    return value[0], value[1]


def of_tenant(conn: sqlite3.Connection, tenant_id: str, *, after: tuple[str, int] | None = None,
              limit: int = 100) -> list[dict]:
    """The tenant's endpoints by host and port (after ``after``), each with its latest observation and the
    tenant's certificate it serves, if any; every query is confined to one tenant."""
    sql, args = f"{_SELECT} WHERE d.tenant_id = ?", [tenant_id]
    if after is not None:
        sql += " AND (d.host, d.port) > (?, ?)"
        args += list(after)
    rows = conn.execute(sql + " ORDER BY d.host, d.port LIMIT ?", (*args, limit)).fetchall()
    return [_row(row) for row in rows]


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


# What the compliance rules read of an endpoint, and no more (not a listing's PEM). Most of the time of a tenant's
# 45,000 endpoints was the join, which reads the certificates' fingerprint index alone (docs/architecture.md, "Query
# plans")
_RECORD = ("d.host", "d.port", "d.observed_at", "d.last_served_at", "d.error", "d.reason", "d.fingerprint",
           "d.not_after", "c.certificate_id", "c.ca_id", "c.status", "c.revocation_reason", "c.superseded_by",
           "d.issuer_dn", "a.kind", "d.chain")
_CHAIN = msgspec.json.Decoder(list[ChainCertificate])


def records(conn: sqlite3.Connection, tenant_id: str, since: datetime) -> list[DiscoveredRecord]:
    """What the compliance rules read: the tenant's endpoints observed at ``since`` or later."""
    rows = conn.execute(f"SELECT {', '.join(_RECORD)} {_SELECT[_SELECT.index(' FROM '):]} WHERE d.tenant_id = ? "
                        "AND d.observed_at >= ? ORDER BY d.host, d.port", (tenant_id, rfc3339(since))).fetchall()
    return [DiscoveredRecord(
        endpoint=endpoint_name(host, port), observed_at=datetime.fromisoformat(observed_at),
        last_served_at=_moment(last_served_at), error=error, reason=reason, fingerprint_sha256=fingerprint,
        not_after=_moment(not_after), certificate_id=certificate_id, ca_id=ca_id, status=status,
        revocation_reason=revocation_reason, superseded_by=superseded_by, issuer_dn=issuer_dn, ca_kind=ca_kind,
        chain=None if chain is None else _CHAIN.decode(chain))
        for (host, port, observed_at, last_served_at, error, reason, fingerprint, not_after, certificate_id, ca_id,
             status, revocation_reason, superseded_by, issuer_dn, ca_kind, chain) in rows]
