"""Progress bars on stderr (rich), for the commands that show one: `audit verify`, `events export`,
`projections rebuild`, and the re-wrapping `keys` commands."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn,
                           TimeElapsedColumn)
from rich.text import Text


def stderr_console() -> Console:
    return Console(stderr=True)


class RateColumn(ProgressColumn):
    """Events per second, from rich's own speed estimate."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} events/s" if speed else "", style="progress.data.speed")


def progress_bar(console: Console | None = None, *, rate: bool = True) -> Progress:
    """A progress bar on stderr, refreshed by its callers (no refresh thread to outlive the command)."""
    columns: list[ProgressColumn] = [TextColumn("[progress.description]{task.description}"), BarColumn(),
                                     MofNCompleteColumn()]
    if rate:
        columns.append(RateColumn())
    columns.append(TimeElapsedColumn())
    return Progress(*columns, console=console or stderr_console(), auto_refresh=False, transient=False)


def position_progress(progress: Progress, task_id, start: int = 0,
                      every: float = 0.1) -> Callable[[int, int], None]:
    """A ``progress(position, head)`` callback that advances ``task_id`` from ``start``, redrawing ≤10×/s."""
    last = 0.0

    def update(position: int, head: int) -> None:
        nonlocal last
        now = time.monotonic()
        redraw = now - last >= every or position >= head
        if redraw:
            last = now
        progress.update(task_id, completed=max(position - start, 0), total=max(head - start, 0), refresh=redraw)

    return update
