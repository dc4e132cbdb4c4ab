"""Waiting for an asyncio event with a bound, without ever losing a cancellation."""

from __future__ import annotations

import asyncio
import contextlib


async def wait_set(event: asyncio.Event, timeout: float) -> None:
    """Return once ``event`` is set, or after ``timeout``; a cancellation always propagates.

    Not ``asyncio.wait_for``: on Python 3.11 it returns normally, swallowing the cancellation, when
    the event is set just as the task is cancelled; a projection tail cancelled at shutdown then
    went on waiting for ever (seen in CI as a server that never stopped).
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
