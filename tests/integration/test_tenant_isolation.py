"""A token scoped to one tenant never reads, lists, searches, exports, streams or signs with another tenant's objects.

Two tenants of the same shape (CAs, a certificate with a server-side key, a profile of the same
name); the caller holds every read permission in its own tenant. Each refusal is checked next to a
platform-wide caller that does see the other tenant, so a test that could not see a leak fails too.
"""

from __future__ import annotations

import pytest
import pytest_asyncio
from authz_support import OTHER, OWN, World, build_world, caught_up, profile_body
from test_api_events import events_only, read_sse
from test_api_support import assert_problem, running_api

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory):
    async with running_api(tmp_path_factory.mktemp("isolation"), max_body_bytes=1 << 20) as api:
        world = await build_world(api)
        # the other tenant's profile of the same name says something the own tenant must never read
        response = await api.client.put(f"/v1/profiles/{world.tenants[OTHER].profile}", headers=world.admin, json={
            "tenant_id": OTHER, "profile": profile_body("shared-name") | {"description": "other tenant's secret"}})
        assert response.status_code == 200, response.text
        await caught_up(api)
        yield world


@pytest.fixture
def mine(world: World) -> dict[str, str]:
    """Every read permission (auditor) plus key export (tenant-admin), scoped to OWN."""
    return {"Authorization": world.headers("auditor", OWN)["Authorization"]}


@pytest.fixture
def admin_of_mine(world: World) -> dict[str, str]:
    return world.headers("tenant-admin", OWN)


