"""Malformed requests: every refusal is problem+json and names the field (or header, or body) that was wrong."""

from __future__ import annotations

import pytest
from test_api_support import BACKGROUND_EVENTS, api, assert_problem, pki_api  # noqa: F401


@pytest.fixture
async def admin(api):
    return await api.admin()


@pytest.mark.parametrize(("body", "field", "rule"), [
    ({"tenant_id": "Bad_ID", "name": "X"}, "tenant_id", "pattern"),
    ({"tenant_id": "ab", "name": "X"}, "tenant_id", "min_length"),
    ({"tenant_id": "acme\n", "name": "X"}, "tenant_id", "pattern"),
    ({"tenant_id": "acme", "name": "X", "colour": "red"}, "colour", "unknown_field"),
    ({"tenant_id": 42, "name": "X"}, "tenant_id", "type"),
    ({"name": "X"}, "tenant_id", "required"),
    ({"tenant_id": "acme", "name": "X", "quotas": {"max_cas": "three"}}, "quotas.max_cas", "type"),
    ({"tenant_id": "acme", "name": "X", "quotas": {"max_keys": 1}}, "quotas.max_keys", "unknown_field"),
    (["not", "an", "object"], "body", "type"),
])
async def test_invalid_bodies_name_the_field_and_rule(api, admin, body, field, rule):
    response = await api.client.post("/v1/tenants", json=body, headers=admin)
    problem = assert_problem(response, 400, "validation_failed", field=field)
    assert problem["errors"][0]["rule"] == rule
    assert problem["errors"][0]["message"]


async def test_malformed_json_names_the_body(api, admin):
    response = await api.client.post("/v1/tenants", content=b'{"tenant_id": "acme", ',
                                     headers={**admin, "Content-Type": "application/json"})
    assert_problem(response, 400, "malformed_json", field="body")


DEEP = "[" * 1_500 + "]" * 1_500  # under the fixture's 4 KiB body limit; a RecursionError in the decoders was a 500


@pytest.mark.parametrize(("path", "signed_in"), [
    ("/v1/tenants", False),  # refused before the body is read
    ("/v1/tenants", True),
    ("/v1/tenants/acme/rename", True),
    ("/v1/webhooks", True),
])
async def test_json_nested_too_deeply_is_a_400_never_a_500(api, admin, path, signed_in):
    headers = {**(admin if signed_in else {}), "Content-Type": "application/json"}
    response = await api.client.post(path, content=DEEP, headers=headers)
    if not signed_in:
        assert_problem(response, 401, field="Authorization")
        return
    # decoded strictly into the route's body type, an array where an object belongs is refused at its first level
    # (validation_failed); a decoder that recursed would say malformed_json: either way a 400 naming the body
    problem = assert_problem(response, 400, field="body")
    assert problem["type"].rsplit("/", 1)[1] in ("malformed_json", "validation_failed"), problem


async def test_json_nested_too_deeply_on_sign_in_is_a_400_problem(pki_api):
    """The rate limiter peeks at sign-in bodies for the username, outside the problem handlers: it crashed there
    (a text/plain 500); with the peek skipped (the body is larger than it reads) the route itself crashed."""
    for depth in (1_000, 20_000):
        body = '{"username": ' * depth + '"x"' + "}" * depth
        response = await pki_api.client.post("/v1/auth/token", content=body,
                                             headers={"Content-Type": "application/json"})
        assert_problem(response, 400, field="body")


async def test_a_missing_body_names_the_body(api, admin):
    response = await api.client.post("/v1/tenants/acme/rename", headers=admin)
    assert_problem(response, 400, field="body")


async def test_an_oversize_body_is_413(api, admin):
    response = await api.client.post("/v1/tenants", json={"tenant_id": "acme", "name": "x" * 10_000}, headers=admin)
    assert_problem(response, 413, "body_too_large")


@pytest.mark.parametrize(("path", "params", "field"), [
    ("/v1/tenants", {"limit": 0}, "limit"),
    ("/v1/tenants", {"limit": "many"}, "limit"),
    ("/v1/tenants", {"status": "deleted"}, "status"),
    ("/v1/tenants", {"min_position": -1}, "min_position"),
    ("/v1/audit/events", {"limit": 1001}, "limit"),
    ("/v1/audit/events", {"day": "yesterday"}, "day"),
    ("/v1/audit/events", {"since": "not a time"}, "since"),
])
async def test_invalid_query_parameters_name_the_parameter(api, admin, path, params, field):
    assert_problem(await api.client.get(path, params=params, headers=admin), 400, "validation_failed", field=field)


