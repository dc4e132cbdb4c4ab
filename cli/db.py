"""`csm db migrate`: apply the event store's versioned schema migrations (Cassandra keyspace and tables)."""

from __future__ import annotations

import dataclasses

import click

from cli.common import CliError
from infra.config import Settings, validate_distributed


@click.group()
def db() -> None:
    """The event store's schema."""


@db.command()
@click.pass_obj
def migrate(settings: Settings) -> None:
    """Create the keyspace if missing and apply pending migrations, in order (safe to re-run).

    Run it once, before starting (or upgrading) the api, projector and worker processes: schema
    changes made by several processes at once can leave a Cassandra cluster in disagreement.
    The SQLite store creates its own schema when it opens.
    """
    try:
        validate_distributed(settings)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if settings.store != "cassandra":
        click.echo("store is sqlite: its schema is created when it opens; nothing to migrate")
        return
    from infra.eventstore.cassandra import CassandraEventStore  # cassandra-driver: only when configured

    cassandra = dataclasses.replace(settings.cassandra, auto_migrate=False)
    applied = CassandraEventStore.from_settings(cassandra).migrate_and_close()
    keyspace = settings.cassandra.keyspace
    click.echo(f"keyspace {keyspace}: applied migrations {applied}" if applied else
               f"keyspace {keyspace}: schema is current")
