"""Signing out everywhere (POST /v1/auth/sessions/revoke-all): a user ends every session of their own at once, or
every one but the session they ask from; API keys, service accounts and directory users are refused."""

from __future__ import annotations

import pytest

from commands import session_end
from commands.authz import Principal
from commands.runtime import CommandContext
from commands.sessions import EPOCH_CLAIM
from domain.user import SessionAlreadyEnded
from test_api_support import assert_problem, running_api
from test_session_end import (LIMITS, NEW_PASSWORD, assert_ended, bearer, create_user, login, recorded, refresh,
                              sessions_of, works)

PATH = "/v1/auth/sessions/revoke-all"


@pytest.fixture
async def api(tmp_path):
    async with running_api(tmp_path, login_backoff_base=0.0, **LIMITS) as running:
        yield running


async def revoke_all(api, access_token: str, **body):
    response = await api.client.post(PATH, json=body, headers=bearer(access_token))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json()


async def test_every_session_of_the_caller_ends_at_once_the_asking_one_included(api):
    await create_user(api, "alice", "viewer")
    await create_user(api, "bob", "viewer")
    mine = [await login(api, "alice") for _ in range(3)]
    rotated = (await refresh(api, mine[2]["refresh_token"])).json()
    others = await login(api, "bob")
    answer = await revoke_all(api, mine[0]["access_token"])
    assert answer["sessions_revoked"] == 3 and answer["kept_session"] is False
    assert answer["result"]["stream_id"] == "user-alice" and answer["result"]["changed"] is True
    await assert_ended(api, [*mine[:2], rotated], "signed_out_everywhere")
    assert_problem(await refresh(api, mine[2]["refresh_token"]), 401, "invalid_grant")
    assert ("user-alice", "signed_out_everywhere") in await recorded(api, "user.sessions_ended")
    ended = [e for e in await api.runtime.store.read_all(0, 100_000) if e.type == "user.sessions_ended"]
    assert ended[-1].actor.principal == "user:_system:alice"  # the user's own act, in the audit trail
    assert await works(api, others["access_token"]) == 200  # nobody else's sessions
    fresh = await login(api, "alice")  # signing in again works at once
    assert await works(api, fresh["access_token"]) == 200


async def test_keep_current_spares_the_asking_session_until_the_next_end_of_sessions(api):
    await create_user(api, "carol", "viewer")
    current, other, another = [await login(api, "carol") for _ in range(3)]
    answer = await revoke_all(api, current["access_token"], keep_current=True)
    assert answer["sessions_revoked"] == 2 and answer["kept_session"] is True
    await assert_ended(api, [other, another], "signed_out_everywhere")
    revoked = {stream for stream, _ in await recorded(api, "session.revoked")}
    assert not revoked & await sessions_of(api, [current])
    assert await works(api, current["access_token"]) == 200
    rotated = await refresh(api, current["refresh_token"])  # the kept session's family goes on too
    assert rotated.status_code == 200, rotated.text
    assert await works(api, rotated.json()["access_token"]) == 200

    again = await revoke_all(api, rotated.json()["access_token"], keep_current=True)  # twice from it: still kept
    assert again["sessions_revoked"] == 0 and await works(api, rotated.json()["access_token"]) == 200
    reset = await api.client.post("/v1/users/carol/password", json={"password": NEW_PASSWORD},
                                  headers=await api.admin())
    assert reset.status_code == 200, reset.text
    await assert_ended(api, [rotated.json()], "password_reset")  # an administrator's end spares nothing


async def test_api_keys_and_service_accounts_are_refused_and_nothing_is_written(api):
    admin = await api.admin()
    key = admin["Authorization"].split()[1]
    issued = await api.client.post("/v1/auth/token", data={"grant_type": "client_credentials", "client_secret": key})
    head = await api.runtime.store.head_position()
    for token in (key, issued.json()["access_token"]):
        response = await api.client.post(PATH, json={}, headers=bearer(token))
        assert_problem(response, 422, "sessions_for_local_users", field="Authorization")
    assert [e.type for e in await api.runtime.store.read_all(head, 100)
            if e.type.startswith(("user.", "session."))] == []
    assert await works(api, issued.json()["access_token"]) == 200


@pytest.mark.parametrize(("body", "field"), [({"keep_current": "yes"}, "keep_current"), ({"other": 1}, "other")])
async def test_a_bad_body_names_its_field(api, body, field):
    await create_user(api, "dave", "viewer")
    tokens = await login(api, "dave")
    response = await api.client.post(PATH, json=body, headers=bearer(tokens["access_token"]))
    assert assert_problem(response, 400)["field"] == field
    assert await works(api, tokens["access_token"]) == 200


async def test_without_a_token_it_is_a_401(api):
    assert_problem(await api.client.post(PATH, json={}), 401, "unauthorized", field="Authorization")


async def test_a_thief_racing_the_victims_sign_out_everywhere_cannot_keep_the_stolen_session(api):
    """The thief's request (keep_current, from the stolen session) was authenticated just before the victim's
    sign-out everywhere was recorded, and reaches the command just after: it is refused, the victim's kept session
    goes on and the stolen one stays ended."""
    await create_user(api, "erin", "viewer")
    victim, stolen = await login(api, "erin"), await login(api, "erin")
    claims = api.runtime.identity.tokens.verify(stolen["access_token"], api.runtime.services.clock.now())
    thief = Principal(id=claims["sub"], auth_method="jwt:pwd", roles=frozenset(claims["roles"]),
                      session_id=claims["sid"], session_epoch=claims[EPOCH_CLAIM])  # as api/auth.py made it
    await revoke_all(api, victim["access_token"], keep_current=True)
    head = await api.runtime.store.head_position()
    with pytest.raises(SessionAlreadyEnded):
        await session_end.sign_out_everywhere(session_end.SignOutEverywhere(keep_current=True),
                                              CommandContext(principal=thief), api.runtime.services)
    assert [e.type for e in await api.runtime.store.read_all(head, 100) if e.type.startswith("user.")] == []
    assert await works(api, victim["access_token"]) == 200
    await assert_ended(api, [stolen], "signed_out_everywhere")
    response = await api.client.post(PATH, json={"keep_current": True}, headers=bearer(stolen["access_token"]))
    assert_problem(response, 401, "unauthorized")
