"""`csm admin`: bootstrap operations for the operator on the host."""

from __future__ import annotations

import click
import msgspec

from cli.common import catch_up, command_context, echo_json, report_change, run_async, runtime_for
from commands.authz import ROLES
from commands.service_accounts import (DisableServiceAccount, EnableServiceAccount, disable_service_account,
                                       enable_service_account)
from commands.tokens import IssueApiToken, issue_api_token
from commands.vault import SweepOrphanKeys, sweep_orphan_keys
from infra.config import Settings


@click.group()
def admin() -> None:
    """Operator tasks: service accounts and their API keys, orphaned vault keys."""


@admin.command("create-token")
@click.option("--name", required=True, help="What the token is for (shown in the audit log).")
@click.option("--role", "roles", multiple=True, type=click.Choice(sorted(ROLES)), default=("platform-admin",),
              show_default=True, help="A role to grant; repeat for several.")
@click.option("--tenant", "tenant_id", default=None, help="Confine the token to one tenant.")
@click.option("--expires-in-days", type=click.IntRange(1, 3650), default=90, show_default=True)
@click.option("--service-account", default=None,
              help="The account that holds the key (must exist)  [default: one named after --name, created if new]")
@click.pass_obj
def create_token(settings: Settings, name: str, roles: tuple[str, ...], tenant_id: str | None,
                 expires_in_days: int, service_account: str | None) -> None:
    """Issue a service account an API key. Only the key goes to stdout: TOKEN=$(csm admin create-token --name me)."""
    command = msgspec.convert({"name": name, "roles": list(roles), "tenant_id": tenant_id,
                               "expires_in_days": expires_in_days, "service_account": service_account},
                              IssueApiToken)
    with runtime_for(settings) as runtime:
        issued = run_async(issue_api_token(command, command_context(), runtime.services, runtime.vault))
        catch_up(runtime, strict=False)  # so a running server accepts the token at once
    click.echo(f"token id: {issued.token_id}; service account: {issued.service_account}; "
               f"roles: {', '.join(sorted(set(roles)))}"
               + (f"; tenant: {tenant_id}" if tenant_id else "")
               + f"; expires: {issued.expires_at or 'never'}", err=True)
    click.echo("this token is shown once and only its hash is kept: store it now", err=True)
    click.echo(issued.token)


@admin.command("disable-service-account")
@click.argument("name")
@click.option("--tenant", "tenant_id", default=None, help="The account's tenant  [default: a platform account]")
@click.option("--reason", required=True, help="Why (recorded in the audit log).")
@click.pass_obj
def disable_account(settings: Settings, name: str, tenant_id: str | None, reason: str) -> None:
    """Disable service account NAME: every API key of it, and every access token those obtained, is refused from
    now on, by every process (a running server too); each key is revoked, and no key is issued to it until enabled."""
    command = DisableServiceAccount(name=name, tenant_id=tenant_id, reason=reason)
    with runtime_for(settings) as runtime:
        result = run_async(disable_service_account(command, command_context(), runtime.services, runtime.vault))
        catch_up(runtime, strict=False)  # the read models (and a running server's listings) show it at once
    report_change(f"disabled service account {name}", result)


@admin.command("enable-service-account")
@click.argument("name")
@click.option("--tenant", "tenant_id", default=None, help="The account's tenant  [default: a platform account]")
@click.option("--reason", required=True, help="Why (recorded in the audit log).")
@click.pass_obj
def enable_account(settings: Settings, name: str, tenant_id: str | None, reason: str) -> None:
    """Let disabled service account NAME be issued keys again; the keys it had stay revoked."""
    command = EnableServiceAccount(name=name, tenant_id=tenant_id, reason=reason)
    with runtime_for(settings) as runtime:
        result = run_async(enable_service_account(command, command_context(), runtime.services, runtime.vault))
        catch_up(runtime, strict=False)
    report_change(f"enabled service account {name}", result)


@admin.command("sweep-keys")
@click.option("--older-than-hours", type=click.IntRange(1, None), default=24, show_default=True,
              help="Only keys stored at least this long ago (a younger one may belong to a command still running).")
@click.option("--dry-run", is_flag=True, help="List the orphaned keys; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout instead of a list.")
@click.pass_obj
def sweep_keys(settings: Settings, older_than_hours: int, dry_run: bool, as_json: bool) -> None:
    """Delete vault keys that no event names: keys of commands that failed after storing them.

    The whole log is read; a key stays if any event names it. The deletion is recorded in the log
    (vault.orphans_deleted) before it is done.
    """
    command = SweepOrphanKeys(older_than_hours=older_than_hours, dry_run=dry_run)
    with runtime_for(settings) as runtime:
        swept = run_async(sweep_orphan_keys(command, command_context(), runtime.services))
    if as_json:
        echo_json(swept)
        return
    for key in swept.orphans:
        click.echo(f"{key.key_id}  tenant {key.tenant_id}  {key.purpose}  stored {key.created_at.isoformat()}")
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{len(swept.orphans)} orphaned keys stored before {swept.stored_before.isoformat()} "
               f"({swept.events_read:,} events read); {verb} {len(swept.orphans) if dry_run else swept.deleted}",
               err=True)
