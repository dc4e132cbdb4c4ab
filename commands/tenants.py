"""Tenant commands and their handlers, and what a suspended tenant may still do (every handler declares it)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from commands.authz import Principal, authorize
from commands.runtime import CommandContext, CommandResult, Services, load, run
from domain import tenant
from domain.errors import DomainError, NotFound
from domain.tenant import Quotas
from domain.tenant_policy import TenantPolicy

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


@dataclass(frozen=True, slots=True)
class WhileSuspended:
    """What a command handler does in a suspended tenant: refused (``tenant_suspended``) or allowed, and why."""

    refused: bool
    reason: str


# Every command handler in commands/ (a public coroutine taking ``cmd`` or ``ctx`` first) declares its rule with
# one of the two decorators below; tests/unit/test_suspension.py fails by name for one that does not, and
# docs/security.md prints this table. Keyed "module.handler".
WHILE_SUSPENDED: dict[str, WhileSuspended] = {}


def _declare(handler: Callable, rule: WhileSuspended) -> None:
    handler.while_suspended = rule  # type: ignore[attr-defined]
    WHILE_SUSPENDED[f"{handler.__module__.removeprefix('commands.')}.{handler.__name__}"] = rule


def allowed_while_suspended(reason: str) -> Callable[[Callable], Callable]:
    """The handler runs in a suspended tenant as in an active one: ``reason`` says why that is safe."""
    def mark(handler: Callable) -> Callable:
        _declare(handler, WhileSuspended(refused=False, reason=reason))
        return handler
    return mark


def refused_while_suspended(reason: str, *,
                            when: Callable[[Any], bool] | None = None) -> Callable[[Callable], Callable]:
    """The handler signs, adds or re-enables a key, CA, credential, account or subscription, or hands out a private
    key or secret: refused with ``tenant_suspended`` (field ``tenant_id``) before it does anything, for a command
    whose ``tenant_id`` names a suspended tenant (``when``: only for the commands it selects).

    A caller scoped to another tenant is left to the handler's own ``authorize`` (403), so the refusal tells no one
    outside the tenant that it is suspended. A retry of a request that succeeded before the suspension is refused
    too: its first answer stands (read it back), and a key export must not be handed out again."""
    def wrap(handler: Callable) -> Callable:
        @functools.wraps(handler)
        async def checked(cmd: Any, ctx: CommandContext, services: Services, *args: Any, **kwargs: Any) -> Any:
            tenant_id = getattr(cmd, "tenant_id", None)
            if (tenant_id is not None and ctx.principal.tenant_id in (None, tenant_id)
                    and (when is None or when(cmd))):
                checked = _checked_tenant.set((services, tenant_id, await active_tenant(services, tenant_id)))
                try:
                    return await handler(cmd, ctx, services, *args, **kwargs)
                finally:
                    _checked_tenant.reset(checked)
            return await handler(cmd, ctx, services, *args, **kwargs)
        _declare(checked, WhileSuspended(refused=True, reason=reason))
        return checked
    return wrap


async def _run(services: Services, ctx: CommandContext, cmd, decide) -> CommandResult:
    return await run(services, ctx, cmd, tenant_id=cmd.tenant_id, stream_id=tenant.stream_id(cmd.tenant_id),
                     stream_type=tenant.STREAM_TYPE, fold=tenant.fold, decide=decide)


@allowed_while_suspended("makes a new tenant (platform only): there is none to be suspended yet")
async def create_tenant(cmd: CreateTenant, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "tenant:create")
    tenant.validate_tenant_id(cmd.tenant_id)
    return await _run(services, ctx, cmd, lambda s: tenant.decide_create(s, cmd.tenant_id, cmd.name, cmd.quotas))


@allowed_while_suspended("the tenant's display name: no key, credential or CA")
async def rename_tenant(cmd: RenameTenant, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "tenant:update", cmd.tenant_id)
    return await _run(services, ctx, cmd, lambda s: tenant.decide_rename(s, cmd.tenant_id, cmd.name))


@allowed_while_suspended("platform only: bounds what the tenant may hold once it is resumed")
async def set_tenant_quotas(cmd: SetTenantQuotas, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "tenant:create")  # quotas bound what a tenant may consume: platform decision
    return await _run(services, ctx, cmd, lambda s: tenant.decide_set_quotas(s, cmd.tenant_id, cmd.quotas))


@allowed_while_suspended("says what the tenant's certificates may say: it signs nothing, and issuance waits for the "
                         "resumption")
async def set_tenant_policy(cmd: SetTenantPolicy, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "tenant:update", cmd.tenant_id)  # a tenant may narrow what its certificates say
    return await _run(services, ctx, cmd, lambda s: tenant.decide_set_policy(s, cmd.tenant_id, cmd.policy))


@allowed_while_suspended("platform only: refused by the domain when already suspended")
async def suspend_tenant(cmd: SuspendTenant, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "tenant:suspend")
    return await _run(services, ctx, cmd, lambda s: tenant.decide_suspend(s, cmd.tenant_id, cmd.reason))


@allowed_while_suspended("the way out, platform only (`tenant:suspend` in platform scope): no principal of the tenant "
                         "can resume it")
async def resume_tenant(cmd: ResumeTenant, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "tenant:suspend")
    return await _run(services, ctx, cmd, lambda s: tenant.decide_resume(s, cmd.tenant_id, cmd.reason))


# The tenant state @refused_while_suspended loaded for the handler it is running, so that the handler's own
# active_tenant (issuance, CA creation) does not read the tenant's stream a second time in the same command.
_checked_tenant: ContextVar[tuple[Services, str, tenant.Tenant] | None] = ContextVar("checked_tenant", default=None)


async def active_tenant(services: Services, tenant_id: str) -> tenant.Tenant:
    """The tenant a command acts in: it must exist and not be suspended (read once per command: a handler under
    @refused_while_suspended gets the state its check loaded)."""
    checked = _checked_tenant.get()
    if checked is not None and checked[0] is services and checked[1] == tenant_id:
        return checked[2]
    tenant.validate_tenant_id(tenant_id)
    state = await load(services, tenant_id, tenant.stream_id(tenant_id), tenant.fold)
    if state.status == "absent":
        raise NotFound("tenant_not_found", f"tenant {tenant_id} does not exist", field="tenant_id")
    if state.status == "suspended":
        raise DomainError("tenant_suspended", f"tenant {tenant_id} is suspended", field="tenant_id")
    return state


class TenantPolicyOut(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    policy: TenantPolicy
    version: int  # the tenant stream's version it was read at


async def read_policy(principal: Principal, services: Services, tenant_id: str) -> TenantPolicyOut:
    """The policy in force (from the tenant's stream, no lag): what issuance checks against. Needs tenant:read."""
    authorize(principal, "tenant:read", tenant_id)
    if not tenant.TENANT_ID_RE.fullmatch(tenant_id):  # a query: an id no tenant can have is one that does not exist
        raise NotFound("tenant_not_found", f"tenant {tenant_id} does not exist", field="tenant_id")
    state = await load(services, tenant_id, tenant.stream_id(tenant_id), tenant.fold)
    if state.status == "absent":
        raise NotFound("tenant_not_found", f"tenant {tenant_id} does not exist", field="tenant_id")
    return TenantPolicyOut(tenant_id=tenant_id, policy=state.policy, version=state.version)


async def is_suspended(services: Services, tenant_id: str) -> bool:
    """For the background jobs that sign for a tenant (renewal): they skip a suspended one rather than fail."""
    return (await load(services, tenant_id, tenant.stream_id(tenant_id), tenant.fold)).status == "suspended"
