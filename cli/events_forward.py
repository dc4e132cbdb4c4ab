"""`csm events forward`: the event log to syslog collectors (SIEMs) in CEF, LEEF or RFC 5424 JSON, at least once."""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import click

from cli.common import EXIT_USAGE, CliError, require_initialised
from domain.siem import FACILITIES, FORMATS, FRAMINGS, MIN_MESSAGE_BYTES
from infra.config import Settings
from infra.distributed import close_store, read_only_store
from infra.siem.forwarder import Checkpoints, CheckpointBusy, ForwardOptions, connector_for, forward
from infra.siem.transport import Destination, tls_context

CHECKPOINT_FILE = "siem-forward.json"
FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def product_version() -> str:
    try:
        return version("cassandra-security-manager")
    except PackageNotFoundError:
        return "0"


def report(line: str) -> None:
    """One log line on stderr (the journal's, under systemd), stamped in UTC."""
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} csm-forward {line}", file=sys.stderr, flush=True)


def destinations(urls: tuple[str, ...], ca_file: Path | None, cert_file: Path | None,
                 key_file: Path | None, framing: str, software: str = "csm") -> list[tuple[Destination, object]]:
    """Each ``--to`` parsed, with a function that connects to it; plaintext ones warned about."""
    try:
        parsed = [Destination.parse(url) for url in urls]
    except ValueError as exc:
        raise CliError(f"--to: {exc}", EXIT_USAGE) from None
    if len({d.url for d in parsed}) != len(parsed):
        raise CliError("--to: a destination is given twice", EXIT_USAGE)
    if key_file and not cert_file:
        raise CliError("--key-file needs --cert-file", EXIT_USAGE)
    if (ca_file or cert_file) and not any(d.encrypted for d in parsed):
        raise CliError("--ca-file, --cert-file and --key-file apply to TLS destinations only (tcp+tls://, "
                       "relp+tls://)", EXIT_USAGE)
    context = None
    if any(d.encrypted for d in parsed):
        try:
            context = tls_context(ca_file, cert_file, key_file)
        except (OSError, ValueError) as exc:
            raise CliError(f"TLS files: {exc}", EXIT_USAGE) from None
    for d in parsed:
        if not d.encrypted:
            report(f"WARNING {d.url}: plaintext {d.scheme.upper()}: events cross the network unencrypted and "
                   f"unauthenticated{' and may be lost (UDP acknowledges nothing)' if d.scheme == 'udp' else ''}; "
                   f"use {'relp+tls' if d.acknowledged else 'tcp+tls'}:// in production")
    return [(d, connector_for(d, context, framing, software)) for d in parsed]


@click.command("forward")
@click.option("--to", "urls", multiple=True, required=True, metavar="URL",
              help="A collector: tcp+tls://host:6514 (verified TLS), tcp://host:514 or udp://host:514 (plaintext); "
                   "or RELP, which confirms each message: relp+tls://host:PORT (verified TLS), relp://host:PORT "
                   "(plaintext). Repeat for several.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="rfc5424-json", show_default=True,
              help="The message: CEF, LEEF 2.0, or the envelope as JSON; always in an RFC 5424 syslog header.")
@click.option("--cef-version", type=click.Choice(["0", "1"]), default="0", show_default=True,
              help="The CEF header's version (CEF:0 or CEF:1), for --format cef.")
@click.option("--ca-file", type=FILE, help="PEM CA certificates the collector's certificate must chain to "
                                           "(default: the system's trust store).")
@click.option("--cert-file", type=FILE, help="PEM client certificate (and chain), for mutual TLS.")
@click.option("--key-file", type=FILE, help="PEM private key of --cert-file, if not in it.")
@click.option("--framing", type=click.Choice(list(FRAMINGS)), default="octet-counting", show_default=True,
              help="TCP framing (RFC 6587): octet-counting (RFC 5425's), or newline for collectors that split on LF "
                   "(RELP frames every message itself).")
@click.option("--tenant", help="Send only this tenant's events (_system: the platform's).")
@click.option("--types", "type_prefixes", multiple=True, metavar="PREFIX",
              help="Send only event types starting with PREFIX (e.g. certificate. or access.denied); repeatable, "
                   "or comma-separated.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help=f"The checkpoint file (default <data dir>/{CHECKPOINT_FILE}); one per forwarder process.")
@click.option("--start", type=click.Choice(["beginning", "head"]), default="beginning", show_default=True,
              help="Where a destination with no checkpoint starts: the first event, or after the current head.")
@click.option("--hostname", default=None, help="HOSTNAME of the syslog header (default: this machine's name).")
@click.option("--facility", type=click.Choice(list(FACILITIES)), default="authpriv", show_default=True)
@click.option("--max-message-bytes", type=click.IntRange(min=MIN_MESSAGE_BYTES), default=8192, show_default=True,
              help="Longest message; a longer event's payload is cut, with a marker.")
@click.option("--status-interval", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds between status lines (position, lag, sent, failures) on stderr.")
@click.option("--once", is_flag=True, help="Send what the log holds now and exit; the first failure exits 1.")
@click.pass_obj
def forward_command(settings: Settings, urls, fmt, cef_version, ca_file, cert_file, key_file, framing, tenant, type_prefixes, checkpoint,
                    start, hostname, facility, max_message_bytes, status_interval, once) -> None:
    """Forward the event log to syslog collectors until SIGTERM or SIGINT: each event once its turn comes, in log
    order, at least once (duplicates are possible around a reconnection or restart: de-duplicate on the event id).

    Each destination's position is checkpointed after its collector acknowledged a batch; a restart resumes there.
    Over RELP the collector confirms each message, and the checkpoint never passes one it did not confirm.
    """
    require_initialised(settings)
    targets = destinations(urls, ca_file, cert_file, key_file, framing, f"csm,{product_version()}")
    prefixes = tuple(p.strip() for value in type_prefixes for p in value.split(",") if p.strip())
    options = ForwardOptions(fmt=fmt, cef_version=int(cef_version), tenant=tenant, type_prefixes=prefixes,
                             hostname=hostname or socket.gethostname(), facility=FACILITIES[facility],
                             max_bytes=max_message_bytes, product_version=product_version(), start=start,
                             poll_interval=settings.poll_interval, status_interval=status_interval, once=once)
    try:
        checkpoints = Checkpoints(checkpoint or settings.data_dir / CHECKPOINT_FILE)
    except (CheckpointBusy, ValueError) as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    store = read_only_store(settings)
    try:
        forwarders = forward(store, targets, checkpoints, options, stop, report)
    finally:
        close_store(store)
        checkpoints.close()
    failed = [f for f in forwarders if f.error is not None]
    if failed:
        raise CliError("; ".join(f"{f.destination.url}: {f.error}" for f in failed))
    report("stopped")
