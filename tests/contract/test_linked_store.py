"""The EventStore contract against a worker's LinkedEventStore: appends through a real primary (a SQLite
store behind a LinkServer on a Unix socket), plus what the link itself promises.

The linked store polls only every 30 s here, so every live subscription test passes only if the
primary's progress pushes wake it.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from pathlib import Path

import msgspec
import pytest
from eventstore_contract import EventStoreContract, assert_chain, fresh_stream, new_event, request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.chain import genesis_hash
from domain.errors import IdempotencyKeyReused, WrongExpectedVersion
from infra.eventstore.linked import LinkedEventStore
from infra.eventstore.group_commit import StoreUnavailable, chained_rows
from infra.eventstore.sqlite import SQLiteEventStore
from infra.primary_link import AppendCall, frame, read_frame
from infra.primary_link_client import LinkClient
from infra.primary_link_server import LinkServer
from projections.registry import all_projectors
from projections.runner import ProjectionRunner


@contextlib.asynccontextmanager
async def primary_and_worker(tmp: Path, rate_hit=None):
    primary = SQLiteEventStore(tmp / "events.db", poll_interval=0.05, witness_path=tmp / "audit-witness.json").open()
    runner = ProjectionRunner(primary, tmp / "views.db", all_projectors(), poll_interval=0.05).open()
    server = LinkServer(tmp / "run" / "primary.sock", primary, runner, rate_hit=rate_hit)
    await server.start()
    linked = LinkedEventStore(tmp / "events.db", LinkClient(server.path, lambda progress: None), poll_interval=30.0)
    await linked.link.start()
    try:
        yield primary, runner, server, linked
    finally:
        await linked.link.stop()
        await server.stop()
        runner.close()
        primary.close()


class TestLinkedEventStore(EventStoreContract):
    @pytest.fixture
    async def store(self, tmp_path):
        async with primary_and_worker(tmp_path) as (_, _, _, linked):
            yield linked


async def test_refusals_cross_the_link_as_the_same_exceptions(tmp_path):
    async with primary_and_worker(tmp_path) as (_, _, _, linked):
        stream = fresh_stream()
        await linked.append(request(stream, 0, 2))
        with pytest.raises(WrongExpectedVersion) as refused:
            await linked.append(request(stream, 1))
        assert (refused.value.stream_id, refused.value.expected, refused.value.actual) == (stream, 1, 2)
        keyed = {"idempotency_scope": "s", "idempotency_key": "k", "fingerprint": "a"}
        await linked.append(request(fresh_stream(), 0, **keyed))
        with pytest.raises(IdempotencyKeyReused):
            await linked.append(request(fresh_stream(), 0, **{**keyed, "fingerprint": "b"}))
        with pytest.raises(ValueError):
            await linked.append(request(fresh_stream(), 0, []))


async def test_progress_is_pushed_after_every_commit_and_projection_step(tmp_path):
    async with primary_and_worker(tmp_path) as (primary, runner, _, linked):
        seen: list = []
        linked.progress_hooks.append(seen.append)
        result = await linked.append(request(fresh_stream(), 0, 3))
        async with asyncio.timeout(5):
            while not seen or seen[-1].head < result.global_position:
                await asyncio.sleep(0.01)
        assert seen[-1].writable and linked.writable()
        await runner.advance(result.global_position)  # the primary's read models moved: the worker hears of it
        async with asyncio.timeout(5):
            while linked.link.progress.projected != result.global_position:
                await asyncio.sleep(0.01)


async def test_a_bad_frame_drops_only_that_connection(tmp_path):
    async with primary_and_worker(tmp_path) as (primary, _, server, linked):
        reader, writer = await asyncio.open_unix_connection(str(server.path))
        await read_frame(reader)  # the greeting: where the log stands
        writer.write(struct.pack(">I", 9) + b"not json!")
        await writer.drain()
        assert await reader.read() == b""  # closed by the primary
        writer.close()
        reader, writer = await asyncio.open_unix_connection(str(server.path))
        await read_frame(reader)
        writer.write(struct.pack(">I", 2**31))  # a length over the limit
        await writer.drain()
        assert await reader.read() == b""
        writer.close()
        assert (await linked.append(request(fresh_stream(), 0))).version == 1  # the worker's link is untouched
        assert primary.writable()


async def test_a_lost_primary_fails_appends_until_it_is_back(tmp_path):
    async with primary_and_worker(tmp_path) as (primary, runner, server, linked):
        await server.stop()
        async with asyncio.timeout(5):
            while linked.link.connected:
                await asyncio.sleep(0.01)
        assert not linked.writable()
        with pytest.raises(StoreUnavailable):
            await linked.append(request(fresh_stream(), 0))
        again = LinkServer(server.path, primary, runner)
        await again.start()
        try:
            async with asyncio.timeout(5):
                while not linked.link.connected:
                    await asyncio.sleep(0.02)
            stream = fresh_stream()
            await linked.append(request(stream, 0, 2))
            assert_chain(await linked.read_stream("acme", stream), "acme", stream)
        finally:
            await again.stop()


async def test_rate_limit_hits_are_answered_by_the_primary(tmp_path):
    calls = []

    async def rate_hit(key, limit, period):
        calls.append((key, limit, period))
        return True, limit - len(calls), 1.5, 0.0

    async with primary_and_worker(tmp_path, rate_hit) as (_, _, _, linked):
        assert await linked.link.rate_hit("principal:x", 10, 60.0) == [True, 9, 1.5, 0.0]
        assert calls == [("principal:x", 10, 60.0)]


async def test_the_socket_is_private(tmp_path):
    async with primary_and_worker(tmp_path) as (_, _, server, _):
        assert server.path.stat().st_mode & 0o077 == 0
        assert server.path.parent.stat().st_mode & 0o077 == 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False) | st.text() | st.binary(max_size=64),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_a_payload_hashes_the_same_after_crossing_the_link(payload):
    """What the primary chains is what the worker decided: bodies and hashes are equal on both sides."""
    sent = request("thing-1", 0, [new_event(payload)])
    data = frame(AppendCall(id=1, request=sent))

    async def receive():
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_frame(reader)

    received = asyncio.run(receive())
    assert isinstance(received, AppendCall) and received.id == 1
    genesis = genesis_hash("acme", "thing-1")
    assert chained_rows(received.request, 0, 0, genesis) == chained_rows(sent, 0, 0, genesis)
    assert msgspec.json.encode(received.request) == msgspec.json.encode(sent)


# quota reservations, held in the primary's ledger ----------------------------------------------------------

def counted_at(certificates: int, position: int):
    from commands.ports import CountedUsage
    from domain.tenant import Usage
    return CountedUsage(usage=Usage(certificates=certificates), cas_position=position, certificates_position=position)


async def test_workers_take_quota_reservations_in_the_primarys_ledger_against_each_other(tmp_path):
    from datetime import UTC, datetime

    from commands.quotas import QuotaLedger, Reservation, StaleCount
    from domain.errors import QuotaExceeded
    from domain.tenant import NEW_CERTIFICATE, Quotas
    from infra.primary_link_client import LinkedQuotaLedger

    now, bounds = datetime(2026, 12, 6, 12, tzinfo=UTC), Quotas(max_certificates=3, max_issuances_per_day=10)
    ledger = QuotaLedger()
    primary = SQLiteEventStore(tmp_path / "events.db", poll_interval=0.05).open()
    runner = ProjectionRunner(primary, tmp_path / "views.db", all_projectors(), poll_interval=0.05).open()
    server = LinkServer(tmp_path / "run" / "primary.sock", primary, runner, quotas=ledger)
    await server.start()
    workers = [LinkClient(server.path, lambda progress: None) for _ in range(2)]
    for link in workers:
        await link.start()
    one, two = (LinkedQuotaLedger(link) for link in workers)

    def reservation() -> Reservation:
        return Reservation(adding=NEW_CERTIFICATE, day="2026-12-06")

    async def until(condition) -> None:
        async with asyncio.timeout(5):
            while not condition():
                await asyncio.sleep(0.01)
    try:
        # one unit counted, two taken by two workers at once: the third worker-side take is refused
        a, b = reservation(), reservation()
        await asyncio.gather(one.take("acme", a, counted_at(1, 5), bounds, now),
                             two.take("acme", b, counted_at(1, 5), bounds, now))
        with pytest.raises(QuotaExceeded) as refused:
            await one.take("acme", reservation(), counted_at(1, 5), bounds, now)
        assert refused.value.field == "quotas.max_certificates" and refused.value.status == 409
        assert "holds 3 of its 3" in refused.value.detail
        # a release frees a unit; a landing holds it until a count includes it
        two.release("acme", b)
        await until(lambda: len(ledger.in_flight("acme")) == 1)
        a.land(9)  # the worker's command appended at 9
        await until(lambda: not ledger.in_flight("acme"))
        c = reservation()
        await two.take("acme", c, counted_at(1, 8), bounds, now)  # 1 counted + a (at 9, not counted) + c
        with pytest.raises(QuotaExceeded):
            await one.take("acme", reservation(), counted_at(1, 8), bounds, now)
        # a count that includes 9 lets a go; a count made before it may no longer be checked: stale
        await one.take("acme", reservation(), counted_at(2, 9), Quotas(max_certificates=4), now)
        with pytest.raises(StaleCount):
            await two.take("acme", reservation(), counted_at(1, 8), bounds, now)
        # a per-day quota's refusal crosses with its status and Retry-After
        with pytest.raises(QuotaExceeded) as daily:
            await one.take("globex", reservation(), counted_at(0, 9), Quotas(max_issuances_per_day=0), now)
        assert daily.value.status == 429 and daily.value.retry_after_seconds == 12 * 3600 + 1
        # a worker gone with commands in flight: its units are free again
        assert len(ledger.in_flight("acme")) == 2  # c (worker two) and the last one taken (worker one)
        await workers[1].stop()
        await until(lambda: len(ledger.in_flight("acme")) == 1)
        # the settle wait runs in the primary, over every worker's reservations
        assert await one.settle("acme", 0.05) is False  # still in flight after 50 ms
        [held] = ledger.in_flight("acme")
        asyncio.get_running_loop().call_later(0.05, held.land, 11)
        assert await one.settle("acme", 5) is True
    finally:
        for link in workers:
            await link.stop()
        await server.stop()
        runner.close()
        primary.close()
