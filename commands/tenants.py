"""Tenant commands and their handlers."""

from __future__ import annotations

from typing import Annotated

import msgspec

from commands.authz import authorize
from commands.runtime import CommandContext, CommandResult, Services, load, run
from domain import tenant
from domain.errors import DomainError, NotFound
from domain.policy import TenantPolicy
from domain.tenant import Quotas

TenantId = Annotated[str, msgspec.Meta(min_length=3, max_length=63, pattern=r"^[a-z][a-z0-9-]*[a-z0-9](?!\n)$",
                                       description="lower-case letters, digits and '-'")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class CreateTenant(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: TenantId
    name: Name
    quotas: Quotas = Quotas()


class RenameTenant(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: TenantId
    name: Name


class SetTenantQuotas(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: TenantId
    quotas: Quotas


class SetTenantPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: TenantId
    policy: TenantPolicy


class SuspendTenant(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: TenantId
    reason: Reason


class ResumeTenant(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: TenantId
    reason: Reason


async def _run(services: Services, ctx: CommandContext, cmd, decide) -> CommandResult:
    return await run(services, ctx, cmd, tenant_id=cmd.tenant_id, stream_id=tenant.stream_id(cmd.tenant_id),
                     stream_type=tenant.STREAM_TYPE, fold=tenant.fold, decide=decide)


async def create_tenant(cmd: CreateTenant, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "tenant:create")
    tenant.validate_tenant_id(cmd.tenant_id)
    return await _run(services, ctx, cmd, lambda s: tenant.decide_create(s, cmd.tenant_id, cmd.name, cmd.quotas))


async def rename_tenant(cmd: RenameTenant, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "tenant:update", cmd.tenant_id)
    return await _run(services, ctx, cmd, lambda s: tenant.decide_rename(s, cmd.tenant_id, cmd.name))


async def set_tenant_quotas(cmd: SetTenantQuotas, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "tenant:create")  # quotas bound what a tenant may consume: platform decision
    return await _run(services, ctx, cmd, lambda s: tenant.decide_set_quotas(s, cmd.tenant_id, cmd.quotas))


async def set_tenant_policy(cmd: SetTenantPolicy, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "tenant:update", cmd.tenant_id)  # a tenant may narrow what its certificates say
    return await _run(services, ctx, cmd, lambda s: tenant.decide_set_policy(s, cmd.tenant_id, cmd.policy))


async def suspend_tenant(cmd: SuspendTenant, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "tenant:suspend")
    return await _run(services, ctx, cmd, lambda s: tenant.decide_suspend(s, cmd.tenant_id, cmd.reason))


async def resume_tenant(cmd: ResumeTenant, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "tenant:suspend")
    return await _run(services, ctx, cmd, lambda s: tenant.decide_resume(s, cmd.tenant_id, cmd.reason))


async def active_tenant(services: Services, tenant_id: str) -> tenant.Tenant:
    """The tenant a command acts in: it must exist and not be suspended."""
    state = await load(services, tenant_id, tenant.stream_id(tenant_id), tenant.fold)
    if state.status == "absent":
        raise NotFound("tenant_not_found", f"tenant {tenant_id} does not exist", field="tenant_id")
    if state.status == "suspended":
        raise DomainError("tenant_suspended", f"tenant {tenant_id} is suspended", field="tenant_id")
    return state
