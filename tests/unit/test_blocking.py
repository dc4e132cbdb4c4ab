"""The pools that key generation, password hashing and signatures run on (commands/blocking.py)."""

from __future__ import annotations

import asyncio
import contextvars
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


async def test_signatures_asked_for_in_one_turn_run_as_one_job_on_a_pool_thread():
    loop_thread = threading.get_ident()

    def sign(n: int) -> tuple[int, int]:
        return n * n, threading.get_ident()

    results = await asyncio.gather(*(blocking.signature(sign, n) for n in range(10)))
    assert [square for square, _ in results] == [n * n for n in range(10)]
    threads = {thread for _, thread in results}
    assert len(threads) == 1 and loop_thread not in threads  # one job, off the event loop


async def test_a_turn_with_more_signatures_than_a_batch_is_split(monkeypatch):
    sizes = []
    real = blocking._sign_all

    def recording(loop, batch):
        sizes.append(len(batch))
        real(loop, batch)

    monkeypatch.setattr(blocking, "_sign_all", recording)
    answers = await asyncio.gather(*(blocking.signature(abs, -n) for n in range(blocking.SIGNATURE_BATCH * 2 + 5)))
    assert answers == list(range(blocking.SIGNATURE_BATCH * 2 + 5))
    assert sizes == [blocking.SIGNATURE_BATCH, blocking.SIGNATURE_BATCH, 5]


async def test_a_failed_signature_reaches_only_its_caller_and_keyword_arguments_pass():
    def sign(n: int, *, fail: bool = False) -> int:
        if fail:
            raise ValueError(f"bad key {n}")
        return n

    results = await asyncio.gather(blocking.signature(sign, 1), blocking.signature(sign, 2, fail=True),
                                   blocking.signature(sign, 3), return_exceptions=True)
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad key 2"


async def test_a_cancelled_caller_leaves_the_others_their_results_and_context_is_carried():
    seen = contextvars.ContextVar("seen", default="none")
    seen.set("request-7")
    release = threading.Event()

    def slow_sign() -> str:
        release.wait(5)
        return seen.get()

    first = asyncio.ensure_future(blocking.signature(slow_sign))
    second = asyncio.ensure_future(blocking.signature(lambda: seen.get()))
    await asyncio.sleep(0.05)
    first.cancel()
    release.set()
    assert await second == "request-7"  # the caller's context, as asyncio.to_thread carries it
    with pytest.raises(asyncio.CancelledError):
        await first


def test_each_event_loop_batches_its_own_signatures():
    for _ in range(2):  # a second loop after the first has closed (tests, the CLI)
        assert asyncio.run(blocking.signature(divmod, 7, 2)) == (3, 1)
