"""What every `csm` command shares: settings, the CLI principal, errors, tables (progress bars: cli/progress.py).

Expected failures (an uninitialised data directory, a refused command, bad input, an
unreadable file) become one ``error: …`` line on stderr and an exit status (``translate``,
applied by the root group in cli/main.py); only bugs print a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import sqlite3
import sys
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any

import click
import msgspec

from cli.errors import EXIT_PROBLEM, EXIT_USAGE, CliError
from commands.authz import Principal
from commands.ids import uuid7
from commands.runtime import CommandContext, CommandResult
from domain.errors import DomainError
from infra.keystore.kek import KekError
from infra.audit.keys import PUBLIC_FILE
from infra.config import Settings
from infra.data_lock import DataDirUnavailable, DataDirUnwritable, shared
from infra.eventstore.group_commit import StoreUnavailable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from infra.bootstrap import Runtime


def domain_message(code: str, detail: str, field: str | None) -> str:
    return f"{code}: {detail}" + (f" (field: {field})" if field else "")


def validation_field(message: str) -> str | None:
    """``$.tenant_id`` in msgspec's "… - at `$.tenant_id`" becomes ``tenant_id``."""
    marker = "- at `$"
    if marker not in message:
        return None
    return message.rsplit(marker, 1)[1].rstrip("`").lstrip(".") or None


def translate(exc: BaseException) -> CliError | None:
    """The one-line error for an expected failure, or None for a bug."""
    violations = getattr(exc, "violations", None)
    if isinstance(exc, DomainError) and violations:  # a policy refusal: every rule broken, one per line
        return CliError(f"{exc.code}:\n" + "\n".join(f"  {v.field}: {v.rule}: {v.message}" for v in violations),
                        EXIT_PROBLEM)
    if isinstance(exc, DomainError):
        return CliError(domain_message(exc.code, exc.detail, exc.field), EXIT_PROBLEM)
    if isinstance(exc, msgspec.ValidationError):
        message = str(exc)
        return CliError(domain_message("invalid_input", message.split(" - at `")[0], validation_field(message)),
                        EXIT_PROBLEM)
    if isinstance(exc, StoreUnavailable):
        return CliError(f"store_unavailable: {exc}", EXIT_PROBLEM)
    if isinstance(exc, sqlite3.Error):
        return CliError(f"database: {exc}", EXIT_USAGE)
    if isinstance(exc, BrokenPipeError):
        return None  # click handles a closed stdout (`csm events export | head`)
    if isinstance(exc, KekError):  # unsafe or missing key-encryption key files: say which, no traceback
        return CliError(f"key vault: {exc}", EXIT_USAGE)
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return CliError(f"{exc.strerror or exc}{where}", EXIT_USAGE)
    return None


# settings and the runtime -------------------------------------------------------------

def require_initialised(settings: Settings) -> None:
    """Refuse (exit 2) unless ``csm init`` has run here; never create keys behind the operator's back.

    Then hold the data directory's shared lock until the command ends (``hold_data_dir``): every
    command that opens the directory's stores passes here first.
    """
    if not settings.events_db.exists():
        raise CliError(f"{settings.data_dir} is not initialised (no events.db); run "
                       f"`csm --data-dir {settings.data_dir} init` first", EXIT_USAGE)
    require_keys_if_events(settings)
    hold_data_dir(settings)


def hold_data_dir(settings: Settings) -> None:
    """Share ``<data>/run/data-dir.lock`` until the command ends (infra/data_lock.py), refusing during a restore
    and where the lock file cannot be written.

    Held by the root click context, once per directory, and released when it closes: a restore cannot
    start under a running command, nor a command write into files a restore is moving.
    """
    ctx = click.get_current_context().find_root()
    key = f"csm.data-dir-lock:{settings.data_dir.resolve()}"
    if key in ctx.meta:
        return
    try:
        ctx.with_resource(shared(settings.data_dir))
    except DataDirUnavailable as exc:  # busy: exit 1, as a refused command; unwritable: 2, as a directory not set up
        raise CliError(f"{exc}; nothing was done", EXIT_USAGE if isinstance(exc, DataDirUnwritable)
                       else EXIT_PROBLEM) from None
    ctx.meta[key] = True


