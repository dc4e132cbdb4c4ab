"""The audit log over HTTP (filters, cursor, full events, correlation ids) and chain verification."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest
from test_api_support import api, assert_problem  # noqa: F401


@pytest.fixture
async def admin(api):
    return await api.admin()


async def test_the_request_id_becomes_the_events_correlation_id(api, admin):
    created = await api.create_tenant(admin, "acme", **{"X-Request-ID": "req-acme-0001"})
    response = await api.client.get("/v1/audit/events", headers=admin, params={
        "correlation_id": "req-acme-0001", "min_position": created["global_position"]})
    assert response.status_code == 200
    [entry] = response.json()["items"]
    assert entry["position"] == created["global_position"] and entry["type"] == "tenant.created"
    event = entry["event"]
    assert event["correlation_id"] == "req-acme-0001"
    assert event["global_position"] == entry["position"] and event["stream_id"] == "tenant-acme"
    assert event["payload"]["tenant_id"] == "acme" and len(event["hash"]) == 96
    assert event["actor"]["auth_method"] == "api_token" and event["actor"]["principal"].startswith("token:")


async def test_filters_and_the_position_cursor(api, admin):
    for tenant_id in ("acme", "globex"):
        await api.create_tenant(admin, tenant_id)
    last = await api.client.post("/v1/tenants/acme/rename", json={"name": "Acme 2"}, headers=admin)
    position = last.json()["global_position"]
    by_stream = await api.client.get("/v1/audit/events", headers=admin,
                                     params={"stream_id": "tenant-acme", "min_position": position})
    assert [e["type"] for e in by_stream.json()["items"]] == ["tenant.created", "tenant.renamed"]
    by_type = await api.client.get("/v1/audit/events", headers=admin, params={"type": "tenant.created"})
    assert [e["tenant_id"] for e in by_type.json()["items"]] == ["acme", "globex"]
    by_tenant = await api.client.get("/v1/audit/events", headers=admin, params={"tenant_id": "globex"})
    assert [e["stream_id"] for e in by_tenant.json()["items"]] == ["tenant-globex"]
    day = by_tenant.json()["items"][0]["day_bucket"]
    window = {"day": day, "since": f"{day}T00:00:00Z", "until": f"{day}T23:59:59.999999+00:00"}
    assert (await api.client.get("/v1/audit/events", headers=admin, params=window)).json()["items"]
    seen, cursor = [], 0
    while cursor is not None:
        page = (await api.client.get("/v1/audit/events", headers=admin, params={"after": cursor, "limit": 2})).json()
        assert len(page["items"]) <= 2
        seen += [entry["position"] for entry in page["items"]]
        cursor = page["next_cursor"]
    assert seen == sorted(seen) and len(seen) == len(set(seen)) and position in seen


async def test_verify_reports_an_intact_store(api, admin):
    await api.create_tenant(admin, "acme")
    await api.client.post("/v1/tenants/acme/rename", json={"name": "Acme 2"}, headers=admin)
    response = await api.client.get("/v1/audit/verify", headers=admin)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["ok"] is True and report["first_problem"] is None and report["events"] >= 3
    assert_problem(await api.client.get("/v1/audit/verify", headers=await api.token("viewer")), 403, "forbidden")
    assert (await api.client.get("/v1/audit/verify", headers=await api.token("auditor"))).status_code == 200


async def test_verify_names_the_first_broken_link(api, admin):
    created = await api.create_tenant(admin, "acme")
    with closing(sqlite3.connect(api.runtime.settings.events_db)) as conn, conn:
        body = conn.execute("SELECT body FROM events WHERE position = ?", (created["global_position"],)).fetchone()[0]
        conn.execute("UPDATE events SET body = ? WHERE position = ?",
                     (body.replace(b'"Acme"', b'"Evil"'), created["global_position"]))
    response = await api.client.get("/v1/audit/verify", headers=admin)
    problem = assert_problem(response, 409, "audit_chain_broken", field="stream_id")
    assert problem["stream_id"] == "tenant-acme" and problem["position"] == created["global_position"]
    assert problem["version"] == 1 and problem["kind"]
    assert problem["report"]["ok"] is False
