"""`csm keys`: the key vault's key-encryption keys: status, rotation, re-wrap and retirement."""

from __future__ import annotations

import click
import msgspec

from cli.common import (EXIT_PROBLEM, EXIT_USAGE, CliError, command_context, echo_json, id_table, print_table,
                        run_async, runtime_for)
from cli.progress import position_progress, progress_bar
from commands.keks import (RetireKek, RewrapKeys, RotateKek, kek_status, retire_kek, rewrap_keys, rotate_kek)
from domain.vault import PROVIDERS, KekUsage, RewrapCounts
from infra.config import Settings

PROVIDER = click.Choice(PROVIDERS)


@click.group()
def keys() -> None:
    """Key-encryption keys (KEKs) of the key vault: which wrap what, rotate, re-wrap, retire."""


@keys.command("status")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout instead of a table.")
@click.pass_obj
def status(settings: Settings, as_json: bool) -> None:
    """Every KEK that stored keys name, that wraps new keys, or that was retired: rows per tenant, and whether it
    can be used right now (its key file present and readable; its token logs in and holds its key object).

    Nothing is unwrapped. Exit 1 (after the output) when a KEK that wraps new keys or still wraps stored keys is
    unavailable, or the configured provider cannot be opened (a token absent, a wrong PIN, a missing master.key):
    issuing or signing with those keys would fail now. A retired KEK is not checked."""
    with runtime_for(settings, require_kek=False) as runtime:  # the table matters most when the default is gone
        usage = run_async(kek_status(command_context(), runtime.services))
        default_unavailable = runtime.keys.default_unavailable if runtime.keys is not None else None
    if as_json:
        echo_json(usage)
    else:
        table = id_table("provider", "kek id", "rows", "tenants", "wraps new keys of", "retired", "usable now",
                         ids={"kek id"})
        for kek in usage:
            table.add_row(kek.provider, kek.kek_id, f"{sum(kek.rows.values()):,}",
                          ", ".join(f"{tenant} {count:,}" for tenant, count in sorted(kek.rows.items())) or "-",
                          ", ".join(kek.current_for) or "-", kek.retired_at.isoformat() if kek.retired_at else "-",
                          _availability(kek))
        print_table(table, footer=f"configured provider (CSM_KEK_PROVIDER): {settings.kek_provider}; "
                                  "'*': every tenant without a KEK of its own")
    missing = [kek.kek_id for kek in usage if kek.needed and kek.available is False]
    if default_unavailable:
        unopened = CliError(f"the configured KEK provider {settings.kek_provider} (CSM_KEK_PROVIDER) cannot be "
                            f"opened: {default_unavailable}; no new key can be wrapped, and `csm serve` refuses to "
                            "start until it can", EXIT_PROBLEM)
        if not missing:
            raise unopened
        unopened.show()
    if missing:
        raise CliError(f"{len(missing)} KEKs in use are unavailable: {', '.join(missing)}", EXIT_PROBLEM)


def _availability(kek: KekUsage) -> str:
    if kek.available is None:
        return "-"
    return "available" if kek.available else f"unavailable: {kek.unavailable_reason}"


def _run_with_bar(label: str, start) -> object:
    """``start(progress_callback)`` on the event loop, with a progress bar on stderr for the rows it re-wraps."""
    with progress_bar(rate=False) as progress:
        task = progress.add_task(label, total=None)
        return run_async(start(position_progress(progress, task)))


def _report(counts: RewrapCounts) -> None:
    """The re-wrap's outcome on stderr; exit 1 unless every row of the scope is under its target KEK."""
    click.echo(f"re-wrapped {counts.rewrapped:,} keys under {', '.join(counts.to_kek_ids) or '-'} "
               f"(from {', '.join(counts.from_kek_ids) or '-'}); changed meanwhile {counts.changed:,}; "
               f"failed {len(counts.failed):,}; remaining {counts.remaining:,}", err=True)
    for key_id in counts.failed:
        click.echo(f"  cannot unwrap {key_id} under its KEK (see the log); it stays as it was", err=True)
    if counts.stopped:
        raise CliError(f"re-wrap stopped: {counts.stopped}; run it again when the KEK answers", EXIT_PROBLEM)
    if counts.failed or counts.remaining:
        raise CliError(f"{counts.remaining:,} keys are not under their target KEK yet; run `csm keys rewrap` again",
                       EXIT_PROBLEM)


