"""Sign-out (RFC 7009, POST /v1/auth/revoke): a refresh or access token ends its session, and every token of it."""

from __future__ import annotations

import pytest
from test_api_support import assert_problem, running_api
from test_session_end import LIMITS, bearer, create_user, login, recorded, refresh, sessions_of, works


@pytest.fixture
async def api(tmp_path):
    async with running_api(tmp_path, login_backoff_base=0.0, max_body_bytes=1 << 20, **LIMITS) as running:
        yield running


async def revoke(api, token: str, **extra):
    response = await api.client.post("/v1/auth/revoke", data={"token": token, **extra})
    assert response.status_code == 200, response.text
    assert response.content == b"" and response.headers["cache-control"] == "no-store"
    return response


async def signed_out(api) -> list[str]:
    return [stream for stream, why in await recorded(api, "session.revoked") if why == "signed_out"]


async def test_a_refresh_token_ends_its_session_and_the_access_tokens_of_it_at_once(api):
    await create_user(api, "alice", "viewer")
    first, second = await login(api, "alice"), await login(api, "alice")
    assert await works(api, first["access_token"]) == 200
    await revoke(api, first["refresh_token"], token_type_hint="refresh_token")
    assert_problem(await refresh(api, first["refresh_token"]), 401, "invalid_grant", field="refresh_token")
    assert_problem(await api.client.get("/v1/tenants", headers=bearer(first["access_token"])), 401, "unauthorized")
    assert await signed_out(api) == sorted(await sessions_of(api, [first]))
    assert await works(api, second["access_token"]) == 200  # the user's other session goes on
    assert (await refresh(api, second["refresh_token"])).status_code == 200
    event = next(e for e in await api.runtime.store.read_all(0, 100_000) if e.type == "session.revoked")
    assert event.actor.principal == "user:_system:alice" and event.actor.auth_method == "token_revocation"
    secret = first["refresh_token"].rsplit("_", 1)[1]
    assert secret not in str(event) and first["access_token"] not in str(event)


async def test_an_access_token_ends_its_session_refresh_family_included(api):
    await create_user(api, "bob", "viewer")
    tokens = await login(api, "bob")
    await api.client.post("/v1/auth/revoke", json={"token": tokens["access_token"],
                                                   "token_type_hint": "access_token"})
    assert await works(api, tokens["access_token"]) == 401
    assert_problem(await refresh(api, tokens["refresh_token"]), 401, "invalid_grant", field="refresh_token")
    assert len(await signed_out(api)) == 1


async def test_a_spent_refresh_token_still_ends_its_family(api):
    await create_user(api, "carol", "viewer")
    tokens = await login(api, "carol")
    rotated = (await refresh(api, tokens["refresh_token"])).json()
    await revoke(api, tokens["refresh_token"])  # the spent one: whoever holds it may end the family
    assert await works(api, rotated["access_token"]) == 401
    assert_problem(await refresh(api, rotated["refresh_token"]), 401, "invalid_grant", field="refresh_token")


@pytest.mark.parametrize("token", ["csmr_0123456789abcdef_0123456789abcdef_" + "x" * 43, "csmr_bad", "not a token",
                                   "eyJhbGciOiJFUzI1NiJ9.e30.c2ln", "csm_0123456789abcdef_" + "y" * 43])
async def test_a_token_that_is_not_ours_is_answered_alike_and_records_nothing(api, token):
    await create_user(api, "dave", "viewer")
    tokens = await login(api, "dave")
    await revoke(api, token)
    assert await recorded(api, "session.revoked") == []
    assert await works(api, tokens["access_token"]) == 200


async def test_revoking_twice_records_the_end_once(api):
    await create_user(api, "erin", "viewer")
    tokens = await login(api, "erin")
    await revoke(api, tokens["refresh_token"])
    await revoke(api, tokens["refresh_token"])
    await revoke(api, tokens["access_token"])
    assert len(await recorded(api, "session.revoked")) == 1


async def test_a_service_accounts_access_token_ends_but_its_api_key_does_not(api):
    admin = await api.admin()
    key = admin["Authorization"].split()[1]
    issued = await api.client.post("/v1/auth/token", data={"grant_type": "client_credentials", "client_secret": key})
    access = issued.json()["access_token"]
    assert await works(api, access) == 200
    await revoke(api, access)
    assert await works(api, access) == 401
    assert (await api.client.get("/v1/tenants", headers=admin)).status_code == 200


async def test_a_reused_refresh_token_ends_the_access_token_of_its_family_too(api):
    await create_user(api, "frank", "viewer")
    tokens = await login(api, "frank")
    rotated = (await refresh(api, tokens["refresh_token"])).json()
    assert_problem(await refresh(api, tokens["refresh_token"]), 401, "invalid_grant", field="refresh_token")
    assert await works(api, rotated["access_token"]) == 401  # someone holds a copy: the whole session ends


@pytest.mark.parametrize(("body", "field"), [({}, "token"), ({"token": ""}, "token"), ({"token": "x" * 5000}, "token"),
                                             ({"token": "x", "token_type_hint": "h" * 100}, "token_type_hint")])
async def test_a_bad_request_names_its_field(api, body, field):
    assert_problem(await api.client.post("/v1/auth/revoke", data=body), 400, "invalid_request", field=field)


async def test_a_body_neither_form_nor_json_is_refused(api):
    response = await api.client.post("/v1/auth/revoke", content=b"<token/>", headers={"content-type": "text/xml"})
    assert_problem(response, 415, "unsupported_media_type", field="content-type")
