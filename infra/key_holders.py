"""Which certificates of a tenant certify one public key (the ``KeyHolders`` port), read from the certificates read model.

As infra/sessions.py does, it first brings the read models to the log's head as it stood when asked (a server waits
for its tail, bounded). A key_compromise revocation asks it for the key's other certificates; nothing is refused
when the read models lag or rebuild: the revocation asked for stands, the warning says which key to check, and the
answer says it may be incomplete (the compromised-key sweep then tries the key again on its next pass).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from commands.ports import EventStore, KeyHolding
from projections import certificate_queries as certificate_views
from projections.runner import ProjectionRunner
from projections.views_db import ProjectionRebuilding

log = logging.getLogger(__name__)


class ReadModelKeyHolders:
    def __init__(self, store: EventStore, runner: ProjectionRunner, *, timeout: float) -> None:
        self.store = store
        self.runner = runner
        self.timeout = timeout

    async def holding_key(self, tenant_id: str, public_key_sha256: str, now: datetime) -> KeyHolding:
        head = await self.store.head_position()
        complete = await self.runner.reach(head, self.timeout)
        if not complete:
            log.warning("the certificates read model has not reached position %s: certificates of key %s it has "
                        "not seen yet are not revoked with it", head, public_key_sha256)
        try:
            found = await asyncio.to_thread(self._holding, tenant_id, public_key_sha256, now)
        except ProjectionRebuilding:
            log.warning("the certificates read model is rebuilding: the other certificates of key %s (tenant %s) "
                        "are not revoked with it; revoke them once it is back", public_key_sha256, tenant_id)
            return KeyHolding(certificate_ids=(), complete=False)
        return KeyHolding(certificate_ids=tuple(found), complete=complete)

    def _holding(self, tenant_id: str, public_key_sha256: str, now: datetime) -> list[str]:
        conn = self.runner.connection()
        try:
            return certificate_views.holding_key(conn, tenant_id, public_key_sha256, now)
        finally:
            conn.close()
