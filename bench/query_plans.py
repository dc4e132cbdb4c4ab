"""The read models' queries and the plans SQLite picks for them on a large views database, with and without the
statistics ``ANALYZE`` keeps (``sqlite_stat1``).

``python -m bench.query_plans VIEWS.DB`` runs every query the service makes of the big read models (certificates,
audit log, deployments, discovery, counts) through the real query functions, for the tenant with the most
certificates and the one with the fewest, records each statement they execute, and prints its plan and its time;
``--analyze`` first runs ``projections.views_db.analyze`` (``--drop-stats`` first removes any statistics).
``--synthesize`` adds deployments and discovered endpoints rows to a database the certificate dataset left
without them (bench/certificate_history.py writes certificates only).
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from projections import audit_log, certificate_queries, compliance, deployments, discovery


class Recorder:
    """A connection that notes every statement (and its parameters) a query function runs through it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.statements: list[tuple[str, tuple]] = []

    def execute(self, sql: str, parameters=()) -> sqlite3.Cursor:
        self.statements.append((sql, tuple(parameters)))
        return self.conn.execute(sql, parameters)


def plan(conn: sqlite3.Connection, sql: str, parameters: tuple) -> str:
    """``EXPLAIN QUERY PLAN`` as one line: each step's detail, children indented by ``>``."""
    rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", parameters).fetchall()
    depth = {0: 0}
    out = []
    for node, parent, _, detail in rows:
        depth[node] = depth.get(parent, 0) + 1
        out.append(">" * (depth[node] - 1) + detail)
    return " | ".join(out)


def _pick(conn: sqlite3.Connection) -> dict:
    """Realistic parameters: the biggest and the smallest tenant, and one of each's certificates and audit entries."""
    sizes = conn.execute("SELECT tenant_id, count(*) FROM certificates GROUP BY 1 ORDER BY 2 DESC").fetchall()
    picked = {}
    for label, (tenant, n) in (("big", sizes[0]), ("small", sizes[-1])):
        cid, fingerprint, serial, cn, key, issuer = conn.execute(
            "SELECT certificate_id, fingerprint, serial_hex, common_name, public_key_sha256, issuer_dn "
            "FROM certificates WHERE tenant_id = ? AND status = 'issued' ORDER BY position DESC LIMIT 1",
            (tenant,)).fetchone()
        ca_id = conn.execute("SELECT ca_id FROM certificates WHERE tenant_id = ? LIMIT 1", (tenant,)).fetchone()[0]
        stream, actor, correlation = conn.execute(
            "SELECT stream_id, actor, correlation_id FROM audit_log WHERE tenant_id = ? ORDER BY position DESC "
            "LIMIT 1", (tenant,)).fetchone()
        node = conn.execute("SELECT node FROM certificate_deployments WHERE tenant_id = ? LIMIT 1",
                            (tenant,)).fetchone()
        picked[label] = {"tenant": tenant, "certificates": n, "id": cid, "fingerprint": fingerprint,
                         "serial": serial, "cn": cn, "key": key, "issuer": issuer, "ca_id": ca_id, "stream": stream,
                         "actor": actor, "correlation": correlation, "node": node[0] if node else "node-1"}
    return picked


def queries(p: dict, now: datetime) -> list[tuple[str, Callable]]:
    """(name, fn(conn)) of every read the service makes of the big read models, for one tenant's parameters."""
    t, q = p["tenant"], certificate_queries
    s = q.search
    return [
        ("certificates.get (platform scope)", lambda c: q.get(c, p["id"], None)),
        ("certificates.get (tenant scope)", lambda c: q.get(c, p["id"], t)),
        ("search: tenant, newest", lambda c: s(c, t)),
        ("search: all tenants, newest", lambda c: s(c, None)),
        ("search: tenant, by expiry", lambda c: s(c, t, sort="expiry")),
        ("search: common_name exact", lambda c: s(c, t, common_name=p["cn"])),
        ("search: common_name prefix", lambda c: s(c, t, common_name=p["cn"][:6] + "*")),
        ("search: common_name prefix, few", lambda c: s(c, t, common_name=p["cn"][:-1] + "*")),
        ("search: san", lambda c: s(c, t, san=p["cn"])),
        ("search: san prefix", lambda c: s(c, t, san=p["cn"][:6] + "*")),
        ("search: san prefix, few", lambda c: s(c, t, san=p["cn"][:-1] + "*")),
        ("search: san prefix, all tenants", lambda c: s(c, None, san=p["cn"][:6] + "*")),
        ("search: tag", lambda c: s(c, t, tag="dc1")),
        ("search: serial", lambda c: s(c, t, serial=p["serial"])),
        ("search: serial, all tenants", lambda c: s(c, None, serial=p["serial"])),
        ("search: fingerprint", lambda c: s(c, t, fingerprint=p["fingerprint"])),
        ("search: fingerprint, all tenants", lambda c: s(c, None, fingerprint=p["fingerprint"])),
        ("search: issuer (CA id)", lambda c: s(c, t, issuer=p["ca_id"])),
        ("search: ca_id", lambda c: s(c, t, ca_id=p["ca_id"])),
        ("search: status revoked", lambda c: s(c, t, status="revoked")),
        ("search: status valid", lambda c: s(c, t, status="valid", now=now)),
        ("search: status expired", lambda c: s(c, t, status="expired", now=now)),
        ("search: expiring within 30 days", lambda c: s(
            c, t, expires_after=now, expires_before=now + timedelta(days=30), live_only=True, sort="expiry")),
        ("search: profile", lambda c: s(c, t, profile="internode")),
        ("renewal_candidates", lambda c: q.renewal_candidates(c, now, now - timedelta(hours=1))),
        ("warning_candidates", lambda c: q.warning_candidates(c, now, (30,))),
        ("holding_key (compromise sweep)", lambda c: q.holding_key(c, t, p["key"], now)),
        ("live_by_issuer (rollover)", lambda c: q.live_by_issuer(c, t, now)),
        ("expiring_counts (metrics)", lambda c: q.expiring_counts(c, now, (7, 30, 90))),
        ("live_count (quota)", lambda c: q.live_count(c, t, now)),
        ("issued_on (quota)", lambda c: q.issued_on(c, t, now.date())),
        ("compliance.facts", lambda c: compliance.facts(c, t, now)),
        ("audit: tenant", lambda c: audit_log.search(c, t)),
        ("audit: all", lambda c: audit_log.search(c, None)),
        ("audit: stream", lambda c: audit_log.search(c, t, stream_id=p["stream"])),
        ("audit: actor", lambda c: audit_log.search(c, t, actor=p["actor"])),
        ("audit: type", lambda c: audit_log.search(c, t, type_="certificate.revoked")),
        ("audit: correlation", lambda c: audit_log.search(c, t, correlation_id=p["correlation"])),
        ("audit: day", lambda c: audit_log.search(c, t, day=now.date().isoformat())),
        ("deployments.certificates_on", lambda c: deployments.certificates_on(c, t, p["node"])),
        ("deployments.of_certificate", lambda c: deployments.of_certificate(c, p["id"], t)),
        ("deployments.of_certificate (all)", lambda c: deployments.of_certificate(c, p["id"], None)),
        ("deployments.nodes", lambda c: deployments.nodes(c, t)),
        ("discovery.of_tenant", lambda c: discovery.of_tenant(c, t)),
        ("discovery.records", lambda c: discovery.records(c, t, now - timedelta(days=7))),
    ]


