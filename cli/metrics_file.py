"""``--metrics-file PATH`` for batch commands (audit verify, cluster deploy, verify and rollback): the run, recorded for
node_exporter's textfile collector however the command ends (infra/metrics_file.py writes it)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import click

from infra.metrics_file import COUNTS, write_metrics_file


def metrics_file_option(command):
    return click.option("--metrics-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        metavar="PATH", help="Write the run's outcome, duration and counts to PATH (a .prom file "
                        "in node_exporter's textfile-collector directory), replaced atomically, whatever the "
                        "outcome.")(command)


class Run:
    """What the command reports: ``succeeded`` once it knows, and its counts. Unset: the run failed."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.success = False
        self.counts: dict[str, int] = {}

    def count(self, **counts: int) -> None:
        """Set counts: only the ones ``infra.metrics_file.COUNTS`` declares for the command (KeyError otherwise)."""
        for name in counts:
            COUNTS[self.command][name]  # noqa: B018 - a typo fails here, not when the file is written
        self.counts.update(counts)


@contextlib.contextmanager
def recorded_run(path: Path | None, command: str) -> Iterator[Run]:
    """The run's metrics are written to ``path`` (if given) when the block ends, by an error or an exit too. A
    file that cannot be written is a warning on stderr: the command's own outcome and exit status stand."""
    if path is not None and not path.parent.is_dir():
        raise click.BadParameter(f"{path.parent} is not a directory", param_hint="--metrics-file")
    run, started = Run(command), time.monotonic()
    try:
        yield run
    finally:
        if path is not None:
            try:
                write_metrics_file(path, command, success=run.success, ended_at=time.time(),
                                   duration=time.monotonic() - started, counts=run.counts)
            except OSError as exc:
                click.echo(f"warning: the metrics file {path} was not written ({exc})", err=True)
