"""ACME nonces in a real redis-server (infra/acme/nonces.py, RedisNonceStore): a nonce issued through one store
object is accepted once through another connected to the same Redis (another server), never twice, not even by
racing consumers, and not after its lifetime; an unreachable Redis refuses rather than accepts, and the ACME
server then answers 503 serverInternal."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

import pytest
from acme_support import acme_world, registered
from redis_fixture import redis_url  # noqa: F401
from redis_fixture import start_redis, stop

from infra.acme.nonces import (LIFETIME, REDIS_PREFIX, NoncesUnavailable, RedisNonceStore, SQLiteNonceStore,
                               open_nonces)

redis = pytest.importorskip("redis")


def test_a_nonce_issued_by_one_server_is_accepted_once_by_another(redis_url):  # noqa: F811
    server_a, server_b = RedisNonceStore(redis_url), RedisNonceStore(redis_url)
    try:
        nonce = server_a.issue()
        assert len(nonce) == 22 and nonce != server_a.issue()
        assert server_b.consume(nonce) is True
        assert server_b.consume(nonce) is False  # a replay to the same server
        assert server_a.consume(nonce) is False  # and to the one that issued it
        assert server_a.consume("never-issued-by-anyone") is False
        assert server_a.consume("") is False and server_a.consume("x" * 65) is False
    finally:
        server_a.close()
        server_b.close()


def test_a_nonce_of_the_embedded_store_is_unknown_to_redis(tmp_path, redis_url):  # noqa: F811
    local = SQLiteNonceStore(tmp_path / "acme-nonces.db")
    shared = open_nonces(tmp_path / "unused.db", redis_url)
    try:
        assert isinstance(shared, RedisNonceStore) and not (tmp_path / "unused.db").exists()
        assert isinstance(open_nonces(tmp_path / "acme-nonces.db", None), SQLiteNonceStore)
        assert shared.consume(local.issue()) is False
    finally:
        local.close()
        shared.close()


def test_of_racing_consumers_on_separate_connections_exactly_one_wins(redis_url):  # noqa: F811
    racers = 8
    stores = [RedisNonceStore(redis_url) for _ in range(racers)]
    try:
        for _ in range(25):
            nonce = stores[0].issue()
            start, results = threading.Barrier(racers), [None] * racers

            def consume(i: int, nonce: str = nonce, start: threading.Barrier = start) -> None:
                start.wait()
                results[i] = stores[i].consume(nonce)

            threads = [threading.Thread(target=consume, args=(i,)) for i in range(racers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert results.count(True) == 1 and results.count(False) == racers - 1, results
    finally:
        for store in stores:
            store.close()


def test_a_nonce_lives_an_hour_and_is_refused_once_expired(redis_url):  # noqa: F811
    client = redis.Redis.from_url(redis_url)
    hourly, brief = RedisNonceStore(redis_url), RedisNonceStore(redis_url, lifetime=0.2)
    try:
        nonce = hourly.issue()
        assert 0 < client.pttl(REDIS_PREFIX + nonce) <= LIFETIME * 1000
        assert client.pttl(REDIS_PREFIX + nonce) > (LIFETIME - 60) * 1000
        short = brief.issue()
        deadline = time.monotonic() + 30  # a bound on waiting, not a timing assertion
        while client.exists(REDIS_PREFIX + short):
            assert time.monotonic() < deadline, "Redis never expired the nonce"
            time.sleep(0.05)
        assert hourly.consume(short) is False
        assert hourly.consume(nonce) is True
    finally:
        client.close()
        hourly.close()
        brief.close()


def test_an_unreachable_redis_refuses_every_nonce():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nothing listens there
    store = RedisNonceStore(f"redis://127.0.0.1:{port}/0")
    try:
        with pytest.raises(NoncesUnavailable):
            store.issue()
        with pytest.raises(NoncesUnavailable):
            store.consume("A" * 22)
    finally:
        store.close()


async def test_the_acme_server_takes_its_nonces_from_redis_and_refuses_while_redis_is_down(tmp_path, caplog):
    (tmp_path / "redis").mkdir()
    process, url = start_redis(tmp_path / "redis")
    try:
        async with acme_world(tmp_path, redis_url=url) as world:
            client = await registered(world)  # directory, nonce, EAB account: every nonce through Redis
            in_redis = redis.Redis.from_url(url)
            try:
                assert in_redis.exists(REDIS_PREFIX + client.nonce) == 1
            finally:
                in_redis.close()
            assert not (tmp_path / "data" / "acme-nonces.db").exists()
            stop(process)
            caplog.set_level(logging.WARNING, logger="api.acme_support")
            fresh = await world.api.client.head(client.directory["newNonce"])
            orders = await client.post(client.directory["newOrder"], {"identifiers": [
                {"type": "dns", "value": "node1.acme.test"}]})
            for refused in (fresh, orders):
                assert refused.status_code == 503 and "Replay-Nonce" not in refused.headers, refused.headers
            body = orders.json()
            assert body["type"] == "urn:ietf:params:acme:error:serverInternal" and body["field"] == "Replay-Nonce"
            # one try at the store per request: the refusal of a store that is down does not ask it again
            said = [record.getMessage() for record in caplog.records if record.name == "api.acme_support"]
            assert len(said) == 2 and all(line.startswith("ACME nonces unavailable") for line in said), said
            assert client.nonce not in caplog.text
    finally:
        stop(process)


async def test_a_slow_redis_holds_up_only_the_refusal_that_waits_for_its_nonce(tmp_path):
    """A refusal's nonce is issued off the event loop: while Redis holds every write (CLIENT PAUSE), the refusal
    waits and the same process still answers other requests; the refusal then comes with a nonce Redis accepts.
    Issued in Litestar's (synchronous) exception handler, the nonce held the whole event loop, so the health check
    could only be answered after the refusal."""
    (tmp_path / "redis").mkdir()
    process, url = start_redis(tmp_path / "redis")
    admin = redis.Redis.from_url(url)
    try:
        # rate limits off: they would count in Redis too, and wait there (off the loop) before the refusal
        async with acme_world(tmp_path, redis_url=url, rate_limit_per_address="", rate_limit_per_principal="") as world:
            client = await registered(world)
            assert admin.client_pause(1500, all=False)  # WRITE: SET waits until the pause ends, reads go on
            refusal = asyncio.create_task(world.api.client.post(  # refused before any nonce is consumed: 415
                client.directory["newOrder"], content=b"{}", headers={"Content-Type": "application/json"}))
            while not refusal.done() and not any(client["cmd"] == "set" and "b" in client["flags"]
                                                 for client in admin.client_list()):
                await asyncio.sleep(0.01)  # until the refusal's SET waits in Redis (or it was answered first)
            health = await world.api.client.get("/health/live")
            assert health.status_code == 200
            assert not refusal.done(), "the refusal was answered first: its nonce held the event loop"
            refused = await refusal
            assert refused.status_code == 415 and refused.json()["field"] == "Content-Type", refused.text
            nonce = refused.headers["Replay-Nonce"]
            assert admin.exists(REDIS_PREFIX + nonce) == 1
    finally:
        admin.close()
        stop(process)
