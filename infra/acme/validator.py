"""The ACME validator: challenges a client started (http-01, tls-alpn-01) are validated by a background job, also
after a crash.

A started challenge is a row of the ACME read model until its result is recorded. The validator (in the process
that owns the event store: the single process, or a multi-worker server's primary) polls those rows and sends each
to the ``acme-validate`` job once; the job (a dramatiq worker thread) hands the validation back to the event loop,
which fetches the response on a thread and appends ``acme.challenge_validated`` or ``acme.challenge_failed``. A
crash leaves the row in place, and the next process validates it again; a result already recorded makes a repeated
job a no-op (``domain.acme.decide_challenge_result``).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

from commands import acme as commands
from commands.authz import SYSTEM
from commands.runtime import CommandContext, Services, load
from domain import acme, jose
from infra.acme.http01 import Http01, ValidationFailed
from infra.acme.tlsalpn import TlsAlpn01
from infra.config import Settings
from infra.jobs import Jobs
from projections import acme as read_model
from projections.runner import ProjectionRebuilding, ProjectionRunner

log = logging.getLogger(__name__)
ACTOR = "acme-validate"
QUEUE = "acme"
JOB_TIMEOUT = 120.0  # seconds a job waits for its validation on the event loop


def http01_of(settings: Settings) -> Http01:
    return Http01(port=settings.acme_http01_port, networks=acme.parse_networks(settings.acme_validation_networks),
                  hosts_file=settings.acme_hosts_file, timeout=settings.acme_validation_timeout)


def tls_alpn01_of(settings: Settings) -> TlsAlpn01:
    return TlsAlpn01(port=settings.acme_tls_alpn_port, networks=acme.parse_networks(settings.acme_validation_networks),
                     hosts_file=settings.acme_hosts_file, timeout=settings.acme_validation_timeout)


class AcmeValidator:
    def __init__(self, services: Services, runner: ProjectionRunner, jobs: Jobs, http01: Http01,
                 tls_alpn01: TlsAlpn01, *, poll_interval: float = 0.5) -> None:
        self.services, self.runner, self.jobs, self.http01, self.tls_alpn01 = services, runner, jobs, http01, tls_alpn01
        self.poll_interval = poll_interval
        self._in_flight: set[tuple[str, str]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._views: sqlite3.Connection | None = None
        jobs.actor(self._job, name=ACTOR, queue=QUEUE, max_retries=0)

    def _pending(self) -> list[tuple[str, str]]:
        if self._views is None:
            self._views = self.runner.connection()
        return read_model.pending_challenges(self._views)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        while True:
            try:
                for tenant_id, authz_id in await asyncio.to_thread(self._pending):
                    if (tenant_id, authz_id) not in self._in_flight:
                        self._in_flight.add((tenant_id, authz_id))
                        self.jobs.send(ACTOR, tenant_id, authz_id)
            except ProjectionRebuilding:
                pass
            except Exception:
                log.exception("ACME validator pass failed")
            await asyncio.sleep(self.poll_interval)

    def _job(self, tenant_id: str, authz_id: str) -> None:
        """The dramatiq actor: run the validation on the loop and wait for it."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self.validate(tenant_id, authz_id), self._loop)
        future.result(timeout=JOB_TIMEOUT)

    async def validate(self, tenant_id: str, authz_id: str) -> None:
        try:
            state = await load(self.services, tenant_id, acme.authz_stream_id(authz_id), acme.fold_authz)
            if state.created is None or state.challenge_status != "processing":
                return
            created, challenge = state.created, state.challenge(state.started)
            # the account id is its key's thumbprint
            expected = jose.key_authorization(challenge.token, created.account_id)
            result = await self._check(created.identifier, challenge, expected)
            await commands.record_challenge(commands.RecordChallenge(tenant_id=tenant_id, authz_id=authz_id,
                                                                     result=result),
                                            CommandContext(principal=SYSTEM), self.services)
        finally:
            self._in_flight.discard((tenant_id, authz_id))

    async def _check(self, name: str, challenge: acme.Challenge,
                     expected: str) -> acme.ChallengeValidated | acme.ChallengeFailed:
        try:
            if challenge.challenge_type == acme.TLS_ALPN_01:
                address = await asyncio.to_thread(self.tls_alpn01.check, name, expected)
            else:
                address, body = await asyncio.to_thread(self.http01.fetch, name, challenge.token)
                if body.strip() != expected.encode("ascii"):
                    shown = body[:100].decode("ascii", "replace")
                    raise ValidationFailed("incorrectResponse", f"the response from {address} is {shown!r}, not "
                                           "the key authorization")
        except ValidationFailed as exc:
            return acme.ChallengeFailed(challenge_id=challenge.challenge_id, error_type=exc.error_type,
                                        detail=exc.detail[:500])
        return acme.ChallengeValidated(challenge_id=challenge.challenge_id, address=address)

    def close(self) -> None:
        if self._views is not None:
            self._views.close()
