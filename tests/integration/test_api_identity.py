"""Users, service accounts, sign-in (password, refresh, client credentials), TOTP, lockout and denials over HTTP."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from ldap_fixture import BASE, PASSWORDS, READER_DN, slapd  # noqa: F401 - slapd is a fixture
from test_api_support import Clock, assert_problem, running_api

from domain import totp
from infra.service_settings import LdapSettings

PASSWORD = "correct horse battery staple"
LIMITS = {"rate_limit_per_principal": "100000/minute", "rate_limit_per_address": "100000/minute",
          "rate_limit_login_per_address": "100000/minute", "rate_limit_login_per_username": "100000/minute"}


@pytest.fixture
async def api(tmp_path):
    async with running_api(tmp_path, login_backoff_base=0.0, login_max_failures=3, **LIMITS) as running:
        yield running


async def settled(api) -> None:
    head = await api.runtime.store.head_position()
    assert await api.runtime.runner.wait_for(head, 10)


async def create_user(api, admin, username, *roles, tenant_id=None, status=201):
    body = {"username": username, "password": PASSWORD, "roles": list(roles)}
    if tenant_id:
        body["tenant_id"] = tenant_id
    response = await api.client.post("/v1/users", json=body, headers=admin)
    assert response.status_code == status, response.text
    return response.json()


async def login(api, username, password=PASSWORD, **extra):
    return await api.client.post("/v1/auth/token", data={"grant_type": "password", "username": username,
                                                          "password": password, **extra})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def events_of(api, *types: str) -> list[dict]:
    found = []
    for envelope in await api.runtime.store.read_all(0, 100_000):
        if envelope.type in types:
            found.append({"type": envelope.type, "payload": envelope.payload, "actor": envelope.actor.principal,
                          "tenant_id": envelope.tenant_id})
    return found


async def test_password_sign_in_gives_a_verifiable_rs256_token(api):
    admin = await api.admin()
    await create_user(api, admin, "alice", "viewer")
    response = await login(api, "alice")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and 0 < body["expires_in"] <= 900 and body["refresh_token"]
    jwks = (await api.client.get("/.well-known/jwks.json")).json()
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "RS256" and header["typ"] == "at+jwt"
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    assert key["key_ops"] == ["verify"] and all(isinstance(v, str) for m, v in key.items() if m != "key_ops"), key
    assert set(key) == {"kty", "use", "alg", "kid", "key_ops", "n", "e"}, key
    claims = jwt.decode(body["access_token"], jwt.PyJWK(key).key, algorithms=["RS256"], audience="csm-api")
    assert claims["sub"] == "user:_system:alice" and claims["roles"] == ["viewer"] and claims["amr"] == ["pwd"]
    assert {"iat", "nbf", "exp", "jti", "iss", "aud"} <= claims.keys() and claims["tenant"] is None
    assert (await api.client.get("/v1/tenants", headers=bearer(body["access_token"]))).status_code == 200
    denied = await api.client.post("/v1/tenants", json={"tenant_id": "acme", "name": "A"},
                                   headers=bearer(body["access_token"]))
    assert_problem(denied, 403, "forbidden")
    exported = str(await api.runtime.store.read_all(0, 10_000))
    assert PASSWORD not in exported and body["access_token"] not in exported
    assert body["refresh_token"].split("_", 3)[-1] not in exported  # the secret may itself hold "_"


async def test_unknown_user_and_wrong_password_read_the_same(api):
    await create_user(api, await api.admin(), "bob", "viewer")
    unknown, wrong = await login(api, "nobody"), await login(api, "bob", "not the password at all")
    first, second = assert_problem(unknown, 401, "invalid_grant"), assert_problem(wrong, 401, "invalid_grant")
    assert (first["detail"], first["field"]) == (second["detail"], second["field"])
    failed = await events_of(api, "auth.login_failed")
    assert [(e["payload"]["username"], e["payload"]["reason"]) for e in failed] == [
        ("nobody", "invalid_credentials"), ("bob", "invalid_credentials")]


async def test_refresh_rotates_and_reuse_revokes_the_family(api):
    await create_user(api, await api.admin(), "carol", "viewer")
    first = (await login(api, "carol")).json()
    refreshed = await api.client.post("/v1/auth/token", data={"grant_type": "refresh_token",
                                                              "refresh_token": first["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    second = refreshed.json()
    assert second["refresh_token"] != first["refresh_token"]
    reuse = await api.client.post("/v1/auth/token", data={"grant_type": "refresh_token",
                                                          "refresh_token": first["refresh_token"]})
    assert_problem(reuse, 401, "invalid_grant", field="refresh_token")
    after = await api.client.post("/v1/auth/token", data={"grant_type": "refresh_token",
                                                          "refresh_token": second["refresh_token"]})
    assert_problem(after, 401, "invalid_grant")  # the whole family is revoked
    revoked = await events_of(api, "session.revoked")
    assert [e["payload"]["reason"] for e in revoked] == ["refresh_token_reuse"]


async def test_client_credentials_for_a_service_account(api):
    admin = await api.admin()
    created = await api.client.post("/v1/service-accounts", json={"name": "ci", "description": "pipeline"},
                                    headers=admin)
    assert created.status_code == 201, created.text
    issued = await api.client.post("/v1/service-accounts/ci/keys", json={"roles": ["viewer"]}, headers=admin)
    assert issued.status_code == 201, issued.text
    key = issued.json()["api_key"]
    assert key.startswith("csm_") and issued.json()["service_account"] == "ci"
    await settled(api)
    basic = base64.b64encode(f"ci:{key}".encode()).decode()
    token = await api.client.post("/v1/auth/token", data={"grant_type": "client_credentials"},
                                  headers={"Authorization": f"Basic {basic}"})
    assert token.status_code == 200, token.text
    access = token.json()["access_token"]
    assert "refresh_token" not in token.json()
    claims = jwt.decode(access, options={"verify_signature": False})
    assert claims["sub"] == "sa:_system:ci" and claims["amr"] == ["api_key"]
    assert (await api.client.get("/v1/tenants", headers=bearer(access))).status_code == 200
    listing = (await api.client.get("/v1/service-accounts/ci", headers=admin)).json()
    assert [k["key_id"] for k in listing["keys"]] == [issued.json()["key_id"]] and key not in str(listing)
    revoked = await api.client.delete(f"/v1/service-accounts/ci/keys/{issued.json()['key_id']}", headers=admin)
    assert revoked.status_code == 200, revoked.text
    await settled(api)
    assert_problem(await api.client.get("/v1/tenants", headers=bearer(access)), 401, "unauthorized")
    bad = await api.client.post("/v1/auth/token", data={"grant_type": "client_credentials", "client_secret": key})
    assert_problem(bad, 401, "invalid_client")


async def test_a_new_key_works_at_once_and_a_revoked_ones_tokens_stop_at_once_while_the_read_models_lag(api):
    admin = await api.admin()
    assert (await api.client.post("/v1/service-accounts", json={"name": "ci"}, headers=admin)).status_code == 201
    issued = await api.client.post("/v1/service-accounts/ci/keys", json={"roles": ["viewer"]}, headers=admin)
    key, key_id = issued.json()["api_key"], issued.json()["key_id"]
    # no wait: the answer came once the read models had the key
    assert (await api.client.get("/v1/tenants", headers=bearer(key))).status_code == 200
    basic = base64.b64encode(f"ci:{key}".encode()).decode()
    token = await api.client.post("/v1/auth/token", data={"grant_type": "client_credentials"},
                                  headers={"Authorization": f"Basic {basic}"})
    access = token.json()["access_token"]
    projections = next(task for task in api.runtime.tasks if task.get_name() == "projections")
    projections.cancel()  # the read models stand still from here: they go on saying the key is active
    await asyncio.gather(projections, return_exceptions=True)
    revoked = await api.client.delete(f"/v1/service-accounts/ci/keys/{key_id}", headers=admin)
    assert revoked.status_code == 200, revoked.text
    assert api.runtime.runner.position < revoked.json()["global_position"]
    assert_problem(await api.client.get("/v1/tenants", headers=bearer(key)), 401, "unauthorized")
    assert_problem(await api.client.get("/v1/tenants", headers=bearer(access)), 401, "unauthorized")
    again = await api.client.post("/v1/auth/token", data={"grant_type": "client_credentials"},
                                  headers={"Authorization": f"Basic {basic}"})
    assert_problem(again, 401, "invalid_client")


async def test_a_new_key_works_on_its_first_request_while_the_read_models_lag(api, monkeypatch):
    """Keys are checked against the read models: the answer that shows a new key waits until they have it. The
    read models stand still until the answer is waiting for them; answered earlier, the key would be refused."""
    admin = await api.admin()
    assert (await api.client.post("/v1/service-accounts", json={"name": "ci"}, headers=admin)).status_code == 201
    runner = api.runtime.runner
    projections = next(task for task in api.runtime.tasks if task.get_name() == "projections")
    projections.cancel()
    await asyncio.gather(projections, return_exceptions=True)
    waiting, wait_for = asyncio.Event(), runner.wait_for

    async def waits_for(position: int, timeout: float) -> bool:  # a spy: the answer now waits for the read models
        waiting.set()
        return await wait_for(position, timeout)

    monkeypatch.setattr(runner, "wait_for", waits_for)
    issuing = asyncio.create_task(api.client.post("/v1/service-accounts/ci/keys", json={"roles": ["viewer"]},
                                                  headers=admin))
    await asyncio.wait({issuing, asyncio.create_task(waiting.wait())}, return_when=asyncio.FIRST_COMPLETED)
    if not issuing.done():  # it waits: the read models move again (with the key it shows, it must work at once)
        api.runtime.tasks.append(asyncio.create_task(runner.run(), name="projections"))
    issued = await issuing
    assert issued.status_code == 201, issued.text
    assert (await api.client.get("/v1/tenants", headers=bearer(issued.json()["api_key"]))).status_code == 200


async def test_a_replayed_key_issue_answers_the_first_keys_expiry_without_its_secret(api):
    admin = await api.admin()
    created = await api.client.post("/v1/service-accounts", json={"name": "ci"}, headers=admin)
    assert created.status_code == 201, created.text
    once = {**admin, "Idempotency-Key": "issue-ci-key-1"}
    body = {"roles": ["viewer"], "expires_in_days": 30}
    first = await api.client.post("/v1/service-accounts/ci/keys", json=body, headers=once)
    assert first.status_code == 201, first.text
    assert first.json()["api_key"].startswith("csm_") and first.json()["expires_at"] is not None
    again = await api.client.post("/v1/service-accounts/ci/keys", json=body, headers=once)
    assert again.status_code == 201, again.text
    replay, original = again.json(), first.json()
    assert replay["api_key"] is None and replay["result"]["replayed"] is True  # the secret was shown once
    assert {k: replay[k] for k in ("key_id", "service_account", "expires_at")} == \
        {k: original[k] for k in ("key_id", "service_account", "expires_at")}
    await settled(api)
    listed = (await api.client.get("/v1/service-accounts/ci", headers=admin)).json()["keys"]
    assert [(k["key_id"], k["expires_at"]) for k in listed] == [(original["key_id"], original["expires_at"])]
    verifiers = api.runtime.vault._conn().execute("SELECT token_id FROM credential_verifiers").fetchall()
    assert original["key_id"] in {row[0] for row in verifiers}
    admin_keys = 1  # the test's own platform-admin key
    assert len(verifiers) == admin_keys + 1  # the retry stored no verifier of a key that was never recorded


async def test_privileged_users_enroll_totp_then_need_it(api):
    await create_user(api, await api.admin(), "root", "platform-admin")
    first = await login(api, "root")
    assert first.status_code == 200, first.text
    enroll_only = first.json()
    assert enroll_only["mfa_enrollment_required"] is True and "refresh_token" not in enroll_only
    headers = bearer(enroll_only["access_token"])
    assert_problem(await api.client.get("/v1/tenants", headers=headers), 403, "forbidden")
    started = await api.client.post("/v1/auth/totp", headers=headers)
    assert started.status_code == 201, started.text
    uri = started.json()["otpauth_uri"]
    assert uri.startswith("otpauth://totp/CSM:root?") and "algorithm=SHA1" in uri
    secret = base64.b32decode(started.json()["secret"] + "=" * (-len(started.json()["secret"]) % 8))
    wrong = await api.client.post("/v1/auth/totp/confirm", json={"code": "000000" if totp.totp(
        secret, datetime.now(UTC).timestamp()) != "000000" else "111111"}, headers=headers)
    assert_problem(wrong, 422, "invalid_otp", field="code")
    confirmed = await api.client.post("/v1/auth/totp/confirm", json={"code": totp.totp(
        secret, datetime.now(UTC).timestamp() - 30)}, headers=headers)  # the previous step: drift allowed
    assert confirmed.status_code == 200, confirmed.text
    no_code = assert_problem(await login(api, "root"), 401, "mfa_required", field="totp")
    assert "totp" in no_code["detail"].lower()
    code = totp.totp(secret, datetime.now(UTC).timestamp())
    signed_in = await login(api, "root", totp=code)
    assert signed_in.status_code == 200, signed_in.text
    claims = jwt.decode(signed_in.json()["access_token"], options={"verify_signature": False})
    assert claims["amr"] == ["pwd", "otp"] and claims["roles"] == ["platform-admin"]
    assert (await api.client.get("/v1/tenants", headers=bearer(signed_in.json()["access_token"]))).status_code == 200
    assert_problem(await login(api, "root", totp=code), 401, "mfa_required")  # a code is good once
    exported = str(await api.runtime.store.read_all(0, 10_000))
    assert started.json()["secret"] not in exported


async def test_failures_lock_the_account_until_an_admin_unlocks_it(api):
    admin = await api.admin()
    await create_user(api, admin, "dave", "viewer")
    for _ in range(3):
        assert_problem(await login(api, "dave", "wrong password, again"), 401, "invalid_grant")
    locked = assert_problem(await login(api, "dave"), 429, "account_locked")
    assert locked["field"] == "username"
    assert_problem(await login(api, "ghost"), 401, "invalid_grant")
    assert [e["payload"]["failures"] for e in await events_of(api, "auth.account_locked")] == [3]
    await settled(api)
    shown = (await api.client.get("/v1/users/dave", headers=admin)).json()
    assert shown["locked_until"] is not None
    assert (await api.client.post("/v1/users/dave/unlock", headers=admin)).status_code == 200
    assert (await login(api, "dave")).status_code == 200


async def test_backoff_waits_between_failures(tmp_path):
    async with running_api(tmp_path, login_backoff_base=30.0, **LIMITS) as api:
        clock = Clock()
        api.runtime.services.clock = clock
        await create_user(api, await api.admin(), "erin", "viewer")
        assert_problem(await login(api, "erin", "a wrong password"), 401, "invalid_grant")
        throttled = await login(api, "erin")
        assert_problem(throttled, 429, "login_throttled")
        assert 1 <= int(throttled.headers["retry-after"]) <= 30
        clock.offset = timedelta(seconds=31)
        assert (await login(api, "erin")).status_code == 200


async def test_just_in_time_grants_lapse_by_themselves(api):
    clock = Clock()
    api.runtime.services.clock = clock
    admin = await api.admin()
    await create_user(api, admin, "frank", "viewer")
    until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    granted = await api.client.post("/v1/users/frank/roles", json={"role": "auditor", "expires_at": until},
                                    headers=admin)
    assert granted.status_code == 200, granted.text
    token = (await login(api, "frank")).json()["access_token"]
    assert (await api.client.get("/v1/audit/events", headers=bearer(token))).status_code == 200
    await settled(api)
    assert (await api.client.get("/v1/users/frank", headers=admin)).json()["roles"] == ["auditor", "viewer"]
    clock.offset = timedelta(hours=1, minutes=1)
    assert (await api.client.get("/v1/users/frank", headers=admin)).json()["roles"] == ["viewer"]
    later = (await login(api, "frank")).json()["access_token"]
    assert jwt.decode(later, options={"verify_signature": False})["roles"] == ["viewer"]
    assert_problem(await api.client.get("/v1/audit/events", headers=bearer(later)), 403, "forbidden")


async def test_disabling_a_user_stops_its_tokens_at_once(api):
    admin = await api.admin()
    await create_user(api, admin, "gina", "viewer")
    token = (await login(api, "gina")).json()["access_token"]
    assert (await api.client.post("/v1/users/gina/disable", json={"reason": "left"}, headers=admin)).status_code == 200
    assert_problem(await api.client.get("/v1/tenants", headers=bearer(token)), 401, "unauthorized")
    assert_problem(await login(api, "gina"), 401, "invalid_grant")


async def test_tenant_scoped_admins_manage_their_own_tenant_only(api):
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    await api.create_tenant(admin, "globex")
    scoped = await api.token("platform-admin", tenant_id="acme")
    await create_user(api, scoped, "ann", "viewer")  # defaults to the caller's tenant
    await create_user(api, scoped, "gus", "viewer", tenant_id="globex", status=403)
    await create_user(api, scoped, "pat", "viewer", tenant_id=None)  # still acme: the caller's tenant
    await settled(api)
    listing = await api.client.get("/v1/users", headers=scoped)
    assert [u["username"] for u in listing.json()["items"]] == ["ann", "pat"]
    assert {u["tenant_id"] for u in listing.json()["items"]} == {"acme"}
    assert_problem(await api.client.get("/v1/users", params={"tenant_id": "globex"}, headers=scoped), 403)
    assert (await api.client.get("/v1/users", headers=admin)).json()["items"] == []  # the platform's own
    assert_problem(await login(api, "ann"), 401, "invalid_grant")  # a tenant user signs in with its tenant
    signed_in = await login(api, "ann", tenant_id="acme")
    assert jwt.decode(signed_in.json()["access_token"], options={"verify_signature": False})["tenant"] == "acme"


async def test_denials_are_audited(api):
    viewer = await api.token("viewer")
    assert_problem(await api.client.post("/v1/tenants", json={"tenant_id": "acme", "name": "A"}, headers=viewer),
                   403, "forbidden")
    for _ in range(100):
        denied = await events_of(api, "access.denied")
        if denied:
            break
        await asyncio.sleep(0.05)
    assert len(denied) == 1
    payload = denied[0]["payload"]
    assert payload["permission"] == "tenant:create" and payload["route"] == "POST /v1/tenants"
    assert payload["principal"].startswith("token:") and denied[0]["actor"] == payload["principal"]


async def test_mangled_tokens_are_401_never_500(api):
    await create_user(api, await api.admin(), "hal", "viewer")
    good = (await login(api, "hal")).json()["access_token"]
    head, body, signature = good.split(".")
    forged_none = base64.urlsafe_b64encode(b'{"alg":"none","typ":"at+jwt"}').rstrip(b"=").decode()
    hs = jwt.encode({"sub": "user:_system:hal"}, "secret", algorithm="HS256", headers={"typ": "at+jwt"})
    for token in (f"{head}.{body}.", f"{forged_none}.{body}.", hs, f"{head}.{body}.{signature[:-4]}AAAA",
                  f"{head}..{signature}", "a.b.c", ".", "csm_" + "z" * 60, good + "x", good[:-1]):
        response = await api.client.get("/v1/tenants", headers=bearer(token))
        assert_problem(response, 401, "unauthorized")


async def test_token_requests_are_validated(api):
    assert_problem(await api.client.post("/v1/auth/token", data={"grant_type": "implicit"}), 400,
                   "unsupported_grant_type", field="grant_type")
    assert_problem(await api.client.post("/v1/auth/token", data={"grant_type": "password", "username": "x"}), 400,
                   "invalid_request", field="password")
    assert_problem(await api.client.post("/v1/auth/token", content=b"\xff\xfe", headers={
        "Content-Type": "application/x-www-form-urlencoded"}), 400, "invalid_request")
    as_json = await api.client.post("/v1/auth/token", json={"grant_type": "password", "username": "n",
                                                            "password": "p"})
    assert_problem(as_json, 401, "invalid_grant")


# directory (LDAP) users, against the real slapd of ldap_fixture ----------------------------------

def directory_settings(server) -> LdapSettings:
    return LdapSettings(url=server.ldaps_url, ca_file=server.ca_file, bind_dn=READER_DN,
                        bind_password_file=server.reader_password_file, user_base=f"ou=people,{BASE}",
                        group_base=f"ou=groups,{BASE}", disabled_filter="(employeeType=disabled)",
                        role_map={"Auditors": ("auditor", "viewer"), f"cn=csm-admins,ou=groups,{BASE}":
                                  ("platform-admin",)}, tenant="acme", timeout=3)


async def test_directory_users_sign_in_through_the_directory_port(tmp_path, slapd):  # noqa: F811
    async with running_api(tmp_path, ldap=directory_settings(slapd), **LIMITS) as api:
        await api.create_tenant(await api.admin(), "acme")
        bob = await login(api, "bob", PASSWORDS["bob"], tenant_id="acme")
        assert bob.status_code == 200, bob.text
        claims = jwt.decode(bob.json()["access_token"], options={"verify_signature": False})
        assert claims["sub"] == "ldap:acme:bob" and claims["amr"] == ["ldap"] and claims["tenant"] == "acme"
        assert claims["roles"] == ["auditor", "viewer"] and "refresh_token" not in bob.json()
        audit = await api.client.get("/v1/audit/events", headers=bearer(bob.json()["access_token"]))
        assert audit.status_code == 200
        everywhere = await api.client.post("/v1/auth/sessions/revoke-all", json={},  # no sessions epoch to move
                                           headers=bearer(bob.json()["access_token"]))
        assert_problem(everywhere, 422, "sessions_for_local_users", field="Authorization")
        alice = (await login(api, "alice", PASSWORDS["alice"], tenant_id="acme")).json()  # platform-admin: TOTP
        assert alice["mfa_enrollment_required"] is True
        refused = (("bob", "not bob's password"), ("nobody", "whatever it is"), ("dave", PASSWORDS["dave"]))
        for name, password in refused:  # wrong password, unknown, disabled in the directory: one answer
            assert_problem(await login(api, name, password, tenant_id="acme"), 401, "invalid_grant")
        assert_problem(await login(api, "bob", PASSWORDS["bob"]), 401, "invalid_grant")  # the directory's tenant only
        failed = {e["payload"]["username"] for e in await events_of(api, "auth.login_failed")}
        assert {"bob", "nobody", "dave"} <= failed


async def test_resetting_the_totp_of_a_user_who_does_not_exist_is_a_404_naming_the_username(api):
    """It answered 200 "changed": false, as for a user without TOTP: a mistyped name looked like a reset done."""
    admin = await api.admin()
    response = await api.client.delete("/v1/users/no-such-user/totp", headers=admin)
    assert_problem(response, 404, "user_not_found", field="username")
