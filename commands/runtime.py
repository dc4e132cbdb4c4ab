"""Running a command against one aggregate: idempotency, load, decide, append, retry on races."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import weakref
from collections.abc import Callable, Iterable
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import msgspec

from commands.authz import Principal
from commands.ids import uuid7
from commands.ports import AppendRequest, AppendResult, Directory, EventStore, KeyVault, NewEvent, PkiCrypto
from commands.ports import AccountKeys, AcmeAuthorizations, ArtifactStore, KeyHolders, RevocationCrypto, SessionIndex, TenantUsage, UntrustedChains
from commands.quotas import Ledger, QuotaLedger
from domain.chain import canonical_bytes
from domain.errors import Contention, DomainError, WrongExpectedVersion
from domain.events import Payload, decode_payload, to_payload_dict

log = logging.getLogger(__name__)
# A hot stream written by two processes (a burst of revocations under one CA, two workers): each process's
# writers take turns, and the two race for every append. With 8 attempts, 2 of 1,000 revocations at 256 in flight
# lost 8 in a row (409 contention); with 16, 2 in 7,000 over seven such bursts. Only a lost race costs a retry.
MAX_ATTEMPTS = 16
# How requests name the resource each kind of stream holds (as its not-found and already-exists problems do): the
# field of a 409 contention problem. Streams no request names (the audit ledger, the vault's) fall back to "id".
CONTENDED_FIELDS = {"certificate": "id", "ca": "ca_id", "tenant": "tenant_id", "profile": "name", "user": "username",
                    "service_account": "name", "webhook": "webhook_id", "api_token": "token_id", "login": "username",
                    "mfa": "username", "session": "refresh_token", "compromised_keys": "tenant_id",
                    "discovery": "scan_id"}


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class CommandContext:
    """Who is asking, and the request metadata that travels into every event."""

    principal: Principal
    correlation_id: str | None = None
    causation_id: str | None = None
    idempotency_key: str | None = None

    def without_key(self) -> CommandContext:
        """For the streams a request writes beside its main one: the Idempotency-Key guards that one append, and
        the steps around it are idempotent themselves."""
        return replace(self, idempotency_key=None)


class CommandResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a command returns: where the stream and the global log now stand."""

    stream_id: str
    version: int
    global_position: int | None
    changed: bool = True
    replayed: bool = False


class StreamCache:
    """Folded states of recently loaded streams, kept per process: a load folds only what was appended since.

    A stream's events never change once written (versions are contiguous from 1), so a state folded from its
    first v events stays true; every load still asks the store for the events after v, so nothing is ever stale.
    States are kept for resumable folds (``domain.events.resumable``: every aggregate's), each with the version
    it was folded to; any other function is given the whole stream, read again, every time.

    Why: an issuing CA's stream also holds every revocation and CRL of its certificates. Folding all of them for
    every issuance made one cost 3.7-6.1 ms instead of 1.5-1.8 after 1,000 revocations, and each revocation
    folded the whole stream three times. Nothing here depends on a stream's length: a state is kept however many
    events it was folded from (no stream is too long to keep). Kept states are read-only, as every fold's
    result already was.
    """

    def __init__(self, max_streams: int = 4096, max_folds: int = 8) -> None:
        self.max_streams = max_streams
        self.max_folds = max_folds  # per stream: the aggregates' folds are a handful
        self._streams: OrderedDict[tuple[str, str], dict[Callable, tuple[int, Any]]] = OrderedDict()

    async def folded(self, store: EventStore, tenant_id: str, stream_id: str,
                     fold: Callable[..., Any]) -> tuple[int, Any]:
        """The stream's version and ``fold`` of its events, folding only those appended since the kept state."""
        key, resumable = (tenant_id, stream_id), getattr(fold, "resumable", False)
        kept = self._streams.get(key) if resumable else None
        version, state = kept.get(fold, (0, None)) if kept else (0, None)
        recorded = await store.read_stream(tenant_id, stream_id, version + 1)
        if recorded and recorded[0].version != version + 1:  # not a continuation: start again
            version, state, recorded = 0, None, await store.read_stream(tenant_id, stream_id)
        if state is not None and not recorded:
            return version, state
        payloads = [decode_payload(envelope) for envelope in recorded]
        state = fold(payloads, start=state) if resumable else fold(payloads)
        version += len(payloads)
        if resumable and version:
            self._keep(key, fold, version, state)
        return version, state

    def _keep(self, key: tuple[str, str], fold: Callable, version: int, state: Any) -> None:
        folds = self._streams.get(key)
        if folds is None:
            folds = self._streams[key] = {}
            if len(self._streams) > self.max_streams:
                self._streams.popitem(last=False)
        self._streams.move_to_end(key)
        if fold in folds and folds[fold][0] >= version:  # a concurrent load kept a newer state meanwhile
            return
        if fold not in folds and len(folds) >= self.max_folds:
            folds.clear()
        folds[fold] = (version, state)


