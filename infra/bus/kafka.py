"""The Kafka bus: an outbox relay that publishes the store's log in order, and the projectors' consumer feed.

The store's global log is the outbox: the relay reads it from its own checkpoint, publishes
every event in position order, waits for the broker's acknowledgement (acks=all), and only
then records the last published position. A crash in between republishes a few events:
delivery is at least once, and consumers are idempotent (projection checkpoints skip what
they have applied; SIEMs de-duplicate on ``ce_id``). Projectors read through consumer groups
(:class:`KafkaFeed`) and acknowledge (commit offsets) only after their views committed.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, Protocol

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from domain.events import EventEnvelope
from infra.bus.messages import from_record, to_record
from infra.service_settings import KafkaSettings

log = logging.getLogger(__name__)


class LogSource(Protocol):
    """What the relay needs of the event store."""

    def read_all_sync(self, after_position: int, limit: int = 1000) -> list[EventEnvelope]: ...

    async def wait_for_append(self, timeout: float) -> None: ...


class RelayCheckpoint(Protocol):
    """Where the relay keeps the last position the broker acknowledged."""

    def load(self) -> int: ...

    def save(self, position: int) -> None: ...


class SQLiteRelayCheckpoint:
    """The relay's published position in a small SQLite file of its own (``<data>/outbox.db``)."""

    def __init__(self, path: Path | str, name: str) -> None:
        self.path, self.name = Path(path), name
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS relay_checkpoints (name TEXT PRIMARY KEY,"
                         " position INTEGER NOT NULL, updated_at REAL NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30)
        conn.execute("PRAGMA synchronous = FULL")  # a lost checkpoint only republishes, but keep it honest
        return conn

    def load(self) -> int:
        with self._connect() as conn:
            row = conn.execute("SELECT position FROM relay_checkpoints WHERE name = ?", (self.name,)).fetchone()
        return row[0] if row else 0

    def save(self, position: int) -> None:
        with self._connect() as conn:
            conn.execute("INSERT INTO relay_checkpoints VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                         " position = max(position, excluded.position), updated_at = excluded.updated_at",
                         (self.name, position, time.time()))


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Connection options shared by producer, consumer and admin client (TLS when a CA file is set)."""
    options: dict[str, Any] = {"bootstrap_servers": settings.bootstrap_servers, "client_id": settings.client_id}
    if settings.ssl_ca_file:
        options["security_protocol"] = "SSL"
        options["ssl_context"] = create_ssl_context(
            cafile=str(settings.ssl_ca_file),
            certfile=str(settings.ssl_cert_file) if settings.ssl_cert_file else None,
            keyfile=str(settings.ssl_key_file) if settings.ssl_key_file else None)
    return options


async def ensure_topic(settings: KafkaSettings) -> None:
    """Create the events topic if it is missing (partitions and replication from settings)."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        if settings.topic in await admin.list_topics():
            return
        try:
            await admin.create_topics([NewTopic(settings.topic, num_partitions=settings.partitions,
                                                replication_factor=settings.replication_factor)])
        except TopicAlreadyExistsError:  # another process created it first
            pass
    finally:
        await admin.close()


class OutboxRelay:
    """Publishes the log after the checkpoint, in order; one relay per deployment (more only duplicate)."""

    def __init__(self, source: LogSource, settings: KafkaSettings, checkpoint: RelayCheckpoint, *,
                 batch: int = 500, poll_interval: float = 0.5) -> None:
        self.source, self.settings, self.checkpoint = source, settings, checkpoint
        self.batch, self.poll_interval = batch, poll_interval
        self.published = 0
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> OutboxRelay:
        await ensure_topic(self.settings)
        # acks=all: an acknowledged record is on every in-sync replica. The idempotent producer also
        # keeps a retried batch from being duplicated or reordered; brokers without InitProducerId
        # (Tansu) need it off, and then order rests on aiokafka's one request in flight per broker,
        # and on the runner, which refills anything out of order from the store.
        self._producer = AIOKafkaProducer(**client_options(self.settings), acks="all",
                                          enable_idempotence=self.settings.idempotent_producer, linger_ms=5)
        try:
            await self._producer.start()
        except BaseException:
            await self._producer.stop()
            self._producer = None
            raise
        self.published = await asyncio.to_thread(self.checkpoint.load)
        return self

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish_once(self) -> int:
        """Publish the next batch after the checkpoint; the number of events published."""
        assert self._producer is not None, "relay not started"
        position = await asyncio.to_thread(self.checkpoint.load)
        events = await asyncio.to_thread(self.source.read_all_sync, position, self.batch)
        if not events:
            self.published = position
            return 0
        deliveries = []
        for envelope in events:
            record = to_record(envelope, self.settings.ce_source)
            deliveries.append(await self._producer.send(self.settings.topic, value=record.value, key=record.key,
                                                        headers=record.headers))
        await asyncio.gather(*deliveries)  # every record acknowledged, or this raises and nothing is saved
        await asyncio.to_thread(self.checkpoint.save, events[-1].global_position)
        self.published = events[-1].global_position
        return len(events)

    async def run(self) -> None:
        """Publish for ever; cancel the task to stop. A failed batch is retried from the checkpoint."""
        while True:
            try:
                published = await self.publish_once()
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError, sqlite3.Error) as exc:
                log.warning("outbox relay: publishing failed; retrying", extra={"error": repr(exc)})
                await asyncio.sleep(1.0)
                continue
            if not published:
                await self.source.wait_for_append(self.poll_interval)