def synthesize(conn: sqlite3.Connection, now: datetime) -> None:
    """Deployments (every live certificate on its holder's node) and discovered endpoints (one per node, serving
    its certificate) in the shape the projectors write them, for a dataset whose log has none."""
    rows = conn.execute("SELECT tenant_id, certificate_id, common_name, fingerprint, position FROM certificates "
                        f"WHERE {certificate_queries._LIVE}").fetchall()
    at = now.isoformat()
    conn.execute("BEGIN")
    conn.executemany("INSERT OR REPLACE INTO certificate_deployments (tenant_id, certificate_id, node, state, "
                     "deployments, position) VALUES (?, ?, ?, 'deployed', 1, ?)",
                     [(t, cid, cn, pos) for t, cid, cn, _, pos in rows])
    conn.executemany("INSERT OR REPLACE INTO deployment_nodes (tenant_id, node, certificate_id, state, files, keep, "
                     "generations, position) VALUES (?, ?, ?, 'deployed', '[]', 1, '[]', ?)",
                     [(t, cn, cid, pos) for t, cid, cn, _, pos in rows])
    conn.executemany("INSERT OR REPLACE INTO discovered_endpoints (tenant_id, host, port, observed_at, scan_id, "
                     "fingerprint, first_seen, position) VALUES (?, ?, 9142, ?, 'scan', ?, ?, ?)",
                     [(t, cn, at, fp, at, pos) for t, _, cn, fp, pos in rows])
    conn.execute("COMMIT")


def run(conn: sqlite3.Connection, now: datetime, repeat: int,
        report: Callable[[str, str, dict], None] | None = None) -> dict[tuple[str, str], dict]:
    """Each query for the big and the small tenant: its statements' plans and its mean time (ms)."""
    found = {}
    for label, params in _pick(conn).items():
        for name, fn in queries(params, now):
            recorder = Recorder(conn)
            started = time.perf_counter()
            fn(recorder)
            seconds, times = time.perf_counter() - started, 1
            while seconds < 0.5 and times < repeat:  # slow ones once
                started = time.perf_counter()
                fn(conn)
                seconds, times = seconds + time.perf_counter() - started, times + 1
            found[(name, label)] = {"plans": [plan(conn, sql, args) for sql, args in recorder.statements],
                                    "ms": seconds * 1000 / times, "tenant": params["tenant"],
                                    "certificates": params["certificates"]}
            if report:
                report(name, label, found[(name, label)])
    return found


def main(argv: list[str] | None = None) -> None:
    from projections.statistics import analyze, drop_statistics
    parser = argparse.ArgumentParser(prog="python -m bench.query_plans")
    parser.add_argument("views", type=Path)
    parser.add_argument("--analyze", action="store_true", help="run projections.views_db.analyze first")
    parser.add_argument("--drop-stats", action="store_true", help="remove any statistics first")
    parser.add_argument("--synthesize", action="store_true", help="add deployments and discovered endpoints")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    conn = sqlite3.connect(args.views, isolation_level=None)
    now = datetime.now(UTC)
    if args.synthesize:
        synthesize(conn, now)
    if args.drop_stats:
        drop_statistics(conn)
    if args.analyze:
        started = time.perf_counter()
        analyze(conn)
        print(f"analyze: {(time.perf_counter() - started) * 1000:.0f} ms")
    def report(name: str, label: str, found: dict) -> None:
        print(f"{name} [{label} {found['tenant']}: {found['certificates']:,}] {found['ms']:.2f} ms", flush=True)
        for text in found["plans"]:
            print(f"    {text}", flush=True)

    run(conn, now, args.repeat, report)


if __name__ == "__main__":
    main()
