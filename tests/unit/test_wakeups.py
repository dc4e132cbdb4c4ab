"""infra.eventstore.wakeups: waiting for an append never swallows a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from commands.waits import wait_set
from infra.eventstore.wakeups import AppendWakeups


async def test_a_cancellation_arriving_with_the_wake_up_still_cancels():
    # The event is set and the waiter cancelled in the same loop iteration: asyncio.wait_for on
    # Python 3.11 returned normally here, and a projection tail went on running after shutdown.
    event = asyncio.Event()
    waiter = asyncio.create_task(wait_set(event, 60))
    await asyncio.sleep(0)  # let it start waiting
    event.set()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_an_append_wakes_a_waiter_and_a_timeout_just_returns():
    wakeups = AppendWakeups()
    await wakeups.wait(0.01)  # nothing appended: returns after the timeout
    waiter = asyncio.create_task(wakeups.wait(60))
    await asyncio.sleep(0)
    wakeups.notify()
    await asyncio.wait_for(waiter, 60)
