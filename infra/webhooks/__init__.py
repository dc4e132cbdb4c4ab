"""Webhook notifications: the delivery log, the dispatcher (app process) and the delivery job (any worker).

``wire`` declares the delivery actor on a ``Jobs`` broker; the app adds the dispatcher, and
``csm worker`` only the actor. docs/notifications.md describes the whole flow.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.config import Settings
from infra.jobs import Jobs
from infra.keystore.vault import SQLiteKeyVault
from infra.webhooks.delivery import Deliverer, declare
from infra.webhooks.log import DeliveryLog


@dataclass
class Webhooks:
    deliveries: DeliveryLog
    deliverer: Deliverer | None  # None in an HTTP worker process: it reads the log, the primary delivers

    def close(self) -> None:
        self.deliveries.close()


def wire(settings: Settings, jobs: Jobs, keys: SQLiteKeyVault) -> Webhooks:
    """Open the delivery log and declare the delivery actor on ``jobs``' broker."""
    deliveries = DeliveryLog(settings.webhooks_db)
    deliverer = Deliverer(deliveries=deliveries, views_path=settings.views_db, secret=keys.get_sync,
                          max_attempts=max(settings.webhook_max_attempts, 1), timeout=settings.webhook_timeout,
                          allow_loopback=settings.webhook_allow_loopback_http)
    declare(jobs, deliverer, min_backoff=settings.webhook_min_backoff, max_backoff=settings.webhook_max_backoff)
    return Webhooks(deliveries, deliverer)
