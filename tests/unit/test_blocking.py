"""Where key generation, password hashing, signatures and CRLs run (commands/blocking.py)."""

from __future__ import annotations

import asyncio
import contextvars
import gc
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


async def test_signatures_asked_for_in_one_turn_are_made_together_on_the_loop_just_after_it(monkeypatch):
    loop_thread = threading.get_ident()
    batches = []
    real = blocking.SIGNATURES._sign

    def recording(loop, pending):
        batches.append(len(pending))
        real(loop, pending)

    monkeypatch.setattr(blocking.SIGNATURES, "_sign", recording)

    def sign(n: int) -> tuple[int, int]:
        return n * n, threading.get_ident()

    results = await asyncio.gather(*(blocking.signature(sign, n) for n in range(10)))
    assert [square for square, _ in results] == [n * n for n in range(10)]
    assert {thread for _, thread in results} == {loop_thread}  # no hop to a thread and back
    assert batches == [10]  # one callback made them all


async def test_a_batch_that_outlasts_its_slice_lets_the_loop_take_a_turn(monkeypatch):
    loop = asyncio.get_running_loop()
    log: list = []

    def sign(n: int) -> int:
        if n == 0:
            loop.call_soon(log.append, "another callback")
        log.append(n)
        return -n

    monkeypatch.setattr(blocking, "SIGNATURE_SLICE", 0.0)  # every signature outlasts it
    assert await asyncio.gather(*(blocking.signature(sign, n) for n in range(4))) == [0, -1, -2, -3]
    assert log == [0, "another callback", 1, 2, 3]
    log.clear()
    monkeypatch.setattr(blocking, "SIGNATURE_SLICE", 60.0)
    await asyncio.gather(*(blocking.signature(sign, n) for n in range(4)))
    assert log == [0, 1, 2, 3, "another callback"]


async def test_a_failed_signature_reaches_only_its_caller_and_keyword_arguments_pass():
    def sign(n: int, *, fail: bool = False) -> int:
        if fail:
            raise ValueError(f"bad key {n}")
        return n

    def stop() -> int:
        raise StopIteration("not a signature's way to fail, but it must not hang the batch")

    results = await asyncio.wait_for(asyncio.gather(
        blocking.signature(sign, 1), blocking.signature(sign, 2, fail=True), blocking.signature(stop),
        blocking.signature(sign, 3), return_exceptions=True), 5)
    assert results[0] == 1 and results[3] == 3
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad key 2"
    assert isinstance(results[2], RuntimeError) and "StopIteration" in str(results[2])


async def test_a_cancelled_caller_gets_no_signature_and_the_others_keep_their_context():
    seen = contextvars.ContextVar("seen", default="none")
    seen.set("request-7")
    made = []

    def sign(n: int) -> str:
        made.append(n)
        return seen.get()

    first = asyncio.ensure_future(blocking.signature(sign, 1))
    second = asyncio.ensure_future(blocking.signature(sign, 2))
    await asyncio.sleep(0)  # both have asked; the batch is made after this turn
    first.cancel()
    assert await second == "request-7"  # the caller's context, as asyncio.to_thread carries it
    with pytest.raises(asyncio.CancelledError):
        await first
    assert made == [2]  # no CPU spent on an answer nobody waits for


def test_each_event_loop_batches_its_own_signatures_and_a_closed_loop_leaves_nothing_behind():
    for _ in range(2):  # a second loop after the first has closed (tests, the CLI)
        assert asyncio.run(blocking.signature(divmod, 7, 2)) == (3, 1)
    loop = asyncio.new_event_loop()
    task = loop.create_task(blocking.signature(divmod, 7, 2))
    loop.call_soon(loop.stop)
    loop.run_forever()  # the task has asked; the batch is still to be made when the loop closes
    assert loop in blocking.SIGNATURES._pending
    task._log_destroy_pending = False  # it never finishes: its loop is closed under it
    loop.close()
    del loop, task
    gc.collect()
    assert len(blocking.SIGNATURES._pending) == 0


async def test_work_that_grows_with_its_input_runs_on_a_pool_thread_with_the_callers_context():
    seen = contextvars.ContextVar("seen", default="none")
    seen.set("crl-3")

    def build(n: int, *, scale: int) -> tuple[int, str, int]:
        return n * scale, seen.get(), threading.get_ident()

    value, context, thread = await blocking.in_thread(build, 4, scale=3)
    assert (value, context) == (12, "crl-3") and thread != threading.get_ident()
