"""/v1/profiles (built-in and tenant certificate profiles) and /v1/algorithms (what keys this service can make)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, get, post, put
from litestar.params import FromPath, JSONBody

from api.cas import tenant_for
from api.deps import (Caller, IdempotencyKey, MinPosition, TenantQuery, execute, read_models_of, read_your_writes,
                      runtime_of)
from api.problems import COMMAND_ERRORS, QUERY_ERRORS, ApiProblem
from commands import profiles as cmd
from commands.authz import authorize
from commands.runtime import CommandResult
from commands.tenants import TenantId
from domain.profile import BUILTIN_PROFILES, Profile
from projections import profiles as read_model


class ProfileOut(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    source: str  # builtin | tenant
    status: str
    profile: Profile


class ProfileBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    profile: Profile
    tenant_id: TenantId | None = None


class RetireBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    tenant_id: TenantId | None = None


class AlgorithmOut(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    family: str
    security_bits: int
    post_quantum: bool
    available: bool
    allowed_for_ca: bool
    provider: str


class ProfileController(Controller):
    path = "/profiles"
    tags = ["profiles"]

    @get("/", summary="Built-in profiles and the tenant's own", responses=QUERY_ERRORS)
    async def list_(self, request: Request, principal: Caller, min_position: MinPosition = None,
                    tenant_id: TenantQuery = None) -> list[ProfileOut]:
        tenant = tenant_for(principal, tenant_id)
        authorize(principal, "profile:read", tenant)
        await read_your_writes(request, min_position)
        own = await read_models_of(request.app.state).query(read_model.of_tenant, tenant)
        return ([ProfileOut(name=p.name, source="builtin", status="active", profile=p)
                 for p in BUILTIN_PROFILES.values()]
                + [ProfileOut(name=r["name"], source="tenant", status=r["status"],
                              profile=msgspec.convert(r["profile"], Profile)) for r in own])

    @post("/", status_code=201, summary="Create a tenant profile", responses=COMMAND_ERRORS)
    async def create(self, request: Request, principal: Caller, data: JSONBody[ProfileBody],
                     idempotency_key: IdempotencyKey = None) -> Response[CommandResult]:
        command = cmd.CreateProfile(tenant_id=tenant_for(principal, data.tenant_id), profile=data.profile)
        result = await execute(request, cmd.create_profile, command, principal, idempotency_key)
        return Response(result, status_code=201, headers={"Location": f"/v1/profiles/{data.profile.name}"})

    @put("/{name:str}", summary="Replace a tenant profile", responses=COMMAND_ERRORS)
    async def update(self, request: Request, principal: Caller, name: FromPath[str], data: JSONBody[ProfileBody],
                     idempotency_key: IdempotencyKey = None) -> CommandResult:
        if data.profile.name != name:
            raise ApiProblem(400, "validation_failed", "the profile's name must match the URL", field="profile.name",
                             rule="mismatch")
        command = cmd.UpdateProfile(tenant_id=tenant_for(principal, data.tenant_id), profile=data.profile)
        return await execute(request, cmd.update_profile, command, principal, idempotency_key)

    @post("/{name:str}/retire", status_code=200, summary="Retire a tenant profile", responses=COMMAND_ERRORS)
    async def retire(self, request: Request, principal: Caller, name: FromPath[str],
                     data: JSONBody[RetireBody]) -> CommandResult:
        command = cmd.RetireProfile(tenant_id=tenant_for(principal, data.tenant_id), name=name, reason=data.reason)
        return await execute(request, cmd.retire_profile, command, principal)


class AlgorithmController(Controller):
    path = "/algorithms"
    tags = ["profiles"]

    @get("/", summary="Every key algorithm, and whether this installation offers it", responses=QUERY_ERRORS)
    async def list_(self, request: Request, principal: Caller) -> list[AlgorithmOut]:
        authorize(principal, "profile:read", principal.tenant_id)
        available = runtime_of(request.app.state).services.crypto.available_algorithms()
        return [AlgorithmOut(**msgspec.structs.asdict(offer)) for offer in cmd.algorithm_offers(available)]
