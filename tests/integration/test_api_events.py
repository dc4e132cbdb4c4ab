"""The SSE event stream over real HTTP: from a position, resumed with Last-Event-ID, live, scoped, kept alive."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest
from test_api_support import api  # noqa: F401

READ_TIMEOUT = 20


@pytest.fixture
async def admin(api):
    return await api.admin()


async def read_sse(response: httpx.Response, stop: Callable[[list[dict]], bool]) -> list[dict]:
    """Parse SSE blocks (``{"id", "event", "data", "comment"}``) until ``stop(blocks)`` holds."""
    blocks: list[dict] = []
    block: dict = {}
    async with asyncio.timeout(READ_TIMEOUT):
        async for line in response.aiter_lines():
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
