"""What a root's compromise rollover left chained only to a withdrawn key (the ``UntrustedChains`` port), read from the
CA and certificate read models.

As infra/key_holders.py does, it first brings the read models to the log's head as it stood when asked (bounded);
when they lag or rebuild it answers what it found, marked incomplete: the rollover it reports on stands either way.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from commands.ports import EventStore, Reissue
from projections import cas as ca_views
from projections import certificate_queries as certificate_views
from projections.runner import ProjectionRunner
from projections.views_db import ProjectionRebuilding

log = logging.getLogger(__name__)


class ReadModelUntrustedChains:
    def __init__(self, store: EventStore, runner: ProjectionRunner, *, timeout: float) -> None:
        self.store = store
        self.runner = runner
        self.timeout = timeout

    async def below(self, tenant_id: str, root_id: str, now: datetime) -> Reissue:
        head = await self.store.head_position()
        complete = await self.runner.reach(head, self.timeout)
        if not complete:
            log.warning("the read models have not reached position %s: what root %s's compromise rollover left to "
                        "issue again may be more than listed", head, root_id)
        try:
            cas, certificates = await asyncio.to_thread(self._below, tenant_id, root_id, now)
        except ProjectionRebuilding:
            log.warning("a read model is rebuilding: what root %s's compromise rollover left to issue again is not "
                        "listed (tenant %s)", root_id, tenant_id)
            return Reissue(count=0, cas=(), certificates=(), complete=False)
        return Reissue(count=len(cas) + len(certificates), cas=tuple(cas), certificates=tuple(certificates),
                       complete=complete)

    def _below(self, tenant_id: str, root_id: str, now: datetime) -> tuple[list[str], list[str]]:
        conn = self.runner.connection()
        try:
            cas = ca_views.untrusted_cas(conn, tenant_id, root_id, now)
            certificates = [certificate_id for issuer, ids in
                            certificate_views.live_by_issuer(conn, tenant_id, now).items()
                            if ca_views.withdrawn_path(conn, tenant_id, issuer, root_id) is not None
                            for certificate_id in ids]
            return cas, certificates
        finally:
            conn.close()
