"""`csm discover`: scan endpoints for the certificates they serve, from this machine, and record what was seen.

The scan runs here (``infra.discovery``), never in the server; its observations are recorded through the
``RecordObservations`` command, so that the discovery read model, the listing and the compliance report see them.
Addresses from a CIDR range that did not answer at all (refused, timeout, no route) are not recorded: a sweep
meets far more empty addresses than nodes. An endpoint named on its own is recorded whatever it answered.
"""

from __future__ import annotations

import click

from cli.common import (CliError, catch_up, command_context, echo_json, id_table, print_table, query_views, run_async,
                        runtime_for)
from commands import discovery as cmd
from commands.ids import uuid7
from domain import discovery
from domain.discovery import Observation, TargetError
from infra import discovery as scanner
from infra.config import Settings
from projections import discovery as read_model
from projections import tenants as tenants_model


@click.group()
def discover() -> None:
    """Find the certificates that nodes serve, and whether this service issued them."""


def _observation_row(o: Observation, match: dict | None) -> tuple[str, str, str, str]:
    if o.error is not None:
        return o.endpoint, o.error, o.reason or "", ""
    what = (match or {}).get("certificate_id") or "not issued here"
    return o.endpoint, what, o.subject_dn or "", o.not_after.isoformat() if o.not_after else ""


@discover.command("scan")
@click.option("--tenant", "tenant_id", required=True, help="The tenant the observations are recorded in.")
@click.argument("targets", nargs=-1, required=True)
@click.option("--port", "ports", type=click.IntRange(1, 65535), multiple=True,
              help=f"Port for targets without one (repeat; default {', '.join(map(str, discovery.DEFAULT_PORTS))}).")
@click.option("--timeout", type=click.FloatRange(0.1, 120), default=scanner.DEFAULT_TIMEOUT, show_default=True,
              help="Seconds per endpoint: connection and TLS handshake.")
@click.option("--concurrency", type=click.IntRange(1, 1024), default=scanner.DEFAULT_CONCURRENCY, show_default=True,
              help="Endpoints scanned at once.")
@click.option("--json", "as_json", is_flag=True, help="The recorded observations and the result as JSON.")
@click.pass_obj
def scan(settings: Settings, tenant_id: str, targets: tuple[str, ...], ports: tuple[int, ...], timeout: float,
         concurrency: int, as_json: bool) -> None:
    """Scan TARGETS (host, host:port, [v6]:port, or a CIDR range, at most 4096 endpoints in all) over TLS, without
    verifying what is served, and record what each endpoint served in tenant --tenant."""
    try:
        endpoints = discovery.parse_targets(targets, ports or discovery.DEFAULT_PORTS)
    except TargetError as exc:
        raise CliError(str(exc), 2) from None
    if query_views(settings, tenants_model.get, tenant_id, None) is None:  # before a scan that may take minutes
        raise CliError(f"tenant_not_found: tenant {tenant_id} does not exist (field: tenant_id)")
    observed = run_async(scanner.scan(endpoints, timeout=timeout, concurrency=concurrency))
    kept = [o for target, o in zip(endpoints, observed)
            if not (target.swept and o.error in discovery.CONNECTION_ERRORS)]
    if not kept:
        click.echo(f"no endpoint of {len(endpoints)} answered; nothing recorded", err=True)
        return
    command = cmd.RecordObservations(tenant_id=tenant_id, scan_id=uuid7(), observations=kept)
    with runtime_for(settings) as runtime:
        recorded = run_async(cmd.record_observations(command, command_context(), runtime.services))
        catch_up(runtime, strict=False)
        conn = runtime.runner.connection()
        try:
            rows = {row["endpoint"]: row for row in read_model.of_tenant(conn, tenant_id, limit=100_000)}
        finally:
            conn.close()
    if as_json:
        echo_json({"scan_id": recorded.scan_id, "scanned": len(endpoints), "recorded": len(kept),
                   "events": recorded.events, "observations": kept})
        return
    table = id_table("endpoint", "certificate", "subject / reason", "not after", ids={"endpoint", "certificate"})
    for o in kept:
        table.add_row(*_observation_row(o, rows.get(o.endpoint)))
    print_table(table, footer=f"scan {recorded.scan_id}: {len(kept)} of {len(endpoints)} endpoint(s) recorded in "
                              f"tenant {tenant_id} ({recorded.events} event(s)); `csm tenant compliance "
                              f"{tenant_id}` judges them")


def _chain_cell(row: dict) -> str:
    """How many certificates the endpoint sent after its leaf, and whether its issuer was among them."""
    if row["chain"] is None:
        return ""
    complete = discovery.chain_complete(row["issuer_dn"], row["ca_kind"],
                                        [discovery.ChainCertificate(**c) for c in row["chain"]])
    return f"{len(row['chain'])}" + {True: " (complete)", False: " (issuer missing)", None: ""}[complete]


@discover.command("list")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@click.option("--cursor", default=None, help="Go on after the page that printed it (its footer gives it).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def list_(settings: Settings, tenant_id: str, limit: int, cursor: str | None, as_json: bool) -> None:
    """The tenant's scanned endpoints: what each served when last observed (its chain, and whether it requires a
    client certificate), and the certificate it matches."""
    try:
        after = read_model.decode_cursor(cursor) if cursor else None
    except ValueError as exc:
        raise CliError(f"invalid_cursor: {exc} (field: cursor)", 2) from None
    rows = query_views(settings, read_model.of_tenant, tenant_id, after=after, limit=limit + 1)
    more = read_model.encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    rows = rows[:limit]
    if as_json:
        for row in rows:
            row.pop("certificate_pem", None)
        echo_json(rows)
        if more:
            click.echo(f"more endpoints: --cursor {more}", err=True)
        return
    table = id_table("endpoint", "observed", "certificate", "status", "subject / reason", "not after", "chain",
                     "client cert", ids={"endpoint", "certificate"})
    for row in rows:
        if row["error"]:
            table.add_row(row["endpoint"], row["observed_at"], row["error"], "", row["reason"] or "", "", "", "")
            continue
        status = row["status"] or ""
        if row["superseded_by"]:
            status = f"superseded by {row['superseded_by']}"
        table.add_row(row["endpoint"], row["observed_at"], row["certificate_id"] or "not issued here", status,
                      row["subject_dn"] or "", row["not_after"] or "", _chain_cell(row),
                      (row["client_certificate"] or "").replace("_", " "))
    footer = f"{len(rows)} endpoint(s) in tenant {tenant_id}"
    print_table(table, footer=footer + (f"; more with --cursor {more}" if more else ""))
