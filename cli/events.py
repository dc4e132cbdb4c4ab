"""`csm events export`: the log as JSON Lines (or CEF, LEEF, RFC 5424 lines), in position order, in batches;
`csm events forward` (cli/events_forward.py)."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import click
import msgspec

from cli.common import CliError, require_initialised
from cli.progress import position_progress, progress_bar
from cli.events_forward import forward_command, product_version
from domain.events import EventEnvelope
from domain.siem import FORMATS, MIN_MESSAGE_BYTES, record
from infra.config import Settings
from infra.distributed import close_store, read_only_store
from infra.eventstore.sqlite import SQLiteEventStore

BATCH = 5000
_decoder = msgspec.json.Decoder(EventEnvelope)
_encoder = msgspec.json.Encoder(order="sorted")


def siem_encoder(fmt: str, max_bytes: int, cef_version: int = 0) -> Callable[[EventEnvelope], bytes]:
    """One event as a line in a SIEM format (domain/siem.py ``record``)."""
    version, hostname = product_version(), socket.gethostname()
    return lambda envelope: record(envelope, fmt, product_version=version, hostname=hostname, max_bytes=max_bytes,
                                   cef_version=cef_version).encode("utf-8")


def export_lines(store: SQLiteEventStore, after: int, out, progress=None,
                 encode: Callable[[EventEnvelope], bytes] = _encoder.encode) -> int:
    """Write every event after ``after`` as one line (a JSON object, unless ``encode`` says otherwise); return
    how many."""
    written, position = 0, after
    while rows := store.read_raw(position, BATCH):
        lines = []
        for row in rows:
            body = row.body if isinstance(row.body, bytes) else str(row.body).encode()
            try:
                envelope = _decoder.decode(body)
            except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
                raise CliError(f"the event at position {row.position} cannot be decoded ({exc}); "
                               "run `csm audit verify`") from exc
            lines.append(encode(msgspec.structs.replace(envelope, hash=row.hash)))
        out.write(b"\n".join(lines) + b"\n")
        written += len(rows)
        position = rows[-1].position
        if progress:
            progress(position, store.head_position_sync())
    return written


@click.group()
def events() -> None:
    """The event log."""


@events.command("export")
@click.option("--after", type=click.IntRange(min=0), default=0, show_default=True,
              help="Export only events after this global position.")
@click.option("--out", "out", default="-", show_default=True, help="File to write, or - for stdout.")
@click.option("--format", "fmt", type=click.Choice(("jsonl", *FORMATS)), default="jsonl", show_default=True,
              help="jsonl: the envelopes; cef, leef: one CEF or LEEF record a line; rfc5424-json: one RFC 5424 "
                   "syslog message a line (as `csm events forward` sends them).")
@click.option("--max-message-bytes", type=click.IntRange(min=MIN_MESSAGE_BYTES), default=8192, show_default=True,
              help="cef, leef, rfc5424-json: the longest line; a longer event's payload is cut, with a marker.")
@click.option("--cef-version", type=click.Choice(["0", "1"]), default="0", show_default=True,
              help="cef: the header's version (CEF:0 or CEF:1).")
@click.pass_obj
def export(settings: Settings, after: int, out: str, fmt: str, max_message_bytes: int, cef_version: str) -> None:
    """Every event (the full envelope with hash and global_position) as JSON Lines, or in a SIEM format."""
    require_initialised(settings)
    encode = _encoder.encode if fmt == "jsonl" else siem_encoder(fmt, max_message_bytes, int(cef_version))
    store = read_only_store(settings)  # reads only: SQLite not opened for writing
    try:
        if out == "-":
            stream = sys.stdout.buffer
            written = export_lines(store, after, stream, encode=encode)
            stream.flush()
            return
        path = Path(out)
        partial = path.with_name(path.name + ".partial")
        fd = os.open(partial, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        try:
            head = store.head_position_sync()
            with os.fdopen(fd, "wb") as handle, progress_bar() as progress:
                task = progress.add_task("exporting", total=max(head - after, 0))
                written = export_lines(store, after, handle, position_progress(progress, task, after), encode)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, path)
        except BaseException:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
        click.echo(f"exported {written:,} event(s) to {path}", err=True)
    finally:
        close_store(store)


events.add_command(forward_command)
