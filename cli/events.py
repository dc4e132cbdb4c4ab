"""`csm events export`: the log as JSON Lines, in position order, streamed in batches."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import click
import msgspec

from cli.common import CliError, position_progress, progress_bar, require_initialised
from domain.events import EventEnvelope
from infra.config import Settings
from infra.distributed import close_store, read_only_store
from infra.eventstore.sqlite import SQLiteEventStore

BATCH = 5000
_decoder = msgspec.json.Decoder(EventEnvelope)
_encoder = msgspec.json.Encoder(order="sorted")


def export_lines(store: SQLiteEventStore, after: int, out, progress=None) -> int:
    """Write every event after ``after`` as one JSON object per line; return how many."""
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
            lines.append(_encoder.encode(msgspec.structs.replace(envelope, hash=row.hash)))
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
@click.pass_obj
def export(settings: Settings, after: int, out: str) -> None:
    """Every event (the full envelope with hash and global_position) as JSON Lines."""
    require_initialised(settings)
    store = read_only_store(settings)  # reads only: SQLite not opened for writing
    try:
        if out == "-":
            stream = sys.stdout.buffer
            written = export_lines(store, after, stream)
            stream.flush()
            return
        path = Path(out)
        partial = path.with_name(path.name + ".partial")
        fd = os.open(partial, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        try:
            head = store.head_position_sync()
            with os.fdopen(fd, "wb") as handle, progress_bar() as progress:
                task = progress.add_task("exporting", total=max(head - after, 0))
                written = export_lines(store, after, handle, position_progress(progress, task, after))
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
