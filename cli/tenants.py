"""`csm tenant`: tenant commands through their handlers, and queries over the read model."""

from __future__ import annotations

from datetime import date, timedelta

import click
import msgspec
from cli.common import (CliError, catch_up, cli_principal, command_context, echo_json, id_table, print_table, query_runtime_views,
                        run_async, runtime_for)
from cli.ca import convert, execute
from commands import compromise_report, compromised_keys
from commands import tenants as cmd
from commands.runtime import CommandResult
from infra.config import Settings
from domain.compliance import SEVERITIES, at_least
from projections import analytics, compliance
from projections import tenants as read_model

PAGE = 500


@click.group()
def tenant() -> None:
    """Create, inspect, rename, suspend and resume tenants."""


def _execute(settings: Settings, handler, command_type, **fields) -> CommandResult:
    command = msgspec.convert(fields, command_type)
    with runtime_for(settings) as runtime:
        result = run_async(handler(command, command_context(), runtime.services))
        catch_up(runtime, strict=False)  # a running server sees the change at once
        return result


def _report(verb: str, tenant_id: str, result: CommandResult) -> None:
    if not result.changed:
        click.echo(f"tenant {tenant_id}: nothing to change (version {result.version})")
    else:
        click.echo(f"{verb} tenant {tenant_id} (version {result.version}, position {result.global_position})")


@tenant.command("create")
@click.argument("tenant_id")
@click.option("--name", required=True, help="Display name.")
@click.pass_obj
def create(settings: Settings, tenant_id: str, name: str) -> None:
    """Create tenant TENANT_ID (lower-case letters, digits and '-')."""
    _report("created", tenant_id, _execute(settings, cmd.create_tenant, cmd.CreateTenant, tenant_id=tenant_id,
                                           name=name))


@tenant.command("rename")
@click.argument("tenant_id")
@click.option("--name", required=True, help="The new display name.")
@click.pass_obj
def rename(settings: Settings, tenant_id: str, name: str) -> None:
    """Rename tenant TENANT_ID."""
    _report("renamed", tenant_id, _execute(settings, cmd.rename_tenant, cmd.RenameTenant, tenant_id=tenant_id,
                                           name=name))


@tenant.command("suspend")
@click.argument("tenant_id")
@click.option("--reason", required=True, help="Why (recorded in the audit log).")
@click.pass_obj
def suspend(settings: Settings, tenant_id: str, reason: str) -> None:
    """Suspend tenant TENANT_ID."""
    _report("suspended", tenant_id, _execute(settings, cmd.suspend_tenant, cmd.SuspendTenant, tenant_id=tenant_id,
                                             reason=reason))


@tenant.command("resume")
@click.argument("tenant_id")
@click.option("--reason", required=True, help="Why (recorded in the audit log).")
@click.pass_obj
def resume(settings: Settings, tenant_id: str, reason: str) -> None:
    """Resume suspended tenant TENANT_ID."""
    _report("resumed", tenant_id, _execute(settings, cmd.resume_tenant, cmd.ResumeTenant, tenant_id=tenant_id,
                                           reason=reason))


def _tenant_row(runtime, tenant_id: str) -> dict:
    """The tenant's read-model row, caught up first; a CLI error if there is no such tenant."""
    row = query_runtime_views(runtime, read_model.get, tenant_id, None)
    if row is None:
        raise CliError(f"tenant_not_found: tenant {tenant_id} does not exist (field: tenant_id)")
    return row


def _quota(value: str | None, current: int | None, option: str) -> int | None:
    if value is None:
        return current
    if value.lower() in ("none", "unlimited"):
        return None
    try:
        return int(value)
    except ValueError:
        raise CliError(f"invalid input: {option} is a whole number, or 'none' for unlimited") from None


@tenant.command("quotas")
@click.argument("tenant_id")
@click.option("--max-cas", help="CAs the tenant may hold (not revoked); 'none': unlimited.")
@click.option("--max-certificates", help="Live certificates (not revoked, expired or renewed); 'none': unlimited.")
@click.option("--max-issuances-per-day", help="Certificates issued per UTC day, renewals included; 'none': unlimited.")
@click.pass_obj
def quotas(settings: Settings, tenant_id: str, max_cas: str | None, max_certificates: str | None,
           max_issuances_per_day: str | None) -> None:
    """Set tenant TENANT_ID's quotas; a quota not given keeps its value."""
    with runtime_for(settings) as runtime:
        row = _tenant_row(runtime, tenant_id)
    current = row["quotas"]
    wanted = {"max_cas": _quota(max_cas, current["max_cas"], "--max-cas"),
              "max_certificates": _quota(max_certificates, current["max_certificates"], "--max-certificates"),
              "max_issuances_per_day": _quota(max_issuances_per_day, current["max_issuances_per_day"],
                                              "--max-issuances-per-day")}
    _report("set the quotas of", tenant_id, _execute(settings, cmd.set_tenant_quotas, cmd.SetTenantQuotas,
                                                     tenant_id=tenant_id, quotas=wanted))


