"""The link between HTTP worker processes and the primary process of a multi-worker ``csm serve``.

SQLite has one writer at a time. With several HTTP workers (``CSM_WORKERS``), one process, the
primary, owns the event store's writer thread (group commit, hash chain, witness), the
projection runner, the checkpointer and the schedulers; workers read ``events.db`` and
``views.db`` directly (WAL readers) and send every append to the primary over a Unix socket
(``data_dir/run/primary.sock``, mode 0600 in a 0700 directory).

Frames are a 4-byte big-endian length and a msgspec JSON body (JSON, as the store writes:
an event's payload means the same on both sides). A worker sends calls, each with an id; the
primary answers each, in any order, and pushes ``Progress`` (the log's head, the read
models' position, whether the store can commit) whenever either moves, so workers learn of
appends and projections at once instead of polling. The in-memory rate limiter runs in the
primary too (one set of buckets for every worker), unless Redis shares them, and so does the
ledger of quota reservations (commands/quotas.py): a worker's command takes, lands and releases its
reservation there, so every worker's commands count against each other's.

The protocol lives here: the frames and their codec, and how a call's failure crosses the link. The primary's side
is ``primary_link_server`` (LinkServer), a worker's is ``primary_link_client`` (LinkClient, LinkedQuotaLedger).
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgspec

from commands.ports import AppendRequest, CountedUsage
from commands.quotas import StaleCount
from domain.errors import IdempotencyKeyReused, QuotaExceeded, WrongExpectedVersion
from domain.tenant import Quotas, Usage
from infra.eventstore.group_commit import StoreUnavailable

MAX_FRAME = 64 * 1024 * 1024  # an append of 8,192 events of a few KiB each fits
_LENGTH = struct.Struct(">I")


class AppendCall(msgspec.Struct, tag="append", kw_only=True):
    id: int
    request: AppendRequest


class RateCall(msgspec.Struct, tag="rate", kw_only=True):
    id: int
    key: str
    limit: int
    period: float


class QuotaTake(msgspec.Struct, tag="quota_take", kw_only=True):
    """QuotaLedger.take in the primary's ledger; ``key`` names the reservation in later frames."""

    id: int
    key: str
    tenant_id: str
    adding: Usage
    day: str
    counted: CountedUsage
    bounds: Quotas
    now: str


class QuotaSettle(msgspec.Struct, tag="quota_settle", kw_only=True):
    id: int
    tenant_id: str
    seconds: float


class QuotaLanded(msgspec.Struct, tag="quota_landed", kw_only=True):
    """Where the reservation's event was appended (0: nowhere). Not answered."""

    key: str
    position: int


class QuotaRelease(msgspec.Struct, tag="quota_release", kw_only=True):
    """The reservation's command appended nothing. Not answered."""

    key: str


class Answer(msgspec.Struct, tag="answer", kw_only=True, omit_defaults=True):
    """The answer to call ``id``: a result, or the error the primary raised (by kind, with its arguments)."""

    id: int
    result: Any = None
    # wrong_expected_version | idempotency_key_reused | unavailable | invalid | quota_exceeded | stale_count
    error: str | None = None
    args: list[Any] = []


class Progress(msgspec.Struct, tag="progress", kw_only=True):
    head: int  # the last global position committed
    projected: int  # the position every read model has applied
    writable: bool  # the store's last commit succeeded


Frame = AppendCall | RateCall | QuotaTake | QuotaSettle | QuotaLanded | QuotaRelease | Answer | Progress
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Frame).decode


def frame(message: msgspec.Struct) -> bytes:
    body = _encode(message)
    return _LENGTH.pack(len(body)) + body


class FrameWriter:
    """The frames for one peer, sent together once per turn of the event loop: one ``send`` for all of them.

    Requests signed in one batch resume in one turn, and each sends its append; the primary answers a group commit's
    appends in one turn too. Written one by one, every frame was a system call that also woke the peer (about 4 % of
    a worker's CPU at 32 connections issuing). The first frame of a turn schedules the flush, which runs at the start
    of the next turn, so a frame waits no longer than the callbacks already queued; frames keep their order (a
    reservation's ``QuotaLanded`` before the calls that follow it). Call it on the event loop's thread only.
    """

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._parts:
            asyncio.get_running_loop().call_soon(self.flush)
        self._parts.append(data)

    def flush(self) -> None:
        parts, self._parts = self._parts, []
        if parts and not self.writer.is_closing():
            self.writer.write(parts[0] if len(parts) == 1 else b"".join(parts))

    def is_closing(self) -> bool:
        return self.writer.is_closing()

    async def drain(self) -> None:
        self.flush()
        await self.writer.drain()

    def close(self) -> None:
        self.flush()
        self.writer.close()


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    (size,) = _LENGTH.unpack(await reader.readexactly(4))
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is over the limit")
    return _decode(await reader.readexactly(size))


def error_of(exc: BaseException) -> tuple[str, list[Any]]:
    """How a call's failure crosses the link (the worker raises the same exception again)."""
    if isinstance(exc, QuotaExceeded):
        return "quota_exceeded", [exc.field.removeprefix("quotas."), exc.detail, exc.status,
                                  getattr(exc, "retry_after_seconds", None)]
    if isinstance(exc, StaleCount):
        return "stale_count", list(exc.args)
    if isinstance(exc, WrongExpectedVersion):
        return "wrong_expected_version", [exc.stream_id, exc.expected, exc.actual]
    if isinstance(exc, IdempotencyKeyReused):
        return "idempotency_key_reused", [exc.key]
    if isinstance(exc, ValueError):
        return "invalid", [str(exc)]
    return "unavailable", [str(exc) or type(exc).__name__]


def raise_answer(answer: Answer) -> None:
    if answer.error == "quota_exceeded":
        quota, detail, status, retry_after = answer.args
        raise QuotaExceeded(quota, detail, status=status, retry_after_seconds=retry_after)
    if answer.error == "stale_count":
        raise StaleCount(*answer.args)
    if answer.error == "wrong_expected_version":
        raise WrongExpectedVersion(*answer.args)
    if answer.error == "idempotency_key_reused":
        raise IdempotencyKeyReused(*answer.args)
    if answer.error == "invalid":
        raise ValueError(*answer.args)
    raise StoreUnavailable(*answer.args)
