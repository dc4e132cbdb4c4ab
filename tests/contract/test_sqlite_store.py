"""The EventStore contract against SQLiteEventStore, plus what only the SQLite store promises."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from eventstore_contract import EventStoreContract, assert_chain, fresh_stream, new_event, request

from domain.errors import WrongExpectedVersion
from infra.audit.witness import read_witness
from infra.eventstore.group_commit import StoreUnavailable
from infra.eventstore.sqlite import SQLiteEventStore


class TestSQLiteEventStore(EventStoreContract):
    @pytest.fixture
    def store(self, tmp_path):
        with SQLiteEventStore(tmp_path / "events.db", poll_interval=0.05,
                              witness_path=tmp_path / "audit-witness.json") as store:
            yield store


async def test_two_store_instances_on_one_file_race_safely(tmp_path):
    """The server and a CLI process each open the file with their own writer."""
    path = tmp_path / "events.db"
    with SQLiteEventStore(path) as one, SQLiteEventStore(path) as two:
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


def test_blocking_appends_from_threads(tmp_path):
    with SQLiteEventStore(tmp_path / "events.db") as store:
        streams = [fresh_stream() for _ in range(8)]

        def owner(stream):
            return [store.append_blocking(request(stream, v, 1)).version for v in range(25)]

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(owner, streams)) == [list(range(1, 26))] * 8
        assert store.head_position_sync() == 200
        assert [r.position for r in store.read_raw(0)] == list(range(1, 201))


async def test_acknowledged_appends_survive_reopening(tmp_path):
    path = tmp_path / "events.db"
    stream = fresh_stream()
    with SQLiteEventStore(path) as store:
        result = await store.append(request(stream, 0, 3))
    with SQLiteEventStore(path) as reopened:
        events = await reopened.read_stream("acme", stream)
        assert [e.global_position for e in events] == [result.first_position, 2, result.global_position]
        assert (await reopened.append(request(stream, 3, 1))).global_position == 4


async def test_a_closed_store_refuses_appends(tmp_path):
    store = SQLiteEventStore(tmp_path / "events.db").open()
    store.close()
    with pytest.raises(StoreUnavailable):
        await store.append(request(fresh_stream(), 0, 1))


async def test_the_witness_records_the_high_water_position(tmp_path):
    witness = tmp_path / "audit-witness.json"
    with SQLiteEventStore(tmp_path / "events.db", witness_path=witness) as store:
        await store.append(request(fresh_stream(), 0, 4))
        await store.append(request(fresh_stream(), 0, 1))
    assert read_witness(witness) == {"high_water": 5}


async def test_a_writer_sees_appends_made_through_another_instance(tmp_path):
    """Whatever one writer remembers about stream heads, another process's append overrides it."""
    path = tmp_path / "events.db"
    stream = fresh_stream()
    with SQLiteEventStore(path) as one, SQLiteEventStore(path) as two:
        await one.append(request(stream, 0, 1))
        await two.append(request(stream, 1, 1))
        with pytest.raises(WrongExpectedVersion) as caught:
            await one.append(request(stream, 1, 1))
        assert caught.value.actual == 2
        assert (await one.append(request(stream, 2, 1))).version == 3
        await two.append(request(stream, 3, 2))
        assert (await one.append(request(stream, 5, 1))).global_position == 6
        assert_chain(await two.read_stream("acme", stream), "acme", stream)


async def test_the_recent_head_has_this_stores_commits_at_once_and_another_writers_within_its_age(tmp_path):
    """``recent_head`` (the primary's progress pushes) reads the file at most every ``max_age`` seconds: its
    own commits count at once, another process's (a second instance here) once that age has passed."""
    path = tmp_path / "events.db"
    with SQLiteEventStore(path) as ours, SQLiteEventStore(path) as theirs:
        assert ours.recent_head(max_age=3600) == 0
        mine = await ours.append(request("mine", 0))
        assert ours.recent_head(max_age=3600) == mine.global_position
        other = await theirs.append(request("other", 0, events=2))
        assert ours.recent_head(max_age=3600) == mine.global_position  # read less than an hour ago
        assert ours.recent_head(max_age=0) == other.global_position == ours.head_position_sync()


def test_a_store_opens_once_so_closing_it_cannot_hang(tmp_path):
    """A second open() would start a second writer thread on the same queue; close() then stopped one and
    waited for ever for the other. It is refused, and so is opening a closed store again."""
    store = SQLiteEventStore(tmp_path / "events.db").open()
    with pytest.raises(RuntimeError, match="opened before"):
        store.open()
    store.close()
    with pytest.raises(RuntimeError, match="opened before"):
        store.open()
    SQLiteEventStore(tmp_path / "events.db").open().close()  # a new instance on the same file is fine
