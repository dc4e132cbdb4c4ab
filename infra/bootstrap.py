"""The composition root: builds the store, projections, checkpointer and services from settings.

``initialise`` prepares a data directory (idempotent); ``Runtime`` owns the running parts
and their background tasks. The API and the CLI both start here, and only here.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from commands import renewal
from commands.identity import Identity
from commands.runtime import Services, SystemClock
from domain.verification import VerifyReport
from infra.account_keys import ReadModelAccountKeys
from infra.acme.authorizations import ReadModelAcmeAuthorizations
from infra.acme.nonces import NonceStore, open_nonces
from infra.acme.results import ValidationResults, open_results
from infra.acme.dns01 import parse_resolvers
from infra.acme.validator import AcmeValidator, ValidationJob
from infra.artifacts import SQLiteArtifactStore
from infra.audit.checkpointer import Checkpointer
from infra.audit.keys import AuditSigner
from infra.audit.verify import verify_store
from infra.config import KEK_PROVIDERS, Settings
from infra.credentials import SQLiteCredentialVault
from infra.crypto.engine import CryptographyPki
from infra.crypto.keypool import RsaKeyPool
from infra.crypto.revocation import CryptographyRevocation
from infra.crypto.token_keys import TokenKeys
from infra.distributed import close_store, open_store, projection_tasks
from infra.eventstore.linked import LinkedEventStore
from infra.eventstore.sqlite import SQLiteEventStore
from infra.identity import build_identity
from infra.jobs import Jobs
from infra.key_holders import ReadModelKeyHolders
from infra.keystore.kek import KekError
from infra.keystore.pkcs11 import kek_factories
from infra.untrusted_chains import ReadModelUntrustedChains
from infra.keystore.vault import SQLiteKeyVault
from infra.primary_link_client import LinkClient, LinkedQuotaLedger
from infra.renewal_scheduler import RenewalScheduler
from infra.revocation_scheduler import RevocationScheduler
from infra.sessions import ReadModelSessions
from infra.usage import ReadModelUsage
from infra.webhooks import Webhooks
from infra.webhooks import wire as wire_webhooks
from infra.webhooks.delivery import encode_host
from infra.webhooks.dispatcher import WebhookDispatcher
from infra.webhooks.log import DeliveryLog
from projections.registry import all_projectors
from projections.runner import ProjectionRunner

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    store: SQLiteEventStore
    runner: ProjectionRunner
    checkpointer: Checkpointer
    vault: SQLiteCredentialVault
    services: Services
    keys: SQLiteKeyVault | None = None
    tasks: list[asyncio.Task] = field(default_factory=list)
    identity: Identity | None = None  # users, sessions, token signing (infra/identity.py)
    jobs: Jobs | None = None  # the dramatiq broker and, once started, the in-process worker (infra/jobs.py)
    webhooks: Webhooks | None = None  # the delivery log and the delivery job (infra/webhooks)
    dispatcher: WebhookDispatcher | None = None  # once started: turns events into deliveries
    # "single": this process does everything; "worker": an HTTP worker of a multi-worker server, whose
    # appends, projections, checkpoints and schedules happen in the primary process (api/workers.py).
    role: str = "single"
    # ACME nonces, shared by every process of the server, and by every server when in Redis (infra/acme/nonces.py)
    nonces: NonceStore | None = None
    acme_validator: AcmeValidator | None = None  # http-01 validation jobs; None in an HTTP worker process

    async def start(self) -> None:
        """Start the background work; a worker first waits for its link to the primary."""
        if self.role == "worker":
            await self.store.link.start()
            self.runner.position = self.store.link.progress.projected if self.store.link.progress else 0
            self.runner.following = True  # its position moves with the primary's pushes: wait, never catch up here
            self.tasks = [asyncio.create_task(self._follow_primary(), name="projected")]
            if isinstance(self.services.crypto, CryptographyPki) and self.services.crypto.rsa_pool is not None:
                self.services.crypto.rsa_pool.arm()
            return
        self.start_background()

    async def _follow_primary(self) -> None:
        """A worker's read models are the primary's: take their position from its pushes, waking waiters."""
        pushed = asyncio.Event()
        self.store.progress_hooks.append(lambda progress: pushed.set())
        while True:
            await pushed.wait()
            pushed.clear()
            await self.runner.advance(self.store.link.progress.projected)

    def start_background(self) -> None:
        """Start the projection tail, the checkpoint timer and the CRL/OCSP scheduler on the running loop."""
        self.tasks = [*(asyncio.create_task(work, name=name)
                        for name, work in projection_tasks(self.settings, self.store, self.runner)),
                      asyncio.create_task(self.checkpointer.run(), name="checkpoints"),
                      asyncio.create_task(self.revocation_scheduler().run(), name="revocation"),
                      asyncio.create_task(self.renewal_scheduler().run(), name="renewal")]
        if isinstance(self.services.crypto, CryptographyPki) and self.services.crypto.rsa_pool is not None:
            self.services.crypto.rsa_pool.arm()
        if self.acme_validator is not None:
            self.tasks.append(asyncio.create_task(self.acme_validator.run(), name="acme-validator"))
        if self.jobs is not None and self.webhooks is not None:
            self.jobs.start()
            self.dispatcher = self.webhook_dispatcher()
            self.tasks.append(asyncio.create_task(self.dispatcher.run(), name="webhooks"))

    def webhook_dispatcher(self) -> WebhookDispatcher:
        return WebhookDispatcher(self.services, self.runner, self.webhooks.deliveries, self.jobs,
                                 source=self.settings.base_url, poll_interval=self.settings.poll_interval)

    def revocation_scheduler(self) -> RevocationScheduler:
        return RevocationScheduler(self.services, self.runner, self.settings.revocation_interval)

    def renewal_scheduler(self) -> RenewalScheduler:
        """Renewals and expiry warnings (commands/renewal.py), every ``renewal_interval`` seconds."""
        schedule = renewal.Schedule(warning_days=self.settings.expiry_warning_days,
                                    retry_window=timedelta(hours=self.settings.renewal_retry_hours))
        return RenewalScheduler(self.services, self.runner, self.settings.renewal_interval, schedule)

    async def stop(self) -> None:
        if self.role == "worker":
            await self.store.link.stop()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.tasks = []
        if isinstance(self.services.crypto, CryptographyPki) and self.services.crypto.rsa_pool is not None:
            await asyncio.to_thread(self.services.crypto.rsa_pool.stop)  # at most one key generation to wait for
        if self.dispatcher is not None:
            try:
                await asyncio.to_thread(self.dispatcher.save)  # its checkpoint past events that notified nobody
            except Exception:
                log.exception("saving the webhook dispatcher's checkpoint failed")
        if self.jobs is not None:
            await asyncio.to_thread(self.jobs.stop)  # lets deliveries in progress finish, before the stores close
        if self.role != "worker":  # a worker writes nothing: the primary seals at its own stop
            try:
                await asyncio.to_thread(self.checkpointer.seal_all)
            except Exception:
                log.exception("final checkpoint failed")
        self.close()

    def close(self) -> None:
        if self.jobs is not None:
            self.jobs.close()
        if self.acme_validator is not None:
            self.acme_validator.close()
            self.acme_validator.results.close()
        if self.nonces is not None:
            self.nonces.close()
        if self.webhooks is not None:
            self.webhooks.close()
        if isinstance(self.services.usage, ReadModelUsage):
            self.services.usage.close()
        self.runner.close()
        close_store(self.store)
        if self.keys is not None:
            self.keys.close()
        if isinstance(self.services.crypto, CryptographyPki):
            self.services.crypto.close()  # logs out of the token of CA keys, if it logged in
        if isinstance(self.services.artifacts, SQLiteArtifactStore):
            self.services.artifacts.close()
        if self.settings.ldap is not None and self.services.directory is not None:
            self.services.directory.close()  # the LdapDirectory open_runtime built

    def verify(self, progress=None) -> VerifyReport:
        return verify_store(self.settings, self.store, progress)


def open_key_vault(settings: Settings, *, require_default: bool = True) -> SQLiteKeyVault:
    """keys.db with CSM_KEK_PROVIDER wrapping new keys; a PKCS#11 token opens at once when it is the default, and a
    default that cannot be opened refuses the start (unless ``require_default`` is off: ``csm keys status``)."""
    if settings.kek_provider not in KEK_PROVIDERS:
        raise KekError(f"CSM_KEK_PROVIDER must be one of {', '.join(KEK_PROVIDERS)}, not {settings.kek_provider!r}")
    return SQLiteKeyVault(settings.data_dir, kek_provider=settings.kek_provider, factories=kek_factories(settings),
                          require_default=require_default)


def open_runtime(settings: Settings, link: LinkClient | None = None, *, rebuild: str = "now",
                 require_kek: bool = True) -> Runtime:
    """Open an initialised data directory (run ``initialise`` first).

    With ``link``, the runtime of an HTTP worker process (api/workers.py): the store appends through
    the primary process, which alone runs the projections, checkpoints, schedules and jobs.
    ``rebuild``: what to do with a read model whose projector's version changed (ProjectionRunner.open): "now"
    for a CLI command, "background" for the process that runs the projections; a worker only observes.
    ``require_kek=False`` opens the key vault even where its default KEK provider cannot be (``csm keys status``).
    """
    if link is not None:
        store = LinkedEventStore(settings.events_db, link, poll_interval=settings.poll_interval,
                                 witness_path=settings.witness_file)
    else:
        store = open_store(settings)  # SQLite or Cassandra (infra/distributed.py)
    clock = SystemClock()
    signer = AuditSigner.create_or_load(settings.keys_dir)
    checkpointer = Checkpointer(store, signer, clock, interval=settings.checkpoint_interval)
    runner = ProjectionRunner(store, settings.views_db, all_projectors(), poll_interval=settings.poll_interval).open(
        rebuild="observe" if link is not None else rebuild)
    vault = SQLiteCredentialVault(settings.events_db)
    keys = open_key_vault(settings, require_default=require_kek)
    # Ready RSA keys for server-side issuance; kept ready only by a server (start_background) and per size asked for.
    rsa_pool = RsaKeyPool(sizes=(3072, 4096), target=settings.rsa_key_pool)
    services = Services(store=store, clock=clock, crypto=CryptographyPki(rsa_pool, TokenKeys(settings.pkcs11)),
                        keys=keys, public_url=settings.base_url,
                        artifacts=SQLiteArtifactStore(settings.data_dir), revocation=CryptographyRevocation(),
                        crl_validity=timedelta(hours=settings.crl_validity_hours))
    if settings.ldap is not None:
        # Built here so a bad URL, CA file or password file stops startup instead of the first sign-in.
        from infra.ldap import LdapDirectory  # ldap3 (0.1 s to import) only where a directory is configured

        services.directory = LdapDirectory(settings.ldap)
    services.allow_loopback_webhooks = settings.webhook_allow_loopback_http
    services.webhook_host_encoder = encode_host  # URLs are saved only if the delivery can send to them
    services.usage = ReadModelUsage(store, runner, timeout=settings.read_your_writes_timeout)
    services.sessions = ReadModelSessions(store, runner, timeout=settings.read_your_writes_timeout)
    services.account_keys = ReadModelAccountKeys(runner)
    services.key_holders = ReadModelKeyHolders(store, runner, timeout=settings.read_your_writes_timeout)
    services.untrusted_chains = ReadModelUntrustedChains(store, runner, timeout=settings.read_your_writes_timeout)
    services.acme_authorizations = ReadModelAcmeAuthorizations(store, runner,
                                                               timeout=settings.read_your_writes_timeout)
    # dns-01 (and so wildcard names) is offered only with resolvers to validate it; a bad entry stops startup
    services.acme_dns01 = bool(parse_resolvers(settings.acme_dns_resolvers))
    services.acme_authorization_lifetime = timedelta(hours=settings.acme_authorization_lifetime_hours)
    if link is not None:
        services.quota_ledger = LinkedQuotaLedger(link)  # reservations are held in the primary, with every worker's
        return Runtime(settings, store, runner, checkpointer, vault, services, keys,
                       identity=build_identity(settings, vault), role="worker",
                       webhooks=Webhooks(DeliveryLog(settings.webhooks_db), None),
                       nonces=open_nonces(settings.acme_nonces_db, settings.redis_url))
    jobs = Jobs.from_settings(settings)
    results = open_results(settings.acme_results_db, settings.jobs, settings.redis_url)
    ValidationJob.from_settings(settings, jobs, results)
    validator = AcmeValidator(services, runner, jobs, results, poll_interval=settings.poll_interval)
    return Runtime(settings, store, runner, checkpointer, vault, services, keys,
                   identity=build_identity(settings, vault), jobs=jobs, webhooks=wire_webhooks(settings, jobs, keys),
                   nonces=open_nonces(settings.acme_nonces_db, settings.redis_url), acme_validator=validator)


@dataclass
class JobWorker:
    """What `csm worker` runs: every job the service declares, on the configured (Redis) broker."""

    jobs: Jobs
    keys: SQLiteKeyVault
    webhooks: Webhooks
    acme_results: ValidationResults

    def close(self) -> None:
        self.jobs.close()
        self.webhooks.close()
        self.keys.close()
        self.acme_results.close()


def open_job_worker(settings: Settings) -> JobWorker:
    """The broker and its actors without the API: jobs read the data directory's views, keys and delivery log, and
    ACME validations write their results for the server to record."""
    if settings.jobs != "redis":
        raise ValueError("a separate job worker consumes the Redis broker: set CSM_JOBS=redis and CSM_REDIS_URL "
                         "(with the in-process default, the API process runs its own worker)")
    jobs = Jobs.from_settings(settings)
    keys = open_key_vault(settings)
    results = open_results(settings.acme_results_db, settings.jobs, settings.redis_url)
    ValidationJob.from_settings(settings, jobs, results)
    return JobWorker(jobs, keys, wire_webhooks(settings, jobs, keys), results)


def freeze_startup_heap() -> None:
    """Take what starting a server process allocated (the modules, the app; the primary's runtime too) out of
    the garbage collector's sight (``gc.freeze``). Its full passes then walk what requests allocate, not the
    whole heap each time: at 32 connections issuing, p99 latency 51-52 ms against 66-75 ms (alternated,
    2026-12-06, frozen after the runtime had started), and a little less CPU per request. Called by the
    server entry points only (not by the app, which the tests start many times in one process)."""
    gc.collect()
    gc.freeze()


def initialise(settings: Settings, *, rebuild: str = "now") -> Runtime:
    """Create the data directory, audit keys, ledger and read models if missing; return them open."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    runtime = open_runtime(settings, rebuild=rebuild)
    runtime.checkpointer.register_keys()
    return runtime
