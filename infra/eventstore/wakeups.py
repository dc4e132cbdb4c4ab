"""Wake-ups for appends made in this process: what every store's ``wait_for_append`` and ``subscribe`` wait on."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from commands.waits import wait_set


class AppendWakeups:
    """Events of waiting coroutines (each on its own loop), set from the writer thread after a commit."""

    def __init__(self) -> None:
        self._listeners: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._lock = threading.Lock()

    def notify(self) -> None:
        """Wake every waiter; thread-safe (the writer thread calls it)."""
        with self._lock:
            listeners = list(self._listeners)
        for loop, event in listeners:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # loop closed
                with self._lock:
                    self._listeners.discard((loop, event))

    @contextlib.contextmanager
    def listening(self, event: asyncio.Event | None = None) -> Iterator[asyncio.Event]:
        """An event (``event``, or a new one) set at every append while the block runs; arm it (clear) before
        reading, so none is missed."""
        entry = (asyncio.get_running_loop(), event or asyncio.Event())
        with self._lock:
            self._listeners.add(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                self._listeners.discard(entry)

    async def wait(self, timeout: float) -> None:
        """Return at the next append in this process, or after ``timeout``."""
        with self.listening() as appended:
            await wait_set(appended, timeout)