@tenant.command("usage")
@click.argument("tenant_id")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
@click.pass_obj
def usage(settings: Settings, tenant_id: str, as_json: bool) -> None:
    """What tenant TENANT_ID holds against its quotas (counted on the read models, caught up first)."""
    with runtime_for(settings) as runtime:
        row = _tenant_row(runtime, tenant_id)
        counted = run_async(runtime.services.usage.count(tenant_id, runtime.services.clock.now()))
    held = msgspec.to_builtins(counted.usage)
    if as_json:
        echo_json({"tenant_id": tenant_id, "quotas": row["quotas"], "usage": held})
        return
    for name, quota in (("cas", "max_cas"), ("certificates", "max_certificates"),
                        ("issuances_today", "max_issuances_per_day")):
        limit = row["quotas"][quota]
        click.echo(f"{name + ':':<17} {held[name]} of {'unlimited' if limit is None else limit}")


@tenant.command("compliance")
@click.argument("tenant_id")
@click.option("--json", "as_json", is_flag=True, help="The whole report as JSON on stdout.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=1000, show_default=True,
              help="Findings listed at most (all are counted).")
@click.option("--fail-on", type=click.Choice(SEVERITIES), default=None,
              help="Exit with status 3 when a finding this severe or more is found (a CI gate).")
@click.pass_obj
def compliance_report(settings: Settings, tenant_id: str, as_json: bool, limit: int, fail_on: str | None) -> None:
    """Tenant TENANT_ID's compliance report: what is wrong with its certificates and CAs now, most severe first (the
    rules are in docs/security.md, "Compliance rules")."""
    with runtime_for(settings) as runtime:
        catch_up(runtime)
        conn = runtime.runner.connection()

        async def query(fn, *args):
            return fn(conn, *args)
        try:
            report = run_async(compliance.report(query, runtime.services, cli_principal(), tenant_id,
                                                 runtime.services.clock.now(), limit))
        finally:
            conn.close()
    if as_json:
        echo_json(report)
    else:
        table = id_table("severity", "rule", "subject", "detail", ids={"subject"})
        for finding in report.findings:
            table.add_row(finding.severity, finding.rule, f"{finding.subject_type} {finding.subject_id}",
                          finding.detail)
        counts = ", ".join(f"{n} {severity}" for severity, n in report.counts.items())
        more = f" (first {limit} listed)" if report.truncated else ""
        s = report.summary
        print_table(table, footer=f"tenant {tenant_id}: {counts}{more}; {s.live_certificates} live certificate(s), "
                                  f"{s.cas_in_service} CA(s) in service, {s.compromised_keys} compromised key(s)")
    if fail_on is not None and at_least(report.findings, fail_on):
        raise click.exceptions.Exit(3)


@tenant.command("analytics")
@click.argument("tenant_id")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), default=None, help="First UTC day (default: 29 days "
              "before --until).")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Last UTC day (default: today).")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
@click.pass_obj
def analytics_report(settings: Settings, tenant_id: str, since, until, as_json: bool) -> None:
    """Daily counts of tenant TENANT_ID's issuances, revocations, renewals, key exports, CA events, compromised keys,
    CRL publications and access denials."""
    with runtime_for(settings) as runtime:
        _tenant_row(runtime, tenant_id)
        last: date = until.date() if until else runtime.services.clock.now().date()
        first: date = since.date() if since else last - timedelta(days=analytics.DEFAULT_DAYS - 1)
        if first > last or (last - first).days >= analytics.MAX_DAYS:
            raise click.BadParameter(f"from {first} to {last}: --since must not be after --until, and the range at "
                                     f"most {analytics.MAX_DAYS} days", param_hint="--since")
        counted = query_runtime_views(runtime, analytics.report, tenant_id, first, last)
    if as_json:
        echo_json(counted)
        return
    table = id_table("event", "by", "count", ids=())
    for metric, by in sorted(counted.totals.items()):
        for dimension, n in sorted(by.items()):
            table.add_row(metric, dimension or "-", str(n))
    print_table(table, footer=f"tenant {tenant_id}, {first} to {last} (UTC days), {len(counted.days)} day(s) "
                              "with events")


@tenant.command("compromised-keys")
@click.argument("tenant_id")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
@click.pass_obj
def compromised(settings: Settings, tenant_id: str, as_json: bool) -> None:
    """Keys reported compromised in tenant TENANT_ID (SHA-256 of the SubjectPublicKeyInfo): none of them is certified
    again in it. Read from the tenant's own stream."""
    query = compromised_keys.ListCompromisedKeys(tenant_id=tenant_id)
    with runtime_for(settings) as runtime:
        listed = run_async(compromised_keys.list_compromised_keys(query, command_context(), runtime.services))
    if as_json:
        echo_json(listed.items)
        return
    table = id_table("public key sha256", "reason", "reported at", "reported by", ids={"public key sha256"})
    for item in listed.items:
        by = f"certificate {item.certificate_id}" if item.certificate_id else f"CA {item.subject_ca_id}"
        half = f", ML-DSA half of {item.alternative_of[:12]}…" if item.alternative_of else ""
        table.add_row(item.public_key_sha256, item.reason, item.reported_at.isoformat(),
                      f"{by} ({item.through}{half})")
    print_table(table, footer=f"{len(listed.items)} compromised key(s) in tenant {tenant_id}")


