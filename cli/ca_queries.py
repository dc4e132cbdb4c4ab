"""`csm ca` queries: the CAs in the read models, one CA or its chain, and the key algorithms on offer."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from cli.common import CliError, echo_json, id_table, print_table, query_views
from commands import profiles
from infra.config import Settings
from infra.crypto.engine import CryptographyPki
from projections import cas as read_model


@click.command("list")
@click.option("--tenant", "tenant_id", default=None)
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout instead of a table.")
@click.pass_obj
def list_(settings: Settings, tenant_id, as_json: bool) -> None:
    """List CAs."""
    rows = query_views(settings, read_model.search, None, tenant_id=tenant_id, limit=10_000)
    if as_json:
        echo_json(rows)
        return
    table = id_table("ca id", "tenant", "name", "kind", "origin", "status", "algorithm", "parent", "not after",
                     ids={"ca id", "tenant", "parent"})
    for row in rows:
        table.add_row(row["ca_id"], row["tenant_id"], row["name"], row["kind"], row["origin"], row["status"],
                      row["algorithm"], row["parent_id"] or "", row["not_after"] or "")
    print_table(table)


@click.command("algorithms")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout instead of a table.")
def algorithms(as_json: bool) -> None:
    """The key algorithms this installation offers, and which a CA may use (as GET /v1/algorithms)."""
    offers = profiles.algorithm_offers(CryptographyPki().available_algorithms())
    if as_json:
        echo_json(offers)
        return
    table = id_table("name", "family", "available", "allowed for CA", ids={"name"})
    for offer in offers:
        table.add_row(offer.name, offer.family, _yes(offer.available), _yes(offer.allowed_for_ca))
    print_table(table)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


@click.command("show")
@click.argument("ca_id")
@click.option("--chain", is_flag=True, help="Print the PEM chain to the root instead.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def show(settings: Settings, ca_id: str, chain: bool, as_json: bool) -> None:
    """Show one CA (or its chain)."""
    row = query_views(settings, read_model.get, ca_id, None)
    if row is None:
        raise CliError(f"ca_not_found: CA {ca_id} does not exist (field: ca_id)")
    if chain:
        certs = query_views(settings, _chain, row)
        click.echo("".join(c["certificate_pem"] for c in certs), nl=False)
        return
    if as_json:
        echo_json(row)
        return
    for key, value in row.items():
        click.echo(f"{key + ':':<18} {value if value is not None else ''}")


def _chain(conn, row: dict) -> list[dict]:
    start = read_model.certificate_by_fingerprint(conn, row["tenant_id"], row["fingerprint"] or "")
    chain = read_model.chain_from(conn, row["tenant_id"], start) if start else []
    return read_model.with_links(conn, row["tenant_id"], chain, datetime.now(UTC))  # a root's unexpired links


COMMANDS = (list_, algorithms, show)  # added to `csm ca` by cli/main.py
