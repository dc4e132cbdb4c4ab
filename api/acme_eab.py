"""/v1/tenants/{tenant_id}/acme/eab-keys: a tenant's ACME external account binding keys (the HMAC key shown once)."""

from __future__ import annotations

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.params import FromPath, JSONBody

from api.deps import (Caller, IdempotencyKey, MinPosition, command_context, read_models_of, read_your_writes,
                      runtime_of)
from api.problems import COMMAND_ERRORS, QUERY_ERRORS
from commands import acme_eab as cmd
from commands.authz import authorize
from commands.cas import CaId
from commands.certificates import ProfileName
from commands.runtime import CommandResult
from projections import acme as read_model


class NewEabKeyBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    ca_id: CaId
    profile: ProfileName = "cassandra-node"
    allowed_names: cmd.Patterns = []
    description: cmd.Description = ""


class EabKeyCreatedOut(msgspec.Struct, frozen=True, kw_only=True):
    """``hmac_key`` (base64url) is in this answer only; ``null`` when a retried create replays the first."""

    key_id: str
    hmac_key: str | None
    directory: str
    version: int
    global_position: int | None
    replayed: bool = False


class EabKeyOut(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    tenant_id: str
    ca_id: str
    profile: str
    allowed_names: list[str]
    description: str
    status: str  # active | bound | revoked
    account_id: str | None
    created_at: str
    updated_at: str
    version: int


class EabKeyPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[EabKeyOut]


class EabKeyController(Controller):
    path = "/tenants/{tenant_id:str}/acme/eab-keys"
    tags = ["acme"]

    @post("/", status_code=201, summary="Create an ACME EAB key for one account (the HMAC key is shown once)",
          responses=COMMAND_ERRORS)
    async def create(self, request: Request, principal: Caller, tenant_id: FromPath[str],
                     data: JSONBody[NewEabKeyBody], idempotency_key: IdempotencyKey = None) -> Response:
        command = cmd.CreateEabKey(tenant_id=tenant_id, ca_id=data.ca_id, profile=data.profile,
                                   allowed_names=data.allowed_names, description=data.description)
        made = await cmd.create_eab_key(command, command_context(principal, idempotency_key),
                                        runtime_of(request.app.state).services)
        settings = runtime_of(request.app.state).settings
        base = settings.acme_base_url or str(request.base_url).rstrip("/")
        body = EabKeyCreatedOut(key_id=made.key_id, hmac_key=made.hmac_key,
                                directory=f"{base}/acme/{tenant_id}/directory", version=made.result.version,
                                global_position=made.result.global_position, replayed=made.result.replayed)
        return Response(body, status_code=201,
                        headers={"Location": f"/v1/tenants/{tenant_id}/acme/eab-keys/{made.key_id}",
                                 "Cache-Control": "no-store"})

    @get("/", summary="A tenant's ACME EAB keys (never their HMAC keys)", responses=QUERY_ERRORS)
    async def list_(self, request: Request, principal: Caller, tenant_id: FromPath[str],
                    min_position: MinPosition = None) -> EabKeyPage:
        authorize(principal, "acme:manage", tenant_id)
        await read_your_writes(request, min_position)
        rows = await read_models_of(request.app.state).query(read_model.eab_keys, tenant_id)
        return EabKeyPage(items=[msgspec.convert(row, EabKeyOut) for row in rows])

    @delete("/{key_id:str}", status_code=200, summary="Revoke an EAB key: its account orders and finalizes no more",
            responses=COMMAND_ERRORS)
    async def revoke(self, request: Request, principal: Caller, tenant_id: FromPath[str],
                     key_id: FromPath[str]) -> CommandResult:
        command = cmd.RevokeEabKey(tenant_id=tenant_id, key_id=key_id)
        return await cmd.revoke_eab_key(command, command_context(principal), runtime_of(request.app.state).services)
