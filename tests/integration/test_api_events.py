"""The SSE event stream over real HTTP: from a position, resumed with Last-Event-ID, live, scoped, kept alive, and
ended once the caller's credential no longer holds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import httpx
import pytest
from test_api_support import Clock, api, assert_problem  # noqa: F401

READ_TIMEOUT = 20


@pytest.fixture
async def admin(api):
    return await api.admin()


async def read_sse(response: httpx.Response | AsyncIterator[str], stop: Callable[[list[dict]], bool]) -> list[dict]:
    """Parse SSE blocks (``{"id", "event", "data", "comment"}``) until ``stop(blocks)`` holds (from a response, or
    from its lines when a test reads on after stopping)."""
    lines = response.aiter_lines() if isinstance(response, httpx.Response) else response
    blocks: list[dict] = []
    block: dict = {}
    async with asyncio.timeout(READ_TIMEOUT):
        async for line in lines:
            if line:
                name, _, value = line.partition(":")
                block[name or "comment"] = value.removeprefix(" ")
                continue
            if block:
                if "data" in block:
                    block["data"] = json.loads(block["data"])
                blocks.append(block)
                block = {}
                if stop(blocks):
                    return blocks
    raise AssertionError(f"the stream ended early after {blocks}")


def events_only(blocks: list[dict]) -> list[dict]:
    return [block for block in blocks if "id" in block]


def reached(position: int) -> Callable[[list[dict]], bool]:
    return lambda blocks: any(int(b["id"]) >= position for b in events_only(blocks))


async def test_the_stream_delivers_from_a_position_and_resumes_with_last_event_id(api, admin):
    results = [await api.create_tenant(admin, tenant_id) for tenant_id in ("acme", "globex", "initech")]
    last = results[-1]["global_position"]
    async with api.client.stream("GET", "/v1/events/stream", params={"after": 0}, headers=admin) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        events = events_only(await read_sse(response, reached(last)))
    ids = [int(event["id"]) for event in events]
    assert ids == list(range(1, len(ids) + 1))
    for event in events:
        assert event["event"] == event["data"]["type"] and int(event["id"]) == event["data"]["global_position"]
        assert len(event["data"]["hash"]) == 96 and event["data"]["prev_hash"]
    created = [e for e in events if e["event"] == "tenant.created"]
    assert [e["data"]["payload"]["tenant_id"] for e in created] == ["acme", "globex", "initech"]
    resume_at = int(created[1]["id"])
    headers = {**admin, "Last-Event-ID": str(resume_at)}
    async with api.client.stream("GET", "/v1/events/stream", params={"after": 0}, headers=headers) as response:
        resumed = events_only(await read_sse(response, reached(last)))
    assert int(resumed[0]["id"]) == resume_at + 1
    assert [int(e["id"]) for e in resumed] == [i for i in ids if i > resume_at][:len(resumed)]


async def test_without_a_position_the_stream_carries_new_events(api, admin):
    await api.create_tenant(admin, "acme")
    async with api.client.stream("GET", "/v1/events/stream", headers=admin) as response:
        assert response.status_code == 200
        created = await api.create_tenant(admin, "globex")
        events = events_only(await read_sse(response, reached(created["global_position"])))
    assert all(e["data"]["payload"].get("tenant_id") != "acme" for e in events)
    assert events[-1]["data"]["stream_id"] == "tenant-globex"


async def test_a_tenant_scoped_stream_never_shows_other_tenants(api, admin):
    await api.create_tenant(admin, "acme")
    await api.create_tenant(admin, "globex")
    renamed = (await api.client.post("/v1/tenants/acme/rename", json={"name": "Acme 2"}, headers=admin)).json()
    scoped = await api.token("tenant-admin", tenant_id="acme")
    async with api.client.stream("GET", "/v1/events/stream", params={"after": 0}, headers=scoped) as response:
        assert response.status_code == 200
        events = events_only(await read_sse(response, reached(renamed["global_position"])))
    assert [e["event"] for e in events] == ["tenant.created", "tenant.renamed"]
    assert {e["data"]["tenant_id"] for e in events} == {"acme"}
    viewer = await api.token("viewer")
    denied = await api.client.get("/v1/events/stream", headers=viewer)
    assert denied.status_code == 403


async def test_an_idle_stream_sends_keep_alive_comments(api, admin):
    api.app.state.sse_keepalive = 0.05
    async with api.client.stream("GET", "/v1/events/stream", headers=admin) as response:
        blocks = await read_sse(response, lambda blocks: any(b.get("comment") == "keep-alive" for b in blocks))
    # Nothing but the ledger's own checkpoints (sealed on a timer) may arrive while the store is idle.
    assert all(b.get("event") == "audit.checkpoint" for b in events_only(blocks)), blocks


# -- the credential is checked again while the stream is open ------------------------------------------------------

PASSWORD = "correct horse battery staple"


def ended(blocks: list[dict]) -> bool:
    return blocks[-1].get("event") == "end"


async def settled(api) -> int:
    head = await api.runtime.store.head_position()
    assert await api.runtime.runner.wait_for(head, 10)
    return head


async def signed_in(api, admin, username: str, *roles: str) -> dict[str, str]:
    """Authorization headers with an access token (a JWT) of a new local user."""
    created = await api.client.post("/v1/users", json={"username": username, "password": PASSWORD,
                                                       "roles": list(roles)}, headers=admin)
    assert created.status_code == 201, created.text
    token = await api.client.post("/v1/auth/token", data={"grant_type": "password", "username": username,
                                                           "password": PASSWORD})
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


async def stream_until_cut(api, headers: dict[str, str], cut, write) -> tuple[list[dict], int]:
    """Open a stream, see it carry a first event, ``cut`` the credential, then ``write`` an event (its position is
    returned); the blocks read until the stream's ``end``, whose connection must then close."""
    api.app.state.sse_recheck = 0.0  # check before every event: the test needs no interval to pass
    async with api.client.stream("GET", "/v1/events/stream", headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        lines = response.aiter_lines()
        live = await write("before")
        blocks = await read_sse(lines, reached(live))
        await cut()
        after = await write("after")
        blocks += await read_sse(lines, ended)
        async with asyncio.timeout(READ_TIMEOUT):
            assert [line async for line in lines if line] == []  # nothing after the end: the stream closed
    return blocks, after


def tenant_writer(api, admin):
    """Writes an event (a new tenant named after its argument) and returns its position."""
    async def write(name: str) -> int:
        return (await api.create_tenant(admin, f"t-{name}"))["global_position"]
    return write


def assert_ended(blocks: list[dict], reason: str, unseen: int) -> None:
    assert blocks[-1]["data"]["reason"] == reason and blocks[-1]["data"]["detail"], blocks[-1]
    assert "id" not in blocks[-1]  # a reconnect resumes after the last event delivered
    assert all(int(b["id"]) < unseen for b in events_only(blocks)), blocks


async def test_a_revoked_api_key_ends_its_stream(api, admin):
    await api.create_tenant(admin, "acme")
    auditor = await api.token("auditor", tenant_id="acme")
    key_id = auditor["Authorization"].split("_")[1]

    async def rename(name):
        renamed = await api.client.post("/v1/tenants/acme/rename", json={"name": name}, headers=admin)
        assert renamed.status_code == 200, renamed.text
        return renamed.json()["global_position"]

    async def revoke():
        revoked = await api.client.delete(f"/v1/service-accounts/test/keys/{key_id}",
                                          params={"tenant_id": "acme"}, headers=admin)
        assert revoked.status_code == 200, revoked.text
        await settled(api)  # API keys are read from the read model; every later request is refused from here

    blocks, after = await stream_until_cut(api, auditor, revoke, rename)
    assert_ended(blocks, "credential_revoked", after)


async def test_a_stream_only_other_tenants_keep_busy_still_ends(api, admin):
    await api.create_tenant(admin, "acme")
    auditor = await api.token("auditor", tenant_id="acme")
    key_id = auditor["Authorization"].split("_")[1]

    async def write(name):  # acme's event first (the stream is live), then only other tenants'
        if name == "before":
            renamed = await api.client.post("/v1/tenants/acme/rename", json={"name": name}, headers=admin)
            return renamed.json()["global_position"]
        return await tenant_writer(api, admin)(name)

    async def revoke():
        revoked = await api.client.delete(f"/v1/service-accounts/test/keys/{key_id}",
                                          params={"tenant_id": "acme"}, headers=admin)
        assert revoked.status_code == 200, revoked.text
        await settled(api)

    api.app.state.sse_keepalive = 3 * READ_TIMEOUT  # no idle wake comes to the rescue within the test
    blocks, after = await stream_until_cut(api, auditor, revoke, write)
    assert_ended(blocks, "credential_revoked", after)


async def test_disabling_the_user_ends_its_stream(api, admin):
    headers = await signed_in(api, admin, "siem", "auditor")

    async def disable():
        disabled = await api.client.post("/v1/users/siem/disable", json={"reason": "left"}, headers=admin)
        assert disabled.status_code == 200, disabled.text

    blocks, after = await stream_until_cut(api, headers, disable, tenant_writer(api, admin))
    assert_ended(blocks, "credential_revoked", after)


async def test_disabling_the_service_account_ends_its_keys_stream_without_waiting_for_the_read_models(api, admin):
    await api.create_tenant(admin, "acme")
    auditor = await api.token("auditor", tenant_id="acme")  # a key of the account "test" of acme

    async def rename(name):
        renamed = await api.client.post("/v1/tenants/acme/rename", json={"name": name}, headers=admin)
        assert renamed.status_code == 200, renamed.text
        return renamed.json()["global_position"]

    async def disable():
        disabled = await api.client.post("/v1/service-accounts/test/disable", params={"tenant_id": "acme"},
                                         json={"reason": "leaked"}, headers=admin)
        assert disabled.status_code == 200, disabled.text  # no settling: the key is refused from the next check

    blocks, after = await stream_until_cut(api, auditor, disable, rename)
    assert_ended(blocks, "credential_revoked", after)


async def test_the_stream_ends_when_the_access_token_expires(api, admin):
    api.runtime.services.clock = clock = Clock()
    headers = await signed_in(api, admin, "siem", "auditor")

    async def expire():
        clock.offset = timedelta(seconds=api.runtime.settings.access_token_ttl + 1)

    blocks, after = await stream_until_cut(api, headers, expire, tenant_writer(api, admin))
    assert_ended(blocks, "token_expired", after)


async def test_a_revoked_role_ends_the_stream_its_token_still_opens(api, admin):
    headers = await signed_in(api, admin, "siem", "viewer", "auditor")

    async def revoke_role():
        revoked = await api.client.delete("/v1/users/siem/roles/auditor", headers=admin)
        assert revoked.status_code == 200, revoked.text
        assert (await api.client.get("/v1/tenants", headers=headers)).status_code == 200  # a viewer still

    blocks, after = await stream_until_cut(api, headers, revoke_role, tenant_writer(api, admin))
    assert_ended(blocks, "permission_revoked", after)


async def test_an_idle_stream_ends_by_itself_at_expiry(api, admin):
    api.runtime.services.clock = clock = Clock()
    headers = await signed_in(api, admin, "siem", "auditor")
    api.app.state.sse_keepalive = 0.05  # idle wakes come often; nothing is written
    async with api.client.stream("GET", "/v1/events/stream", headers=headers) as response:
        assert response.status_code == 200
        lines = response.aiter_lines()
        await read_sse(lines, lambda blocks: any(b.get("comment") == "keep-alive" for b in blocks))  # it is up
        clock.offset = timedelta(seconds=api.runtime.settings.access_token_ttl + 1)
        blocks = await read_sse(lines, ended)
    assert blocks[-1]["data"]["reason"] == "token_expired"


@pytest.mark.parametrize(("params", "extra", "field"), [
    ({"after": 10_000}, {}, "after"),
    ({"after": 99_999_999_999_999_999_999}, {}, "after"),
    ({}, {"Last-Event-ID": "10000"}, "Last-Event-ID"),
])
async def test_a_position_past_the_head_is_refused_not_streamed_after(api, admin, params, extra, field):
    """A client resuming past the head (the log was restored from a backup) was streamed after it: every event
    written until the log reached that position again was skipped without a word."""
    await api.create_tenant(admin, "acme")
    async with api.client.stream("GET", "/v1/events/stream", params=params, headers={**admin, **extra}) as response:
        assert response.status_code == 400, response.status_code  # before: 200 and a stream that waited for it
        await response.aread()
    problem = assert_problem(response, 400, "validation_failed", field=field)
    assert problem["errors"][0]["rule"] == "maximum"
