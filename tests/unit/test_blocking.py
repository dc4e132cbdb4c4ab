"""Where handlers' CPU-heavy steps run (commands/blocking.py): cheap signatures inline, key work on its own pool."""

from __future__ import annotations

import threading

import pytest

from commands import blocking


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519", "ed448"])
async def test_a_signature_by_an_elliptic_curve_key_runs_on_the_event_loop(algorithm):
    assert await blocking.signature(algorithm, threading.get_ident) == threading.get_ident()


@pytest.mark.parametrize("algorithm", ["rsa-3072", "rsa-4096", "ml-dsa-65", "hybrid-p384-ml-dsa-65", None, "nonsense"])
async def test_a_slower_or_unknown_signature_runs_on_a_thread(algorithm):
    assert await blocking.signature(algorithm, threading.get_ident) != threading.get_ident()


async def test_key_work_runs_on_the_bounded_slow_pool_and_passes_arguments():
    name = await blocking.slow(lambda: threading.current_thread().name)
    assert name.startswith("csm-slow")
    assert await blocking.slow(divmod, 17, 5) == (3, 2)
    assert blocking.SLOW.executor()._max_workers == blocking.SLOW.threads >= 2


async def test_an_exception_in_key_work_reaches_the_caller():
    with pytest.raises(ZeroDivisionError):
        await blocking.slow(divmod, 1, 0)