async def pages(world: World, path: str, headers: dict, params: dict | None = None, cursor: str = "after") -> list:
    """Every item of a paginated list."""
    items, params = [], dict(params or {})
    while True:
        response = await world.api.client.get(path, params={**params, "limit": 2}, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        if body["next_cursor"] is None:
            return items
        params[cursor] = body["next_cursor"]


def tenants_of(items: list[dict]) -> set[str]:
    return {item["tenant_id"] for item in items}


async def test_tenants(world, mine):
    assert tenants_of(await pages(world, "/v1/tenants", mine)) == {OWN}
    assert OTHER in tenants_of(await pages(world, "/v1/tenants", world.admin))
    assert_problem(await world.api.client.get(f"/v1/tenants/{OTHER}", headers=mine), 403)
    for status in ("active", "suspended"):
        assert tenants_of(await pages(world, "/v1/tenants", mine, {"status": status})) <= {OWN}


async def test_cas_lists_reads_chains_and_certificates(world, mine):
    assert tenants_of(await pages(world, "/v1/cas", mine)) == {OWN}
    assert_problem(await world.api.client.get("/v1/cas", params={"tenant_id": OTHER}, headers=mine), 403,
                   "forbidden", field="tenant_id")
    assert len(await pages(world, "/v1/cas", world.admin, {"tenant_id": OTHER})) >= 3
    other = world.tenants[OTHER]
    for suffix in ("", "/certificates", "/chain"):
        assert_problem(await world.api.client.get(f"/v1/cas/{other.issuing}{suffix}", headers=mine), 404)
        assert (await world.api.client.get(f"/v1/cas/{other.issuing}{suffix}", headers=world.admin)).status_code == 200
    for suffix in ("/certificate", "/certificate?format=pem", "/crl"):  # what relying parties fetch: no token at all
        assert (await world.api.client.get(f"/v1/cas/{other.issuing}{suffix}")).status_code == 200
    own = world.tenants[OWN]
    via = await world.api.client.get(f"/v1/cas/{own.issuing}/chain", params={"via": other.root}, headers=mine)
    assert_problem(via, 404)


async def test_certificates_search_read_and_export(world, mine, admin_of_mine):
    assert tenants_of(await pages(world, "/v1/certificates", mine, cursor="cursor")) == {OWN}
    other_id = world.tenants[OTHER].certificate
    theirs = (await world.api.client.get(f"/v1/certificates/{other_id}", headers=world.admin)).json()
    asked = await world.api.client.get("/v1/certificates", params={"tenant_id": OTHER}, headers=mine)
    assert_problem(asked, 403, "forbidden", field="tenant_id")
    probes = [{"serial": theirs["serial_hex"]}, {"fingerprint": theirs["fingerprint"]},
              {"common_name": theirs["common_name"]}, {"san": f"node1.{OTHER}.internal"}, {"ca_id": theirs["ca_id"]},
              {"issuer": theirs["issuer_dn"]}, {"tag": "matrix"}]
    for params in probes:
        found = await pages(world, "/v1/certificates", mine, params, cursor="cursor")
        assert tenants_of(found) <= {OWN}, params
    assert_problem(await world.api.client.get(f"/v1/certificates/{other_id}", headers=mine), 404)
    before = await world.api.runtime.store.head_position()
    for params, extra in (({"format": "pem"}, {}), ({"format": "der"}, {}),
                          ({"format": "pkcs12"}, {"X-Export-Password": "isolation-password"}),
                          ({"format": "pem", "include_key": "true"}, {})):
        response = await world.api.client.get(f"/v1/certificates/{other_id}/export", params=params,
                                              headers={**admin_of_mine, **extra})
        assert_problem(response, 404)
    events = await world.api.runtime.store.read_all(before, 1000)
    assert not [e for e in events if e.tenant_id == OTHER], "a refused export left a trace in the other tenant"


# Every list or search that takes ?tenant_id (api/permissions.py: the confined and tenant-scoped GETs).
TENANT_LISTS = ("/v1/certificates", "/v1/cas", "/v1/audit/events", "/v1/users", "/v1/profiles", "/v1/webhooks",
                "/v1/service-accounts")


@pytest.mark.parametrize("path", TENANT_LISTS)
async def test_a_list_of_another_tenant_is_refused_not_empty(world, mine, path):
    """403 naming tenant_id, as docs/security.md says; not a 200 with nothing in it (which reads as "none there")."""
    asked = await world.api.client.get(path, params={"tenant_id": OTHER}, headers=mine)
    body = assert_problem(asked, 403, "forbidden", field="tenant_id")
    assert body["errors"][0]["field"] == "tenant_id"
    assert (await world.api.client.get(path, params={"tenant_id": OWN}, headers=mine)).status_code == 200
    assert (await world.api.client.get(path, params={"tenant_id": OTHER}, headers=world.admin)).status_code == 200


async def test_profiles(world, mine):
    listed = (await world.api.client.get("/v1/profiles", headers=mine)).json()
    own = [p for p in listed if p["source"] == "tenant"]
    assert {p["name"] for p in own} == {"shared-name", "retiring"}
    assert all(p["profile"]["description"] != "other tenant's secret" for p in listed)
    assert_problem(await world.api.client.get("/v1/profiles", params={"tenant_id": OTHER}, headers=mine), 403)
    theirs = (await world.api.client.get("/v1/profiles", params={"tenant_id": OTHER}, headers=world.admin)).json()
    assert any(p["profile"]["description"] == "other tenant's secret" for p in theirs)


async def test_audit_events(world, mine):
    entries = await pages(world, "/v1/audit/events", mine)
    assert entries and tenants_of(entries) == {OWN}
    assert all(entry["event"]["tenant_id"] == OWN for entry in entries)  # the full envelopes, too
    everything = await pages(world, "/v1/audit/events", world.admin)
    theirs = [entry for entry in everything if entry["tenant_id"] == OTHER]
    assert theirs
    for params in ({"stream_id": theirs[0]["stream_id"]}, {"correlation_id": theirs[0]["correlation_id"]},
                   {"type": theirs[0]["type"]}, {"actor": theirs[0]["actor"]}, {"day": theirs[0]["day_bucket"]}):
        params = {k: v for k, v in params.items() if v is not None}
        assert tenants_of(await pages(world, "/v1/audit/events", mine, params)) <= {OWN}, params
    assert_problem(await world.api.client.get("/v1/audit/events", params={"tenant_id": OTHER}, headers=mine), 403)
    assert_problem(await world.api.client.get("/v1/audit/verify", headers=mine), 403)  # it reads every tenant


async def test_event_stream_history_and_live(world, mine, admin_of_mine):
    client = world.api.client
    head = await world.api.runtime.store.head_position()
    async with client.stream("GET", "/v1/events/stream", params={"after": 0}, headers=mine) as response:
        assert response.status_code == 200
        # live: the other tenant writes first, then the own tenant; the own event arriving proves the
        # other one was passed over (the stream is in global order)
        other_write = await client.post(f"/v1/tenants/{OTHER}/rename", json={"name": "Other, live"},
                                        headers=world.admin)
        own_write = await client.post(f"/v1/tenants/{OWN}/rename", json={"name": "Own, live"}, headers=admin_of_mine)
        assert other_write.status_code == own_write.status_code == 200
        target = own_write.json()["global_position"]
        assert other_write.json()["global_position"] < target
        blocks = events_only(await read_sse(response, lambda b: any(int(e["id"]) >= target
                                                                    for e in events_only(b))))
    seen = {block["data"]["tenant_id"] for block in blocks}
    assert seen == {OWN}, seen
    own_history = [e for e in await world.api.runtime.store.read_all(0, 100_000)
                   if e.tenant_id == OWN and e.global_position <= head]
    assert {int(b["id"]) for b in blocks} >= {e.global_position for e in own_history}


async def test_a_tenant_cannot_sign_with_or_under_another_tenants_ca(world, admin_of_mine):
    client, other = world.api.client, world.tenants[OTHER]
    before = await world.api.runtime.store.head_position()
    issue = await client.post("/v1/certificates", headers=admin_of_mine, json={
        "ca_id": other.issuing, "algorithm": "ecdsa-p256", "subject": {"common_name": f"x.{OWN}.internal"},
        "sans": {"dns": [f"x.{OWN}.internal"]}})
    intermediate = await client.post("/v1/cas", headers=admin_of_mine, json={
        "kind": "intermediate", "parent_id": other.root, "name": "stolen", "algorithm": "ecdsa-p384",
        "subject": {"common_name": "stolen"}})
    cross = await client.post(f"/v1/cas/{world.tenants[OWN].spare}/cross-sign", headers=admin_of_mine,
                              json={"issuer_id": other.root})
    for response in (issue, intermediate, cross):
        assert_problem(response, 404, "ca_not_found")  # looked up in the caller's tenant only
    written = await world.api.runtime.store.read_all(before, 1000)
    assert not [e for e in written if e.type in ("certificate.issued", "ca.created", "ca.cross_certified")]
