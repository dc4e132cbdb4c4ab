"""The EventStore port's contract (commands/ports.py): one suite, subclassed once per store.

A subclass provides a ``store`` fixture yielding an open, empty store. Everything here goes
through the port's async API only, so the same tests hold every implementation to the same
behaviour: optimistic concurrency, hash chains, a contiguous global log, live subscriptions
and idempotent retries.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from commands.ids import uuid7
from commands.ports import AppendRequest, AppendResult, NewEvent
from domain.chain import canonical_bytes, chain_hash, envelope_body, genesis_hash
from domain.errors import DomainError, IdempotencyKeyReused, WrongExpectedVersion
from domain.events import Actor, EventEnvelope

ACTOR = Actor(principal="contract-test", auth_method="test")
SUBSCRIBE_TIMEOUT = 10.0


def new_event(payload: dict | None = None, type_: str = "test.happened") -> NewEvent:
    return NewEvent(event_id=uuid7(), type=type_, schema_version=1, occurred_at="2025-01-01T00:00:00.000000Z",
                    actor=ACTOR, correlation_id="corr-1", causation_id=None, payload=payload or {})


def request(stream_id: str, expected: int, events: int | list[NewEvent] = 1, tenant_id: str = "acme",
            **idempotency) -> AppendRequest:
    if isinstance(events, int):
        events = [new_event({"n": i}) for i in range(events)]
    return AppendRequest(tenant_id=tenant_id, stream_id=stream_id, stream_type="thing", expected_version=expected,
                         events=events, **idempotency)


def fresh_stream() -> str:
    return f"thing-{uuid7()}"


def assert_chain(events: list[EventEnvelope], tenant_id: str, stream_id: str) -> None:
    """Versions 1..n in order, each linked to its predecessor, each hash recomputable from its body."""
    prev = genesis_hash(tenant_id, stream_id)
    for expected_version, envelope in enumerate(events, start=1):
        assert (envelope.tenant_id, envelope.stream_id, envelope.version) == (tenant_id, stream_id, expected_version)
        assert envelope.prev_hash == prev, f"v{expected_version} does not link to its predecessor"
        assert envelope.hash == chain_hash(envelope.prev_hash, envelope_body(envelope)), f"v{expected_version}"
        prev = envelope.hash


class EventStoreContract:
    """Abstract: subclasses provide ``store``. Not collected by itself (no ``Test`` prefix)."""

    @pytest.fixture
    def store(self):
        raise NotImplementedError("a store implementation's test module provides this fixture")

    # helpers ----------------------------------------------------------------------------
    async def read_everything(self, store, after: int = 0) -> list[EventEnvelope]:
        events: list[EventEnvelope] = []
        while batch := await store.read_all(after, 1000):
            events.extend(batch)
            after = batch[-1].global_position
        return events

    async def raw_hashes(self, store, after: int = 0) -> dict[int, str]:
        return {e.global_position: e.hash for e in await self.read_everything(store, after)}

    # appending --------------------------------------------------------------------------
    async def test_append_to_a_new_stream_returns_version_and_positions(self, store):
        head = await store.head_position()
        stream = fresh_stream()
        events = [new_event({"i": i}) for i in range(3)]
        result = await store.append(request(stream, 0, events))
        assert isinstance(result, AppendResult)
        assert (result.stream_id, result.version, result.replayed) == (stream, 3, False)
        assert (result.first_position, result.global_position) == (head + 1, head + 3)
        assert await store.head_position() == head + 3
        recorded = await store.read_stream("acme", stream)
        assert [e.event_id for e in recorded] == [e.event_id for e in events]
        assert [e.global_position for e in recorded] == [head + 1, head + 2, head + 3]
        assert all((e.stream_type, e.type, e.actor, e.correlation_id, e.causation_id, e.schema_version) ==
                   ("thing", "test.happened", ACTOR, "corr-1", None, 1) for e in recorded)
        assert [e.payload for e in recorded] == [{"i": 0}, {"i": 1}, {"i": 2}]

    async def test_append_continues_a_stream_from_the_version_read(self, store):
        stream = fresh_stream()
        await store.append(request(stream, 0, 2))
        result = await store.append(request(stream, 2, 3))
        assert result.version == 5 and result.global_position - result.first_position == 2
        assert [e.version for e in await store.read_stream("acme", stream)] == [1, 2, 3, 4, 5]

    @pytest.mark.parametrize("existing, expected", [(0, 1), (0, 5), (2, 0), (2, 1), (2, 3), (2, -1)])
    async def test_a_wrong_expected_version_is_refused_and_writes_nothing(self, store, existing, expected):
        stream = fresh_stream()
        if existing:
            await store.append(request(stream, 0, existing))
        before = await self.raw_hashes(store)
        with pytest.raises(WrongExpectedVersion) as caught:
            await store.append(request(stream, expected, 2))
        err = caught.value
        assert (err.stream_id, err.expected, err.actual, err.status) == (stream, expected, existing, 409)
        assert await self.raw_hashes(store) == before
        assert len(await store.read_stream("acme", stream)) == existing

    async def test_an_empty_append_is_refused(self, store):
        stream = fresh_stream()
        head = await store.head_position()
        with pytest.raises((ValueError, DomainError)):
            await store.append(request(stream, 0, []))
        assert await store.head_position() == head
        assert await store.read_stream("acme", stream) == []

    async def test_the_same_stream_id_in_two_tenants_is_two_streams(self, store):
        stream = fresh_stream()
        await store.append(request(stream, 0, 2, tenant_id="acme"))
        await store.append(request(stream, 0, 1, tenant_id="globex"))
        acme, globex = await store.read_stream("acme", stream), await store.read_stream("globex", stream)
        assert [e.version for e in acme] == [1, 2] and [e.version for e in globex] == [1]
        assert_chain(acme, "acme", stream)
        assert_chain(globex, "globex", stream)
        assert acme[0].prev_hash != globex[0].prev_hash

    # reading ----------------------------------------------------------------------------
    async def test_read_stream_is_in_version_order_and_chains(self, store):
        streams = [fresh_stream() for _ in range(3)]
        for round_ in range(4):  # interleave the streams in the global log
            for i, stream in enumerate(streams):
                await store.append(request(stream, round_ * (i + 1), i + 1))
        for i, stream in enumerate(streams):
            events = await store.read_stream("acme", stream)
            assert len(events) == 4 * (i + 1)
            assert_chain(events, "acme", stream)
            positions = [e.global_position for e in events]
            assert positions == sorted(positions)

    async def test_read_stream_from_a_version(self, store):
        stream = fresh_stream()
        await store.append(request(stream, 0, 5))
        assert [e.version for e in await store.read_stream("acme", stream, from_version=3)] == [3, 4, 5]
        assert await store.read_stream("acme", stream, from_version=6) == []
        assert await store.read_stream("acme", fresh_stream()) == []

    async def test_read_all_from_a_position_with_a_limit(self, store):
        head = await store.head_position()
        a, b = fresh_stream(), fresh_stream()
        await store.append(request(a, 0, 3))
        await store.append(request(b, 0, 2))
        await store.append(request(a, 3, 2))
        everything = await store.read_all(head, 100)
        assert [e.global_position for e in everything] == list(range(head + 1, head + 8))
        assert [(e.stream_id, e.version) for e in everything] == [
            (a, 1), (a, 2), (a, 3), (b, 1), (b, 2), (a, 4), (a, 5)]
        page = await store.read_all(head + 2, limit=3)
        assert [e.global_position for e in page] == [head + 3, head + 4, head + 5]
        assert [e.event_id for e in page] == [e.event_id for e in everything[2:5]]
        assert await store.read_all(head + 7) == []
        for envelope in everything:
            assert envelope.hash == chain_hash(envelope.prev_hash, envelope_body(envelope))

    async def test_global_positions_are_contiguous_and_increasing(self, store):
        head = await store.head_position()
        streams = [fresh_stream() for _ in range(5)]
        versions = dict.fromkeys(streams, 0)
        rng = random.Random(7)
        results = []
        for _ in range(30):
            stream = rng.choice(streams)
            count = rng.randint(1, 4)
            results.append(await store.append(request(stream, versions[stream], count)))
            versions[stream] += count
        positions = [e.global_position for e in await self.read_everything(store, head)]
        assert positions == list(range(head + 1, head + 1 + sum(versions.values())))
        assert results[0].first_position == head + 1
        for before, after in zip(results, results[1:]):
            assert after.first_position == before.global_position + 1
        assert await store.head_position() == positions[-1]

    # subscribing ------------------------------------------------------------------------
    async def test_subscribe_delivers_existing_then_live_events(self, store):
        head = await store.head_position()
        stream = fresh_stream()
        await store.append(request(stream, 0, 3))
        subscription = store.subscribe(head)
        received: list[EventEnvelope] = []
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                async for envelope in subscription:
                    received.append(envelope)
                    if len(received) == 3:
                        await store.append(request(stream, 3, 2))  # live, while subscribed
                    if len(received) == 5:
                        break
        finally:
            await subscription.aclose()
        assert [e.global_position for e in received] == list(range(head + 1, head + 6))
        assert [e.version for e in received] == [1, 2, 3, 4, 5]
        assert_chain(received, "acme", stream)

    async def test_subscribe_waits_for_appends_from_another_task(self, store):
        stream = fresh_stream()
        await store.append(request(stream, 0, 2))
        head = await store.head_position()

        async def first_event() -> EventEnvelope:
            subscription = store.subscribe(head)
            try:
                return await anext(subscription)
            finally:
                await subscription.aclose()

        waiter = asyncio.create_task(first_event())
        await asyncio.sleep(0.05)  # let it reach the live wait: nothing is there yet
        assert not waiter.done()
        await store.append(request(stream, 2, 1))
        envelope = await asyncio.wait_for(waiter, SUBSCRIBE_TIMEOUT)
        assert (envelope.global_position, envelope.stream_id, envelope.version) == (head + 1, stream, 3)

    # idempotency ------------------------------------------------------------------------
    async def test_an_idempotent_retry_returns_the_first_result_and_writes_nothing(self, store):
        stream = fresh_stream()
        idem = dict(idempotency_scope="p-1|acme", idempotency_key="key-1", fingerprint="fp-1")
        first = await store.append(request(stream, 0, 2, **idem))
        head = await store.head_position()
        again = await store.append(request(stream, 0, 2, **idem))  # the retry carries the version it first read
        assert again.replayed and not first.replayed
        assert (again.stream_id, again.version, again.first_position, again.global_position) == (
            first.stream_id, first.version, first.first_position, first.global_position)
        assert await store.head_position() == head
        assert len(await store.read_stream("acme", stream)) == 2
        looked_up = await store.idempotent_result("p-1|acme", "key-1", "fp-1")
        assert looked_up is not None and looked_up.replayed and looked_up.global_position == first.global_position

    async def test_an_idempotency_key_reused_for_another_request_is_refused(self, store):
        stream = fresh_stream()
        await store.append(request(stream, 0, 1, idempotency_scope="s", idempotency_key="k", fingerprint="fp-1"))
        head = await store.head_position()
        with pytest.raises(IdempotencyKeyReused) as caught:
            await store.append(request(stream, 1, 1, idempotency_scope="s", idempotency_key="k", fingerprint="fp-2"))
        assert caught.value.key == "k" and caught.value.field == "Idempotency-Key"
        with pytest.raises(IdempotencyKeyReused):
            await store.idempotent_result("s", "k", "fp-2")
        assert await store.head_position() == head

    async def test_idempotency_keys_are_scoped(self, store):
        assert await store.idempotent_result("s", "unknown", "fp") is None
        stream = fresh_stream()
        await store.append(request(stream, 0, 1, idempotency_scope="s-1", idempotency_key="k", fingerprint="a"))
        result = await store.append(request(stream, 1, 1, idempotency_scope="s-2", idempotency_key="k",
                                            fingerprint="b"))
        assert not result.replayed and result.version == 2

    async def test_concurrent_duplicates_of_one_idempotent_request_write_once(self, store):
        stream = fresh_stream()
        head = await store.head_position()
        idem = dict(idempotency_scope="s", idempotency_key="dup", fingerprint="fp")
        results = await asyncio.gather(*(store.append(request(stream, 0, 1, **idem)) for _ in range(20)))
        assert sum(not r.replayed for r in results) == 1
        assert {(r.version, r.global_position) for r in results} == {(1, head + 1)}
        assert await store.head_position() == head + 1

    async def test_a_refused_append_does_not_claim_its_idempotency_key(self, store):
        stream = fresh_stream()
        idem = dict(idempotency_scope="s", idempotency_key="k", fingerprint="fp")
        with pytest.raises(WrongExpectedVersion):
            await store.append(request(stream, 4, 1, **idem))
        assert await store.idempotent_result("s", "k", "fp") is None
        assert (await store.append(request(stream, 0, 1, **idem))).replayed is False

    # concurrency ------------------------------------------------------------------------
    async def test_fifty_racing_writers_on_one_stream_each_land_exactly_once(self, store):
        stream = fresh_stream()
        attempts = 0

        async def writer(n: int) -> AppendResult:
            nonlocal attempts
            while True:
                version = len(await store.read_stream("acme", stream))
                attempts += 1
                try:
                    return await store.append(request(stream, version, [new_event({"writer": n})]))
                except WrongExpectedVersion:
                    await asyncio.sleep(0)

        results = await asyncio.wait_for(asyncio.gather(*(writer(n) for n in range(50))), 60)
        assert sorted(r.version for r in results) == list(range(1, 51))
        events = await store.read_stream("acme", stream)
        assert [e.version for e in events] == list(range(1, 51))
        assert sorted(e.payload["writer"] for e in events) == list(range(50))
        assert_chain(events, "acme", stream)
        assert attempts >= 50

    async def test_many_streams_written_concurrently_stay_separate_and_contiguous(self, store):
        head = await store.head_position()
        streams = [fresh_stream() for _ in range(40)]

        async def owner(stream: str) -> list[AppendResult]:
            results = []
            for version in range(0, 10, 2):
                results.append(await store.append(request(stream, version, 2)))
            return results

        per_stream = await asyncio.wait_for(asyncio.gather(*(owner(s) for s in streams)), 60)
        for results in per_stream:
            assert [r.version for r in results] == [2, 4, 6, 8, 10]
            assert all(r.global_position == r.first_position + 1 for r in results)
        for stream in streams:
            events = await store.read_stream("acme", stream)
            assert_chain(events, "acme", stream)
        everything = await self.read_everything(store, head)
        assert [e.global_position for e in everything] == list(range(head + 1, head + 401))
        claimed = sorted(p for results in per_stream for r in results
                         for p in range(r.first_position, r.global_position + 1))
        assert claimed == list(range(head + 1, head + 401))

    # payloads ---------------------------------------------------------------------------
    async def test_unicode_and_large_payloads_round_trip_byte_exactly(self, store):
        stream = fresh_stream()
        payloads = [
            {"nfc": "\u00e9", "nfd": "e\u0301", "emoji": "\U0001f510\u200d\U0001f511", "rtl": "\u05e9\u05dc\u05d5\u05dd",
             "cjk": "\u8a3c\u660e\u66f8", "nul": "a\x00b", "controls": "\t\n\r\x1f", "quote": '"\\/</script>',
             "bom": "\ufeff", "astral": "\U0010ffff"},
            {"ints": [0, -1, 2**63 - 1, -(2**63), 2**64, -(2**70)], "nested": {"z": [{"y": [[], {}]}], "a": None},
             "bools": [True, False], "empty": "", "unicode keys \u00fc\u00df": {"\u2603": 1}},
            {"big": "x" * 1_000_000, "blob": "".join(chr(c) for c in range(0x20, 0x3000) if not 0xD800 <= c < 0xE000)},
        ]
        await store.append(request(stream, 0, [new_event(p) for p in payloads]))
        events = await store.read_stream("acme", stream)
        assert [e.payload for e in events] == payloads
        for event, payload in zip(events, payloads):
            assert canonical_bytes(event.payload) == canonical_bytes(payload)
        assert_chain(events, "acme", stream)
        assert [e.payload for e in await store.read_all(events[0].global_position - 1, 3)] == payloads
