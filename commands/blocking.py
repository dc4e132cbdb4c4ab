"""Where a handler's CPU-heavy steps run: signatures batched on the event loop, key generation and password
hashing on a pool of their own, work that grows with its input on the shared pool.

- **Signatures** (``signature``) of certificates and OCSP answers: every signature asked for in one turn of
  the event loop is made just after that turn, on the loop, one after another. They come back together,
  so their appends reach the primary together, which group-commits them with one fsync. ``cryptography``
  releases the GIL for part of a signature (two threads sign 1.7 times as fast as one), but a busy server
  has no idle core to give a thread: its workers and the primary already share them. The hop there and
  back cost about 80 µs of CPU and woke another core. Alternated against batches sent to a thread
  (bench/narrative.md): equal at 32 connections issuing, faster in each of 11 rounds at 256. A batch
  signs for ``SIGNATURE_SLICE`` at most before the loop takes a turn (a burst of RSA-4096 CA signatures
  would otherwise hold it for a second); slicing ECDSA batches finer than that split their commits and
  cost throughput.
- **Key generation** (RSA-4096: 0.2-1.5 s, the GIL released) **and password hashing** (argon2id: tens of
  ms) go to ``SLOW``, bounded to the cores. A burst of server-side RSA keys then waits its turn there, and
  does not take every thread of the shared pool that store reads and read-model queries need.
- **CRLs** (``in_thread``): building one lists every revocation, so its time grows without bound; it goes
  to the shared pool, where the loop keeps its turns meanwhile.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
import time
import weakref
from collections import deque
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


SIGNATURE_SLICE = 0.05  # seconds of signing at most in one turn of the loop, then the loop takes a turn


class _Signatures:
    """The signatures asked for in the current turn of each event loop, made together just after it."""

    def __init__(self) -> None:
        # the batch each loop is filling; only its scheduled callback holds it, so a loop closed before that
        # callback ran (which drops its callbacks) leaves no entry behind
        self._pending: weakref.WeakValueDictionary[asyncio.AbstractEventLoop, deque[tuple]] = (
            weakref.WeakValueDictionary())

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = deque()
            loop.call_soon(self._sign, loop, pending)  # after every callback already ready in this turn
        call = functools.partial(fn, *args, **kwargs)
        pending.append((contextvars.copy_context(), call, future))  # the caller's context, as asyncio.to_thread
        return await future

    def _sign(self, loop: asyncio.AbstractEventLoop, pending: deque[tuple]) -> None:
        """On the loop: this turn's signatures in order, for ``SIGNATURE_SLICE`` at most; what is left waits
        for the next turn, behind whatever else became ready meanwhile."""
        if self._pending.get(loop) is pending:
            del self._pending[loop]  # signatures asked for from here on make the next batch
        deadline = time.perf_counter() + SIGNATURE_SLICE
        while pending:
            context, call, future = pending.popleft()
            if future.done():  # its caller was cancelled: nobody waits for this signature
                continue
            try:
                result = context.run(call)
            except StopIteration as exc:  # a future refuses it, and the rest of the batch would hang
                future.set_exception(RuntimeError(f"signature raised StopIteration: {exc!r}"))
            except Exception as exc:  # handed to the one caller it belongs to
                future.set_exception(exc)
            else:
                future.set_result(result)
            if pending and time.perf_counter() > deadline:
                loop.call_soon(self._sign, loop, pending)
                return


SIGNATURES = _Signatures()


async def signature(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, one signature of a certificate or an OCSP answer: on the event loop, together
    with every other signature asked for in the same turn."""
    return await SIGNATURES.run(fn, *args, **kwargs)


async def in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on the shared pool: work that grows with its input (a CRL lists every
    revocation), which would hold the event loop for too long."""
    return await asyncio.to_thread(fn, *args, **kwargs)
