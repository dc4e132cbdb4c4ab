"""`csm audit`: verify every hash chain and signed checkpoint; write a checkpoint now."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from cli.common import echo_json, hold_data_dir, runtime_for
from cli.errors import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, CliError
from cli.metrics_file import metrics_file_option, recorded_run
from cli.progress import position_progress, progress_bar
from domain.verification import Problem, VerifyReport
from infra.audit.verify import verify_store
from infra.config import Settings
from infra.data_lock import DataDirUnavailable, unused, writable
from infra.distributed import close_store, read_only_store
from infra.eventstore.sqlite import ImmutableUnsafe

SHOWN = 20  # further problems listed after the first broken link


def verify_data_dir(settings: Settings, *, show_progress: bool = True, witness_file: Path | None = None,
                    anchor_file: Path | None = None, immutable: bool = False) -> VerifyReport:
    """Verify the store read-only: no writer, no key generation, no read-model changes, no file changed.
    ``immutable``: the directory cannot be written by this process, and no process writes it (``unused``)."""
    if not settings.events_db.exists():
        raise CliError(f"{settings.data_dir} is not initialised (no events.db); nothing to verify", EXIT_USAGE)
    try:
        store = read_only_store(settings, immutable=immutable)  # reads only: SQLite opened with mode=ro
    except ImmutableUnsafe as exc:
        raise CliError(f"{exc}; nothing was verified", EXIT_USAGE) from None
    outside = {"witness_file": witness_file, "anchor_file": anchor_file}
    try:
        if not show_progress:
            return verify_store(settings, store, **outside)
        head = store.head_position_sync()  # fails (unreadable file) before the bar is drawn
        with progress_bar() as progress:
            task = progress.add_task("verifying", total=head)
            return verify_store(settings, store, position_progress(progress, task), **outside)
    except ValueError as exc:  # an anchor file that is not one
        raise CliError(str(exc), EXIT_USAGE) from None
    finally:
        close_store(store)


def print_report(report: VerifyReport) -> None:
    rows = [("events", f"{report.events:,}"), ("streams", f"{report.streams:,}"),
            ("checkpoints", f"{report.checkpoints:,}"), ("last position", f"{report.last_position:,}"),
            ("sealed position", f"{report.sealed_position:,}"), ("unsealed events", f"{report.unsealed_events:,}"),
            ("trust anchor", report.trust_anchor), ("witness", report.witness or "-")]
    for label, value in rows:
        click.echo(f"{label + ':':<17} {value}")
    if report.ok:
        click.echo("result:           OK, every chain and checkpoint verifies")
        return
    click.echo(f"result:           FAILED, {len(report.problems)} problem(s)")
    first = report.first_problem
    if first is not None:
        click.echo("first broken link:")
        for label, value in (("stream", first.stream_id), ("tenant", first.tenant_id), ("version", first.version),
                             ("position", first.position), ("kind", first.kind), ("detail", first.detail)):
            click.echo(f"  {label + ':':<10} {'-' if value is None else value}")
    further = report.problems[1:]
    if further:
        click.echo(f"and {len(further)} further problem(s):")
        for problem in further[:SHOWN]:
            click.echo(f"  - {describe(problem)}")
        if len(further) > SHOWN:
            click.echo(f"  … {len(further) - SHOWN} more; `csm audit verify --json` lists them all")


def describe(problem: Problem) -> str:
    where = [f"position {problem.position}"] if problem.position is not None else []
    if problem.stream_id is not None:
        where.append(f"stream {problem.stream_id}" + (f" v{problem.version}" if problem.version is not None else ""))
    if problem.tenant_id is not None:
        where.append(f"tenant {problem.tenant_id}")
    return f"{problem.kind}" + (f" at {', '.join(where)}" if where else "") + f": {problem.detail}"


@click.group()
def audit() -> None:
    """The audit trail: verification and checkpoints."""


@audit.command()
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--witness", "witness_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A copy of audit-witness.json kept outside the data directory (default: its own).")
@click.option("--anchor", "anchor_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A copy of keys/audit-keys.pub.json kept outside the data directory (default: its "
              "own): every checkpoint must be signed by each key it names.")
@metrics_file_option
@click.pass_obj
def verify(settings: Settings, as_json: bool, quiet: bool, witness_file: Path | None,
           anchor_file: Path | None, metrics_file: Path | None) -> None:
    """Re-verify every hash chain and signed checkpoint against the audit keys, and the log's length against
    the witness.

    Whoever can edit the data directory can also replace its witness and keys: give copies kept elsewhere with
    --witness and --anchor. A store with events and no witness is a problem (a cut tail cannot be seen).

    A directory this process cannot write (a `csm backup` copy on read-only media) is verified read-only, without
    the data-directory lock, with SQLite's immutable mode: refused while a csm process uses the directory, or
    while events.db-wal holds data (copy the directory somewhere writable and verify the copy).

    Exit status 0: everything verifies; 1: a problem was found (the first broken link is
    named); 2: the data directory cannot be read or verified. With --metrics-file, the run is recorded for
    node_exporter's textfile collector (csm_audit_verify_*: the alerts on a failed or a missed run read it).
    """
    with recorded_run(metrics_file, "audit_verify") as run:
        report = _verify(settings, quiet, witness_file, anchor_file)
        run.count(events=report.events, problems=len(report.problems), unsealed_events=report.unsealed_events)
        run.success = report.ok
    if as_json:
        echo_json(report)
    else:
        print_report(report)
    raise click.exceptions.Exit(EXIT_OK if report.ok else EXIT_PROBLEM)


def _verify(settings: Settings, quiet: bool, witness_file: Path | None, anchor_file: Path | None) -> VerifyReport:
    immutable = settings.events_db.exists() and not writable(settings.data_dir)
    with contextlib.ExitStack() as held:
        if immutable:  # no shared lock (nothing can restore into it either): make sure nothing writes it instead
            try:
                held.enter_context(unused(settings.data_dir))
            except DataDirUnavailable as exc:
                raise CliError(f"{exc}; nothing was verified", EXIT_USAGE) from None
        elif settings.events_db.exists():  # not in verify_data_dir: restore calls it holding the lock exclusively
            hold_data_dir(settings)
        return verify_data_dir(settings, show_progress=not quiet, witness_file=witness_file,
                               anchor_file=anchor_file, immutable=immutable)


@audit.command()
@click.pass_obj
def checkpoint(settings: Settings) -> None:
    """Seal everything written so far in signed checkpoints, now."""
    with runtime_for(settings) as runtime:
        written = runtime.checkpointer.seal_all()
        head = runtime.store.head_position_sync()
    click.echo(f"wrote {written} checkpoint(s); the log's head is position {head}")
