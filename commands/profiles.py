"""Certificate profiles: the built-in templates, a tenant's own profiles (create, update, retire), and the key
algorithms on offer."""

from __future__ import annotations

from typing import Annotated

import msgspec

from commands.authz import authorize
from commands.runtime import CommandContext, CommandResult, Services, load, run
from commands.tenants import TenantId, allowed_while_suspended, refused_while_suspended
from domain import key_rules
from domain import profile as profiles
from domain.algorithms import ALGORITHMS
from domain.errors import DomainError, NotFound


async def resolve_profile(services: Services, tenant_id: str, name: str) -> profiles.Profile:
    """A built-in profile, or the tenant's own one of that name if it exists and is not retired."""
    if name in profiles.BUILTIN_PROFILES:
        return profiles.BUILTIN_PROFILES[name]
    state = await load(services, tenant_id, profiles.stream_id(name), profiles.fold)
    if state.profile is None:
        raise NotFound("profile_not_found", f"no profile named {name}", field="profile")
    if state.status == "retired":
        raise DomainError("profile_retired", f"profile {name} is retired", field="profile")
    return state.profile


class CreateProfile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: TenantId
    profile: profiles.Profile


class UpdateProfile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: TenantId
    profile: profiles.Profile


class RetireProfile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: TenantId
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=63)]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


def _run(services: Services, ctx: CommandContext, cmd: msgspec.Struct, tenant_id: str, name: str, decide):
    return run(services, ctx, cmd, tenant_id=tenant_id, stream_id=profiles.stream_id(name),
               stream_type=profiles.STREAM_TYPE, fold=profiles.fold, decide=decide)


@refused_while_suspended("adds a template of what the tenant signs")
async def create_profile(cmd: CreateProfile, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "profile:manage", cmd.tenant_id)
    return await _run(services, ctx, cmd, cmd.tenant_id, cmd.profile.name,
                      lambda s: profiles.decide_create(s, cmd.profile))


@refused_while_suspended("changes a template of what the tenant signs")
async def update_profile(cmd: UpdateProfile, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "profile:manage", cmd.tenant_id)
    return await _run(services, ctx, cmd, cmd.tenant_id, cmd.profile.name,
                      lambda s: profiles.decide_update(s, cmd.profile))


@allowed_while_suspended("takes a template away")
async def retire_profile(cmd: RetireProfile, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "profile:manage", cmd.tenant_id)
    return await _run(services, ctx, cmd, cmd.tenant_id, cmd.name,
                      lambda s: profiles.decide_retire(s, cmd.name, cmd.reason))


class AlgorithmOffer(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    family: str
    security_bits: int
    post_quantum: bool
    available: bool  # this installation can make and use such keys
    allowed_for_ca: bool  # a CA may hold such a key
    provider: str


def algorithm_offers(available: frozenset[str]) -> list[AlgorithmOffer]:
    """Every catalogued key algorithm, given the names this installation's crypto offers (GET /v1/algorithms)."""
    return [AlgorithmOffer(name=a.name, family=a.family, security_bits=a.security_bits, post_quantum=a.post_quantum,
                           available=a.name in available, allowed_for_ca=key_rules.allowed_for_ca(a.name),
                           provider=a.provider) for a in ALGORITHMS.values()]
