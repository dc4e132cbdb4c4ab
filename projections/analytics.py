"""The analytics read model: per tenant and UTC day, how many of each security-relevant event, by one dimension.

``analytics_daily`` counts issuances (by profile, algorithm and key source), revocations (by reason), renewals and
their failures, private-key exports (by format), CA creations, rollovers and revocations, compromised keys, CRL
publications and access denials (by permission). ``GET /v1/tenants/{id}/analytics`` and `csm tenant analytics`
read it. Like every read model it is rebuilt from the log (`csm projections rebuild analytics`).
"""

from __future__ import annotations

import sqlite3
from datetime import date

import msgspec

from domain.events import SYSTEM_TENANT, EventEnvelope
from projections.base import Projector

# event type -> the payload field each count is kept by ("" : none)
DIMENSIONS: dict[str, str] = {
    "certificate.issued": "profile",
    "certificate.revoked": "reason",
    "certificate.renewed": "",
    "certificate.renewal_failed": "",
    "certificate.private_key_exported": "format",
    "ca.created": "kind",
    "ca.key_rolled_over": "",
    "ca.revoked": "reason",
    "ca.crl_published": "",
    "key.compromise_recorded": "reason",
    "access.denied": "permission",
}
# counted again by other payload fields (paths into it), each under "<type>.<last field>":
# "certificate.issued.algorithm", "certificate.issued.key_source"
MORE_DIMENSIONS: dict[str, tuple[tuple[str, ...], ...]] = {
    "certificate.issued": (("facts", "algorithm"), ("key_source",)),
}
MAX_DAYS = 366  # one query's range at most
DEFAULT_DAYS = 30


def _dig(payload: dict, path: tuple[str, ...]) -> str:
    value: object = payload
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return "" if value is None else str(value)


class AnalyticsProjector(Projector):
    name = "analytics"
    version = 1
    tables = ("analytics_daily",)
    ddl = (
        """CREATE TABLE IF NOT EXISTS {analytics_daily} (
            tenant_id TEXT NOT NULL, day TEXT NOT NULL, metric TEXT NOT NULL, dimension TEXT NOT NULL,
            n INTEGER NOT NULL, PRIMARY KEY (tenant_id, day, metric, dimension)) WITHOUT ROWID""",
    )

    def apply(self, conn: sqlite3.Connection, event: EventEnvelope) -> None:
        field = DIMENSIONS.get(event.type)
        if field is None:
            return
        p = event.payload
        tenant_id = event.tenant_id
        if tenant_id == SYSTEM_TENANT:  # a platform principal's denial: kept under the tenant the request named
            tenant_id = p.get("tenant_id") or "" if event.type == "access.denied" else ""
        if not tenant_id:
            return
        day = event.occurred_at[:10]
        counts = [(event.type, _dig(p, (field,)) if field else "")]
        counts += [(f"{event.type}.{path[-1]}", _dig(p, path)) for path in MORE_DIMENSIONS.get(event.type, ())]
        conn.executemany(
            f"INSERT INTO {self.t('analytics_daily')} VALUES (?,?,?,?,1) "
            "ON CONFLICT (tenant_id, day, metric, dimension) DO UPDATE SET n = n + 1",
            [(tenant_id, day, metric, dimension) for metric, dimension in counts])


def daily(conn: sqlite3.Connection, tenant_id: str, since: date, until: date) -> list[tuple[str, str, str, int]]:
    """(day, metric, dimension, count) of the tenant from ``since`` to ``until``, both included, by day."""
    return conn.execute(
        "SELECT day, metric, dimension, n FROM analytics_daily WHERE tenant_id = ? AND day >= ? AND day <= ? "
        "ORDER BY day, metric, dimension", (tenant_id, since.isoformat(), until.isoformat())).fetchall()


class AnalyticsDay(msgspec.Struct, frozen=True, kw_only=True):
    day: str
    counts: dict[str, dict[str, int]]  # event type (or "<type>.<field>") -> dimension -> count


class AnalyticsReport(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    since: str
    until: str
    totals: dict[str, dict[str, int]]  # over the whole range
    days: list[AnalyticsDay]  # only the days with a count, in order


def report(conn: sqlite3.Connection, tenant_id: str, since: date, until: date) -> AnalyticsReport:
    days: dict[str, dict[str, dict[str, int]]] = {}
    totals: dict[str, dict[str, int]] = {}
    for day, metric, dimension, n in daily(conn, tenant_id, since, until):
        days.setdefault(day, {}).setdefault(metric, {})[dimension] = n
        by = totals.setdefault(metric, {})
        by[dimension] = by.get(dimension, 0) + n
    return AnalyticsReport(tenant_id=tenant_id, since=since.isoformat(), until=until.isoformat(), totals=totals,
                           days=[AnalyticsDay(day=day, counts=counts) for day, counts in days.items()])