@pytest.mark.parametrize("day", ["2020-02-30", "2021-02-29", "2020-04-31", "2020-13-01", "2020-00-10", "2020-1-01"])
async def test_an_impossible_day_names_the_parameter(api, admin, day):
    """The pattern YYYY-MM-DD let 2020-02-30 through (an empty page, 200): the day is now a calendar date."""
    response = await api.client.get("/v1/audit/events", params={"day": day}, headers=admin)
    problem = assert_problem(response, 400, "validation_failed", field="day")
    assert problem["errors"][0]["rule"] == "format"


async def test_a_real_day_still_filters_the_audit_log(api, admin):
    await api.create_tenant(admin, "acme")
    day = (await api.client.get("/v1/audit/events", headers=admin)).json()["items"][-1]["occurred_at"][:10]
    items = (await api.client.get("/v1/audit/events", params={"day": day}, headers=admin)).json()["items"]
    assert items and all(item["occurred_at"].startswith(day) for item in items)
    assert (await api.client.get("/v1/audit/events", params={"day": "2000-02-29"}, headers=admin)).json() == {
        "items": [], "next_cursor": None}


async def test_an_invalid_last_event_id_names_the_header(api, admin):
    response = await api.client.get("/v1/events/stream", headers={**admin, "Last-Event-ID": "yesterday"})
    assert_problem(response, 400, "invalid_header", field="Last-Event-ID")


async def test_unexpected_failures_are_a_500_problem_without_internals(api, admin, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail /var/lib/csm")

    monkeypatch.setattr("projections.tenants.search", explode)
    response = await api.client.get("/v1/tenants", headers=admin)
    body = assert_problem(response, 500, "internal_error")
    assert "secret internal detail" not in response.text and "Traceback" not in response.text
    assert body["request_id"] in body["detail"] or "request id" in body["detail"]


async def test_a_query_parameter_no_handler_reads_is_refused_by_name(api, admin):
    """A misspelt filter would answer every row; a list paged with the wrong name would answer its first page
    for ever (a client looping on next_cursor). Both are 400s naming the parameter."""
    misspelt = await api.client.get("/v1/certificates", params={"stauts": "revoked"}, headers=admin)
    body = assert_problem(misspelt, 400, field="stauts")
    assert body["errors"][0]["rule"] == "unknown_parameter" and "status" in body["detail"]
    wrong_name = await api.client.get("/v1/audit/events", params={"limit": 2, "next_cursor": "2"}, headers=admin)
    assert "cursor" in assert_problem(wrong_name, 400, field="next_cursor")["detail"]
    assert (await api.client.get("/health/live", params={"probe": "1"})).status_code == 200  # probes may add any


async def test_a_refused_permission_names_the_permission_as_the_rule(api):
    viewer = await api.token("viewer")
    body = assert_problem(await api.client.post("/v1/tenants", json={"tenant_id": "acme", "name": "A"},
                                                headers=viewer), 403, "forbidden", field="Authorization")
    assert body["errors"][0]["rule"] == "tenant:create"


async def test_another_tenant_is_refused_naming_tenant_id_and_the_permission(api, admin):
    await api.create_tenant(admin, "acme")
    await api.create_tenant(admin, "globex")
    scoped = await api.token("tenant-admin", tenant_id="acme")
    body = assert_problem(await api.client.post("/v1/tenants/globex/rename", json={"name": "Mine"}, headers=scoped),
                          403, "forbidden", field="tenant_id")
    assert body["errors"][0]["rule"] == "tenant:update"
    granted = await api.client.post("/v1/users", json={"username": "eve", "password": "long enough password",
                                                       "roles": ["platform-admin"]}, headers=scoped)
    assert assert_problem(granted, 403, "forbidden", field="roles")["errors"][0]["rule"] == "user:manage"


@pytest.mark.parametrize(("method", "path", "status", "field"), [
    ("GET", "/v1/no-such-route", 404, "path"),
    ("GET", "/nowhere", 404, "path"),
    ("GET", "/schema/nowhere", 404, "path"),
    ("DELETE", "/v1/tenants", 405, "method"),
    ("PATCH", "/health/live", 405, "method"),
])
async def test_unrouted_requests_name_the_path_or_method(api, admin, method, path, status, field):
    assert_problem(await api.client.request(method, path, headers=admin), status, field=field)


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/tenants/acme/quotas", {"max_cas": "1"}, "max_cas"),
    ("/v1/tenants/acme/quotas", {"max_cas": 1.5}, "max_cas"),
    ("/v1/tenants/acme/quotas", {"max_cas": True}, "max_cas"),
    ("/v1/tenants/acme/quotas", {"max_issuances_per_day": "10"}, "max_issuances_per_day"),
    ("/v1/tenants", {"tenant_id": "acme2", "name": "A", "quotas": {"max_cas": "1"}}, "quotas.max_cas"),
    ("/v1/certificates", {"tenant_id": "acme", "ca_id": "x", "subject": {"common_name": "n.acme.internal"},
                          "validity_days": "30"}, "validity_days"),
    ("/v1/certificates/x/renew", {"reuse_key": "true"}, "reuse_key"),
])
async def test_json_bodies_keep_json_types(api, admin, path, body, field):
    """A string is not a number nor a boolean in a JSON body (only query parameters, strings on the wire, convert)."""
    await api.create_tenant(admin, "acme")
    problem = assert_problem(await api.client.post(path, json=body, headers=admin), 400, "validation_failed",
                             field=field)
    assert problem["errors"][0]["rule"] == "type"
    assert (await api.client.post("/v1/tenants/acme/quotas", json={"max_cas": 1}, headers=admin)).status_code == 200
    assert (await api.client.get("/v1/tenants", params={"limit": "5"}, headers=admin)).status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          "application/xml", "application/jsonx", "json"])
