"""How a `csm` command fails on purpose: ``CliError`` (one ``error: …`` line on stderr) and the exit statuses.

Kept apart from cli/common.py, which opens data directories, so that the root group (cli/main.py) can name them
without importing the event store.
"""

from __future__ import annotations

from typing import Any

import click

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


class CliError(click.ClickException):
    """An expected failure: printed as ``error: <message>``, exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_PROBLEM) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)
