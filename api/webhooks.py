"""/v1/webhooks: a tenant's notification subscriptions, their signing secrets (shown once) and delivery logs."""

from __future__ import annotations

import asyncio
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.params import FromPath, JSONBody, QueryParameter

from api.cas import tenant_for
from api.deps import (Caller, IdempotencyKey, MinPosition, TenantQuery, command_context, read_models_of,
                      read_your_writes, runtime_of)
from api.problems import COMMAND_ERRORS, QUERY_ERRORS, ApiProblem
from commands import webhooks as cmd
from commands.authz import authorize
from commands.runtime import CommandResult
from commands.tenants import TenantId
from domain.errors import NotFound
from projections import webhooks as read_model



class NewWebhook(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: cmd.Url
    event_types: cmd.EventTypes | None = None
    enabled: bool = True
    description: cmd.Description = ""
    tenant_id: TenantId | None = None


class WebhookChange(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: cmd.Url | None = None
    event_types: cmd.EventTypes | None = None
    enabled: bool | None = None
    description: cmd.Description | None = None


class WebhookSecret(msgspec.Struct, frozen=True, kw_only=True):
    """The signing secret is in this answer only (``null`` when a retried create replays the first answer)."""

    webhook_id: str
    secret: str | None
    version: int
    global_position: int | None
    replayed: bool = False


class WebhookOut(msgspec.Struct, frozen=True, kw_only=True):
    webhook_id: str
    tenant_id: str
    url: str
    event_types: list[str]
    enabled: bool
    status: str
    description: str
    created_at: str
    updated_at: str
    secret_rotated_at: str | None
    version: int


class WebhookPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[WebhookOut]


class DeliveryOut(msgspec.Struct, frozen=True, kw_only=True):
    delivery_id: str
    webhook_id: str
    tenant_id: str
    event_id: str
    event_type: str
    position: int
    status: str  # pending | delivered | failed | cancelled
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: str
    updated_at: str
    delivered_at: str | None


class DeliveryPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[DeliveryOut]
    next_cursor: int | None  # pass as ?before= for older deliveries


def _out(row: dict) -> WebhookOut:
    return msgspec.convert({k: row[k] for k in WebhookOut.__struct_fields__}, WebhookOut)


def _secret(issued: cmd.WithSecret) -> WebhookSecret:
    return WebhookSecret(webhook_id=issued.webhook_id, secret=issued.secret, version=issued.result.version,
                         global_position=issued.result.global_position, replayed=issued.result.replayed)


async def _existing(request: Request, tenant: str, webhook_id: str) -> dict:
    row = await read_models_of(request.app.state).query(read_model.get, tenant, webhook_id)
    if row is None or row["status"] != "active":
        raise NotFound("webhook_not_found", f"no webhook {webhook_id}", field="webhook_id")
    return row


class WebhookController(Controller):
    path = "/webhooks"
    tags = ["webhooks"]

    @post("/", status_code=201, summary="Subscribe a URL to lifecycle notifications (the secret is shown once)",
          responses=COMMAND_ERRORS)
    async def create(self, request: Request, principal: Caller, data: JSONBody[NewWebhook],
                     idempotency_key: IdempotencyKey = None) -> Response[WebhookSecret]:
        command = cmd.CreateWebhook(tenant_id=tenant_for(principal, data.tenant_id), url=data.url,
                                    event_types=data.event_types, enabled=data.enabled, description=data.description)
        issued = await cmd.create_webhook(command, command_context(principal, idempotency_key),
                                          runtime_of(request.app.state).services)
        return Response(_secret(issued), status_code=201, headers={"Location": f"/v1/webhooks/{issued.webhook_id}"})

    @get("/", summary="A tenant's webhook subscriptions", responses=QUERY_ERRORS)
    async def list_(self, request: Request, principal: Caller, tenant_id: TenantQuery = None,
                    min_position: MinPosition = None) -> WebhookPage:
        tenant = tenant_for(principal, tenant_id)
        authorize(principal, "webhook:read", tenant)
        await read_your_writes(request, min_position)
        rows = await read_models_of(request.app.state).query(read_model.of_tenant, tenant)
        return WebhookPage(items=[_out(row) for row in rows])

    @get("/{webhook_id:str}", summary="Read a webhook subscription", responses=QUERY_ERRORS)
    async def read(self, request: Request, principal: Caller, webhook_id: FromPath[str], tenant_id: TenantQuery = None,
                   min_position: MinPosition = None) -> WebhookOut:
        tenant = tenant_for(principal, tenant_id)
        authorize(principal, "webhook:read", tenant)
        await read_your_writes(request, min_position)
        return _out(await _existing(request, tenant, webhook_id))

    @patch("/{webhook_id:str}", summary="Change a subscription's URL, event types, description or enabled flag",
           responses=COMMAND_ERRORS)
    async def update(self, request: Request, principal: Caller, webhook_id: FromPath[str],
                     data: JSONBody[WebhookChange], tenant_id: TenantQuery = None) -> CommandResult:
        command = cmd.UpdateWebhook(tenant_id=tenant_for(principal, tenant_id), webhook_id=webhook_id, url=data.url,
                                    event_types=data.event_types, enabled=data.enabled, description=data.description)
        return await cmd.update_webhook(command, command_context(principal), runtime_of(request.app.state).services)

    @delete("/{webhook_id:str}", status_code=200, summary="Delete a subscription (pending deliveries are cancelled)",
            responses=COMMAND_ERRORS)
    async def remove(self, request: Request, principal: Caller, webhook_id: FromPath[str],
                     tenant_id: TenantQuery = None) -> CommandResult:
        command = cmd.DeleteWebhook(tenant_id=tenant_for(principal, tenant_id), webhook_id=webhook_id)
        return await cmd.delete_webhook(command, command_context(principal), runtime_of(request.app.state).services)

    @post("/{webhook_id:str}/rotate-secret", status_code=200, summary="Replace the signing secret (shown once)",
          responses=COMMAND_ERRORS)
    async def rotate(self, request: Request, principal: Caller, webhook_id: FromPath[str],
                     tenant_id: TenantQuery = None) -> WebhookSecret:
        command = cmd.RotateWebhookSecret(tenant_id=tenant_for(principal, tenant_id), webhook_id=webhook_id)
        return _secret(await cmd.rotate_webhook_secret(command, command_context(principal),
                                                       runtime_of(request.app.state).services))

    @get("/{webhook_id:str}/deliveries", summary="The subscription's delivery log, newest first",
         responses=QUERY_ERRORS)
    async def deliveries(self, request: Request, principal: Caller, webhook_id: FromPath[str],
                         tenant_id: TenantQuery = None, min_position: MinPosition = None,
                         before: Annotated[int | None, QueryParameter(ge=1, required=False)] = None,
                         limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100) -> DeliveryPage:
        tenant = tenant_for(principal, tenant_id)
        authorize(principal, "webhook:read", tenant)
        await read_your_writes(request, min_position)
        await _existing(request, tenant, webhook_id)
        hooks = runtime_of(request.app.state).webhooks
        if hooks is None:
            raise ApiProblem(503, "webhooks_unavailable", "webhook delivery is not configured",
                             field="webhooks")
        rows = await asyncio.to_thread(hooks.deliveries.deliveries, tenant, webhook_id, limit=limit + 1, before=before)
        items = [msgspec.convert(row, DeliveryOut) for row in rows[:limit]]
        return DeliveryPage(items=items, next_cursor=items[-1].position if len(rows) > limit else None)
