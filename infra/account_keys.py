"""A service account's active API keys as the api_tokens read model lists them (the ``AccountKeys`` port).

Read as the read model stands, without waiting for it to reach the log's head: a disable asks only for keys issued
before the account's stream recorded its keys, which the read model has had since; the keys issued since, the
disable finds in the stream itself (domain/service_account.py). A rebuilding read model lists none (logged): the
account is still refused at every request from the log (api/auth.py), and its older keys can be revoked one by one.
"""

from __future__ import annotations

import asyncio
import logging

from projections import service_accounts as account_views
from projections.runner import ProjectionRunner
from projections.views_db import ProjectionRebuilding

log = logging.getLogger(__name__)


class ReadModelAccountKeys:
    def __init__(self, runner: ProjectionRunner) -> None:
        self.runner = runner

    async def active_keys(self, tenant_id: str | None, account: str) -> list[str]:
        try:
            return await asyncio.to_thread(self._active, tenant_id, account)
        except ProjectionRebuilding:
            log.warning("the api_tokens read model is rebuilding: keys of service account %s (tenant %s) issued "
                        "before its stream recorded its keys are not revoked with it", account, tenant_id)
            return []

    def _active(self, tenant_id: str | None, account: str) -> list[str]:
        conn = self.runner.connection()
        try:
            return account_views.active_keys(conn, tenant_id, account)
        finally:
            conn.close()
