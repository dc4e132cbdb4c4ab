"""A worker process's event store: reads ``events.db`` directly, appends through the primary process.

Used by the HTTP workers of a multi-worker ``csm serve`` (api/workers.py): SQLite in WAL mode
lets every process read at once, but the writer (group commit, hash chain, witness) lives in
the primary alone, reached over ``infra/primary_link.py``. The primary's progress pushes wake
this process's subscribers (SSE, read-your-writes) the moment a commit lands anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from commands.ports import AppendRequest, AppendResult
from infra.eventstore.sqlite import SQLiteEventStore
from infra.primary_link import Progress
from infra.primary_link_client import LinkClient


class LinkedEventStore(SQLiteEventStore):
    """The SQLite store's reads, and appends answered by the primary once they are durable."""

    def __init__(self, path: Path | str, link: LinkClient, *, poll_interval: float = 0.5,
                 witness_path: Path | str | None = None) -> None:
        super().__init__(path, poll_interval=poll_interval, witness_path=witness_path)
        self.link = link
        self.progress_hooks: list[Callable[[Progress], None]] = []
        link.on_progress = self._on_progress

    def open(self) -> LinkedEventStore:
        return self  # the primary created the file and its schema; no writer thread here

    def close(self) -> None:
        self._closed = True

    async def append(self, request: AppendRequest) -> AppendResult:
        if not request.events:
            raise ValueError("an append needs at least one event")
        return await self.link.append(request)

    def append_blocking(self, request: AppendRequest) -> AppendResult:
        raise RuntimeError("a worker process appends only from its event loop (the primary writes)")

    def writable(self) -> bool:
        progress = self.link.progress
        return self.link.connected and progress is not None and progress.writable

    def _on_progress(self, progress: Progress) -> None:
        self._wakeups.notify()
        for hook in self.progress_hooks:
            hook(progress)
