"""Key-encryption keys: rotate a tenant's KEK, re-wrap data keys under the current KEK, list and retire KEKs.

Platform administrators only (``vault:kek``): the local master key and the hybrid recipient serve every
tenant, and retiring a KEK destroys key material. The work is recorded in the system tenant's
``vault-keks`` stream (domain/vault.py), as the vault sweep's is: which KEKs, which tenant, how many rows,
never a key. Each step is recorded before what it names takes effect: a rotation's new KEK is made (inert),
recorded, then put in service; a retirement is marked (nothing wraps under the KEK again), recorded, then
the key destroyed; a re-wrap is recorded when it starts and, with its counts, when it ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, cast

import msgspec

from commands import pki
from commands.authz import authorize
from commands.ports import KekAdmin
from commands.runtime import CommandContext, Services, load, run
from commands.tenants import allowed_while_suspended
from domain import tenant, vault
from domain.errors import DomainError, NotFound
from domain.events import SYSTEM_TENANT, Payload

Progress = Callable[[int, int], None] | None
Scope = Annotated[str, msgspec.Meta(min_length=1, max_length=63)]
REASON = "platform key-vault housekeeping in the system tenant: changes how data keys are wrapped, never the keys"


class RotateKek(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: Scope | None = None  # None: every tenant
    provider: str | None = None  # None: the configured CSM_KEK_PROVIDER
    rewrap: bool = True  # then re-wrap the scope's rows under the new KEK


class RewrapKeys(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: Scope | None = None  # None: every tenant
    to_provider: str | None = None  # None: the configured CSM_KEK_PROVIDER


class RetireKek(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kek_id: str


class KekRotation(msgspec.Struct, frozen=True, kw_only=True):
    rotated: list[vault.NewKek]
    rewrap: vault.RewrapCounts | None


class KekRetirement(msgspec.Struct, frozen=True, kw_only=True):
    provider: str
    kek_id: str


def _admin(services: Services) -> KekAdmin:
    keys = pki.vault_of(services)
    if not hasattr(keys, "create_keks"):
        raise DomainError("kek_rotation_unsupported", "this key vault keeps no KEK versions", field="provider")
    return cast(KekAdmin, keys)


def _provider(name: str | None, admin: KekAdmin) -> str:
    chosen = name or admin.kek_provider
    if chosen not in vault.PROVIDERS:
        raise DomainError("validation_failed", f"provider must be one of {', '.join(vault.PROVIDERS)}, not "
                          f"{chosen!r}", field="provider")
    return chosen


async def _known_tenant(services: Services, tenant_id: str | None) -> None:
    """The tenant a command names exists (the system tenant, whose vault keys are platform users' secrets, too)."""
    if tenant_id is None or tenant_id == SYSTEM_TENANT:
        return
    tenant.validate_tenant_id(tenant_id)
    if (await load(services, tenant_id, tenant.stream_id(tenant_id), tenant.fold)).status == "absent":
        raise NotFound("tenant_not_found", f"tenant {tenant_id} does not exist", field="tenant_id")


async def _record(services: Services, ctx: CommandContext, cmd: msgspec.Struct, payloads: list[Payload]) -> None:
    await run(services, ctx.without_key(), cmd, tenant_id=vault.TENANT, stream_id=vault.KEK_STREAM_ID,
              stream_type=vault.STREAM_TYPE, fold=lambda events: None, decide=lambda _state: payloads)


async def _rewrap(services: Services, ctx: CommandContext, cmd: msgspec.Struct, admin: KekAdmin, provider: str,
                  tenant_id: str | None, progress: Progress) -> vault.RewrapCounts:
    """Re-wrap the scope's rows that are not under their target KEK; recorded when it starts and ends (a run
    with nothing to do records nothing)."""
    targets, plan, rows = await admin.rewrap_plan(provider, tenant_id)
    if not rows:
        return plan
    await _record(services, ctx, cmd, [vault.RewrapStarted(provider=provider, tenant=tenant_id, rows=rows,
                                                            to_kek_ids=plan.to_kek_ids,
                                                            from_kek_ids=plan.from_kek_ids)])
    done = await admin.rewrap(provider, targets, rows, progress)
    await _record(services, ctx, cmd, [vault.RewrapCompleted(
        provider=provider, tenant=tenant_id, to_kek_ids=done.to_kek_ids, from_kek_ids=done.from_kek_ids,
        rewrapped=done.rewrapped, changed=done.changed, failed=len(done.failed), remaining=done.remaining,
        stopped=done.stopped)])
    return done


@allowed_while_suspended(REASON)
async def rotate_kek(cmd: RotateKek, ctx: CommandContext, services: Services,
                     progress: Progress = None) -> KekRotation:
    """A new KEK version for the tenant (None: every tenant) under the provider; new keys are wrapped under it
    from now on, and unless ``rewrap`` is off the scope's rows are re-wrapped under it. Old KEKs still unwrap."""
    authorize(ctx.principal, "vault:kek", None)
    admin = _admin(services)
    provider = _provider(cmd.provider, admin)
    await _known_tenant(services, cmd.tenant_id)
    created = await admin.create_keks(provider, cmd.tenant_id)
    if created:
        await _record(services, ctx, cmd, [vault.KekRotated(provider=new.provider, kek_id=new.kek_id,
                                                            tenant=new.tenant, replaces=new.replaces)
                                           for new in created])
        await admin.assign_keks(created)
    counts = await _rewrap(services, ctx, cmd, admin, provider, cmd.tenant_id, progress) if cmd.rewrap else None
    return KekRotation(rotated=created, rewrap=counts)


@allowed_while_suspended(REASON)
async def rewrap_keys(cmd: RewrapKeys, ctx: CommandContext, services: Services,
                      progress: Progress = None) -> vault.RewrapCounts:
    """Re-wrap the tenant's (None: every tenant's) data keys under the provider's current KEK for each tenant."""
    authorize(ctx.principal, "vault:kek", None)
    admin = _admin(services)
    provider = _provider(cmd.to_provider, admin)
    await _known_tenant(services, cmd.tenant_id)
    return await _rewrap(services, ctx, cmd, admin, provider, cmd.tenant_id, progress)


@allowed_while_suspended("platform key-vault housekeeping in the system tenant: destroys only a KEK no stored key "
                         "names")
async def retire_kek(cmd: RetireKek, ctx: CommandContext, services: Services) -> KekRetirement:
    """Destroy a KEK that wraps no new key and that no row names (refused otherwise: 409 ``kek_in_use`` or
    ``kek_referenced``)."""
    authorize(ctx.principal, "vault:kek", None)
    ref = vault.parse_kek_id(cmd.kek_id)
    admin = _admin(services)
    provider = await admin.mark_kek_retired(ref.kek_id)
    await _record(services, ctx, cmd, [vault.KekRetired(provider=provider, kek_id=ref.kek_id)])
    await admin.destroy_kek(ref.kek_id)
    return KekRetirement(provider=provider, kek_id=ref.kek_id)


@allowed_while_suspended("reads the key vault's KEK registry and row counts: changes nothing")
async def kek_status(ctx: CommandContext, services: Services) -> list[vault.KekUsage]:
    """Every KEK rows name, the registry assigns or retired: rows per tenant, whose new keys it wraps."""
    authorize(ctx.principal, "vault:kek", None)
    return await _admin(services).kek_usage()
