"""The delivery job: sign one notification with its subscription's current secret and POST it, once per attempt.

A 2xx answer delivers it. Anything else (another status, a redirect, a timeout, a refused
connection, a URL the HTTP client cannot send to) counts an attempt and raises, so dramatiq's
Retries middleware sends the message again after an exponential backoff, until ``max_attempts``
have been made; the last failure is final (the dispatcher then appends
``webhook.delivery_failed``). Redirects are never followed. A URL the subscription rules refuse
(saved before the rule existed) fails the delivery at once, without a request.
The job's message carries only the delivery id: body, tenant and subscription are read here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dramatiq
import httpx

from domain import webhook
from infra.jobs import Jobs
from infra.webhooks.log import FINAL, DeliveryLog
from projections import webhooks as read_model
from projections.runner import RebuildGuard

log = logging.getLogger(__name__)
ACTOR = "webhooks.deliver"
QUEUE = "webhooks"
USER_AGENT = "csm-webhooks/1"
# a delivery is retried, not cancelled, while the subscriptions read model is being rebuilt (ProjectionRebuilding)
SUBSCRIPTIONS = RebuildGuard([read_model.WebhooksProjector()])


class DeliveryFailed(dramatiq.Retry):
    """This attempt failed; dramatiq retries the message after its exponential backoff (logged by us, not as an
    unhandled error)."""


@dataclass
class Deliverer:
    """What a delivery needs: the log, the subscriptions read model, the secrets, the HTTP rules."""

    deliveries: DeliveryLog
    views_path: Path  # views.db: the subscriptions read model
    secret: Callable[[str, str], bytes]  # (tenant, secret_ref) -> the secret, from the key vault
    max_attempts: int = 8
    timeout: float = 10.0

    def _subscription(self, tenant_id: str, webhook_id: str) -> dict | None:
        conn = SUBSCRIPTIONS.connect(self.views_path)  # refuses while the read model is rebuilt
        try:
            return read_model.for_delivery(conn, tenant_id, webhook_id)
        finally:
            conn.close()

    def __call__(self, delivery_id: str) -> None:
        row = self.deliveries.get(delivery_id)
        if row is None or row["status"] in FINAL:
            return  # delivered already (a duplicate message), or ended
        hook = self._subscription(row["tenant_id"], row["webhook_id"])
        if hook is None or hook["status"] != "active" or not hook["enabled"]:
            self.deliveries.finish(delivery_id, "cancelled", "the subscription was deleted or disabled")
            return
        try:  # a subscription saved before the URL rules refused its URL: no attempt can ever be sent there
            # (loopback is left to the subscription's check: whether it is allowed is the API process's setting)
            webhook.check_url(hook["url"], allow_loopback_http=True)
        except webhook.InvalidWebhook as refused:
            self.deliveries.record_attempt(delivery_id, status="failed", status_code=None,
                                           error=f"{refused.code}: {refused.detail}")
            log.warning("webhook url refused; delivery failed", extra={"delivery_id": delivery_id,
                                                                       "error": refused.detail})
            return
        body = bytes(row["body"])
        status_code, error = self._post(hook["url"], body, row, self.secret(row["tenant_id"], hook["secret_ref"]))
        if status_code is not None and 200 <= status_code < 300:
            attempts = self.deliveries.record_attempt(delivery_id, status="delivered", status_code=status_code,
                                                      error=None)
            log.info("webhook delivered", extra={"delivery_id": delivery_id, "attempts": attempts})
            return
        final = row["attempts"] + 1 >= self.max_attempts
        attempts = self.deliveries.record_attempt(delivery_id, status="failed" if final else "pending",
                                                  status_code=status_code, error=error)
        log.info("webhook attempt failed", extra={"delivery_id": delivery_id, "attempts": attempts,
                                                  "status_code": status_code, "final": final})
        if not final:
            raise DeliveryFailed(f"delivery {delivery_id} attempt {attempts}: {error}")

    def _post(self, url: str, body: bytes, row: dict, secret: bytes) -> tuple[int | None, str | None]:
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   webhook.SIGNATURE_HEADER: webhook.signature(secret, int(time.time()), body),
                   "X-CSM-Delivery": row["delivery_id"], "X-CSM-Event": row["event_type"],
                   "X-CSM-Attempt": str(row["attempts"] + 1)}
        try:
            # trust_env off: no proxy or .netrc from the environment decides where notifications go
            with httpx.Client(timeout=self.timeout, follow_redirects=False, trust_env=False) as client:
                response = client.post(url, content=body, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            # ValueError: the URL itself cannot be sent to (the idna codec's UnicodeError on a bad host name); an
            # attempt that failed like any other, never an exception out of the job
            return None, f"{type(exc).__name__}: {str(exc)[:200]}"
        if 300 <= response.status_code < 400:
            return response.status_code, f"HTTP {response.status_code}: redirects are not followed"
        return response.status_code, None if response.is_success else f"HTTP {response.status_code}"


def declare(jobs: Jobs, deliverer: Deliverer, *, min_backoff: float, max_backoff: float) -> None:
    """Declare the delivery actor on ``jobs``' broker (the app and ``csm worker`` both do)."""
    jobs.actor(deliverer, name=ACTOR, queue=QUEUE, max_retries=max(deliverer.max_attempts - 1, 0),
               min_backoff=max(int(min_backoff * 1000), 1), max_backoff=max(int(max_backoff * 1000), 1))
