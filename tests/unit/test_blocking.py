"""The pool of its own that key generation and password hashing run on (commands/blocking.py)."""

from __future__ import annotations

import threading

import pytest

from commands import blocking


async def test_key_work_runs_on_the_bounded_slow_pool_and_passes_arguments():
    name = await blocking.slow(lambda: threading.current_thread().name)
    assert name.startswith("csm-slow")
    assert await blocking.slow(divmod, 17, 5) == (3, 2)
    assert blocking.SLOW.executor()._max_workers == blocking.SLOW.threads >= 2


async def test_an_exception_in_key_work_reaches_the_caller():
    with pytest.raises(ZeroDivisionError):
        await blocking.slow(divmod, 1, 0)