@keys.command("rotate-kek")
@click.option("--tenant", "tenant_id", default=None, help="The tenant whose KEK to rotate.")
@click.option("--all-tenants", is_flag=True, help="Every tenant (a key file: one new KEK for all; a token: one each).")
@click.option("--provider", type=PROVIDER, default=None, help="The provider  [default: CSM_KEK_PROVIDER]")
@click.option("--rewrap/--no-rewrap", default=True, show_default=True,
              help="Re-wrap the tenant's stored keys under the new KEK at once.")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
@click.pass_obj
def rotate(settings: Settings, tenant_id: str | None, all_tenants: bool, provider: str | None, rewrap: bool,
           as_json: bool) -> None:
    """Make a new KEK version; new keys are wrapped under it at once, old KEKs still unwrap until retired."""
    if (tenant_id is None) == (not all_tenants):
        raise CliError("name --tenant T or --all-tenants", EXIT_USAGE)
    command = msgspec.convert({"tenant_id": tenant_id, "provider": provider, "rewrap": rewrap}, RotateKek)
    if provider and provider != settings.kek_provider:
        click.echo(f"note: new keys are wrapped by {settings.kek_provider} (CSM_KEK_PROVIDER) until it names "
                   f"{provider}", err=True)
    with runtime_for(settings) as runtime:
        if rewrap:
            done = _run_with_bar("re-wrapping", lambda bar: rotate_kek(command, command_context(),
                                                                       runtime.services, progress=bar))
        else:
            done = run_async(rotate_kek(command, command_context(), runtime.services))
    if as_json:
        echo_json(done)
    for new in done.rotated:
        click.echo(f"new KEK {new.kek_id} ({new.provider}) wraps new keys of {new.tenant or 'every tenant'}; "
                   f"replaces {', '.join(new.replaces)}", err=True)
    if done.rewrap is not None:
        _report(done.rewrap)


@keys.command("rewrap")
@click.option("--tenant", "tenant_id", default=None, help="Only this tenant's keys  [default: every tenant's]")
@click.option("--to-provider", type=PROVIDER, default=None,
              help="Move the keys to this provider's current KEK  [default: CSM_KEK_PROVIDER]")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
@click.pass_obj
def rewrap(settings: Settings, tenant_id: str | None, to_provider: str | None, as_json: bool) -> None:
    """Re-wrap stored keys' data keys under the current KEK of each tenant (the keys themselves do not change).

    Safe to interrupt and to run again: each key moves in its own transaction, checked before it is written."""
    command = msgspec.convert({"tenant_id": tenant_id, "to_provider": to_provider}, RewrapKeys)
    if to_provider and to_provider != settings.kek_provider:
        click.echo(f"note: new keys are still wrapped by {settings.kek_provider} (CSM_KEK_PROVIDER)", err=True)
    with runtime_for(settings) as runtime:
        counts = _run_with_bar("re-wrapping", lambda bar: rewrap_keys(command, command_context(), runtime.services,
                                                                      progress=bar))
    if as_json:
        echo_json(counts)
    _report(counts)


@keys.command("retire-kek")
@click.argument("kek_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def retire(settings: Settings, kek_id: str, yes: bool) -> None:
    """Destroy a KEK (delete its key file, or its key on the token). Refused while it wraps new keys or any stored
    key names it. Back up first: a key wrapped under a destroyed KEK can never be read again."""
    if not yes:
        click.confirm(f"destroy {kek_id}?", abort=True, err=True)
    with runtime_for(settings) as runtime:
        done = run_async(retire_kek(RetireKek(kek_id=kek_id), command_context(), runtime.services))
    click.echo(f"retired {done.kek_id} ({done.provider}): destroyed", err=True)
