"""`csm admin`: bootstrap operations for the operator on the host."""

from __future__ import annotations

import click
import msgspec

from cli.common import catch_up, command_context, run_async, runtime_for
from commands.authz import ROLES
from commands.tokens import IssueApiToken, issue_api_token
from infra.config import Settings


@click.group()
def admin() -> None:
    """Operator tasks: service-account API keys."""


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