class StreamLocks:
    """One asyncio.Lock per stream being written by this process: commands on one stream take turns here
    instead of racing each other to the store, where all but one of them would lose each round.

    Thirty-two revocations in flight under one CA (each appends to the CA's stream) lost that race eight
    times in a row for 89 of 500 and failed with ``contention``; taking turns, all land. Writers in other
    processes still race, and lose at most to those. A lock lives only while a command holds or awaits it.
    """

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()

    def __call__(self, tenant_id: str, stream_id: str) -> asyncio.Lock:
        key = (tenant_id, stream_id)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock


@dataclass(slots=True)
class Services:
    """The adapters a handler may use; wired once in the composition root.

    ``public_url`` is where relying parties reach this service (CRL, OCSP and CA-issuer URLs
    written into certificates). ``artifacts`` keeps published CRLs, ``revocation`` signs them
    and speaks OCSP; ``crl_validity`` is a CRL's nextUpdate - thisUpdate.
    """

    store: EventStore
    clock: Clock
    crypto: PkiCrypto | None = None
    keys: KeyVault | None = None
    public_url: str = "http://127.0.0.1:8000"
    artifacts: ArtifactStore | None = None
    revocation: RevocationCrypto | None = None
    crl_validity: timedelta = timedelta(days=7)
    directory: Directory | None = None  # LDAP / AD sign-in, when configured
    allow_loopback_webhooks: bool = False  # webhook URLs to 127.0.0.1/localhost, http too (tests, development)
    # how webhook delivery's HTTP client writes a URL's host (domain.webhook.HostEncoder); None: IDNA 2003
    webhook_host_encoder: Callable[[str], str] | None = None
    streams: StreamCache = field(default_factory=StreamCache)  # folded states, resumed from where they were
    locks: StreamLocks = field(default_factory=StreamLocks)  # this process's writers of one stream take turns
    usage: TenantUsage | None = None  # counts what a tenant holds, for its quotas (commands/quotas.py)
    quota_ledger: Ledger = field(default_factory=QuotaLedger)  # reservations against quotas (commands/quotas.py)
    sessions: SessionIndex | None = None  # open refresh-token families, revoked when a user's sessions end
    account_keys: AccountKeys | None = None  # a service account's keys from before its stream recorded them
    key_holders: KeyHolders | None = None  # a compromised key's other certificates, revoked with it
    untrusted_chains: UntrustedChains | None = None  # what a compromise rollover left to issue again
    acme_authorizations: AcmeAuthorizations | None = None  # an ACME account's open authorizations
    acme_dns01: bool = False  # ACME authorizations offer dns-01 (resolvers are configured to validate it)
    # of an ACME order and its pending authorizations (RFC 8555 "expires"): CSM_ACME_AUTHORIZATION_LIFETIME_HOURS
    acme_authorization_lifetime: timedelta = timedelta(days=7)


