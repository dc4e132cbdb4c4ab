"""The Cassandra store's commit protocol held to the EventStore contract, over a model of its CQL.

This is not the cluster (``test_cassandra_store.py`` is, when ``CSM_TEST_CASSANDRA`` is set): it
runs the adapter's own code (positions, chains, idempotency, lost races, a writer that dies
between its commit and writing its rows out) with each statement's semantics modelled in
memory, because Cassandra cannot be installed on this machine.
"""

from __future__ import annotations

import asyncio

import pytest
from cassandra_model import ModelledCassandraStore, Tables
from eventstore_contract import EventStoreContract, assert_chain, fresh_stream, new_event, request

pytest.importorskip("cassandra", reason="cassandra-driver is not installed (the 'distributed' extra)")

from domain.errors import WrongExpectedVersion  # noqa: E402


class TestModelledCassandraStore(EventStoreContract):
    @pytest.fixture
    async def store(self):
        store = await ModelledCassandraStore(poll_interval=0.05).open()
        try:
            yield store
        finally:
            await store.drop_keyspace()
            await store.close()


@pytest.fixture
async def two_processes():
    tables = Tables()
    one, two = ModelledCassandraStore(tables, poll_interval=0.05), ModelledCassandraStore(tables, poll_interval=0.05)
    await one.open()
    await two.open()
    try:
        yield one, two
    finally:
        await one.close()
        await two.close()


async def test_two_writers_race_through_the_head_and_each_event_lands_once(two_processes):
    one, two = two_processes
    stream = fresh_stream()

    async def writer(store, n):
        while True:
            version = len(await store.read_stream("acme", stream))
            try:
                return await store.append(request(stream, version, [new_event({"writer": n})]))
            except WrongExpectedVersion:
                await asyncio.sleep(0)

    await asyncio.gather(*(writer(one if n % 2 else two, n) for n in range(30)))
    events = await one.read_stream("acme", stream)
    assert sorted(e.payload["writer"] for e in events) == list(range(30))
    assert_chain(events, "acme", stream)
    assert [e.global_position for e in await two.read_all(0, 100)] == list(range(1, 31))


async def test_rows_a_crashed_writer_left_in_the_head_are_written_out_by_the_next(two_processes):
    one, two = two_processes
    stream = fresh_stream()
    one.crash_after_commit = 1
    committed = await one.append(request(stream, 0, 2))  # committed: acknowledged, rows still in the head
    assert (committed.version, committed.global_position) == (2, 2)
    assert await two.read_stream("acme", stream) == []  # not written out yet
    assert [e.global_position for e in await two.read_all(0)] == [1, 2]  # a reader writes them out
    third = await two.append(request(stream, 2, 1))
    assert third.global_position == 3
    assert_chain(await one.read_stream("acme", stream), "acme", stream)


async def test_a_writer_writes_out_the_previous_commit_before_deciding(two_processes):
    one, two = two_processes
    stream = fresh_stream()
    one.crash_after_commit = 1
    await one.append(request(stream, 0, 1))
    with pytest.raises(WrongExpectedVersion) as caught:  # the stream is at 1, though its row was not written out
        await two.append(request(stream, 0, 1))
    assert caught.value.actual == 1
    assert (await two.append(request(stream, 1, 1))).version == 2
    assert_chain(await two.read_stream("acme", stream), "acme", stream)


async def test_the_relay_checkpoint_lives_in_the_keyspace(two_processes):
    one, two = two_processes
    checkpoint = one.relay_checkpoint("outbox")
    assert checkpoint.load() == 0
    checkpoint.save(42)
    assert two.relay_checkpoint("outbox").load() == 42


async def test_reads_cross_log_partitions(two_processes, monkeypatch):
    from infra.eventstore import cassandra_schema

    monkeypatch.setattr(cassandra_schema, "POSITION_BUCKET", 3)  # a partition every three positions
    one, two = two_processes
    stream = fresh_stream()
    for version in range(0, 10, 2):
        await one.append(request(stream, version, 2))
    assert [e.global_position for e in await two.read_all(0, 100)] == list(range(1, 11))
    assert [e.global_position for e in await two.read_all(2, 5)] == [3, 4, 5, 6, 7]
    assert [e.version for e in two.read_positions_sync([9, 3, 3])] == [3, 9]
    assert {row[0] for row in one.tables.audit} == {row[0] for row in two.tables.audit}  # one day bucket


def test_signed_checkpoints_and_the_verifier_work_on_the_cassandra_store(tmp_path):
    """The same ledger, checkpoints and verification as on SQLite: the store only changes where rows live."""
    from commands.runtime import SystemClock
    from infra.audit.checkpointer import Checkpointer
    from infra.audit.keys import AuditSigner
    from infra.bootstrap import verify_store
    from infra.config import Settings

    settings = Settings(data_dir=tmp_path)
    store = ModelledCassandraStore(witness_path=settings.witness_file).connect()
    try:
        checkpointer = Checkpointer(store, AuditSigner.create_or_load(settings.keys_dir), SystemClock())
        checkpointer.register_keys()
        for n in range(3):
            store.append_blocking(request(f"thing-{n}", 0, 2))
        assert checkpointer.seal_all() > 0
        report = verify_store(settings, store)
        assert report.ok and report.first_problem is None, report.problems
        assert (report.events, report.last_position, report.unsealed_events) == (8, 8, 0)
        tampered = next(iter(store.tables.events[("acme", "thing-1")].values()))
        store.tables.log[tampered.position].body = tampered.body.replace(b'"n":0', b'"n":7')
        assert not verify_store(settings, store).ok  # an edited row breaks its chain
    finally:
        store.close_sync()
