"""Bearer authentication (401) and permissions (403), including tenant-scoped tokens."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

from test_api_support import api, assert_problem  # noqa: F401

from api.auth import _expired
from api.permissions import ROUTE_PERMISSIONS
from commands.authz import SYSTEM
from commands.runtime import CommandContext
from commands.tokens import RevokeApiToken, revoke_api_token


async def test_v1_routes_need_a_bearer_token(api):
    for method, path in (("GET", "/v1/tenants"), ("POST", "/v1/tenants"), ("GET", "/v1/audit/events"),
                         ("GET", "/v1/audit/verify"), ("GET", "/v1/events/stream")):
        response = await api.client.request(method, path)
        assert_problem(response, 401, "unauthorized", field="Authorization")
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_bad_tokens_are_refused_alike(api):
    good = (await api.admin())["Authorization"]
    token_id = good.split("_")[1]
    bad = ["Basic dXNlcjpwYXNz", "Bearer", "Bearer not-a-token", f"Bearer csm_{'0' * 16}_{'x' * 43}",
           f"Bearer csm_{token_id}_{'x' * 43}", good.replace("Bearer", "Token")]
    details = set()
    for value in bad:
        body = assert_problem(await api.client.get("/v1/tenants", headers={"Authorization": value}), 401,
                              "unauthorized", field="Authorization")
        details.add(body["detail"])
    assert len(details) == 1  # an unknown id and a wrong secret read the same
    assert (await api.client.get("/v1/tenants", headers={"Authorization": good})).status_code == 200


async def test_a_revoked_token_stops_working_at_once_while_the_read_models_lag(api):
    headers = await api.admin()
    token_id = headers["Authorization"].split("_")[1]
    assert (await api.client.get("/v1/tenants", headers=headers)).status_code == 200
    projections = next(task for task in api.runtime.tasks if task.get_name() == "projections")
    projections.cancel()  # the read models stand still from here: they go on saying the key is active
    await asyncio.gather(projections, return_exceptions=True)
    result = await revoke_api_token(RevokeApiToken(token_id=token_id), CommandContext(principal=SYSTEM),
                                    api.runtime.services, api.runtime.vault, None)
    assert api.runtime.runner.position < result.global_position
    assert_problem(await api.client.get("/v1/tenants", headers=headers), 401, "unauthorized")


def test_expiry_is_compared_to_now():
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert _expired("2029-12-31T23:59:59.000000Z", now)
    assert not _expired("2030-01-01T00:00:01.000000Z", now)
    assert not _expired(None, now)
    assert _expired("garbage", now)


async def test_a_viewer_cannot_create_a_tenant(api):
    viewer = await api.token("viewer")
    response = await api.client.post("/v1/tenants", json={"tenant_id": "acme", "name": "Acme"}, headers=viewer)
    body = assert_problem(response, 403, "forbidden")
    assert "tenant:create" in body["detail"]
    assert not await api.runtime.store.read_stream("acme", "tenant-acme")  # refused: no tenant (the denial is audited)
    assert (await api.client.get("/v1/tenants", headers=viewer)).status_code == 200


async def test_a_tenant_scoped_token_sees_only_its_tenant(api):
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    last = await api.create_tenant(admin, "globex")
    scoped = await api.token("tenant-admin", tenant_id="acme")
    listing = await api.client.get("/v1/tenants", params={"min_position": last["global_position"]}, headers=scoped)
    assert [t["tenant_id"] for t in listing.json()["items"]] == ["acme"]
    assert (await api.client.get("/v1/tenants/acme", headers=scoped)).status_code == 200
    assert_problem(await api.client.get("/v1/tenants/globex", headers=scoped), 403, "forbidden")
    rename = await api.client.post("/v1/tenants/globex/rename", json={"name": "Mine"}, headers=scoped)
    assert_problem(rename, 403, "forbidden")
    events = await api.client.get("/v1/audit/events", params={"limit": 1000}, headers=scoped)
    assert events.status_code == 200
    assert {item["tenant_id"] for item in events.json()["items"]} == {"acme"}
    other = await api.client.get("/v1/audit/events", params={"tenant_id": "globex"}, headers=scoped)
    assert_problem(other, 403, "forbidden")
    assert_problem(await api.client.get("/v1/audit/verify", headers=scoped), 403, "forbidden")


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


async def test_every_v1_route_refuses_a_missing_or_bad_credential_before_reading_the_body(api):
    """401 before the body is decoded or validated: a malformed body says nothing to a caller without a token."""
    broken = {"content-type": "application/json"}
    for (method, path), rule in sorted(ROUTE_PERMISSIONS.items()):
        if rule.scope == "public":
            continue
        for headers in (broken, {**broken, "Authorization": "Bearer not-a-token"}):
            response = await api.client.request(method, _concrete(path), content=b"{x", headers=headers)
            assert_problem(response, 401, "unauthorized", field="Authorization")


async def test_roles_that_rule_a_route_out_are_refused_before_the_body_is_read(api):
    await api.create_tenant(await api.admin(), "acme")  # API keys are issued in tenants that exist
    viewer = await api.token("viewer", tenant_id="acme")
    scoped_admin = await api.token("platform-admin", tenant_id="acme")
    for headers, method, path, body in ((viewer, "POST", "/v1/profiles", {"profile": {}}),
                                         (viewer, "POST", "/v1/tenants/acme/suspend", {}),
                                         (viewer, "POST", "/v1/certificates", {"validity_days": "x"}),
                                         (scoped_admin, "POST", "/v1/tenants", {})):  # a platform route
        assert_problem(await api.client.request(method, path, json=body, headers=headers), 403, "forbidden")
        response = await api.client.request(method, path, content=b"{x",
                                            headers={**headers, "content-type": "application/json"})
        assert_problem(response, 403, "forbidden")
    # a caller the route admits still has its body checked
    admin = await api.admin()
    assert_problem(await api.client.post("/v1/profiles", json={"profile": {}}, headers=admin), 400,
                   "validation_failed", field="profile.name")
