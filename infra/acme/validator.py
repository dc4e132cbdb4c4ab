"""The ACME validator: challenges a client started (http-01, tls-alpn-01, dns-01) are validated by a background job,
in this process or in a `csm worker`, also after a crash.

A started challenge is a row of the ACME read model until its result is recorded. The validator (in the process
that owns the event store: the single process, or a multi-worker server's primary) polls those rows and sends each
to the ``acme-validate`` job (queue ``acme``) with everything the check needs: the name or IP address (RFC 8738) and
which it is, the challenge and the key authorization (the account's current key). The job (a dramatiq worker thread here, or a `csm worker` process on
the Redis broker) connects through the SSRF guard and puts its result into the results store (infra/acme/results.py:
the data directory's file, or a Redis stream with Redis jobs); the validator appends ``acme.challenge_validated`` or
``acme.challenge_failed`` from it.
A crash leaves the read model's row in place and the next process sends it again; a result already recorded makes
a repeated one a no-op (``domain.acme_authz.decide_challenge_result``).

A job not answered (no worker consumes the queue, its worker died, its message was lost) is sent again after
five minutes, then after twice as long each time, at most an hour apart; once the authorization has expired it is
sent no more: ``acme.authorization_expired`` ends it, and a result that comes later records nothing. Both are read
from the services' clock.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import datetime, timedelta

from commands import acme as commands
from commands.authz import SYSTEM
from commands.runtime import CommandContext, Services, load
from domain import acme_account, acme_authz, acme_challenges, jose
from domain.acme_authz import ChallengeFailed, ChallengeValidated
from domain.acme_networks import parse_networks
from domain.errors import DomainError
from infra import telemetry
from infra.acme.dns01 import Dns01, parse_resolvers
from infra.acme.http01 import Http01, ValidationFailed
from infra.acme.results import Result, ValidationResults
from infra.acme.tlsalpn import TlsAlpn01
from infra.config import Settings
from infra.jobs import Jobs
from projections import acme as read_model
from projections.runner import ProjectionRunner
from projections.views_db import ProjectionRebuilding

log = logging.getLogger(__name__)
ACTOR = "acme-validate"
QUEUE = "acme"
PAGE = 1000  # pending challenges read at a time
RESEND_FIRST = timedelta(minutes=5)  # a job sent and not answered is sent again after this, then twice as long ...
RESEND_MAX = timedelta(hours=1)  # ... up to this between two sends, until the authorization expires


def resend_delay(sends: int) -> timedelta:
    """How long after its ``sends``-th send (1, 2, ...) an unanswered validation is sent again."""
    return min(RESEND_FIRST * 2 ** min(sends - 1, 16), RESEND_MAX)


def http01_of(settings: Settings) -> Http01:
    return Http01(port=settings.acme_http01_port, networks=parse_networks(settings.acme_validation_networks),
                  hosts_file=settings.acme_hosts_file, timeout=settings.acme_validation_timeout)


def tls_alpn01_of(settings: Settings) -> TlsAlpn01:
    return TlsAlpn01(port=settings.acme_tls_alpn_port, networks=parse_networks(settings.acme_validation_networks),
                     hosts_file=settings.acme_hosts_file, timeout=settings.acme_validation_timeout)


def dns01_of(settings: Settings) -> Dns01:
    return Dns01(resolvers=parse_resolvers(settings.acme_dns_resolvers), timeout=settings.acme_validation_timeout)


class ValidationJob:
    """The ``acme-validate`` actor: one check through the SSRF guard, its result put into the results store.

    Declared on every broker that may run it (the server's, `csm worker`'s); it reads no event store, so it runs in
    any process that reaches the results (the data directory's file; with Redis jobs, the Redis, from any data
    directory). The connection settings (CSM_ACME_*) are that process's."""

    def __init__(self, jobs: Jobs, results: ValidationResults, http01: Http01, tls_alpn01: TlsAlpn01,
                 dns01: Dns01) -> None:
        self.results, self.http01, self.tls_alpn01, self.dns01 = results, http01, tls_alpn01, dns01
        jobs.actor(self.run, name=ACTOR, queue=QUEUE, max_retries=0)

    @classmethod
    def from_settings(cls, settings: Settings, jobs: Jobs, results: ValidationResults) -> ValidationJob:
        return cls(jobs, results, http01_of(settings), tls_alpn01_of(settings), dns01_of(settings))

    def run(self, tenant_id: str, authz_id: str, name: str, challenge: dict, expected: str,
            identifier_type: str = "dns") -> None:
        chosen = acme_authz.Challenge(**challenge)
        try:
            result = self.check(name, chosen, expected, ip=identifier_type == "ip")
        except Exception:  # a bug, not the client's answer: the challenge fails rather than waiting for ever
            log.exception("ACME validation failed unexpectedly")
            result = ChallengeFailed(challenge_id=chosen.challenge_id, error_type="serverInternal",
                                     detail="the validation failed inside the server")
        self.results.put(tenant_id, authz_id, result)

    def check(self, name: str, challenge: acme_authz.Challenge, expected: str, *, ip: bool = False) -> Result:
        """``ip``: ``name`` is an IP identifier's address (RFC 8738), which no dns-01 challenge proves."""
        try:
            if challenge.challenge_type == acme_challenges.TLS_ALPN_01:
                address = self.tls_alpn01.check(name, expected, ip=ip)
            elif challenge.challenge_type == acme_challenges.DNS_01:
                if ip:
                    raise ValidationFailed("rejectedIdentifier", f"{name}: dns-01 does not prove an IP address "
                                           "(RFC 8738 7)")
                address = self.dns01.check(name, expected)
            else:
                address, body = self.http01.fetch(name, challenge.token, ip=ip)
                if body.strip() != expected.encode("ascii"):
                    shown = body[:100].decode("ascii", "replace")
                    raise ValidationFailed("incorrectResponse", f"the response from {address} is {shown!r}, not "
                                           "the key authorization")
        except ValidationFailed as exc:
            return ChallengeFailed(challenge_id=challenge.challenge_id, error_type=exc.error_type,
                                   detail=exc.detail[:500])
        return ChallengeValidated(challenge_id=challenge.challenge_id, address=address)


