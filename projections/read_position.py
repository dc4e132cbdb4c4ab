"""Where the read models stand, and who waits for it: read-your-writes waits (``wait_for``, bounded) and events set
whenever the position moves (``listening``). The projection runner moves it; any coroutine on its loop may wait."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class ReadPosition:
    """The position every read model has applied (``value``), and its waiters."""

    def __init__(self) -> None:
        self.value = 0
        self._advanced: asyncio.Condition | None = None
        self._advanced_loop: asyncio.AbstractEventLoop | None = None
        self._listeners: set[asyncio.Event] = set()  # set whenever the position moves (see ``listening``)

    def condition(self) -> asyncio.Condition:
        """The condition that announces progress, made for the running loop (a runner may outlive a loop)."""
        loop = asyncio.get_running_loop()
        if self._advanced is None or self._advanced_loop is not loop:
            self._advanced, self._advanced_loop = asyncio.Condition(), loop
        return self._advanced

    async def wait_for(self, position: int, timeout: float) -> bool:
        """Wait (bounded) until every read model has applied ``position``."""
        if self.value >= position:
            return True
        self.condition()  # the tail may not have started yet: it notifies this condition once it does
        deadline = asyncio.get_running_loop().time() + timeout
        async with self._advanced:
            while self.value < position:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    return False
                try:  # not asyncio.wait_for: on 3.11 it can swallow a cancellation (infra/eventstore/wakeups.py)
                    async with asyncio.timeout(remaining):
                        await self._advanced.wait()
                except TimeoutError:
                    return self.value >= position
        return True

    async def announce(self) -> None:
        """Wake ``wait_for`` callers and ``listening`` events: the position moved."""
        for event in list(self._listeners):
            event.set()
        async with self.condition():
            self._advanced.notify_all()

    @contextlib.contextmanager
    def listening(self, event: asyncio.Event) -> Iterator[asyncio.Event]:
        """Set ``event`` whenever the position moves while the block runs (same event loop only)."""
        self._listeners.add(event)
        try:
            yield event
        finally:
            self._listeners.discard(event)
