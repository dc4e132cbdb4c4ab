"""The primary process's end of the worker link: LinkServer answers the workers' appends, rate-limit hits and quota
reservations, and pushes ``Progress`` to every worker (the protocol: ``infra/primary_link.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from commands.quotas import QuotaLedger, Reservation
from commands.waits import wait_set
from infra.eventstore.group_commit import StoreUnavailable
from infra.primary_link import (AppendCall, Answer, Frame, FrameWriter, Progress, QuotaLanded, QuotaRelease, QuotaSettle,
                                QuotaTake, RateCall, error_of, frame, read_frame)

log = logging.getLogger(__name__)


class LinkServer:
    """In the primary: answers appends, rate-limit hits and quota reservations, and pushes progress to every worker."""

    def __init__(self, path: Path, store: Any, runner: Any, rate_hit: Callable | None = None,
                 quotas: QuotaLedger | None = None) -> None:
        self.path = path
        self.store = store
        self.runner = runner
        # async (key, limit, period) -> (allowed, remaining, reset_after, retry_after): the primary's limiter
        self.rate_hit = rate_hit
        self.quotas = quotas  # the primary's own ledger: its commands and every worker's hold reservations there
        self._reservations: dict[FrameWriter, dict[str, tuple[str, Reservation]]] = {}  # per worker, by key
        self._clients: set[FrameWriter] = set()  # each worker's frames, sent once per turn of the event loop
        self._calls: set[asyncio.Task] = set()  # appends and hits being answered
        self._server: asyncio.AbstractServer | None = None
        self._pusher: asyncio.Task | None = None
        self._last: Progress | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a socket left by a primary that did not stop cleanly
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old)
        self._pusher = asyncio.create_task(self._push_progress(), name="link-progress")

    async def wait_idle(self, timeout: float) -> None:
        """Wait (bounded) until every worker has hung up: workers stopping on their own finish their requests."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._clients:
                    await asyncio.sleep(0.05)

    async def stop(self, timeout: float = 10.0) -> None:
        """No new workers; answer the calls already received (bounded), then hang up on everyone."""
        if self._server is not None:
            self._server.close()
        if self._calls:
            await asyncio.wait(list(self._calls), timeout=timeout)
        if self._pusher is not None:
            self._pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pusher
        if self._server is not None:
            for writer in list(self._clients):
                with contextlib.suppress(Exception):
                    await writer.drain()
                writer.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _progress(self) -> Progress:
        return Progress(head=self.store.recent_head(), projected=self.runner.position,
                        writable=self.store.writable())

    async def _push_progress(self) -> None:
        """After every commit and every projection batch, tell every worker where the log and views stand."""
        changed = asyncio.Event()  # set by a commit and by a projection batch alike
        with self.store.listening(changed), self.runner.listening(changed):
            while True:
                changed.clear()
                progress = self._progress()
                if progress != self._last:
                    self._last = progress
                    data = frame(progress)
                    for writer in list(self._clients):
                        writer.write(data)
                await wait_set(changed, 1.0)

    async def _serve(self, reader: asyncio.StreamReader, stream: asyncio.StreamWriter) -> None:
        writer = FrameWriter(stream)
        self._clients.add(writer)
        self._reservations[writer] = {}
        writer.write(frame(self._last or self._progress()))
        calls = self._calls
        try:
            while True:
                try:
                    message = await read_frame(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if isinstance(message, QuotaLanded | QuotaRelease):  # in order, before any later call of its
                    self._settle(writer, message)
                    continue
                task = asyncio.create_task(self._answer(message, writer))
                calls.add(task)
                task.add_done_callback(calls.discard)
        except (ValueError, msgspec.DecodeError) as exc:
            log.error("dropping a worker link that sent a bad frame", extra={"error": repr(exc)})
        finally:
            self._clients.discard(writer)
            # a worker gone with commands in flight: their units are free again (it appends nothing more)
            for tenant_id, reservation in self._reservations.pop(writer, {}).values():
                if self.quotas is not None:
                    self.quotas.release(tenant_id, reservation)
            writer.close()

    def _settle(self, writer: FrameWriter, message: QuotaLanded | QuotaRelease) -> None:
        held = self._reservations.get(writer, {}).pop(message.key, None)
        if held is None or self.quotas is None:
            return
        tenant_id, reservation = held
        if isinstance(message, QuotaLanded) and message.position:
            reservation.land(message.position)  # held until a count includes it
        else:
            self.quotas.release(tenant_id, reservation)

    async def _take(self, message: QuotaTake, writer: FrameWriter) -> bool:
        if self.quotas is None:
            raise StoreUnavailable("the primary process keeps no quota ledger")
        held = self._reservations.get(writer)
        if held is None:  # the worker hung up before this call was answered: nobody would ever release it
            raise StoreUnavailable("the worker's link is closed")
        reservation = Reservation(adding=message.adding, day=message.day)
        await self.quotas.take(message.tenant_id, reservation, message.counted, message.bounds,
                               datetime.fromisoformat(message.now))  # no await inside: held at once
        held[message.key] = (message.tenant_id, reservation)
        return True

    async def _answer(self, message: Frame, writer: FrameWriter) -> None:
        if isinstance(message, QuotaTake | QuotaSettle):
            try:
                if isinstance(message, QuotaTake):
                    result = await self._take(message, writer)
                elif self.quotas is None:
                    result = False
                else:
                    result = await self.quotas.settle(message.tenant_id, message.seconds)
                answer = Answer(id=message.id, result=result)
            except Exception as exc:
                kind, args = error_of(exc)
                answer = Answer(id=message.id, error=kind, args=args)
        elif isinstance(message, AppendCall):
            try:
                answer = Answer(id=message.id, result=await self.store.append(message.request))
            except Exception as exc:
                kind, args = error_of(exc)
                answer = Answer(id=message.id, error=kind, args=args)
        elif isinstance(message, RateCall) and self.rate_hit is not None:
            answer = Answer(id=message.id, result=list(await self.rate_hit(message.key, message.limit,
                                                                           message.period)))
        else:
            return
        if not writer.is_closing():
            writer.write(frame(answer))
