"""A tenant's compromised keys at command time: recorded by key_compromise revocations, refused by what certifies.

The tenant's ``compromised-keys`` stream is read through the stream cache (``commands.runtime.load``): a check
costs one read of the events appended since this process last folded it, usually none. Only the commands that
certify a key from outside the service check it (a CSR, a kept key at renewal, an imported root, an installed
intermediate certificate); a key made here is new.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from commands.authz import authorize
from commands.runtime import CommandContext, CommandResult, Services, load, run
from commands.tenants import TenantId, allowed_while_suspended
from domain import compromised_keys
from domain.compromised_keys import CompromisedKeys, KeyCompromiseRecorded


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


class CompromisedKeyList(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    items: list[CompromisedKey]  # in the order they were recorded
    version: int  # of the tenant's compromised-keys stream


async def load_keys(services: Services, tenant_id: str) -> CompromisedKeys:
    return await load(services, tenant_id, compromised_keys.stream_id(), compromised_keys.fold)


async def refuse_if_compromised(services: Services, tenant_id: str, public_key_sha256: str, field: str) -> None:
    """422 ``key_compromised`` (naming ``field``) for a key reported compromised in this tenant."""
    compromised_keys.check_not_compromised(await load_keys(services, tenant_id), public_key_sha256, field)


async def record(services: Services, ctx: CommandContext, command: msgspec.Struct, tenant_id: str,
                 reports: list[KeyCompromiseRecorded]) -> CommandResult:
    """Append the reports of keys the tenant has not recorded yet (idempotent: a retry, or the same key reported
    again through another certificate, appends nothing). ``ctx`` carries no Idempotency-Key: the revocation's own
    first append holds it."""
    return await run(services, ctx, command, tenant_id=tenant_id, stream_id=compromised_keys.stream_id(),
                     stream_type=compromised_keys.STREAM_TYPE, fold=compromised_keys.fold,
                     decide=lambda state: compromised_keys.decide_record(state, reports))


@allowed_while_suspended("a read: a suspended tenant's operators still see which keys are blocked")
async def list_compromised_keys(cmd: ListCompromisedKeys, ctx: CommandContext,
                                services: Services) -> CompromisedKeyList:
    """The tenant's compromised keys, from its stream (the authority, not a read model)."""
    authorize(ctx.principal, "cert:read", cmd.tenant_id)
    state = await load_keys(services, cmd.tenant_id)
    items = [CompromisedKey(**msgspec.structs.asdict(report)) for report in state.keys.values()]
    return CompromisedKeyList(tenant_id=cmd.tenant_id, items=items, version=state.version)
