"""Bounded validation: a challenge no worker answers is sent again less and less often, then ends when its
authorization expires (CSM_ACME_AUTHORIZATION_LIFETIME_HOURS, seven days by default), and is sent no more; a result
that comes later records nothing. The server's clock is the test's (``services.clock``), the queue dramatiq's
in-memory broker with no worker consuming it, and the validator is driven pass by pass (its background loop is
stopped), so nothing waits in real time."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from prometheus_client import REGISTRY

from acme_support import acme_world, http01, order_one, registered
from test_api_support import Clock, written_since

from domain import acme_authz
from infra.acme.validator import RESEND_FIRST, RESEND_MAX, resend_delay

# minutes after the first send at which each later one is due: 5, then 10, 20, 40 more, then hourly
DUE = (5, 15, 35, 75, 135, 195)


def test_resends_back_off_to_at_most_an_hour():
    delays = [resend_delay(n) for n in range(1, 40)]
    assert delays[:5] == [timedelta(minutes=m) for m in (5, 10, 20, 40, 60)]
    assert delays[0] == RESEND_FIRST and set(delays[4:]) == {RESEND_MAX}
    assert delays == sorted(delays)


async def _stopped_validator(world):
    """The server's validator, its background loop stopped: the test runs its passes."""
    runtime = world.api.runtime
    [task] = [t for t in runtime.tasks if t.get_name() == "acme-validator"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return runtime.acme_validator


async def test_an_unanswered_validation_backs_off_then_expires_and_is_sent_no_more(tmp_path):
    async with acme_world(tmp_path, job_worker_threads=0) as world:  # nothing consumes the acme queue
        runtime = world.api.runtime
        clock = runtime.services.clock = Clock()
        validator = await _stopped_validator(world)
        queue = runtime.jobs.broker.queues["acme"]
        client = await registered(world)
        order_url, authz_url = await order_one(client, "node1.acme.test")
        authz = (await client.post(authz_url, None)).json()
        expires = datetime.fromisoformat(authz["expires"])
        assert timedelta(days=7) - timedelta(minutes=1) < expires - clock.now() <= timedelta(days=7)
        assert (await client.post(http01(await client.post(authz_url, None))["url"], {})).status_code == 200
        assert await runtime.runner.wait_for(await runtime.store.head_position(), 10)

        async def sends_after(minutes: float) -> int:
            clock.offset = timedelta(minutes=minutes)
            await validator.send_pending()
            return queue.qsize()

        assert await sends_after(0) == 1
        assert await sends_after(0) == 1
        for count, due in enumerate(DUE, start=2):
            assert await sends_after(due - 0.5) == count - 1, f"sent again before minute {due}"
            assert await sends_after(due) == count, f"not sent again at minute {due}"

        # past the expiry: the challenge ends, without another send
        until_expiry = (expires - datetime.now(expires.tzinfo)) / timedelta(minutes=1)
        assert await sends_after(until_expiry + 1) == len(DUE) + 1
        events = await runtime.store.read_stream(world.tenant, acme_authz.authz_stream_id(authz_url.rsplit("/", 1)[-1]))
        assert events[-1].type == "acme.authorization_expired"
        assert (await client.post(authz_url, None)).json()["status"] == "expired"
        challenge = http01(await client.post(authz_url, None))
        assert challenge["status"] == "invalid"
        assert challenge["error"]["type"] == "urn:ietf:params:acme:error:serverInternal"
        assert "expired" in challenge["error"]["detail"]
        assert (await client.post(order_url, None)).json()["status"] == "invalid"
        assert await runtime.runner.wait_for(await runtime.store.head_position(), 10)
        for later in (1, 2, 24 * 60):  # never again, however long
            assert await sends_after(until_expiry + later) == len(DUE) + 1

        # a worker that answers now records nothing: the result is taken and dropped
        validator.results.put(world.tenant, authz_url.rsplit("/", 1)[-1], acme_authz.ChallengeValidated(
            challenge_id=challenge["url"].rsplit("/", 1)[-1], address="127.0.0.1"))
        before = await runtime.store.head_position()
        await validator.record_results()
        # nothing appended but what the background jobs append on their own (audit checkpoints, CRLs now due)
        assert await written_since(world.api, before) == set()
        assert validator.results.take() == []
        assert (await client.post(authz_url, None)).json()["status"] == "expired"


async def test_the_authorization_lifetime_is_the_setting_and_ends_a_validation_at_its_end(tmp_path):
    """CSM_ACME_AUTHORIZATION_LIFETIME_HOURS (here 2): the order and its authorization expire two hours after the
    order, and a challenge no worker answered ends then, not after seven days."""
    async with acme_world(tmp_path, job_worker_threads=0, acme_authorization_lifetime_hours=2) as world:
        runtime = world.api.runtime
        clock = runtime.services.clock = Clock()
        validator = await _stopped_validator(world)
        client = await registered(world)
        order_url, authz_url = await order_one(client, "node1.acme.test")
        order = (await client.post(order_url, None)).json()
        authz = (await client.post(authz_url, None)).json()
        assert order["expires"] == authz["expires"]
        expires = datetime.fromisoformat(authz["expires"])
        assert timedelta(hours=2) - timedelta(minutes=1) < expires - clock.now() <= timedelta(hours=2)
        assert (await client.post(http01(await client.post(authz_url, None))["url"], {})).status_code == 200
        assert await runtime.runner.wait_for(await runtime.store.head_position(), 10)
        authz_id = authz_url.rsplit("/", 1)[-1]
        clock.offset = timedelta(minutes=119)
        await validator.send_pending()
        events = await runtime.store.read_stream(world.tenant, acme_authz.authz_stream_id(authz_id))
        assert events[-1].type == "acme.challenge_started"
        expired = REGISTRY.get_sample_value("csm_acme_validations_total", {"outcome": "expired"}) or 0
        clock.offset = timedelta(hours=2, minutes=1)
        await validator.send_pending()
        events = await runtime.store.read_stream(world.tenant, acme_authz.authz_stream_id(authz_id))
        assert events[-1].type == "acme.authorization_expired"
        # counted where CsmAcmeAuthorizationsExpired (deploy/prometheus/csm-rules.yml) looks, once
        assert REGISTRY.get_sample_value("csm_acme_validations_total", {"outcome": "expired"}) == expired + 1
        await validator.send_pending()
        assert REGISTRY.get_sample_value("csm_acme_validations_total", {"outcome": "expired"}) == expired + 1
        assert (await client.post(order_url, None)).json()["status"] == "invalid"


async def test_every_pending_challenge_is_sent_whatever_waits_before_it(tmp_path, monkeypatch):
    """The validator reads all pending challenges page by page: three newer ones are sent while two older ones,
    sent already, wait for their resend (it used to look at the oldest 100 only, so newer ones starved)."""
    monkeypatch.setattr("infra.acme.validator.PAGE", 2)
    async with acme_world(tmp_path, job_worker_threads=0) as world:
        runtime = world.api.runtime
        runtime.services.clock = Clock()
        validator = await _stopped_validator(world)
        queue = runtime.jobs.broker.queues["acme"]
        client = await registered(world)

        async def start(name: str) -> None:
            _order_url, authz_url = await order_one(client, name)
            challenge = http01(await client.post(authz_url, None))
            assert (await client.post(challenge["url"], {})).status_code == 200
            assert await runtime.runner.wait_for(await runtime.store.head_position(), 10)

        for n in (1, 2):
            await start(f"old{n}.acme.test")
        await validator.send_pending()
        assert queue.qsize() == 2
        for n in (1, 2, 3):
            await start(f"new{n}.acme.test")
        await validator.send_pending()  # the two old ones are not due again; the three new ones are sent
        assert queue.qsize() == 5
        await validator.send_pending()  # and nothing is sent twice within its delay, on any page
        assert queue.qsize() == 5