def rfc3339(moment: datetime) -> str:
    """UTC, microseconds, ``Z``: fixed width, so these strings sort as their instants do (the read models compare
    them as strings). ``isoformat`` pads years below 1000 to four digits; glibc's ``strftime("%Y")`` does not."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def fingerprint(command: msgspec.Struct) -> str:
    """A digest that tells a retried request from a different one under the same key."""
    material = type(command).__name__.encode() + b"\x00" + canonical_bytes(command)
    return hashlib.sha256(material).hexdigest()


async def run(
    services: Services,
    ctx: CommandContext,
    command: msgspec.Struct,
    *,
    tenant_id: str,
    stream_id: str,
    stream_type: str,
    fold: Callable[[Iterable[Payload]], Any],
    decide: Callable[[Any], list[Payload]],
    presume_new: bool = False,
    locked: bool = False,
) -> CommandResult:
    """Load the stream, fold it, decide, and append with the version that was read; this process's commands on
    the stream take turns (``Services.locks``), and a race lost to another process is run again.

    ``presume_new``: the stream is all but certain not to exist yet (a certificate's, named by a fresh random
    serial), so the first attempt decides on the empty stream without reading it; the append at version 0
    is what checks, and if the stream does exist the next attempt reads it and decides again. No turn is
    taken for such a stream. ``locked``: the caller already holds the stream's turn.
    """
    turn = contextlib.nullcontext() if presume_new or locked else services.locks(tenant_id, stream_id)
    async with turn:
        store = services.store
        scope = f"{ctx.principal.id}|{tenant_id}"
        # tells a retry from a different request under the same Idempotency-Key; without a key nothing reads it
        print_ = fingerprint(command) if ctx.idempotency_key else ""
        for attempt in range(MAX_ATTEMPTS):
            # Checked on every attempt: a lost race may have been lost to a retry of this very request.
            if ctx.idempotency_key:
                prior = await store.idempotent_result(scope, ctx.idempotency_key, print_)
                if prior is not None:
                    return CommandResult(stream_id=prior.stream_id, version=prior.version,
                                         global_position=prior.global_position, replayed=True)
            if presume_new and attempt == 0:
                version, state = 0, fold([])
            else:
                version, state = await services.streams.folded(store, tenant_id, stream_id, fold)
            try:
                payloads = decide(state)
            except DomainError:
                # The first request under this key may have committed between the check above and the read:
                # "tenant exists" is then this request's own success, and the caller gets the first result.
                if ctx.idempotency_key and (prior := await replayed(services, ctx, command, tenant_id)):
                    return prior
                raise
            if not payloads:
                return CommandResult(stream_id=stream_id, version=version, global_position=None, changed=False)
            occurred_at = rfc3339(services.clock.now())
            actor = ctx.principal.actor()
            events = [
                NewEvent(event_id=uuid7(), type=p.event_type, schema_version=p.schema_version, occurred_at=occurred_at,
                         actor=actor, correlation_id=ctx.correlation_id, causation_id=ctx.causation_id,
                         payload=to_payload_dict(p))
                for p in payloads
            ]
            request = AppendRequest(tenant_id=tenant_id, stream_id=stream_id, stream_type=stream_type,
                                    expected_version=version, events=events,
                                    idempotency_scope=scope if ctx.idempotency_key else None,
                                    idempotency_key=ctx.idempotency_key, fingerprint=print_)
            try:
                result = await store.append(request)
            except WrongExpectedVersion:
                continue
            return CommandResult(stream_id=result.stream_id, version=result.version,
                                 global_position=result.global_position, replayed=result.replayed)
        raise Contention(stream_id, CONTENDED_FIELDS.get(stream_type, "id"))


async def load(services: Services, tenant_id: str, stream_id: str, fold: Callable[[Iterable[Payload]], Any]) -> Any:
    """An aggregate's current state, for handlers that read one aggregate to decide about another."""
    return (await services.streams.folded(services.store, tenant_id, stream_id, fold))[1]


async def first_append(services: Services, ctx: CommandContext, command: msgspec.Struct,
                       tenant_id: str) -> AppendResult | None:
    """What the first request under a retried request's Idempotency-Key appended (its events are those of its stream
    from ``first_position`` to ``global_position``), or None."""
    if not ctx.idempotency_key:
        return None
    return await services.store.idempotent_result(f"{ctx.principal.id}|{tenant_id}", ctx.idempotency_key,
                                                  fingerprint(command))


async def replayed(services: Services, ctx: CommandContext, command: msgspec.Struct,
                   tenant_id: str) -> CommandResult | None:
    """The first result of a retried request (same Idempotency-Key), checked before expensive work."""
    prior = await first_append(services, ctx, command, tenant_id)
    if prior is None:
        return None
    return CommandResult(stream_id=prior.stream_id, version=prior.version, global_position=prior.global_position,
                         replayed=True)
