"""`csm cluster status`: what each node holds as far as the store knows (the deployments read model), read-only.

One line per node of the tenant: the certificate it holds and since when, how (deployed or restored by a rollback),
its last verification, the generations it keeps for a rollback, and a deployment started there and never recorded
as done (FAILED, with the step and the reason, when its failure was recorded). No SSH and no TLS: ``csm cluster
verify`` asks the nodes; this asks the store.
"""

from __future__ import annotations

import click

from cli.common import echo_json, id_table, print_table, query_views
from infra.config import Settings
from projections import deployments as deployments_model


def _verification(row: dict) -> str:
    if row["verified"] is None:
        return "not verified"
    return f"{'verified' if row['verified'] else 'NOT VERIFIED'} {row['verified_at'] or ''}".strip()


def _generations(row: dict) -> str:
    """The certificates NAME.previous, NAME.previous.2 ... hold, newest first (- for files of no deployment)."""
    held = [g.get("certificate_id") or "-" for g in row["generations"]]
    return ", ".join(held) if held else "none"


def _holds(row: dict) -> str:
    """The certificate the node holds; files no recorded deployment put there (a rollback to files of before the
    store knew the node); or nothing yet, when its only deployment never finished."""
    if row["certificate_id"]:
        return row["certificate_id"]
    return "(files of no deployment)" if row["since"] else "(none deployed yet)"


def _unfinished(row: dict) -> str:
    """A deployment started there and never recorded as done: FAILED (the step and the reason recorded) or not."""
    if not row["started_certificate_id"]:
        return ""
    if row["failed_at"]:
        return (f"{row['started_certificate_id']} FAILED at {row['failed_at']} ({row['failed_step']}: "
                f"{row['failed_reason']})")
    return f"{row['started_certificate_id']} since {row['started_at']}"


@click.command("status")
@click.option("--tenant", "tenant_id", default="platform", show_default=True)
@click.option("--node", "name", default=None, help="Only this node (its NAME as deploy took it).")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The nodes' records as JSON.")
@click.pass_obj
def status(settings: Settings, tenant_id: str, name: str | None, limit: int, as_json: bool) -> None:
    """What each node of --tenant holds as recorded: certificate, since, verification, generations kept for a
    rollback, and any deployment started and not recorded as done (FAILED, with its step and reason, when its failure
    was recorded). Exit status 1 if --node has no record."""
    rows = query_views(settings, deployments_model.nodes, tenant_id, name=name, limit=limit)
    if name is not None and not rows:
        raise click.ClickException(f"no deployment is recorded for node {name} in tenant {tenant_id}") from None
    if as_json:
        echo_json(rows)
        return
    table = id_table("node", "certificate", "state", "since", "verification", "generations", "unfinished",
                     ids={"node", "certificate"})
    for row in rows:
        unfinished = _unfinished(row)
        table.add_row(row["node"], _holds(row), row["state"],
                      row["since"] or "", _verification(row), _generations(row), unfinished)
    print_table(table, footer=f"{len(rows)} node(s) in tenant {tenant_id}; `csm cluster verify` asks the nodes")
