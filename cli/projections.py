"""`csm projections`: where every read model stands, and rebuilding one from the log."""

from __future__ import annotations

import click
from cli.common import (EXIT_USAGE, CliError, echo_json, id_table, print_table, require_initialised,
                        runtime_for)
from cli.progress import position_progress, progress_bar
from infra.config import Settings
from infra.distributed import close_store, read_only_store
from projections.registry import all_projectors
from projections.runner import ProjectionRunner
from projections.views_db import EMPTIED


def known_projections() -> list[str]:
    return sorted(p.name for p in all_projectors())


@click.group()
def projections() -> None:
    """Read models: status and rebuild."""


@projections.command()
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout instead of a table.")
@click.pass_obj
def status(settings: Settings, as_json: bool) -> None:
    """Position, head, lag and version of every read model."""
    require_initialised(settings)
    if not settings.views_db.exists():
        raise CliError(f"{settings.views_db} does not exist; run `csm init`", EXIT_USAGE)
    # Not the runtime: opening it would already rebuild stale read models, and this only looks.
    store = read_only_store(settings)
    try:
        rows = ProjectionRunner(store, settings.views_db, all_projectors()).status()
    finally:
        close_store(store)
    for row in rows:
        row["stale"] = row["rebuilding"]  # built by other code: a server rebuilds it as it starts, while it serves
    if as_json:
        echo_json(rows)
        return
    table = id_table("name", "position", "head", "lag", "version", "state", ids={"name"})
    for row in rows:
        version = str(row["version"])
        if row["stale"]:
            version += f" (code {row['code_version']})"
        if row["stale"]:
            state = "rebuilding" if row["version"] == EMPTIED else "stale"
        else:
            state = "unknown" if row["code_version"] is None else ("behind" if row["lag"] else "current")
        table.add_row(row["name"], f"{row['position']:,}", f"{row['head']:,}", f"{row['lag']:,}", version, state)
    print_table(table)


@projections.command()
@click.argument("name")
@click.pass_obj
def rebuild(settings: Settings, name: str) -> None:
    """Replay the whole log into shadow tables for projection NAME, then swap them in atomically."""
    known = known_projections()
    if name not in known:
        raise CliError(f"unknown projection {name!r}; known projections: {', '.join(known)}", EXIT_USAGE)
    with runtime_for(settings) as runtime:
        head = runtime.store.head_position_sync()
        with progress_bar() as progress:
            task = progress.add_task(f"rebuilding {name}", total=head)
            result = runtime.runner.rebuild(name, position_progress(progress, task))
    click.echo(f"rebuilt {name}: {result['events']:,} events in {result['seconds']:.2f} s "
               f"({result['events_per_second']:,.0f} events/s), now at position {result['position']:,}")
