"""Disabling a service account over HTTP: its API keys and the access tokens they obtained are refused at the next
request while the read models stand still, no key is issued to it, a key issued concurrently never works, another
tenant's admin cannot do it, and the audit chain still verifies."""

from __future__ import annotations

import asyncio
import base64

import pytest
from test_api_support import assert_problem, running_api

LIMITS = {"rate_limit_per_principal": "100000/minute", "rate_limit_per_address": "100000/minute",
          "rate_limit_login_per_address": "100000/minute"}


@pytest.fixture
async def api(tmp_path):
    async with running_api(tmp_path, **LIMITS) as running:
        yield running


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def settled(api) -> None:
    assert await api.runtime.runner.wait_for(await api.runtime.store.head_position(), 10)


async def account_with_key(api, admin, name="ci", tenant_id=None) -> dict:
    params = {"tenant_id": tenant_id} if tenant_id else {}
    created = await api.client.post("/v1/service-accounts", json={"name": name, "tenant_id": tenant_id}, headers=admin)
    assert created.status_code == 201, created.text
    return await issue(api, admin, name, params)


async def issue(api, admin, name, params=None) -> dict:
    issued = await api.client.post(f"/v1/service-accounts/{name}/keys", json={"roles": ["viewer"]},
                                   params=params or {}, headers=admin)
    assert issued.status_code == 201, issued.text
    return issued.json()


async def client_credentials(api, key: str):
    basic = base64.b64encode(f"sa:{key}".encode()).decode()
    return await api.client.post("/v1/auth/token", data={"grant_type": "client_credentials"},
                                 headers={"Authorization": f"Basic {basic}"})


async def stop_projections(api) -> None:
    projections = next(task for task in api.runtime.tasks if task.get_name() == "projections")
    projections.cancel()  # the read models stand still from here: they go on saying the keys are active
    await asyncio.gather(projections, return_exceptions=True)


async def test_disabling_refuses_its_keys_and_their_tokens_at_once_while_the_read_models_stand_still(api):
    admin = await api.admin()
    first, second = await account_with_key(api, admin), await issue(api, admin, "ci")
    token = await client_credentials(api, first["api_key"])
    assert token.status_code == 200, token.text
    access = token.json()["access_token"]
    assert (await api.client.get("/v1/tenants", headers=bearer(access))).status_code == 200
    await stop_projections(api)
    disabled = await api.client.post("/v1/service-accounts/ci/disable", json={"reason": "key leaked in a CI log"},
                                     headers=admin)
    assert disabled.status_code == 200, disabled.text
    assert api.runtime.runner.position < disabled.json()["global_position"]  # the read models did not see it
    for credential in (first["api_key"], second["api_key"], access):
        assert_problem(await api.client.get("/v1/tenants", headers=bearer(credential)), 401, "unauthorized")
    assert_problem(await client_credentials(api, second["api_key"]), 401, "invalid_client")
    refused = await api.client.post("/v1/service-accounts/ci/keys", json={"roles": ["viewer"]}, headers=admin)
    problem = assert_problem(refused, 422, "service_account_disabled", field="service_account")
    assert problem["errors"][0]["rule"] == "service_account_disabled"
    again = await api.client.post("/v1/service-accounts/ci/disable", json={"reason": "again"}, headers=admin)
    assert again.status_code == 200 and again.json()["changed"] is False
    events = [e for e in await api.runtime.store.read_all(0, 10_000) if e.stream_id == "serviceaccount-ci"]
    assert [e.type for e in events][-1] == "service_account.disabled"
    assert events[-1].payload == {"reason": "key leaked in a CI log",
                                  "keys": sorted([first["key_id"], second["key_id"]])}
    recorded = str([e.payload for e in await api.runtime.store.read_all(0, 10_000)])
    assert all(k["api_key"].split("_", 2)[2] not in recorded for k in (first, second))  # no secret in the log


