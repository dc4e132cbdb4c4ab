"""A tenant's compromised keys at command time: recorded by key_compromise revocations, refused by what certifies.

The tenant's ``compromised-keys`` stream is read through the stream cache (``commands.runtime.load``): a check
costs one read of the events appended since this process last folded it, usually none. Only the commands that
certify a key from outside the service check it (a CSR, a kept key at renewal, an imported root, an installed
intermediate certificate); a key made here is new. A hybrid certificate's two keys are both reported and both
checked (``halves``, ``refuse_certificate_keys``). A block reported in error is lifted by ``lift_key_compromise``.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated

import msgspec

from commands import pki
from commands.authz import authorize
from commands.runtime import CommandContext, CommandResult, Services, first_append, load, run
from commands.tenants import TenantId, allowed_while_suspended, refused_while_suspended
from domain import compromised_keys
from domain.compromised_keys import CompromisedKeys, KeyCompromiseRecorded

KeyHash = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of a SubjectPublicKeyInfo, hex")]
LiftReason = Annotated[str, msgspec.Meta(min_length=3, max_length=500)]


class ListCompromisedKeys(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: TenantId


class CompromisedKey(msgspec.Struct, frozen=True, kw_only=True):
    """One compromised key as first reported: the revocation that reported it, and when."""

    public_key_sha256: str
    reason: str
    reported_at: datetime
    invalidity_date: datetime | None
    certificate_id: str | None  # reported by revoking this certificate (issued by ``ca_id``)
    ca_id: str | None
    subject_ca_id: str | None  # or by revoking this CA
    # "revocation" (of that certificate or CA), "report" (POST /v1/tenants/{id}/compromised-keys), or "rollover" (a
    # compromise rollover of the root ``subject_ca_id``: POST /v1/cas/{id}/rollover with compromised true)
    through: str
    alternative_of: str | None = None  # a hybrid's ML-DSA half: the classical key reported with it
    sources: int = 1  # how many certificates or CAs reported it since its block began (this one listed first)


class LiftedKey(msgspec.Struct, frozen=True, kw_only=True):
    """A block lifted as reported in error (who lifted it is the event's actor in the audit log)."""

    public_key_sha256: str
    reason: str
    lifted_at: datetime
    reported_at: datetime


class CompromisedKeyList(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    items: list[CompromisedKey]  # in the order they were recorded
    version: int  # of the tenant's compromised-keys stream
    lifted: list[LiftedKey] = []  # blocks lifted and not reported again since


class LiftKeyCompromise(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: TenantId
    public_key_sha256: KeyHash
    reason: LiftReason  # why the report was in error
    every_report: bool = False  # a key reported from several sources: each of them was in error


class KeyCompromiseLifted(msgspec.Struct, frozen=True, kw_only=True):
    result: CommandResult
    public_keys_sha256: tuple[str, ...]  # the key, and its hybrid partner if it was reported with one

    @property
    def replayed(self) -> bool:
        return self.result.replayed


async def load_keys(services: Services, tenant_id: str) -> CompromisedKeys:
    return await load(services, tenant_id, compromised_keys.stream_id(), compromised_keys.fold)


async def refuse_if_compromised(services: Services, tenant_id: str, public_key_sha256: str, field: str) -> None:
    """422 ``key_compromised`` (naming ``field``) for a key reported compromised in this tenant."""
    compromised_keys.check_not_compromised(await load_keys(services, tenant_id), public_key_sha256, field)


def halves(services: Services, certificate_pem: str, report: KeyCompromiseRecorded) -> list[KeyCompromiseRecorded]:
    """``report`` (of the certificate's subject key), and for a hybrid certificate the same report of its ML-DSA key
    (subjectAltPublicKeyInfo): a thief holding either half can have it certified alone (a pure ML-DSA CSR)."""
    alternative = alternative_key_sha256(services, certificate_pem)
    if alternative is None or alternative == report.public_key_sha256:
        return [report]
    return [report, msgspec.structs.replace(report, public_key_sha256=alternative,
                                            alternative_of=report.public_key_sha256)]


def alternative_key_sha256(services: Services, certificate_pem: str) -> str | None:
    """The hex SHA-256 of a hybrid certificate's ML-DSA SubjectPublicKeyInfo (extension 2.5.29.72); None if none."""
    _facts, keys = pki.crypto_of(services).certificate_public_keys(pki.der_of_pem(certificate_pem))
    return hashlib.sha256(keys.alternative).hexdigest() if keys.alternative is not None else None


async def refuse_certificate_keys(services: Services, tenant_id: str, public_key_sha256: str, certificate_pem: str,
                                  field: str) -> None:
    """``refuse_if_compromised`` for the certificate's key, and for a hybrid's ML-DSA half as well."""
    state = await load_keys(services, tenant_id)
    compromised_keys.check_not_compromised(state, public_key_sha256, field)
    if (alternative := alternative_key_sha256(services, certificate_pem)) is not None:
        compromised_keys.check_not_compromised(state, alternative, field)


async def record(services: Services, ctx: CommandContext, command: msgspec.Struct, tenant_id: str,
                 reports: list[KeyCompromiseRecorded], *, report: bool = False) -> CommandResult:
    """Append the reports of keys the tenant has not recorded yet (idempotent: a retry, or the same key reported
    again through another certificate, appends nothing). ``ctx`` carries no Idempotency-Key: the revocation's own
    first append holds it. ``report``: a report's own append (POST /v1/tenants/{id}/compromised-keys, ``ctx`` with
    its Idempotency-Key), which records ``key.compromise_report_repeated`` if it blocks nothing new, so that every
    report's retry finds its first call's append; ``changed`` is still false then."""
    blocked = [False]  # the landed decision's: it recorded a key

    def decide(state: CompromisedKeys):
        events = (compromised_keys.decide_report if report else compromised_keys.decide_record)(state, reports)
        blocked[0] = any(isinstance(event, KeyCompromiseRecorded) for event in events)
        return events
    result = await run(services, ctx, command, tenant_id=tenant_id, stream_id=compromised_keys.stream_id(),
                       stream_type=compromised_keys.STREAM_TYPE, fold=compromised_keys.fold, decide=decide)
    return result if blocked[0] or result.replayed else msgspec.structs.replace(result, changed=False)


@allowed_while_suspended("a read: a suspended tenant's operators still see which keys are blocked")
async def list_compromised_keys(cmd: ListCompromisedKeys, ctx: CommandContext,
                                services: Services) -> CompromisedKeyList:
    """The tenant's compromised keys, from its stream (the authority, not a read model)."""
    authorize(ctx.principal, "cert:read", cmd.tenant_id)
    state = await load_keys(services, cmd.tenant_id)
    items = [CompromisedKey(**msgspec.structs.asdict(report), sources=len(state.sources.get(key, ())) or 1)
             for key, report in state.keys.items()]
    lifted = [LiftedKey(**msgspec.structs.asdict(lift)) for lift in state.lifted.values()]
    return CompromisedKeyList(tenant_id=cmd.tenant_id, items=items, version=state.version, lifted=lifted)


@refused_while_suspended("lets a key be certified again")
async def lift_key_compromise(cmd: LiftKeyCompromise, ctx: CommandContext, services: Services) -> KeyCompromiseLifted:
    """Lift a block reported in error (``key:unblock``, tenant admins; a reason always): the key, and its hybrid
    partner, may be certified in the tenant again. Nothing is un-revoked: certificates revoked with the report stay
    revoked, and their CRL entries keep saying keyCompromise. A key a compromise rollover rolled away from stays."""
    authorize(ctx.principal, "key:unblock", cmd.tenant_id)
    now = services.clock.now()
    lifted: list[str] = []  # what the decision that landed lifted

    def decide(state: CompromisedKeys):
        events = compromised_keys.decide_lift(state, cmd.public_key_sha256, reason=cmd.reason, now=now,
                                              every_report=cmd.every_report)
        lifted[:] = [event.public_key_sha256 for event in events]
        return events
    result = await run(services, ctx, cmd, tenant_id=cmd.tenant_id, stream_id=compromised_keys.stream_id(),
                       stream_type=compromised_keys.STREAM_TYPE, fold=compromised_keys.fold, decide=decide)
    if result.replayed:  # a retry (same Idempotency-Key): what the first call lifted, as it answered
        lifted[:] = await _lifted_by_first_call(services, ctx, cmd)
    return KeyCompromiseLifted(result=result, public_keys_sha256=tuple(lifted))


async def _lifted_by_first_call(services: Services, ctx: CommandContext, cmd: LiftKeyCompromise) -> list[str]:
    """The keys the first request under this retry's Idempotency-Key lifted: its append's events, read back."""
    first = await first_append(services, ctx, cmd, cmd.tenant_id)
    if first is None:
        return []
    count = first.global_position - first.first_position + 1  # one append's events are contiguous in the log
    events = await services.store.read_stream(cmd.tenant_id, compromised_keys.stream_id(),
                                              from_version=max(1, first.version - count + 1))
    return [event.payload["public_key_sha256"] for event in events if event.type == "key.compromise_lifted"
            and event.global_position is not None and first.first_position <= event.global_position
            <= first.global_position]
