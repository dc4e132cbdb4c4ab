"""Where a handler's CPU-heavy steps run, off the event loop: signatures in batches, key generation and
password hashing on a pool of their own.

- **Signatures** (``signature``): every signature asked for in one turn of the event loop goes to the loop's
  shared pool as one job, and their results come back together. A hop to a thread and back costs about
  80 µs of CPU on this VM (each cross-thread wake-up is an inter-processor interrupt), more than an ECDSA
  P-384 signature; a batch pays it once. Results that come back together also send their appends to the
  primary together, which then group-commits them with one fsync. Alternated at 32 and 256 connections
  issuing (bench/narrative.md): about +8 % and +9 % (medians of nine rounds) against a hop per signature.
  Signing on the event loop itself was faster at 32 connections and slower at 256: the appends then reach
  the writer one by one, three times the commits.
- **Key generation** (RSA-4096: 0.2-1.5 s, the GIL released) **and password hashing** (argon2id: tens of
  ms) go to ``SLOW``, bounded to the cores. A burst of server-side RSA keys then waits its turn there, and
  does not take every thread of the shared pool that signatures, store reads and read-model queries need.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class _SlowPool:
    """One process-wide executor, made on first use (every CLI command opens a runtime and most never need it)."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def threads(self) -> int:
        return max(2, os.cpu_count() or 2)

    def executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="csm-slow")
            return self._executor


SLOW = _SlowPool()


async def slow(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on the slow pool: key generation and password hashing."""
    return await asyncio.get_running_loop().run_in_executor(SLOW.executor(), functools.partial(fn, *args, **kwargs))


SIGNATURE_BATCH = 64  # signatures per job at most: a larger turn's are split, so no one waits behind hundreds


class _Signatures:
    """The signatures asked for in the current turn of each event loop, sent to a thread as one job."""

    def __init__(self) -> None:
        self._pending: dict[asyncio.AbstractEventLoop, list[tuple]] = {}

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        pending = self._pending.setdefault(loop, [])
        if not pending:
            loop.call_soon(self._send, loop)  # after every callback already ready in this turn
        call = functools.partial(fn, *args, **kwargs)
        pending.append((contextvars.copy_context(), call, future))  # the caller's context, as asyncio.to_thread
        return await future

    def _send(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._pending.pop(loop, [])
        for start in range(0, len(batch), SIGNATURE_BATCH):
            loop.run_in_executor(None, _sign_all, loop, batch[start:start + SIGNATURE_BATCH])


def _sign_all(loop: asyncio.AbstractEventLoop, batch: list[tuple]) -> None:
    """In a pool thread: each signature in turn; then one wake-up of the loop settles them all."""
    outcomes = []
    for context, call, future in batch:
        try:
            outcomes.append((future, context.run(call), None))
        except BaseException as exc:  # handed to the one caller it belongs to
            outcomes.append((future, None, exc))
    try:
        loop.call_soon_threadsafe(_settle, outcomes)
    except RuntimeError:  # the loop closed meanwhile: nobody is waiting
        pass


def _settle(outcomes: list[tuple]) -> None:
    for future, result, exc in outcomes:
        if future.done():  # its caller was cancelled
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)


SIGNATURES = _Signatures()


async def signature(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, a signature (certificate, CRL, OCSP answer): on the shared pool, batched per turn
    of the event loop."""
    return await SIGNATURES.run(fn, *args, **kwargs)