async def test_the_read_models_show_it_disabled_with_its_keys_revoked_and_enabling_revives_no_key(api):
    admin = await api.admin()
    old = await account_with_key(api, admin)
    body = {"reason": "incident 42"}
    assert_problem(await api.client.post("/v1/service-accounts/ci/disable", json={}, headers=admin), 400,
                   field="reason")
    assert (await api.client.post("/v1/service-accounts/ci/disable", json=body, headers=admin)).status_code == 200
    await settled(api)
    read = (await api.client.get("/v1/service-accounts/ci", headers=admin)).json()
    assert read["status"] == "disabled" and [k["status"] for k in read["keys"]] == ["revoked"]
    enabled = await api.client.post("/v1/service-accounts/ci/enable", json={"reason": "keys rotated"}, headers=admin)
    assert enabled.status_code == 200, enabled.text
    assert_problem(await api.client.get("/v1/tenants", headers=bearer(old["api_key"])), 401, "unauthorized")
    new = await issue(api, admin, "ci")
    assert (await api.client.get("/v1/tenants", headers=bearer(new["api_key"]))).status_code == 200
    await settled(api)
    read = (await api.client.get("/v1/service-accounts/ci", headers=admin)).json()
    assert read["status"] == "active"
    assert {k["key_id"]: k["status"] for k in read["keys"]} == {old["key_id"]: "revoked", new["key_id"]: "active"}
    missing = await api.client.post("/v1/service-accounts/nobody/disable", json=body, headers=admin)
    assert_problem(missing, 404, "service_account_not_found", field="name")
    report = (await api.client.get("/v1/audit/verify", headers=admin)).json()
    assert report["ok"] is True and report["first_problem"] is None


async def test_no_key_issued_concurrently_with_the_disable_works_afterwards(api):
    admin = await api.admin()
    await account_with_key(api, admin)
    issues = [api.client.post("/v1/service-accounts/ci/keys", json={"roles": ["viewer"], "name": f"k{i}"},
                              headers=admin) for i in range(12)]
    disable = api.client.post("/v1/service-accounts/ci/disable", json={"reason": "race"}, headers=admin)
    answers = await asyncio.gather(*issues[:6], disable, *issues[6:])
    assert answers[6].status_code == 200, answers[6].text
    issued = [a.json() for a in answers if a is not answers[6] and a.status_code == 201]
    for refused in (a for a in answers if a is not answers[6] and a.status_code != 201):
        assert_problem(refused, 422, "service_account_disabled", field="service_account")
    for key in issued:
        assert_problem(await api.client.get("/v1/tenants", headers=bearer(key["api_key"])), 401, "unauthorized")
        assert_problem(await client_credentials(api, key["api_key"]), 401, "invalid_client")
    await settled(api)
    keys = (await api.client.get("/v1/service-accounts/ci", headers=admin)).json()["keys"]
    assert keys and {k["status"] for k in keys} == {"revoked"}  # issued and recorded: each revoked in the log too


async def test_a_tenant_admin_disables_its_own_tenants_accounts_only(api):
    admin = await api.admin()
    for tenant in ("acme", "globex"):
        await api.create_tenant(admin, tenant)
    theirs = await account_with_key(api, admin, "robot", tenant_id="globex")
    acme_admin = await api.token("tenant-admin", tenant_id="acme")
    body = {"reason": "not yours"}
    for params in ({"tenant_id": "globex"}, {}):  # named, or the caller's own (which has no such account)
        refused = await api.client.post("/v1/service-accounts/robot/disable", params=params, json=body,
                                        headers=acme_admin)
        assert refused.status_code in (403, 404), refused.text
    assert_problem(await api.client.post("/v1/service-accounts/robot/disable", params={"tenant_id": "globex"},
                                         json=body, headers=acme_admin), 403, "forbidden")
    assert (await api.client.get("/v1/certificates", headers=bearer(theirs["api_key"]))).status_code == 200
    globex_admin = await api.token("tenant-admin", tenant_id="globex")
    own = await api.client.post("/v1/service-accounts/robot/disable", json=body, headers=globex_admin)
    assert own.status_code == 200, own.text
    assert_problem(await api.client.get("/v1/certificates", headers=bearer(theirs["api_key"])), 401, "unauthorized")


async def test_a_key_the_disable_did_not_name_is_refused_from_the_log_alone(api):
    """A key issued before accounts recorded their keys, disabled while the read model listing it was rebuilding:
    its verifier stays, and the account's status in the log (read at every request) refuses it and its tokens."""
    from commands.authz import SYSTEM
    from commands.runtime import CommandContext, run
    from domain import service_account

    admin = await api.admin()
    key = await account_with_key(api, admin)
    access = (await client_credentials(api, key["api_key"])).json()["access_token"]
    await stop_projections(api)
    unnamed = service_account.ServiceAccountDisabled(reason="named no key", keys=[])
    await run(api.runtime.services, CommandContext(principal=SYSTEM), unnamed, tenant_id="_system",
              stream_id=service_account.stream_id("ci"), stream_type=service_account.STREAM_TYPE,
              fold=service_account.fold, decide=lambda s: [unnamed])
    assert api.runtime.vault.get_verifier(key["key_id"]) is not None
    for credential in (key["api_key"], access):
        assert_problem(await api.client.get("/v1/tenants", headers=bearer(credential)), 401, "unauthorized")
    assert_problem(await client_credentials(api, key["api_key"]), 401, "invalid_client")
