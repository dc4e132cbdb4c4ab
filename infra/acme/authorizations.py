"""An ACME account's open authorizations (the ``AcmeAuthorizations`` port), read from the ACME read model once it
has reached the log's head as it stood when asked (a server waits for its tail, bounded), as infra/key_holders.py.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from commands.ports import EventStore
from commands.runtime import rfc3339
from projections import acme as acme_views
from projections.runner import ProjectionRunner
from projections.views_db import ProjectionRebuilding

log = logging.getLogger(__name__)


class ReadModelAcmeAuthorizations:
    def __init__(self, store: EventStore, runner: ProjectionRunner, *, timeout: float) -> None:
        self.store = store
        self.runner = runner
        self.timeout = timeout

    async def open_authorizations(self, tenant_id: str, account_id: str, now: datetime) -> list[str]:
        head = await self.store.head_position()
        if not await self.runner.reach(head, self.timeout):
            log.warning("the ACME read model has not reached position %s: authorizations of account %s it has not "
                        "seen yet stay pending (the account answers none of them)", head, account_id)
        try:
            return await asyncio.to_thread(self._open, tenant_id, account_id, rfc3339(now))
        except ProjectionRebuilding:
            log.warning("the ACME read model is rebuilding: the pending authorizations of account %s (tenant %s) "
                        "stay pending (the account answers none of them)", account_id, tenant_id)
            return []

    def _open(self, tenant_id: str, account_id: str, now: str) -> list[str]:
        conn = self.runner.connection()
        try:
            return acme_views.open_authorizations(conn, tenant_id, account_id, now)
        finally:
            conn.close()
