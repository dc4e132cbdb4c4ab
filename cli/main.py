"""`csm`: the operators' entry point (console script ``csm = "cli.main:main"``).

Each command's module is imported only when that command runs (or when help lists them all): a command pays at
start for the modules it uses, not for every other command's (``csm version`` opens no store, ``csm cert list``
loads no SSH deployer), and so does every process of ``csm serve`` (its workers start this module again).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import click

from cli.errors import EXIT_USAGE, CliError
from infra.config import Settings

DISTRIBUTION = "cassandra-security-manager"


def version_string() -> str:
    from importlib import metadata  # looked up only when asked: importing it is about 25 ms of every start

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def ca_group() -> click.Group:
    """`csm ca`: its commands, the offline root's ceremonies and the queries live in modules of their own."""
    from cli import ca, ca_offline, ca_queries, ca_root

    for command in (ca_root.root, *ca_offline.COMMANDS, *ca_queries.COMMANDS):
        ca.ca.add_command(command)
    return ca.ca


def cluster_group() -> click.Group:
    """`csm cluster`: deploy, rollback, verify and status live in modules of their own."""
    from cli.cluster import cluster
    from cli.cluster_deploy import deploy
    from cli.cluster_rollback import rollback
    from cli.cluster_status import status
    from cli.cluster_verify import verify

    for command in (deploy, rollback, verify, status):
        cluster.add_command(command)
    return cluster


# Every command of the root group but `version`: "module:attribute", or a function that assembles the group.
COMMANDS: dict[str, str | Callable[[], click.Command]] = {
    "admin": "cli.admin:admin", "audit": "cli.audit:audit", "auth": "cli.auth:auth", "backup": "cli.backup:backup",
    "ca": ca_group, "cert": "cli.cert:cert", "cluster": cluster_group, "db": "cli.db:db",
    "discover": "cli.discover:discover", "events": "cli.events:events", "init": "cli.serve:init",
    "keys": "cli.keys:keys", "projections": "cli.projections:projections", "projector": "cli.projector:projector",
    "restore": "cli.backup:restore", "serve": "cli.serve:serve", "tenant": "cli.tenants:tenant",
    "user": "cli.users:user", "webhook": "cli.webhooks:webhook", "worker": "cli.worker:worker",
}


class CsmGroup(click.Group):
    """The root group: loads a command's module when the command is asked for (``COMMANDS``), and turns expected
    exceptions raised by any sub-command into CliErrors."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            self.load(cmd_name)
        elif cmd_name not in self.commands:  # no such command: click suggests the nearest of those loaded, so all
            for name in COMMANDS:
                self.load(name)
        return self.commands.get(cmd_name)

    def load(self, cmd_name: str) -> None:
        if cmd_name in self.commands:
            return
        load = COMMANDS[cmd_name]
        if isinstance(load, str):
            module, attribute = load.split(":")
            command = getattr(importlib.import_module(module), attribute)
        else:
            command = load()
        self.add_command(command, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except Exception as exc:
            from cli.common import translate  # already imported by every command that can fail this way

            error = translate(exc)
            if error is None:
                raise
            raise error from exc


def show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """``csm --version``: what click.version_option prints, with the version looked up only when asked."""
    if value and not ctx.resilient_parsing:
        click.echo(f"csm {version_string()}", color=ctx.color)
        ctx.exit()


@click.group(cls=CsmGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=str), envvar="CSM_DATA_DIR",
              default="./.csm-data", show_default=True, show_envvar=True,
              help="The data directory: events.db, views.db, keys/, audit-witness.json.")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=show_version,
              help="Show the version and exit.")
@click.pass_context
def csm(ctx: click.Context, data_dir: str) -> None:
    """Cassandra Security Manager: certificate authority with an event-sourced, verifiable audit trail."""
    try:  # a setting out of its bounds (CSM_WORKERS, CSM_ACME_AUTHORIZATION_LIFETIME_HOURS ...) named, no traceback
        ctx.obj = Settings.from_env(data_dir).with_recorded_public_url()
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


@csm.command()
def version() -> None:
    """Print the version."""
    click.echo(f"csm {version_string()}")


def main() -> None:
    csm(prog_name="csm")


if __name__ == "__main__":
    main()
