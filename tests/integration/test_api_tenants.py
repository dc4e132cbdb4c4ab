"""Tenant commands and queries over HTTP: results, Location, read-your-writes, pagination, idempotency."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import msgspec
import pytest
from test_api_support import api, assert_problem, running_api  # noqa: F401


@pytest.fixture
async def admin(api):
    return await api.admin()


async def test_create_then_read_your_write(api, admin):
    response = await api.client.post("/v1/tenants", json={"tenant_id": "acme", "name": "Acme Corp",
                                                          "quotas": {"max_cas": 3}}, headers=admin)
    assert response.status_code == 201
    assert response.headers["location"] == "/v1/tenants/acme"
    result = response.json()
    assert result == {"stream_id": "tenant-acme", "version": 1, "global_position": result["global_position"],
                      "changed": True, "replayed": False}
    tenant = await api.client.get("/v1/tenants/acme", params={"min_position": result["global_position"]},
                                  headers=admin)
    assert tenant.status_code == 200
    body = tenant.json()
    assert (body["tenant_id"], body["name"], body["status"], body["version"]) == ("acme", "Acme Corp", "active", 1)
    assert body["quotas"]["max_cas"] == 3


async def test_lifecycle_commands(api, admin):
    await api.create_tenant(admin, "acme")
    renamed = await api.client.post("/v1/tenants/acme/rename", json={"name": "Acme Two"}, headers=admin)
    assert renamed.status_code == 200 and renamed.json()["version"] == 2
    same = await api.client.post("/v1/tenants/acme/rename", json={"name": "Acme Two"}, headers=admin)
    assert same.json()["changed"] is False and same.json()["global_position"] is None
    quotas = await api.client.put("/v1/tenants/acme/quotas", json={"max_certificates": 10}, headers=admin)
    assert quotas.status_code == 200 and quotas.json()["version"] == 3
    suspended = await api.client.post("/v1/tenants/acme/suspend", json={"reason": "unpaid"}, headers=admin)
    assert suspended.json()["version"] == 4
    again = await api.client.post("/v1/tenants/acme/suspend", json={"reason": "unpaid"}, headers=admin)
    assert_problem(again, 422, "tenant_suspended", field="tenant_id")
    resumed = await api.client.post("/v1/tenants/acme/resume", json={"reason": "paid"}, headers=admin)
    tenant = await api.client.get("/v1/tenants/acme", params={"min_position": resumed.json()["global_position"]},
                                  headers=admin)
    body = tenant.json()
    assert (body["name"], body["status"], body["version"]) == ("Acme Two", "active", 5)
    assert body["quotas"]["max_certificates"] == 10


async def test_refusals_are_problems_naming_the_field(api, admin):
    await api.create_tenant(admin, "acme")
    duplicate = await api.client.post("/v1/tenants", json={"tenant_id": "acme", "name": "Again"}, headers=admin)
    assert_problem(duplicate, 409, "tenant_exists", field="tenant_id")
    missing = await api.client.post("/v1/tenants/nobody/rename", json={"name": "X"}, headers=admin)
    assert_problem(missing, 404, "tenant_not_found", field="tenant_id")
    assert_problem(await api.client.get("/v1/tenants/nobody", headers=admin), 404, "tenant_not_found")
    negative = await api.client.put("/v1/tenants/acme/quotas", json={"max_cas": -1}, headers=admin)
    assert_problem(negative, 422, "invalid_quota", field="quotas.max_cas")


async def test_search_pages_with_a_cursor_and_filters_by_status(api, admin):
    for tenant_id in ("delta", "alpha", "echo", "charlie", "bravo"):
        await api.create_tenant(admin, tenant_id)
    last = await api.client.post("/v1/tenants/charlie/suspend", json={"reason": "r"}, headers=admin)
    position = last.json()["global_position"]
    seen, cursor = [], None
    while True:
        params = {"limit": 2, "min_position": position, **({"after": cursor} if cursor else {})}
        page = (await api.client.get("/v1/tenants", params=params, headers=admin)).json()
        seen += [item["tenant_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["alpha", "bravo", "charlie", "delta", "echo"]
    suspended = await api.client.get("/v1/tenants", params={"status": "suspended"}, headers=admin)
    assert [item["tenant_id"] for item in suspended.json()["items"]] == ["charlie"]


async def test_a_position_not_written_yet_is_refused_at_once(api, admin):
    # No wait can reach it: refused without holding the request for the read-your-writes timeout.
    response = await api.client.get("/v1/tenants", params={"min_position": 10**9}, headers=admin)
    body = assert_problem(response, 400, "validation_failed", field="min_position")
    assert "has not been written" in body["detail"]


async def test_an_idempotent_retry_replays_the_first_result(api, admin):
    key = {**admin, "Idempotency-Key": "create-acme-1"}
    body = {"tenant_id": "acme", "name": "Acme"}
    first = await api.client.post("/v1/tenants", json=body, headers=key)
    retry = await api.client.post("/v1/tenants", json=body, headers=key)
    assert first.status_code == retry.status_code == 201
    assert first.json()["replayed"] is False and retry.json()["replayed"] is True
    strip = {k: v for k, v in retry.json().items() if k != "replayed"}
    assert strip == {k: v for k, v in first.json().items() if k != "replayed"}
    events = await api.client.get("/v1/audit/events", params={"stream_id": "tenant-acme",
                                                              "min_position": first.json()["global_position"]},
                                  headers=admin)
    assert len(events.json()["items"]) == 1
    different = await api.client.post("/v1/tenants", json={"tenant_id": "acme", "name": "Other"}, headers=key)
    assert_problem(different, 422, "idempotency_key_reused", field="Idempotency-Key")


@pytest.mark.parametrize("key", ["x" * 256, "caf\u00e9", "tab\there"])
async def test_a_malformed_idempotency_key_is_refused(api, admin, key):
    headers = {**admin, "Idempotency-Key": key}
    content = msgspec.json.encode({"tenant_id": "acme", "name": "Acme"})
    response = await api.client.post("/v1/tenants", content=content,
                                     headers={k: v.encode() if k == "Idempotency-Key" else v
                                              for k, v in headers.items()})
    assert_problem(response, 400, "invalid_header", field="Idempotency-Key")


async def test_a_lookup_while_the_read_models_lag_is_503_not_404(tmp_path):
    """A lookup by id that finds nothing waits (bounded) for the read models to reach the log's head; if they
    are still behind when the wait ends, whether the thing exists is not known: 503 projection-lagging, not 404."""
    async with running_api(tmp_path, read_your_writes_timeout=0.3) as running:
        admin = await running.admin()
        runtime = running.app.state.runtime
        [tail] = [task for task in runtime.tasks if task.get_name() == "projections"]
        tail.cancel()  # the read models stop where they are; the log goes on
        with contextlib.suppress(asyncio.CancelledError):
            await tail
        created = await running.client.post("/v1/tenants", json={"tenant_id": "late", "name": "Late"}, headers=admin)
        assert created.status_code == 201, created.text
        lagging = await running.client.get("/v1/tenants/late", headers=admin)
        body = assert_problem(lagging, 503, "projection-lagging", field="tenant_id")
        assert lagging.headers["retry-after"] == "1"
        assert body["position"] < created.json()["global_position"]
        absent = await running.client.get("/v1/tenants/absent", headers=admin)
        assert_problem(absent, 503, "projection-lagging", field="tenant_id")  # the same: nothing is known past the lag


async def test_a_lookup_that_the_read_models_overtake_is_asked_again_not_answered_404(tmp_path):
    """The read models reach the log's head while a lookup runs, just after it found nothing: that "nothing" is
    from before the head, so the lookup is made again (it was a 404 for a certificate issued a moment before)."""
    from types import SimpleNamespace

    from api.deps import find_row
    from projections import tenants as tenant_model

    async with running_api(tmp_path) as running:
        admin = await running.admin()
        runtime = running.app.state.runtime
        [tail] = [task for task in runtime.tasks if task.get_name() == "projections"]
        tail.cancel()  # the read models stop where they are; this test moves them itself
        with contextlib.suppress(asyncio.CancelledError):
            await tail
        created = await running.client.post("/v1/tenants", json={"tenant_id": "racy", "name": "Racy"}, headers=admin)
        assert created.status_code == 201, created.text
        lookups = []

        def overtaken(conn, tenant_id, scope):
            row = tenant_model.get(conn, tenant_id, scope)
            if not lookups:  # the first lookup finds nothing; the tail applies the head right after it
                while runtime.runner.catch_up_once():
                    pass
            lookups.append(row)
            return row

        request = SimpleNamespace(app=running.app)
        assert runtime.runner.position < created.json()["global_position"]
        row = await find_row(request, overtaken, "racy", None, field="tenant_id")
        assert lookups[0] is None and row is not None and row["tenant_id"] == "racy"
        assert runtime.runner.position >= created.json()["global_position"]


async def test_a_busy_shared_thread_pool_does_not_hold_up_the_read_models(tmp_path):
    """The projection tail has its own thread: with every thread of the event loop's shared pool busy (long
    queries, key generation), a write is still readable within the read-your-writes wait. That wait is a bound, not
    a delay: 10 s, well short of the 30 s the busy threads hold the pool, so a tail that needed the pool still fails,
    and a tail slowed by a loaded machine does not."""
    async with running_api(tmp_path, read_your_writes_timeout=10.0) as running:
        admin = await running.admin()
        loop = asyncio.get_running_loop()
        release = threading.Event()
        busy = [loop.run_in_executor(None, release.wait, 30) for _ in range(64)]  # more than the pool has threads
        try:
            created = await running.client.post("/v1/tenants", json={"tenant_id": "busy", "name": "Busy"},
                                                headers=admin)
            assert created.status_code == 201, created.text
            read = await running.client.get("/v1/tenants/busy", headers=admin,
                                             params={"min_position": created.json()["global_position"]})
            assert read.status_code == 200, read.text
        finally:
            release.set()
            await asyncio.gather(*busy)
