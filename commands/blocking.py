"""Where a handler's CPU-heavy steps run: short signatures inline, key generation and password hashing on
a pool of their own.

- A signature by an ECDSA or EdDSA key takes well under a millisecond (ECDSA P-384: about 0.3 ms). It runs
  on the event loop: a hop to a thread and back costs about 80 µs of CPU by itself, a quarter of the
  signature, on every certificate and OCSP answer.
- Signatures by RSA, ML-DSA and hybrid keys (milliseconds) go to the event loop's shared pool.
- Key generation (RSA-4096: 0.2-1.5 s, the GIL released) and password hashing (argon2id: tens of ms) go to
  ``SLOW``, bounded to the cores. A burst of server-side RSA keys then waits its turn there, and does not
  take every thread of the shared pool that store reads, read-model queries and the other signatures need.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from domain.algorithms import ALGORITHMS

T = TypeVar("T")

INLINE_SIGNATURE_FAMILIES = frozenset({"ecdsa", "eddsa"})


async def signature(algorithm: str | None, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, a signature by a key of ``algorithm``: inline when that is cheap (see above)."""
    known = ALGORITHMS.get(algorithm or "")
    if known is not None and known.family in INLINE_SIGNATURE_FAMILIES:
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)


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
