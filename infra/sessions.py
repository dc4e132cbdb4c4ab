"""Which refresh-token families of a user are open (the ``SessionIndex`` port), read from the sessions read model.

As infra/usage.py does for quotas, it first brings the read models to the log's head (a server waits for its tail,
bounded; the CLI catches them up itself), so a family started before the command is found. Unlike a quota count,
nothing is refused when that fails: the user's sessions epoch already ends every session, and this only decides
which families also get a recorded ``session.revoked``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from commands.ports import EventStore
from commands.runtime import rfc3339
from projections import sessions as session_views
from projections.runner import ProjectionRunner
from projections.views_db import ProjectionRebuilding

log = logging.getLogger(__name__)


class ReadModelSessions:
    def __init__(self, store: EventStore, runner: ProjectionRunner, *, timeout: float) -> None:
        self.store = store
        self.runner = runner
        self.timeout = timeout

    async def open_sessions(self, subject: str, now: datetime) -> list[tuple[str, str]]:
        head = await self.store.head_position()
        caught_up = await self.runner.reach(head, self.timeout)
        if not caught_up:
            log.warning("the sessions read model has not reached position %s; families it has not seen yet are "
                        "ended by the sessions epoch alone, without a session.revoked", head)
        try:
            return await asyncio.to_thread(self._open, subject, rfc3339(now))
        except ProjectionRebuilding:
            log.warning("the sessions read model is rebuilding; %s's families are ended by the epoch alone", subject)
            return []

    def _open(self, subject: str, now: str) -> list[tuple[str, str]]:
        conn = self.runner.connection()
        try:
            return [(scope, session_id) for scope, session_id in session_views.open_sessions(conn, subject, now)]
        finally:
            conn.close()
