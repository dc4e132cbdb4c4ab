"""The delivery job: sign one notification with its subscription's current secret and POST it, once per attempt.

A 2xx answer delivers it. Anything else (another status, a redirect, a timeout, a refused
connection, a URL the HTTP client cannot send to) counts an attempt and raises, so dramatiq's
Retries middleware sends the message again after an exponential backoff, until ``max_attempts``
have been made; the last failure is final (the dispatcher then appends
``webhook.delivery_failed``). Redirects are never followed. A URL the subscription rules refuse
(saved before the rule existed, or to loopback where this process does not allow it) fails the
delivery at once, without a request. A host name is resolved here, on each attempt: if any
address it resolves to is one the rules refuse (``domain.webhook.address_problem``: loopback
unless allowed, link-local, unspecified, multicast) the attempt fails without a connection, and
otherwise the request goes to a vetted address, so a DNS answer that changes between the check
and the connection (rebinding) cannot redirect it; the Host header, TLS SNI and certificate
verification stay with the name. The lookup is bounded by the delivery timeout, as the connection
is: a resolver slower than that (its own timeout and retries can take tens of seconds) fails the
attempt as a connect timeout (retried like one), and does not hold the worker. The job's message
carries only the delivery id: body, tenant and subscription are read here.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dramatiq

from domain import webhook
from infra.jobs import Jobs
from infra.webhooks.log import FINAL, DeliveryLog
from projections import webhooks as read_model
from projections.views_db import RebuildGuard

# httpx (about 50 ms of a start: it imports its command-line client's click, rich and pygments) is imported where a
# request is sent or a host encoded, not by every process that wires this job (each CLI command, each API worker)
if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)
ACTOR = "webhooks.deliver"
QUEUE = "webhooks"
USER_AGENT = "csm-webhooks/1"
# a delivery is retried, not cancelled, while the subscriptions read model is being rebuilt (ProjectionRebuilding)
SUBSCRIPTIONS = RebuildGuard([read_model.WebhooksProjector()])


class HostRefused(Exception):
    """The URL's host name resolves to an address no notification may go to."""


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
    allow_loopback: bool = False  # CSM_WEBHOOK_ALLOW_LOOPBACK_HTTP: loopback receivers, for tests and development
    verify: ssl.SSLContext | bool = True  # the receivers' TLS trust: the HTTP client's default CAs

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
            webhook.check_url(hook["url"], allow_loopback_http=self.allow_loopback, encode_host=encode_host)
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
        import httpx

        try:
            target = httpx.URL(url)
            addresses = self.vetted_addresses(target)
            # trust_env off: no proxy or .netrc from the environment decides where notifications go
            with httpx.Client(timeout=self.timeout, follow_redirects=False, trust_env=False,
                              verify=self.verify) as client:
                response = _send(client, target, addresses, body, headers)
        except HostRefused as exc:
            log.warning("webhook host refused; attempt failed", extra={"delivery_id": row["delivery_id"],
                                                                       "error": str(exc)})
            return None, str(exc)
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            # ValueError: the URL itself cannot be sent to (the idna codec's UnicodeError on a bad host name); an
            # attempt that failed like any other, never an exception out of the job
            return None, f"{type(exc).__name__}: {str(exc)[:200]}"
        if 300 <= response.status_code < 400:
            return response.status_code, f"HTTP {response.status_code}: redirects are not followed"
        return response.status_code, None if response.is_success else f"HTTP {response.status_code}"

    def vetted_addresses(self, url: httpx.URL) -> list[str]:
        """Every address ``url``'s host resolves to (an address stands for itself), in the resolver's order;
        HostRefused if any of them is one the subscription rules refuse (ConnectError if there is none)."""
        import httpx

        host = url.raw_host.decode("ascii")
        try:
            found = _lookup(host, url.port or (443 if url.scheme == "https" else 80), self.timeout)
        except socket.gaierror as exc:  # as the HTTP client would have failed to connect
            raise httpx.ConnectError(f"{host} does not resolve: {exc}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
        for address in addresses:
            problem = webhook.address_problem(ipaddress.ip_address(address), allow_loopback=self.allow_loopback)
            if problem:
                raise HostRefused(f"url_host: {host} resolves to {problem}; no request was sent")
        return addresses


def _lookup(host: str, port: int, timeout: float) -> list:
    """``socket.getaddrinfo(host, port)`` for TCP, waited for ``timeout`` seconds at most (httpx.ConnectTimeout).

    A blocking lookup cannot be cancelled: it runs on a daemon thread of its own, which the resolver ends (its
    answer, when late, is dropped). Not a shared pool: lookups stuck on one receiver's slow name server would
    queue the other receivers' behind them.
    """
    import httpx

    answer: concurrent.futures.Future[list] = concurrent.futures.Future()

    def resolve() -> None:
        try:
            answer.set_result(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller, which re-raises it
            answer.set_exception(exc)

    threading.Thread(target=resolve, name=f"webhook-dns-{host}"[:60], daemon=True).start()
    try:
        return answer.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise httpx.ConnectTimeout(f"{host} did not resolve within {timeout:g} s") from None


def encode_host(host: str) -> str:
    """``host`` as the HTTP client writes it into a request (httpx: lower-cased, a non-ASCII name through IDNA 2008,
    the idna package); ValueError for a name it cannot send to. The URL rules use it when a URL is saved."""
    import httpx

    try:
        return httpx.URL(scheme="https", host=host, path="/").raw_host.decode("ascii")
    except httpx.InvalidURL as exc:
        raise ValueError(str(exc)) from None


def _send(client: httpx.Client, url: httpx.URL, addresses: list[str], body: bytes,
          headers: dict[str, str]) -> httpx.Response:
    """POST to the first of ``addresses`` that accepts a connection, as if to ``url``'s host: its Host header,
    and for https its name in SNI and in the certificate check (for an address, itself, as the client does)."""
    import httpx

    def to(address: str) -> httpx.Request:
        return client.build_request("POST", url.copy_with(host=address), content=body,
                                    headers={**headers, "Host": url.netloc.decode("ascii")},
                                    extensions={"sni_hostname": url.raw_host.decode("ascii")})

    for address in addresses[:-1]:
        try:
            return client.send(to(address))
        except httpx.ConnectError:
            continue  # the next address, as the client would have tried the name's
    return client.send(to(addresses[-1]))


def declare(jobs: Jobs, deliverer: Deliverer, *, min_backoff: float, max_backoff: float) -> None:
    """Declare the delivery actor on ``jobs``' broker (the app and ``csm worker`` both do)."""
    jobs.actor(deliverer, name=ACTOR, queue=QUEUE, max_retries=max(deliverer.max_attempts - 1, 0),
               min_backoff=max(int(min_backoff * 1000), 1), max_backoff=max(int(max_backoff * 1000), 1))