class KafkaFeed:
    """A consumer-group member delivering batches of envelopes to ``ProjectionRunner.run_delivered``."""

    def __init__(self, settings: KafkaSettings, group_id: str | None = None, *, max_records: int = 500,
                 timeout_ms: int = 500) -> None:
        self.settings = settings
        self.group_id = group_id or settings.group_id
        self.max_records, self.timeout_ms = max_records, timeout_ms
        self._consumer: AIOKafkaConsumer | None = None
        self._next: dict[TopicPartition, int] = {}  # offsets to commit once the batch is applied
        self._first: dict[TopicPartition, int] = {}  # where the batch began, to re-read it after a failure

    async def start(self) -> KafkaFeed:
        await ensure_topic(self.settings)
        self._consumer = AIOKafkaConsumer(self.settings.topic, **client_options(self.settings),
                                          group_id=self.group_id, enable_auto_commit=False,
                                          auto_offset_reset="earliest", isolation_level="read_committed")
        await self._consumer.start()
        return self

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def next_batch(self) -> list[EventEnvelope]:
        assert self._consumer is not None, "feed not started"
        fetched = await self._consumer.getmany(timeout_ms=self.timeout_ms, max_records=self.max_records)
        self._next, self._first = {}, {}
        events: list[EventEnvelope] = []
        for partition, records in fetched.items():
            self._first[partition] = records[0].offset
            self._next[partition] = records[-1].offset + 1
            for record in records:
                try:
                    events.append(from_record(record.value))
                except (msgspec.DecodeError, msgspec.ValidationError, TypeError):
                    # Not an event of ours: skipped here; if it stood for a real event, the gap it
                    # leaves is filled from the store by the runner.
                    log.warning("kafka feed: undecodable record skipped",
                                extra={"partition": partition.partition, "offset": record.offset})
        return events

    async def acknowledge(self) -> None:
        if self._consumer is None or not self._next:
            return
        try:
            await self._consumer.commit(self._next)
        except KafkaError as exc:  # a rebalance took the partition: its new owner re-reads, checkpoints skip
            log.info("kafka feed: offset commit failed", extra={"error": repr(exc)})
        self._next = {}

    async def rewind(self) -> None:
        if self._consumer is None:
            return
        for partition, offset in self._first.items():
            try:
                self._consumer.seek(partition, offset)
            except (KafkaError, AssertionError, ValueError):  # no longer assigned to us
                pass
        self._next = {}
