"""A worker process's end of the link to the primary: LinkClient (calls multiplexed on one connection, reconnected
if it drops) and LinkedQuotaLedger, the quota ledger held in the primary (the protocol: ``infra/primary_link.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import msgspec

from commands.ports import AppendRequest, AppendResult, CountedUsage
from commands.quotas import Reservation
from commands.runtime import rfc3339
from domain.tenant import Quotas
from infra.eventstore.group_commit import StoreUnavailable
from infra.primary_link import (AppendCall, Answer, FrameWriter, Progress, QuotaLanded, QuotaRelease, QuotaSettle,
                                QuotaTake, RateCall, frame, raise_answer, read_frame)

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 0.2


class LinkClient:
    """In a worker: one connection to the primary, reconnected if it drops; calls are multiplexed on it."""

    def __init__(self, path: Path, on_progress: Callable[[Progress], None]) -> None:
        self.path = path
        self.on_progress = on_progress
        self.progress: Progress | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._writer: FrameWriter | None = None  # frames sent once per turn of the event loop
        self._connected = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self, timeout: float = 30.0) -> None:
        self._task = asyncio.create_task(self._run(), name="primary-link")
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def _run(self) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.path))
            except OSError:
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            self._writer = FrameWriter(writer)
            self._connected.set()
            try:
                while True:
                    message = await read_frame(reader)
                    if isinstance(message, Progress):
                        self.progress = message
                        self.on_progress(message)
                    elif isinstance(message, Answer):
                        future = self._pending.pop(message.id, None)
                        if future is not None and not future.done():
                            future.set_result(message)
            except (asyncio.IncompleteReadError, ConnectionError, ValueError, msgspec.DecodeError) as exc:
                log.warning("link to the primary process lost; reconnecting", extra={"error": repr(exc)})
            finally:
                self._connected.clear()
                self._writer = None
                writer.close()
                pending, self._pending = self._pending, {}
                for future in pending.values():
                    if not future.done():
                        future.set_exception(StoreUnavailable("the primary process is not reachable"))
            await asyncio.sleep(RECONNECT_SECONDS)

    async def call(self, make: Callable[[int], msgspec.Struct]) -> Answer:
        writer = self._writer
        if writer is None or writer.is_closing():
            raise StoreUnavailable("the primary process is not reachable")
        call_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        writer.write(frame(make(call_id)))
        return await future

    async def append(self, request: AppendRequest) -> AppendResult:
        answer = await self.call(lambda call_id: AppendCall(id=call_id, request=request))
        if answer.error is not None:
            raise_answer(answer)
        return msgspec.convert(answer.result, AppendResult)

    def send(self, message: msgspec.Struct) -> None:
        """A frame that is not answered; dropped if the primary is not reachable (it has forgotten everything then)."""
        writer = self._writer
        if writer is not None and not writer.is_closing():
            writer.write(frame(message))

    async def rate_hit(self, key: str, limit: int, period: float) -> list:
        answer = await self.call(lambda call_id: RateCall(id=call_id, key=key, limit=limit, period=period))
        if answer.error is not None or not isinstance(answer.result, list):
            raise RuntimeError("the primary process has no rate limiter")
        return answer.result


class LinkedQuotaLedger:
    """In a worker: the ``commands.quotas.Ledger`` whose reservations the primary holds, with every other worker's."""

    def __init__(self, link: LinkClient) -> None:
        self.link = link
        self._keys = itertools.count(1)
        self._prefix = f"{os.getpid()}-"

    async def take(self, tenant_id: str, reservation: Reservation, counted: CountedUsage, bounds: Quotas,
                   now: datetime) -> None:
        key = f"{self._prefix}{next(self._keys)}"
        answer = await self.link.call(lambda call_id: QuotaTake(
            id=call_id, key=key, tenant_id=tenant_id, adding=reservation.adding, day=reservation.day,
            counted=counted, bounds=bounds, now=rfc3339(now)))
        if answer.error is not None:
            raise_answer(answer)
        reservation.key = key
        reservation.on_landed = lambda r: self.link.send(QuotaLanded(key=key, position=r.position or 0))

    async def settle(self, tenant_id: str, seconds: float) -> bool:
        answer = await self.link.call(lambda call_id: QuotaSettle(id=call_id, tenant_id=tenant_id, seconds=seconds))
        if answer.error is not None:
            raise_answer(answer)
        return bool(answer.result)

    def release(self, tenant_id: str, reservation: Reservation) -> None:
        reservation.settled.set()
        if reservation.key is not None and reservation.position is None:  # landed at 0: the primary knows already
            self.link.send(QuotaRelease(key=reservation.key))