async def test_a_json_route_refuses_another_media_type(api, admin, content_type):
    await api.create_tenant(admin, "acme")
    response = await api.client.put("/v1/tenants/acme/policy", content=b"{}",
                                    headers={**admin, "Content-Type": content_type})
    problem = assert_problem(response, 415, "unsupported_media_type", field="content-type")
    assert problem["errors"][0]["rule"] == "media_type"


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON;charset=UTF-8", "application/merge-patch+json", None])
async def test_a_json_route_takes_json_media_types(api, admin, content_type):
    await api.create_tenant(admin, "acme")
    headers = {**admin, **({"Content-Type": content_type} if content_type else {})}
    response = await api.client.put("/v1/tenants/acme/policy", content=b"{}", headers=headers)
    assert response.status_code == 200, response.text


async def test_sign_in_still_takes_a_form_and_refuses_other_media_types(api):
    form = await api.client.post("/v1/auth/token", data={"grant_type": "password", "username": "nobody",
                                                         "password": "wrong password here"})
    assert_problem(form, 401)
    refused = await api.client.post("/v1/auth/token", content=b"grant_type=password",
                                    headers={"Content-Type": "text/plain"})
    assert_problem(refused, 415, "unsupported_media_type", field="content-type")



@pytest.mark.parametrize(("path", "scope"), [("/v1/audit/events", {}), ("/v1/tenants", {}), ("/v1/cas", {}),
                                           ("/v1/users", {"tenant_id": "acme"}), ("/v1/service-accounts", {})])
async def test_every_list_takes_its_next_cursor_back_as_cursor_and_pages_to_the_end(api, admin, path, scope):
    """Every list answers next_cursor; each takes it back as ``cursor`` (``after`` is its older name on these):
    following it visits every item once and ends. A client that sent ``cursor`` to a list paging by ``after``
    used to get the first page for ever."""
    for name in ("acme", "globex", "initech"):
        await api.create_tenant(admin, name)
    for n in range(3):
        created = await api.client.post("/v1/cas", headers=admin, json={
            "kind": "root", "tenant_id": "acme", "name": f"Root {n}", "algorithm": "ecdsa-p256",
            "subject": {"common_name": f"acme root {n}"}})
        assert created.status_code == 201, created.text
        user = await api.client.post("/v1/users", headers=admin, json={
            "username": f"user{n}", "tenant_id": "acme", "password": "a long enough password", "roles": ["viewer"]})
        assert user.status_code == 201, user.text
    seen, cursor, pages, position = [], None, 0, user.json().get("global_position") or created.json()["global_position"]
    while True:
        params = {"limit": 1, "min_position": position, **scope} | ({"cursor": cursor} if cursor is not None else {})
        page = await api.client.get(path, params=params, headers=admin)
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [str(item) for item in body["items"]]
        cursor, pages = body["next_cursor"], pages + 1
        if cursor is None:
            break
        assert pages < 100, "next_cursor never ends"
    assert len(seen) == len(set(seen)) and seen
    everything = (await api.client.get(path, params={"limit": 500, **scope}, headers=admin)).json()["items"]
    assert [str(item) for item in everything[:len(seen)]] == seen
    # only the audit log grows meanwhile, by the background jobs' events (a checkpoint every few seconds)
    assert all(item.get("type") in BACKGROUND_EVENTS for item in everything[len(seen):]), everything[len(seen):]
    both = await api.client.get(path, params={"cursor": "1", "after": "2", **scope}, headers=admin)
    assert_problem(both, 400, field="cursor")
