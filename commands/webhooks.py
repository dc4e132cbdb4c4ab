"""Webhook subscriptions: subscribe (the signing secret shown once), update, rotate the secret, delete.

The secret is generated here, stored encrypted in the key vault (purpose "webhook-signing") and
named in events only by ``secret_ref``. ``record_delivery_failure`` is the system's own command,
run by the dispatcher when a notification's last attempt has failed.
"""

from __future__ import annotations

import secrets
from typing import Annotated

import msgspec

from commands.authz import SYSTEM, authorize
from commands.ids import uuid7
from commands.pki import vault_of
from commands.runtime import CommandContext, CommandResult, Services, load, replayed, run
from commands.tenants import TenantId, allowed_while_suspended, refused_while_suspended
from domain import webhook
from domain.errors import NotFound

SECRET_PREFIX = "whsec_"
SECRET_PURPOSE = "webhook-signing"
SECRET_ALGORITHM = "hmac-sha256"
Url = Annotated[str, msgspec.Meta(min_length=1, max_length=webhook.MAX_URL)]
EventTypes = Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=16)]
Description = Annotated[str, msgspec.Meta(max_length=webhook.MAX_DESCRIPTION)]
WebhookId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class CreateWebhook(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: TenantId
    url: Url
    event_types: EventTypes | None = None  # None: every notifiable type
    enabled: bool = True
    description: Description = ""


class UpdateWebhook(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: TenantId
    webhook_id: WebhookId
    url: Url | None = None
    event_types: EventTypes | None = None
    enabled: bool | None = None
    description: Description | None = None


class RotateWebhookSecret(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: TenantId
    webhook_id: WebhookId


class DeleteWebhook(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: TenantId
    webhook_id: WebhookId
    reason: Annotated[str, msgspec.Meta(max_length=200)] = "deleted"


class RecordDeliveryFailure(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    webhook_id: str
    failure: webhook.WebhookDeliveryFailed


class WithSecret(msgspec.Struct, frozen=True, kw_only=True):
    """A command's result and the new signing secret: shown this once (None when a retry replays the first)."""

    webhook_id: str
    secret: str | None
    result: CommandResult


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)  # 256 random bits


async def _store_secret(services: Services, tenant_id: str, secret: str) -> str:
    return await vault_of(services).put(tenant_id, secret.encode(), algorithm=SECRET_ALGORITHM, purpose=SECRET_PURPOSE)


def _run(services: Services, ctx: CommandContext, cmd: msgspec.Struct, tenant_id: str, webhook_id: str, decide):
    return run(services, ctx, cmd, tenant_id=tenant_id, stream_id=webhook.stream_id(webhook_id),
               stream_type=webhook.STREAM_TYPE, fold=webhook.fold, decide=decide)


def _id_of(result: CommandResult) -> str:
    return result.stream_id.removeprefix("webhook-")


@refused_while_suspended("adds a subscription and hands out its signing secret")
async def create_webhook(cmd: CreateWebhook, ctx: CommandContext, services: Services) -> WithSecret:
    authorize(ctx.principal, "webhook:manage", cmd.tenant_id)
    if prior := await replayed(services, ctx, cmd, cmd.tenant_id):
        return WithSecret(webhook_id=_id_of(prior), secret=None, result=prior)
    rules = {"allow_loopback_http": services.allow_loopback_webhooks, "encode_host": services.webhook_host_encoder}
    webhook.check_url(cmd.url, **rules)  # refuse before a secret is stored
    webhook.check_event_types(cmd.event_types)
    secret = new_secret()
    secret_ref = await _store_secret(services, cmd.tenant_id, secret)
    webhook_id = uuid7()
    subscribed = webhook.WebhookSubscribed(webhook_id=webhook_id, url=cmd.url, event_types=cmd.event_types or [],
                                           enabled=cmd.enabled, description=cmd.description, secret_ref=secret_ref)
    result = await _run(services, ctx, cmd, cmd.tenant_id, webhook_id,
                        lambda s: webhook.decide_subscribe(s, subscribed, **rules))
    return WithSecret(webhook_id=_id_of(result), secret=None if result.replayed else secret, result=result)


@refused_while_suspended("can point deliveries elsewhere or enable them again; deleting stays open")
async def update_webhook(cmd: UpdateWebhook, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "webhook:manage", cmd.tenant_id)
    return await _run(services, ctx, cmd, cmd.tenant_id, cmd.webhook_id, lambda s: webhook.decide_update(
        s, url=cmd.url, event_types=cmd.event_types, enabled=cmd.enabled, description=cmd.description,
        allow_loopback_http=services.allow_loopback_webhooks, encode_host=services.webhook_host_encoder))


@refused_while_suspended("hands out a new signing secret")
async def rotate_webhook_secret(cmd: RotateWebhookSecret, ctx: CommandContext, services: Services) -> WithSecret:
    """A new secret signs every delivery attempt from now on (retries of earlier notifications too)."""
    authorize(ctx.principal, "webhook:manage", cmd.tenant_id)
    state = await load(services, cmd.tenant_id, webhook.stream_id(cmd.webhook_id), webhook.fold)
    if state.status != "active":
        raise NotFound("webhook_not_found", "no such webhook", field="webhook_id")
    secret = new_secret()
    secret_ref = await _store_secret(services, cmd.tenant_id, secret)
    result = await _run(services, ctx, cmd, cmd.tenant_id, cmd.webhook_id,
                        lambda s: webhook.decide_rotate(s, secret_ref))
    return WithSecret(webhook_id=cmd.webhook_id, secret=secret, result=result)


@allowed_while_suspended("takes a subscription away")
async def delete_webhook(cmd: DeleteWebhook, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "webhook:manage", cmd.tenant_id)
    return await _run(services, ctx, cmd, cmd.tenant_id, cmd.webhook_id,
                      lambda s: webhook.decide_delete(s, cmd.reason))


@allowed_while_suspended("the system records what happened to a delivery")
async def record_delivery_failure(cmd: RecordDeliveryFailure, services: Services) -> CommandResult:
    """Append ``webhook.delivery_failed`` once per delivery (its id is the idempotency key)."""
    ctx = CommandContext(principal=SYSTEM, idempotency_key=f"webhook-delivery-{cmd.failure.delivery_id}")
    return await _run(services, ctx, cmd, cmd.tenant_id, cmd.webhook_id,
                      lambda s: webhook.decide_delivery_failed(s, cmd.failure))

