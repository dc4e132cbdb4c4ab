"""`csm webhook`: subscribe, list and delete a tenant's webhooks through their handlers (docs/notifications.md)."""

from __future__ import annotations

import click
import msgspec
from cli.common import catch_up, command_context, echo_json, id_table, print_table, query_views, run_async, runtime_for
from commands import webhooks as cmd
from domain.webhook import NOTIFIABLE
from infra.config import Settings
from projections import webhooks as read_model


@click.group()
def webhook() -> None:
    """Webhook subscriptions: signed notifications of certificate lifecycle events."""


@webhook.command("create")
@click.option("--tenant", "tenant_id", required=True, help="The tenant whose events are notified.")
@click.option("--url", required=True, help="https URL that receives the POSTs.")
@click.option("--event", "events", multiple=True, type=click.Choice(NOTIFIABLE),
              help="An event type to notify (repeat; default: all of them).")
@click.option("--description", default="", help="A note for people.")
@click.pass_obj
def create(settings: Settings, tenant_id: str, url: str, events: tuple[str, ...], description: str) -> None:
    """Subscribe URL; prints the webhook id and its signing secret (shown this once)."""
    command = msgspec.convert({"tenant_id": tenant_id, "url": url, "event_types": list(events) or None,
                               "description": description}, cmd.CreateWebhook)
    with runtime_for(settings) as runtime:
        issued = run_async(cmd.create_webhook(command, command_context(), runtime.services))
        catch_up(runtime, strict=False)
    click.echo(f"webhook {issued.webhook_id} (version {issued.result.version})", err=True)
    click.echo(f"secret (shown once, store it with the receiver): {issued.secret}")


@webhook.command("list")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout instead of a table.")
@click.pass_obj
def list_(settings: Settings, tenant_id: str, as_json: bool) -> None:
    """List a tenant's webhooks."""
    rows = query_views(settings, read_model.of_tenant, tenant_id)
    if as_json:
        echo_json(rows)
        return
    table = id_table("webhook", "url", "events", "enabled", "updated", ids={"webhook"})
    for row in rows:
        table.add_row(row["webhook_id"], row["url"], ", ".join(row["event_types"]), str(row["enabled"]).lower(),
                      row["updated_at"])
    print_table(table, f"{len(rows)} webhook(s)")


@webhook.command("delete")
@click.option("--tenant", "tenant_id", required=True)
@click.argument("webhook_id")
@click.pass_obj
def delete(settings: Settings, tenant_id: str, webhook_id: str) -> None:
    """Delete WEBHOOK_ID (its pending deliveries are cancelled)."""
    command = cmd.DeleteWebhook(tenant_id=tenant_id, webhook_id=webhook_id)
    with runtime_for(settings) as runtime:
        result = run_async(cmd.delete_webhook(command, command_context(), runtime.services))
        catch_up(runtime, strict=False)
    click.echo(f"{'deleted' if result.changed else 'already deleted:'} webhook {webhook_id} "
               f"(version {result.version})")
