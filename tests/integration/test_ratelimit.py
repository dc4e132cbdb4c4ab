"""Rate limits through the real API: per client address, per principal, sign-in per address and per username;
in memory and in a real redis-server."""

from __future__ import annotations

from prometheus_client import REGISTRY
from redis_fixture import redis_url  # noqa: F401
from test_api_support import assert_problem, running_api

from api.ratelimit import Rate, RedisBackend

OFF = {"rate_limit_per_address": "", "rate_limit_per_principal": "", "rate_limit_login_per_address": "",
       "rate_limit_login_per_username": ""}


def assert_limited(response, limit: int, field: str = "client_address") -> dict:
    """A 429 rate_limited problem naming what is limited: the client address, the principal (Authorization) or the
    sign-in's username."""
    body = assert_problem(response, 429, "rate_limited", field=field)
    assert body["errors"] == [{"field": field, "rule": "rate_limited", "message": body["detail"]}]
    assert int(response.headers["retry-after"]) >= 1 and body["retry_after"] >= 1
    assert response.headers["ratelimit-limit"] == str(limit)
    assert response.headers["ratelimit-remaining"] == "0"
    assert response.headers["x-content-type-options"] == "nosniff"  # the outer layers still apply
    return body


def limited(response) -> bool:
    """Refused by these limits (the sign-in route has its own back-off, answered as 429 of another type)."""
    return response.status_code == 429 and response.json()["type"].endswith("/rate_limited")


async def address_limit_applies(api) -> None:
    statuses = [(await api.client.get("/v1/tenants")).status_code for _ in range(3)]
    assert statuses == [401, 401, 401]  # counted before authentication: anonymous floods are limited too
    assert_limited(await api.client.get("/v1/tenants"), 3)
    assert_limited(await api.client.get("/no/such/route"), 3)
    assert (await api.client.get("/health/live")).status_code == 200  # probes are never limited


async def test_per_address(tmp_path):
    async with running_api(tmp_path, **{**OFF, "rate_limit_per_address": "3/hour"}) as api:
        await address_limit_applies(api)


async def test_per_principal_counts_only_authenticated_requests(tmp_path):
    async with running_api(tmp_path, **{**OFF, "rate_limit_per_principal": "2/hour"}) as api:
        first, second = await api.admin(), await api.admin()
        token_id = first["Authorization"].split("_")[1]
        forged = {"Authorization": f"Bearer csm_{token_id}_{'x' * 43}"}
        for _ in range(5):  # someone with the token id but not the secret cannot spend the owner's budget
            assert (await api.client.get("/v1/tenants", headers=forged)).status_code == 401
        answers = [await api.client.get("/v1/tenants", headers=first) for _ in range(2)]
        assert [r.status_code for r in answers] == [200, 200]
        assert [r.headers["ratelimit-remaining"] for r in answers] == ["1", "0"]
        assert answers[0].headers["ratelimit-policy"] == "2;w=3600"
        assert_limited(await api.client.get("/v1/tenants", headers=first), 2, "Authorization")
        assert (await api.client.get("/v1/tenants", headers=second)).status_code == 200


async def test_sign_in_per_username_and_per_address(tmp_path):
    limits = {**OFF, "rate_limit_login_per_username": "2/hour", "rate_limit_login_per_address": "5/hour"}
    async with running_api(tmp_path, **limits) as api:
        async def sign_in(username: str, form: bool = False):
            body = {"grant_type": "password", "username": username, "password": "wrong-password"}
            if form:
                return await api.client.post("/v1/auth/token", data=body)
            return await api.client.post("/v1/auth/token", json=body)

        assert [limited(await sign_in("alice")) for _ in range(2)] == [False, False]
        assert_limited(await sign_in("alice"), 2, "username")
        assert_limited(await sign_in(" ALICE ", form=True), 2, "username")  # the same account however it is spelled
        assert not limited(await sign_in("bob"))
        assert_limited(await sign_in("carol"), 5)  # the sixth sign-in from this address, whoever it names
        assert (await api.client.get("/v1/tenants")).status_code == 401  # other routes keep their own limits


def logins(grant: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("csm_logins_total", {"grant": grant, "outcome": outcome}) or 0.0


async def test_sign_ins_the_limiter_refuses_are_counted_as_rate_limited(tmp_path):
    """csm_logins_total: a 429 from the limiter (before the sign-in handler runs) counts, by the body's grant type."""
    async with running_api(tmp_path, login_backoff_base=0.0, **{**OFF, "rate_limit_login_per_address": "2/hour"}) as api:
        before = {grant: logins(grant, "rate_limited") for grant in ("password", "refresh_token", "other")}
        wrong = {"grant_type": "password", "username": "alice", "password": "wrong-password"}
        statuses = [(await api.client.post("/v1/auth/token", data=wrong)).status_code for _ in range(2)]
        assert statuses == [401, 401] and logins("password", "rate_limited") == before["password"]
        assert_limited(await api.client.post("/v1/auth/token", data=wrong), 2)
        assert_limited(await api.client.post("/v1/auth/token", json={**wrong, "username": "bob"}), 2)
        assert_limited(await api.client.post("/v1/auth/token", json={"grant_type": "refresh_token",
                                                                      "refresh_token": "csmr_x"}), 2)
        assert_limited(await api.client.post("/v1/auth/token", content=b"\xff not a form"), 2)
        assert logins("password", "rate_limited") == before["password"] + 2
        assert logins("refresh_token", "rate_limited") == before["refresh_token"] + 1
        assert logins("other", "rate_limited") == before["other"] + 1
        scraped = (await api.client.get("/metrics")).text
        assert 'csm_logins_total{grant="password",outcome="rate_limited"}' in scraped


async def test_redis_backend_is_shared_and_atomic(redis_url):  # noqa: F811
    import asyncio

    one, two = RedisBackend(redis_url), RedisBackend(redis_url)
    try:
        rate = Rate(10, 3600)
        decisions = await asyncio.gather(*(backend.hit("shared", rate) for backend in (one, two) * 10))
        assert sum(d.allowed for d in decisions) == 10  # 20 concurrent requests from two instances, 10 pass
        assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))
        refused = [d for d in decisions if not d.allowed]
        assert all(0 < d.retry_after <= 360 and d.reset_after <= 3600 for d in refused)
        assert (await one.hit("another", rate)).allowed
    finally:
        await one.close()
        await two.close()


async def test_redis_backend_through_the_api(tmp_path, redis_url):  # noqa: F811
    async with running_api(tmp_path, redis_url=redis_url, **{**OFF, "rate_limit_per_address": "3/hour"}) as api:
        await address_limit_applies(api)


async def test_an_unreachable_redis_fails_open(tmp_path):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with running_api(tmp_path, redis_url=f"redis://127.0.0.1:{port}/0",
                           **{**OFF, "rate_limit_per_address": "1/hour"}) as api:
        assert [(await api.client.get("/v1/tenants")).status_code for _ in range(3)] == [401, 401, 401]


async def test_limits_can_be_turned_off(tmp_path):
    async with running_api(tmp_path, **OFF) as api:
        response = await api.client.get("/v1/tenants", headers=await api.admin())
        assert response.status_code == 200 and "ratelimit-limit" not in response.headers