class AcmeValidator:
    """Sends started challenges to the job and records the results it finds (the store's process only)."""

    def __init__(self, services: Services, runner: ProjectionRunner, jobs: Jobs, results: ValidationResults, *,
                 poll_interval: float = 0.5) -> None:
        self.services, self.runner, self.jobs, self.results = services, runner, jobs, results
        self.poll_interval = poll_interval
        # (tenant, authz) -> (sends, when last sent, when its authorization expires)
        self._sent: dict[tuple[str, str], tuple[int, datetime, datetime]] = {}
        self._views: sqlite3.Connection | None = None

    def _pending(self) -> list[tuple[str, str]]:
        """Every challenge awaiting validation, oldest first, read page by page: none waits behind a full page of
        older ones whose resends are not due (they were: only the oldest 100 were ever looked at)."""
        if self._views is None:
            self._views = self.runner.connection()
        out: list[tuple[str, str]] = []
        after = -1
        while True:
            page = read_model.pending_challenges(self._views, after=after, limit=PAGE)
            out += [(tenant_id, authz_id) for _, tenant_id, authz_id in page]
            if len(page) < PAGE:
                return out
            after = page[-1][0]

    async def run(self) -> None:
        while True:
            try:
                await self.record_results()
                await self.send_pending()
            except ProjectionRebuilding:
                pass
            except Exception:
                log.exception("ACME validator pass failed")
            await asyncio.sleep(self.poll_interval)

    async def send_pending(self) -> None:
        now, pending = self.services.clock.now(), [tuple(row) for row in await asyncio.to_thread(self._pending)]
        # what left the read model (a result, a deactivation, an expiry) needs no schedule any more
        listed = set(pending)
        self._sent = {key: sent for key, sent in self._sent.items() if key in listed}
        for tenant_id, authz_id in pending:
            sends, last, expires = self._sent.get((tenant_id, authz_id), (0, None, None))
            if last is not None and now - last < resend_delay(sends) and now < expires:
                continue  # not due again; one past its expiry ends now, not at its next resend
            state = await load(self.services, tenant_id, acme_authz.authz_stream_id(authz_id), acme_authz.fold_authz)
            if state.created is None or state.challenge_status != "processing" or state.deactivated:
                continue  # recorded already: the read model has not caught up
            if datetime.fromisoformat(state.created.expires) <= now:
                await self._expire(tenant_id, authz_id)
                continue
            account = await load(self.services, tenant_id, acme_account.account_stream_id(state.created.account_id),
                                 acme_account.fold_account)
            challenge = state.challenge(state.started)
            # the key authorization of the account's current key (RFC 8555 8.1), also after a key change
            expected = jose.key_authorization(challenge.token, account.key_thumbprint)
            self._sent[(tenant_id, authz_id)] = (sends + 1, now, datetime.fromisoformat(state.created.expires))
            self.jobs.send(ACTOR, tenant_id, authz_id, state.created.identifier,
                           {"challenge_id": challenge.challenge_id, "challenge_type": challenge.challenge_type,
                            "token": challenge.token}, expected, state.created.identifier_type)

    async def _expire(self, tenant_id: str, authz_id: str) -> None:
        """The authorization expired before any result: it ends, and is sent no more."""
        if await commands.expire_authorization(commands.ExpireAuthorization(tenant_id=tenant_id, authz_id=authz_id),
                                               CommandContext(principal=SYSTEM), self.services):
            telemetry.ACME_VALIDATIONS.labels("expired").inc()
            log.warning("ACME authorization %s (tenant %s) expired before its validation came back: is a worker "
                        "consuming the %r queue?", authz_id, tenant_id, QUEUE)
        self._sent.pop((tenant_id, authz_id), None)

    async def record_results(self) -> None:
        for seq, tenant_id, authz_id, result in await asyncio.to_thread(self.results.take):
            try:
                recorded = await commands.record_challenge(commands.RecordChallenge(
                    tenant_id=tenant_id, authz_id=authz_id, result=result), CommandContext(principal=SYSTEM),
                    self.services)
                for payload in recorded:
                    telemetry.ACME_VALIDATIONS.labels({ChallengeValidated: "valid", ChallengeFailed:
                                                       "invalid"}.get(type(payload), "expired")).inc()
            except DomainError:  # e.g. the tenant's stream refuses it: the result can never be recorded
                log.exception("an ACME validation result was not recorded")
            self._sent.pop((tenant_id, authz_id), None)
            await asyncio.to_thread(self.results.done, seq)

    def close(self) -> None:
        if self._views is not None:
            self._views.close()
