"""What a tenant holds, counted on the read models for its quotas (the ``TenantUsage`` port of commands/ports.py).

Counts are taken only once the read models have reached the log's head as it stood when asked: in a server,
by waiting for its tail (bounded); in the CLI, which runs no tail, by catching the read models up itself. The
counts and the checkpoints they include are read in one SQLite read transaction, so each count comes with the
exact position it stands for (commands/quotas.py adds what this process appended after it). The certificate
counts are kept per day by the read model (projections/certificates.py), so a count reads a few dozen rows.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from commands.ports import CountedUsage, EventStore
from domain.errors import UsageUnknown
from domain.tenant import Quotas, Usage, day_start
from projections import cas as ca_views
from projections import certificate_queries as certificate_views
from projections.runner import ProjectionRunner
from projections.views_db import ProjectionRebuilding


class ReadModelUsage:
    def __init__(self, store: EventStore, runner: ProjectionRunner, *, timeout: float) -> None:
        self.store = store
        self.runner = runner
        self.timeout = timeout
        self._conn: sqlite3.Connection | None = None  # opened on first use; counts run on the event loop

    async def count(self, tenant_id: str, now: datetime, bounds: Quotas | None = None) -> CountedUsage:
        head = await self.store.head_position()
        caught_up = await self.runner.reach(head, self.timeout)
        if not caught_up:
            raise UsageUnknown(f"the read models have not reached position {head} yet, so the tenant's usage "
                               "against its quotas is not known; retry shortly")
        try:
            return self._count(tenant_id, now, bounds)  # a few index lookups: on the loop, cheaper than a thread hop
        except ProjectionRebuilding as exc:
            raise UsageUnknown(f"{exc}, so the tenant's usage against its quotas is not known") from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _count(self, tenant_id: str, now: datetime, bounds: Quotas | None) -> CountedUsage:
        if self._conn is None:
            self._conn = self.runner.connection()
        conn = self._conn
        conn.execute("BEGIN")  # one snapshot: the counts and the checkpoints they stand for
        try:
            positions = dict(conn.execute("SELECT name, position FROM projection_checkpoints "
                                          "WHERE name IN ('cas', 'certificates')").fetchall())
            every = bounds is None
            usage = Usage(
                cas=ca_views.held_count(conn, tenant_id) if every or bounds.max_cas is not None else 0,
                certificates=(certificate_views.live_count(conn, tenant_id, now)
                              if every or bounds.max_certificates is not None else 0),
                issuances_today=(certificate_views.issued_on(conn, tenant_id, day_start(now).date())
                                 if every or bounds.max_issuances_per_day is not None else 0))
        finally:
            conn.execute("COMMIT")
        return CountedUsage(usage=usage, cas_position=positions.get("cas", 0),
                            certificates_position=positions.get("certificates", 0))

