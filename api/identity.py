"""The /v1/users and /v1/service-accounts resources: local users, role grants, service accounts and their API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from api.deps import (Caller, IdempotencyKey, MinPosition, TenantQuery, command_context, page_position,
                      read_models_of, read_your_writes, runtime_of)
from api.problems import COMMAND_ERRORS, QUERY_ERRORS, ApiProblem
from commands import identity as cmd
from commands import mfa
from commands import service_accounts as accounts
from commands import tokens
from commands.authz import Principal, authorize, visible_tenants
from commands.runtime import CommandResult, rfc3339
from commands.tenants import TenantId
from projections import api_tokens, service_accounts, users

Limit = Annotated[int, QueryParameter(ge=1, le=500)]
After = Annotated[str | None, QueryParameter(max_length=64, required=False, description="cursor's older name")]
Cursor = Annotated[str | None, QueryParameter(max_length=64, required=False, description="the previous page's next_cursor")]


RoleName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]  # field limits (api/hardening tests)
Roles = Annotated[list[RoleName], msgspec.Meta(max_length=32)]


class NewUser(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    username: cmd.Username
    password: cmd.Password
    tenant_id: TenantId | None = None
    display_name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    roles: Roles = []


class GrantBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    role: RoleName
    expires_at: datetime | None = None


class PasswordBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    password: cmd.Password


class StatusBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""


class AccountStatusBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]  # recorded in the audit log


class GrantOut(msgspec.Struct, frozen=True, kw_only=True):
    role: str
    expires_at: str | None
    granted_at: str
    granted_by: str


class UserOut(msgspec.Struct, frozen=True, kw_only=True):
    username: str
    tenant_id: str | None
    display_name: str | None
    status: str
    roles: list[str]  # in force now: an expired just-in-time grant is not listed
    grants: list[GrantOut]
    totp_enabled: bool
    locked_until: str | None
    last_login_at: str | None
    created_at: str
    created_by: str


class UserPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[UserOut]
    next_cursor: str | None


class NewServiceAccount(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    tenant_id: TenantId | None = None
    description: Annotated[str, msgspec.Meta(max_length=500)] = ""


class NewKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    roles: Roles
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = "api key"
    expires_in_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] | None = 90


class IssuedKey(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    api_key: str | None  # shown once: null when an Idempotency-Key replays the first issue (the rest is the first's)
    service_account: str
    expires_at: str | None
    result: CommandResult


class KeyOut(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    name: str
    roles: list[str]
    status: str
    expires_at: str | None
    issued_at: str
    issued_by: str
    revoked_at: str | None


class ServiceAccountOut(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    tenant_id: str | None
    description: str
    status: str
    created_at: str
    created_by: str
    keys: list[KeyOut]


class ServiceAccountPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[ServiceAccountOut]
    next_cursor: str | None


def tenant_of(principal: Principal, tenant_id: str | None) -> str | None:
    """The tenant a request concerns: the one named, else the caller's own (None: the platform's accounts)."""
    return tenant_id if tenant_id is not None else principal.tenant_id


def _now(request: Request) -> str:
    return rfc3339(runtime_of(request.app.state).services.clock.now())


def identity_of(request: Request) -> cmd.Identity:
    identity = runtime_of(request.app.state).identity
    if identity is None:
        raise ApiProblem(503, "identity_unavailable", "identity services are not configured",
                         field="identity")
    return identity


class UserController(Controller):
    path = "/users"
    tags = ["users"]

    @post("/", status_code=201, summary="Create a local user (argon2id password)", responses=COMMAND_ERRORS)
    async def create(self, request: Request, principal: Caller, data: JSONBody[NewUser],
                     idempotency_key: IdempotencyKey = None) -> Response[CommandResult]:
        command = cmd.CreateUser(username=data.username, password=data.password,
                                 tenant_id=tenant_of(principal, data.tenant_id), display_name=data.display_name,
                                 roles=data.roles)
        result = await cmd.create_user(command, command_context(principal, idempotency_key),
                                       runtime_of(request.app.state).services, identity_of(request))
        return Response(result, status_code=201, headers={"Location": f"/v1/users/{data.username}"})

    @get("/", summary="List users of a tenant (keyset pagination by username)", responses=QUERY_ERRORS)
    async def search(self, request: Request, principal: Caller, tenant_id: TenantQuery = None,
                     min_position: MinPosition = None, cursor: Cursor = None, after: After = None,
                     limit: Limit = 100) -> UserPage:
        tenant = tenant_of(principal, tenant_id)
        authorize(principal, "user:read", tenant)
        await read_your_writes(request, min_position)
        rows = await read_models_of(request.app.state).query(
            users.search, visible_tenants(principal), tenant_id=tenant, now=_now(request), after=page_position(after, cursor),
            limit=limit + 1, platform=tenant is None)
        items = [msgspec.convert(row, UserOut) for row in rows[:limit]]
        return UserPage(items=items, next_cursor=items[-1].username if len(rows) > limit else None)

    @get("/{username:str}", summary="Read a user", responses=QUERY_ERRORS)
    async def read(self, request: Request, principal: Caller, username: FromPath[str], tenant_id: TenantQuery = None,
                   min_position: MinPosition = None) -> UserOut:
        tenant = tenant_of(principal, tenant_id)
        authorize(principal, "user:read", tenant)
        await read_your_writes(request, min_position)
        row = await read_models_of(request.app.state).query(users.get, tenant, username, visible_tenants(principal),
                                                            _now(request))
        if row is None:
            raise ApiProblem(404, "user_not_found", f"user {username} does not exist", field="username")
        return msgspec.convert(row, UserOut)

    @post("/{username:str}/roles", status_code=200, summary="Grant a role, optionally until expires_at",
          responses=COMMAND_ERRORS)
    async def grant(self, request: Request, principal: Caller, username: FromPath[str], data: JSONBody[GrantBody],
                    tenant_id: TenantQuery = None, idempotency_key: IdempotencyKey = None) -> CommandResult:
        command = cmd.GrantRole(username=username, role=data.role, tenant_id=tenant_of(principal, tenant_id),
                                expires_at=data.expires_at)
        return await cmd.grant_role(command, command_context(principal, idempotency_key),
                                    runtime_of(request.app.state).services)

    @delete("/{username:str}/roles/{role:str}", status_code=200, summary="Revoke a role", responses=COMMAND_ERRORS)
    async def revoke(self, request: Request, principal: Caller, username: FromPath[str], role: FromPath[str],
                     tenant_id: TenantQuery = None) -> CommandResult:
        command = cmd.RevokeRole(username=username, role=role, tenant_id=tenant_of(principal, tenant_id))
        return await cmd.revoke_role(command, command_context(principal), runtime_of(request.app.state).services)

    @post("/{username:str}/password", status_code=200, summary="Reset a user's password", responses=COMMAND_ERRORS)
    async def reset_password(self, request: Request, principal: Caller, username: FromPath[str],
                             data: JSONBody[PasswordBody], tenant_id: TenantQuery = None) -> CommandResult:
        command = cmd.ResetPassword(username=username, password=data.password,
                                    tenant_id=tenant_of(principal, tenant_id))
        return await cmd.reset_password(command, command_context(principal), runtime_of(request.app.state).services,
                                        identity_of(request))

    @post("/{username:str}/disable", status_code=200, summary="Disable a user (sign-in and tokens stop)",
          responses=COMMAND_ERRORS)
    async def disable(self, request: Request, principal: Caller, username: FromPath[str], data: JSONBody[StatusBody],
                      tenant_id: TenantQuery = None) -> CommandResult:
        command = cmd.SetUserStatus(username=username, enabled=False, tenant_id=tenant_of(principal, tenant_id),
                                    reason=data.reason)
        return await cmd.set_user_status(command, command_context(principal), runtime_of(request.app.state).services)

    @post("/{username:str}/enable", status_code=200, summary="Enable a disabled user", responses=COMMAND_ERRORS)
    async def enable(self, request: Request, principal: Caller, username: FromPath[str], data: JSONBody[StatusBody],
                     tenant_id: TenantQuery = None) -> CommandResult:
        command = cmd.SetUserStatus(username=username, enabled=True, tenant_id=tenant_of(principal, tenant_id),
                                    reason=data.reason)
        return await cmd.set_user_status(command, command_context(principal), runtime_of(request.app.state).services)

    @post("/{username:str}/unlock", status_code=200, summary="Lift a sign-in lockout", responses=COMMAND_ERRORS)
    async def unlock(self, request: Request, principal: Caller, username: FromPath[str],
                     tenant_id: TenantQuery = None) -> CommandResult:
        command = cmd.UnlockAccount(username=username, tenant_id=tenant_of(principal, tenant_id))
        return await cmd.unlock_account(command, command_context(principal), runtime_of(request.app.state).services)

    @delete("/{username:str}/totp", status_code=200, summary="Turn a user's TOTP off (lost device)",
            responses=COMMAND_ERRORS)
    async def reset_totp(self, request: Request, principal: Caller, username: FromPath[str],
                         tenant_id: TenantQuery = None) -> CommandResult:
        command = mfa.ResetTotp(username=username, tenant_id=tenant_of(principal, tenant_id))
        return await mfa.reset_totp(command, command_context(principal), runtime_of(request.app.state).services)


class ServiceAccountController(Controller):
    path = "/service-accounts"
    tags = ["service accounts"]

    @post("/", status_code=201, summary="Create a service account", responses=COMMAND_ERRORS)
    async def create(self, request: Request, principal: Caller, data: JSONBody[NewServiceAccount],
                     idempotency_key: IdempotencyKey = None) -> Response[CommandResult]:
        command = tokens.CreateServiceAccount(name=data.name, tenant_id=tenant_of(principal, data.tenant_id),
                                              description=data.description)
        result = await tokens.create_service_account(command, command_context(principal, idempotency_key),
                                                     runtime_of(request.app.state).services)
        return Response(result, status_code=201, headers={"Location": f"/v1/service-accounts/{data.name}"})

    @get("/", summary="List service accounts and their keys", responses=QUERY_ERRORS)
    async def search(self, request: Request, principal: Caller, tenant_id: TenantQuery = None,
                     min_position: MinPosition = None, cursor: Cursor = None, after: After = None,
                     limit: Limit = 100) -> ServiceAccountPage:
        tenant = tenant_of(principal, tenant_id)
        authorize(principal, "user:read", tenant)
        await read_your_writes(request, min_position)
        rows = await read_models_of(request.app.state).query(service_accounts.search, visible_tenants(principal),
                                                            tenant_id=tenant, after=page_position(after, cursor), limit=limit + 1)
        items = [msgspec.convert(row, ServiceAccountOut) for row in rows[:limit]]
        return ServiceAccountPage(items=items, next_cursor=items[-1].name if len(rows) > limit else None)

    @get("/{name:str}", summary="Read a service account and its keys", responses=QUERY_ERRORS)
    async def read(self, request: Request, principal: Caller, name: FromPath[str], tenant_id: TenantQuery = None,
                   min_position: MinPosition = None) -> ServiceAccountOut:
        tenant = tenant_of(principal, tenant_id)
        authorize(principal, "user:read", tenant)
        await read_your_writes(request, min_position)
        row = await read_models_of(request.app.state).query(service_accounts.get, tenant, name,
                                                            visible_tenants(principal))
        if row is None:
            raise ApiProblem(404, "service_account_not_found", f"service account {name} does not exist", field="name")
        return msgspec.convert(row, ServiceAccountOut)

    @post("/{name:str}/keys", status_code=201, summary="Issue an API key (its secret is shown once)",
          responses=COMMAND_ERRORS)
    async def issue_key(self, request: Request, principal: Caller, name: FromPath[str], data: JSONBody[NewKey],
                        tenant_id: TenantQuery = None, idempotency_key: IdempotencyKey = None) -> IssuedKey:
        runtime = runtime_of(request.app.state)
        command = tokens.IssueApiToken(name=data.name, roles=data.roles, tenant_id=tenant_of(principal, tenant_id),
                                       expires_in_days=data.expires_in_days, service_account=name)
        issued = await tokens.issue_api_token(command, command_context(principal, idempotency_key),
                                              runtime.services, runtime.vault, permission="serviceaccount:manage")
        # the key is checked against the read models: answer once they have it, so that it works at once (bounded,
        # and never refused: its secret is in this answer only)
        if issued.result.global_position:
            await runtime.runner.wait_for(issued.result.global_position, runtime.settings.read_your_writes_timeout)
        return IssuedKey(key_id=issued.token_id, api_key=issued.token or None, service_account=issued.service_account,
                         expires_at=issued.expires_at, result=issued.result)

    @delete("/{name:str}/keys/{key_id:str}", status_code=200, summary="Revoke an API key", responses=COMMAND_ERRORS)
    async def revoke_key(self, request: Request, principal: Caller, name: FromPath[str], key_id: FromPath[str],
                         tenant_id: TenantQuery = None) -> CommandResult:
        tenant = tenant_of(principal, tenant_id)
        authorize(principal, "serviceaccount:manage", tenant)
        record = await read_models_of(request.app.state).query(api_tokens.get, key_id)
        if record is None or record["tenant_id"] != tenant or record["service_account"] != name:
            raise ApiProblem(404, "key_not_found", f"service account {name} has no key {key_id}", field="key_id")
        runtime = runtime_of(request.app.state)
        return await tokens.revoke_api_token(tokens.RevokeApiToken(token_id=key_id), command_context(principal),
                                             runtime.services, runtime.vault, tenant,
                                             permission="serviceaccount:manage")

    @post("/{name:str}/disable", status_code=200, summary="Disable a service account: its keys and their access "
          "tokens are refused at once and revoked, no key is issued to it until it is enabled",
          responses=COMMAND_ERRORS)
    async def disable(self, request: Request, principal: Caller, name: FromPath[str], data: JSONBody[AccountStatusBody],
                      tenant_id: TenantQuery = None) -> CommandResult:
        runtime = runtime_of(request.app.state)
        command = accounts.DisableServiceAccount(name=name, tenant_id=tenant_of(principal, tenant_id),
                                                 reason=data.reason)
        return await accounts.disable_service_account(command, command_context(principal), runtime.services,
                                                      runtime.vault)

    @post("/{name:str}/enable", status_code=200, summary="Enable a disabled service account (its old keys stay "
          "revoked: issue new ones)", responses=COMMAND_ERRORS)
    async def enable(self, request: Request, principal: Caller, name: FromPath[str], data: JSONBody[AccountStatusBody],
                     tenant_id: TenantQuery = None) -> CommandResult:
        runtime = runtime_of(request.app.state)
        command = accounts.EnableServiceAccount(name=name, tenant_id=tenant_of(principal, tenant_id),
                                                reason=data.reason)
        return await accounts.enable_service_account(command, command_context(principal), runtime.services,
                                                     runtime.vault)
