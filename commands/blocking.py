"""The pool where key generation and password hashing run, apart from the event loop's shared pool.

Key generation (RSA-4096: 0.2-1.5 s, the GIL released) and password hashing (argon2id: tens of ms) go to
``SLOW``, bounded to the cores. A burst of server-side RSA keys then waits its turn there, and does not take
every thread of the shared pool that signatures, store reads and read-model queries need.

Signatures stay on the shared pool (``asyncio.to_thread``), even ECDSA's 0.3 ms: signed on the event loop,
issuance over HTTP was no faster at 32 connections and 10-15 % slower at 256 (2026-12-06, bench/narrative.md),
because the primary then group-commits smaller batches.
"""

from __future__ import annotations

import asyncio
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
