"""The Kafka bus against a real Kafka-protocol broker (Tansu): relay order, at-least-once, idempotent projectors."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from bus_support import AppliedProjector, applied_positions
from kafka_fixture import kafka_bootstrap  # noqa: F401

pytest.importorskip("aiokafka", reason="aiokafka is not installed (the 'distributed' extra)")

from aiokafka import AIOKafkaConsumer  # noqa: E402

from commands.ids import uuid7  # noqa: E402
from commands.ports import AppendRequest, NewEvent  # noqa: E402
from domain.chain import chain_hash, envelope_body  # noqa: E402
from domain.events import Actor  # noqa: E402
from infra.bus.kafka import KafkaFeed, OutboxRelay, SQLiteRelayCheckpoint  # noqa: E402
from infra.bus.messages import from_record, header  # noqa: E402
from infra.service_settings import KafkaSettings  # noqa: E402
from infra.eventstore.sqlite import SQLiteEventStore  # noqa: E402
from projections.runner import ProjectionRunner  # noqa: E402

WAIT = 60.0  # a bound on waiting for the broker, never a timing assertion


def append(store: SQLiteEventStore, stream: str, expected: int, count: int, tenant: str = "acme") -> None:
    events = [NewEvent(event_id=uuid7(), type="test.happened", schema_version=1,
                       occurred_at="2026-01-01T00:00:00.000000Z", actor=Actor(principal="t", auth_method="test"),
                       correlation_id=None, causation_id=None, payload={"n": expected + i}) for i in range(count)]
    store.append_blocking(AppendRequest(tenant_id=tenant, stream_id=stream, stream_type="thing",
                                        expected_version=expected, events=events))


def fill(store: SQLiteEventStore, streams: int = 4, rounds: int = 10, per_append: int = 2) -> list[str]:
    names = [f"thing-{i}" for i in range(streams)]
    for round_ in range(rounds):
        for name in names:
            append(store, name, round_ * per_append, per_append)
    return names


@pytest.fixture
def store(tmp_path):
    with SQLiteEventStore(tmp_path / "events.db", poll_interval=0.05) as store:
        yield store


def kafka(servers: str, **overrides) -> KafkaSettings:
    # Tansu's memory storage has no InitProducerId: the idempotent producer is off against it.
    return KafkaSettings(bootstrap_servers=servers, topic=overrides.pop("topic", f"events-{uuid7()[-12:]}"),
                         idempotent_producer=False, **overrides)


async def drain(relay: OutboxRelay) -> None:
    while await relay.publish_once():
        pass


async def consume_all(settings: KafkaSettings, count: int) -> list:
    """Every record of the topic, from the beginning, by a fresh group (until ``count`` arrived)."""
    consumer = AIOKafkaConsumer(settings.topic, bootstrap_servers=settings.bootstrap_servers,
                                group_id=f"reader-{uuid7()}", auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    records: list = []
    try:
        async with asyncio.timeout(WAIT):
            while len(records) < count:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def test_the_relay_publishes_the_log_in_order_as_cloudevents(store, tmp_path, kafka_bootstrap):  # noqa: F811
    fill(store)
    head = store.head_position_sync()
    settings = kafka(kafka_bootstrap)
    relay = await OutboxRelay(store, settings, SQLiteRelayCheckpoint(tmp_path / "outbox.db", "t"), batch=13).start()
    try:
        await drain(relay)
    finally:
        await relay.stop()
    records = await consume_all(settings, head)
    envelopes = [from_record(r.value) for r in records]
    assert [e.global_position for e in envelopes] == list(range(1, head + 1))  # one partition: the global order
    for record, envelope in zip(records, envelopes):
        assert record.key == envelope.stream_id.encode()
        assert envelope.hash == chain_hash(envelope.prev_hash, envelope_body(envelope))
        assert header(record.headers, "ce_id") == envelope.event_id
        assert header(record.headers, "ce_type") == header(record.headers, "csm_type") == "test.happened"
        assert header(record.headers, "ce_specversion") == "1.0"
        assert header(record.headers, "ce_time") == envelope.occurred_at
        assert header(record.headers, "ce_source") == f"urn:csm/tenants/acme/streams/{envelope.stream_id}"
        assert header(record.headers, "csm_tenant_id") == "acme"
        assert header(record.headers, "csm_global_position") == str(envelope.global_position)
    assert SQLiteRelayCheckpoint(tmp_path / "outbox.db", "t").load() == head


async def test_each_stream_stays_in_order_across_partitions(store, tmp_path, kafka_bootstrap):  # noqa: F811
    streams = fill(store, streams=6, rounds=8, per_append=1)
    settings = kafka(kafka_bootstrap, partitions=3)
    relay = await OutboxRelay(store, settings, SQLiteRelayCheckpoint(tmp_path / "outbox.db", "t"), batch=5).start()
    try:
        await drain(relay)
    finally:
        await relay.stop()
    records = await consume_all(settings, store.head_position_sync())
    per_stream: dict[str, list[int]] = {}
    for record in records:
        envelope = from_record(record.value)
        per_stream.setdefault(envelope.stream_id, []).append(envelope.version)
    assert per_stream == {name: list(range(1, 9)) for name in streams}
    assert len({r.partition for r in records}) > 1


class FailingOnce(SQLiteRelayCheckpoint):
    """The relay crashes after the broker acknowledged a batch but before its checkpoint was saved."""

    failed = False

    def save(self, position: int) -> None:
        if not self.failed and position > 10:
            self.failed = True
            raise OSError("crash before the checkpoint was written")
        super().save(position)


async def test_a_relay_restart_republishes_without_loss(store, tmp_path, kafka_bootstrap):  # noqa: F811
    fill(store)
    head = store.head_position_sync()
    settings = kafka(kafka_bootstrap)
    checkpoint = FailingOnce(tmp_path / "outbox.db", "t")
    relay = await OutboxRelay(store, settings, checkpoint, batch=7).start()
    with pytest.raises(OSError):
        await drain(relay)
    await relay.stop()
    published_before_crash = 14
    restarted = await OutboxRelay(store, settings, SQLiteRelayCheckpoint(tmp_path / "outbox.db", "t"),
                                  batch=7).start()
    try:
        assert restarted.published == 7  # the last saved checkpoint
        await drain(restarted)
    finally:
        await restarted.stop()
    records = await consume_all(settings, head + published_before_crash - 7)
    positions = [from_record(r.value).global_position for r in records]
    assert sorted(set(positions)) == list(range(1, head + 1))  # nothing lost
    assert positions.count(8) == 2 and positions.count(15) == 1  # the unsaved batch went out twice

    # A projector reading the topic (duplicates included) applies every event exactly once.
    runner = ProjectionRunner(store, tmp_path / "views.db", [AppliedProjector()]).open()
    feed = await KafkaFeed(settings, group_id="projectors", max_records=9).start()
    try:
        async with asyncio.timeout(WAIT):
            while runner.position < head:
                events = await feed.next_batch()
                await asyncio.to_thread(runner.apply_delivered, events)
                await feed.acknowledge()
    finally:
        await feed.stop()
        runner.close()
    assert applied_positions(tmp_path / "views.db") == list(range(1, head + 1))


async def test_a_projector_fills_a_gap_in_the_topic_from_the_store(store, tmp_path, kafka_bootstrap):  # noqa: F811
    """The topic lost events (retention, a new topic): the store is the authority, nothing is skipped."""
    fill(store, rounds=3)
    settings = kafka(kafka_bootstrap)
    checkpoint = SQLiteRelayCheckpoint(tmp_path / "outbox.db", "t")
    checkpoint.save(10)  # events 1..10 never reach this topic
    relay = await OutboxRelay(store, settings, checkpoint).start()
    try:
        await drain(relay)
    finally:
        await relay.stop()
    head = store.head_position_sync()
    runner = ProjectionRunner(store, tmp_path / "views.db", [AppliedProjector()]).open()
    feed = await KafkaFeed(settings, group_id="projectors").start()
    task = asyncio.create_task(runner.run_delivered(feed))
    try:
        async with asyncio.timeout(WAIT):
            while not await runner.wait_for(head, 1.0):
                await asyncio.sleep(0.05)  # the tail may not have started yet
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await feed.stop()
        runner.close()
    assert applied_positions(tmp_path / "views.db") == list(range(1, head + 1))


async def test_a_projector_killed_mid_stream_resumes_without_loss_or_double_effect(
        store, tmp_path, kafka_bootstrap):  # noqa: F811
    fill(store, streams=5, rounds=20, per_append=3)
    head = store.head_position_sync()
    settings = kafka(kafka_bootstrap)
    relay = await OutboxRelay(store, settings, SQLiteRelayCheckpoint(tmp_path / "outbox.db", "t")).start()
    try:
        await drain(relay)
    finally:
        await relay.stop()
    views = tmp_path / "views.db"
    child = [sys.executable, str(Path(__file__).with_name("bus_support.py")), str(store.path), str(views),
             kafka_bootstrap, settings.topic, "projectors"]

    async def wait_until(predicate) -> None:
        async with asyncio.timeout(WAIT):
            while not predicate():
                await asyncio.sleep(0.02)

    first = subprocess.Popen(child, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        await wait_until(lambda: len(applied_positions(views)) > 0)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    killed_at = len(applied_positions(views))
    assert killed_at < head, "the projector finished before it was killed: nothing was tested"
    second = subprocess.Popen(child, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        await wait_until(lambda: len(applied_positions(views)) >= head)
    finally:
        second.terminate()
        second.wait()
    assert applied_positions(views) == list(range(1, head + 1))
