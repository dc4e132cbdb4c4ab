"""Start several processes at the same instant and collect what each reports: for races between processes."""

from __future__ import annotations

from collections.abc import Callable
from multiprocessing.context import BaseContext


def start_together(context: BaseContext, target: Callable, args: tuple, count: int, timeout: float = 60) -> list:
    """Run ``target(*args, start, results)`` in ``count`` processes released by one event; each puts one
    result on ``results``. Returns the results (in arrival order) once every process has exited with 0."""
    start, results = context.Event(), context.Queue()
    processes = [context.Process(target=target, args=(*args, start, results)) for _ in range(count)]
    for process in processes:
        process.start()
    start.set()
    reported = [results.get(timeout=timeout) for _ in processes]
    for process in processes:
        process.join(timeout=timeout)
        assert process.exitcode == 0
    return reported
