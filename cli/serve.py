"""`csm init` and `csm serve`: a data directory prepared, and the HTTP API run from it."""

from __future__ import annotations

import dataclasses
import sys

import click

from cli.auth import first_login_hints
from cli.common import hold_data_dir, require_keys_if_events
from cli.errors import CliError
from infra.audit.keys import PUBLIC_FILE
from infra.bootstrap import initialise
from infra.config import Settings, read_metrics_token
from infra.data_lock import DataDirUnavailable, hold_while_running


@click.command()
@click.pass_obj
def init(settings: Settings) -> None:
    """Create the data directory, audit keys, ledger and read models (idempotent).

    A read model whose projector changed since it was built is emptied, not rebuilt: the server rebuilds it in
    the background once it serves (a CLI command that reads it first rebuilds it itself)."""
    existed = settings.events_db.exists()
    require_keys_if_events(settings)
    hold_data_dir(settings)  # refused during a restore, which refuses while this writes
    initialise(settings, rebuild="background").close()
    click.echo(f"{'data directory ready' if existed else 'initialised'}: {settings.data_dir}")
    click.echo(f"  event log:          {settings.events_db}")
    click.echo(f"  read models:        {settings.views_db}")
    click.echo(f"  audit public keys:  {settings.keys_dir / PUBLIC_FILE}  (the trust anchor: keep a copy elsewhere)")
    click.echo(f"  audit witness:      {settings.witness_file}")
    click.echo(f"next: csm --data-dir {settings.data_dir} admin create-token --name me  (an API key), or")
    click.echo(f"      csm --data-dir {settings.data_dir} user create admin --role platform-admin --password-file F")


WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # listen on every address: not an address to put into a certificate


@click.command()
@click.option("--host", default=None, help="Address to listen on  [default: CSM_HOST or 127.0.0.1]")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port  [default: CSM_PORT or 8000]")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="HTTP worker processes beside one primary (the writer)  [default: CSM_WORKERS or one per CPU]")
@click.pass_obj
def serve(settings: Settings, host: str | None, port: int | None, workers: int | None) -> None:
    """Initialise if needed, then run the HTTP API until interrupted."""
    settings = dataclasses.replace(settings, host=host or settings.host,
                                   port=settings.port if port is None else port,
                                   workers=settings.workers if workers is None else workers,
                                   # the server's own address, not what an earlier run recorded
                                   public_url=None if settings.public_url_recorded else settings.public_url,
                                   public_url_recorded=False)
    require_keys_if_events(settings)
    try:  # the workers read it too; a missing or weak scrape token is refused here, before anything starts
        read_metrics_token(settings)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:  # held until this process ends: `csm restore` refuses to replace files a running server has open
        hold_while_running(settings.data_dir)
    except DataDirUnavailable as exc:
        raise CliError(str(exc)) from None
    initialise(settings, rebuild="background").close()  # a changed read model is rebuilt while the server serves
    from api import server  # lazily: the API is the only part of csm that needs the web stack

    settings, sock = server.listen(settings)  # port 0: the port chosen, before anything names it
    settings.record_public_url()  # the CLI's certificates name the URLs this server's do
    processes = f", {settings.workers} HTTP workers and a primary" if settings.workers > 1 else ""
    click.echo(f"serving http://{settings.host}:{settings.port} from {settings.data_dir}{processes}", err=True)
    if settings.public_url is None and settings.host in WILDCARD_HOSTS:
        click.echo(f"warning: certificates issued now name {settings.base_url} in their CRL, OCSP and CA-issuer "
                   "URLs, which no relying party can reach; set CSM_PUBLIC_URL to the address they use", err=True)
    for line in first_login_hints(settings):
        click.echo(line, err=True)
    try:
        status = server.serve(settings, sock)
    except KeyboardInterrupt:  # Ctrl+C: uvicorn has already shut down gracefully and re-raised it
        status = 0
    click.echo("stopped", err=True)
    sys.exit(status)