@tenant.command("report-compromised-key")
@click.argument("tenant_id")
@click.option("--certificate", "certificate_id", default=None, help="The certificate whose key was compromised.")
@click.option("--ca", "ca_id", default=None, help="Or the CA (a root) whose every key was compromised.")
@click.option("--key", "public_key_sha256", default=None, metavar="SHA256",
              help="With --ca: only this one of its keys (a root's old key after a rollover).")
@click.option("--invalidity-date", default=None, metavar="RFC3339", help="When the key was (suspected) compromised.")
@click.pass_obj
def report_compromised(settings: Settings, tenant_id: str, certificate_id: str | None, ca_id: str | None,
                       public_key_sha256: str | None, invalidity_date: str | None) -> None:
    """Report a key compromised when revoking will not: its certificate was revoked for another reason already (a
    revocation is final), or it is a root's (a root is never revoked). The key is never certified again in the
    tenant, and its certificates still trusted are revoked key_compromise."""
    command = convert({"tenant_id": tenant_id, "certificate_id": certificate_id, "ca_id": ca_id,
                       "public_key_sha256": public_key_sha256, "invalidity_date": invalidity_date},
                      compromise_report.ReportKeyCompromise)
    outcome = execute(settings, compromise_report.report_key_compromise, command)
    keys = ", ".join(outcome.public_keys_sha256)
    click.echo(f"{'reported' if outcome.result.changed else 'already reported'} compromised in tenant {tenant_id}: "
               f"{keys}" + (f"; revoked: {', '.join(outcome.revoked)}" if outcome.revoked else ""))
    for revoked in outcome.revoked_ca_certificates:  # another CA's cross-certificate of the key, a root's link
        click.echo(f"revoked CA {revoked.issuer_ca_id}'s certificate {revoked.serial_hex} of CA {revoked.ca_id}'s key")


@tenant.command("lift-compromised-key")
@click.argument("tenant_id")
@click.option("--key", "public_key_sha256", required=True, metavar="SHA256",
              help="The blocked key, as `csm tenant compromised-keys` lists it.")
@click.option("--reason", required=True, help="Why the report was in error (kept in the audit trail).")
@click.option("--every-report", is_flag=True, help="The key was reported from several sources: each was in error.")
@click.pass_obj
def lift_compromised(settings: Settings, tenant_id: str, public_key_sha256: str, reason: str,
                     every_report: bool) -> None:
    """Lift a compromised-key block reported in error (permission key:unblock): the key, and its hybrid partner, may be
    certified in the tenant again. Nothing is un-revoked; a key a compromise rollover rolled away from stays blocked."""
    command = convert({"tenant_id": tenant_id, "public_key_sha256": public_key_sha256, "reason": reason,
                       "every_report": every_report}, compromised_keys.LiftKeyCompromise)
    outcome = execute(settings, compromised_keys.lift_key_compromise, command)
    click.echo(f"block lifted in tenant {tenant_id}: {', '.join(outcome.public_keys_sha256)} (nothing was "
               "un-revoked)")


def _all_tenants(conn, status: str | None) -> list[dict]:
    rows: list[dict] = []
    after = None
    while page := read_model.search(conn, None, status=status, after=after, limit=PAGE):
        rows.extend(page)
        after = page[-1]["tenant_id"]
        if len(page) < PAGE:
            break
    return rows


@tenant.command("list")
@click.option("--status", type=click.Choice(["active", "suspended"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout instead of a table.")
@click.pass_obj
def list_(settings: Settings, status: str | None, as_json: bool) -> None:
    """List tenants (from the read model, caught up first)."""
    with runtime_for(settings) as runtime:
        catch_up(runtime)
        conn = runtime.runner.connection()
        try:
            rows = _all_tenants(conn, status)
        finally:
            conn.close()
    if as_json:
        echo_json(rows)
        return
    table = id_table("tenant", "name", "status", "version", "created", "updated", ids={"tenant"})
    for row in rows:
        table.add_row(row["tenant_id"], row["name"], row["status"], str(row["version"]), row["created_at"],
                      row["updated_at"])
    print_table(table, f"{len(rows)} tenant(s)")


@tenant.command("show")
@click.argument("tenant_id")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
@click.pass_obj
def show(settings: Settings, tenant_id: str, as_json: bool) -> None:
    """Show one tenant."""
    with runtime_for(settings) as runtime:
        row = _tenant_row(runtime, tenant_id)
    if as_json:
        echo_json(row)
        return
    width = max(len(key) for key in row)
    for key, value in row.items():
        if key == "quotas":
            value = ", ".join(f"{k}={'unlimited' if v is None else v}" for k, v in value.items())
        click.echo(f"{key + ':':<{width + 1}} {value}")