def require_keys_if_events(settings: Settings) -> None:
    """A store without its audit keys must not get new ones: they would not match the ledger."""
    if settings.events_db.exists() and not (settings.keys_dir / PUBLIC_FILE).exists():
        raise CliError(f"the audit keys are missing from {settings.keys_dir} but events.db exists; restore "
                       "them (`csm restore`) rather than creating new ones", EXIT_USAGE)


@contextlib.contextmanager
def runtime_for(settings: Settings, *, require_kek: bool = True) -> Iterator[Runtime]:
    """The opened runtime of an initialised data directory, always closed afterwards (``require_kek``: see
    ``open_runtime``)."""
    # the composition root (every adapter) is imported by the commands that open it, not by those reading a store alone
    from infra.bootstrap import open_runtime

    require_initialised(settings)
    runtime = open_runtime(settings, require_kek=require_kek)
    try:
        yield runtime
    finally:
        runtime.close()


def query_views(settings: Settings, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(conn, *args, **kwargs)`` over the read models, caught up to the head of the log first."""
    with runtime_for(settings) as runtime:
        return query_runtime_views(runtime, fn, *args, **kwargs)


def query_runtime_views(runtime: Runtime, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The same, with a runtime already open."""
    catch_up(runtime)
    conn = runtime.runner.connection()
    try:
        return fn(conn, *args, **kwargs)
    finally:
        conn.close()


def catch_up(runtime: Runtime, *, strict: bool = True) -> int:
    """Bring every read model up to the head of the log. Returns events applied.

    After a write this makes the change visible at once to a server sharing the data
    directory (its queries and token checks read the same views.db); there it is best
    effort (``strict=False``): the write has happened, whatever the read models do.
    """
    applied = 0
    try:
        while batch := runtime.runner.catch_up_once():
            applied += batch
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, KeyError, sqlite3.Error) as exc:
        message = f"the read models cannot catch up ({exc}); run `csm audit verify`"
        if strict:
            raise CliError(message, EXIT_PROBLEM) from exc
        click.echo(f"warning: {message}", err=True)
    return applied


# who is acting --------------------------------------------------------------------------

def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no name for this uid (containers)
        return str(os.getuid())


def cli_principal() -> Principal:
    """The operator at the host's shell: a platform admin, authenticated by being on the machine."""
    return Principal(id=f"cli:{os_user()}", auth_method="local-cli", roles=frozenset({"platform-admin"}))


def command_context() -> CommandContext:
    return CommandContext(principal=cli_principal(), correlation_id=uuid7())


def run_async(coroutine) -> Any:
    return asyncio.run(coroutine)


# output -----------------------------------------------------------------------------------
# rich (about 25 ms of a start) is imported by what draws a table: most commands print plain lines.

def stdout_console() -> Console:
    """Tables on stdout; wide enough not to fold columns when piped."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160, soft_wrap=False)


def id_table(*headers: str, ids: Collection[str]) -> Table:
    """A table whose ``ids`` columns print whole on one line (never wrapped or cut short), so ids can be copied."""
    from rich.table import Table

    table = Table()
    for header in headers:
        table.add_column(header, no_wrap=header in ids, overflow="fold" if header in ids else "ellipsis")
    return table


def print_table(table: Table, footer: str | None = None) -> None:
    """``table`` on stdout, its id columns always whole: never wrapped or cut short, so ids can be copied.

    Rich narrows a table to its console, cutting even no_wrap columns as a last resort, so the console
    grows as needed: on a terminal to the table's minimum width (other columns wrap), piped to its full
    width (nothing wraps, one line per row for grep and awk).
    """
    from rich.console import Console
    from rich.measure import Measurement

    console = stdout_console()
    measured = Measurement.get(console, console.options.update_width(100_000), table)
    needed = measured.minimum if console.is_terminal else measured.maximum
    if needed > console.width:
        console = Console(width=needed, soft_wrap=False)
    console.print(table)
    if footer is not None:
        console.print(footer)


def echo_json(data: Any) -> None:
    click.echo(msgspec.json.encode(data).decode())


def report_change(what: str, result: CommandResult) -> None:
    """One line on stdout: what a command did and where the log stands, or that it had nothing to change."""
    if not result.changed:
        click.echo(f"{what}: nothing to change (version {result.version})")
    else:
        click.echo(f"{what} (version {result.version}, position {result.global_position})")
