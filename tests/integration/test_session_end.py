"""A password reset, a TOTP reset and a disable end every session of the user, over HTTP and from the CLI."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
from test_api_support import assert_problem, running_api

from domain import totp

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a different long password"
LIMITS = {"rate_limit_per_principal": "100000/minute", "rate_limit_per_address": "100000/minute",
          "rate_limit_login_per_address": "100000/minute", "rate_limit_login_per_username": "100000/minute"}
CONSOLE_SCRIPT = Path(sys.executable).with_name("csm")
CSM = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "cli.main"]


@pytest.fixture
async def api(tmp_path):
    async with running_api(tmp_path, login_backoff_base=0.0, **LIMITS) as running:
        yield running


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create_user(api, username: str, *roles: str) -> None:
    body = {"username": username, "password": PASSWORD, "roles": list(roles)}
    response = await api.client.post("/v1/users", json=body, headers=await api.admin())
    assert response.status_code == 201, response.text


async def login(api, username: str, password: str = PASSWORD, **extra) -> dict:
    response = await api.client.post("/v1/auth/token", data={"grant_type": "password", "username": username,
                                                              "password": password, **extra})
    assert response.status_code == 200, response.text
    return response.json()


async def refresh(api, refresh_token: str):
    return await api.client.post("/v1/auth/token", data={"grant_type": "refresh_token",
                                                          "refresh_token": refresh_token})


async def works(api, access_token: str) -> int:
    return (await api.client.get("/v1/tenants", headers=bearer(access_token))).status_code


async def recorded(api, kind: str) -> list[tuple[str, str]]:
    """(stream id, reason) of every ``kind`` event in the log."""
    return [(e.stream_id, e.payload["reason"]) for e in await api.runtime.store.read_all(0, 100_000) if e.type == kind]


async def sessions_of(api, tokens: list[dict]) -> set[str]:
    return {"session-" + jwt.decode(t["access_token"], options={"verify_signature": False})["sid"] for t in tokens}


async def assert_ended(api, tokens: list[dict], reason: str) -> None:
    """Every token of ``tokens`` refused, and each family's end recorded with ``reason``."""
    for token in tokens:
        assert_problem(await api.client.get("/v1/tenants", headers=bearer(token["access_token"])), 401,
                       "unauthorized")
        if "refresh_token" in token:
            assert_problem(await refresh(api, token["refresh_token"]), 401, "invalid_grant", field="refresh_token")
    revoked = await recorded(api, "session.revoked")
    families = {t_sid for t_sid in await sessions_of(api, [t for t in tokens if "refresh_token" in t])}
    assert families <= {stream for stream, why in revoked if why == reason}, revoked


async def enroll_totp(api, username: str) -> bytes:
    """Enroll a privileged user's TOTP (its first sign-in gives an enrollment-only token); returns the secret."""
    enroll_only = await login(api, username)
    assert enroll_only["mfa_enrollment_required"] is True
    started = await api.client.post("/v1/auth/totp", headers=bearer(enroll_only["access_token"]))
    assert started.status_code == 201, started.text
    text = started.json()["secret"]
    secret = base64.b32decode(text + "=" * (-len(text) % 8))
    code = totp.totp(secret, datetime.now(UTC).timestamp() - 30)  # the previous step: the sign-in uses this one
    confirmed = await api.client.post("/v1/auth/totp/confirm", json={"code": code},
                                      headers=bearer(enroll_only["access_token"]))
    assert confirmed.status_code == 200, confirmed.text
    return secret


def current_code(secret: bytes) -> str:
    return totp.totp(secret, datetime.now(UTC).timestamp())


async def test_a_password_reset_ends_every_session_and_a_new_sign_in_works_at_once(api):
    await create_user(api, "alice", "viewer")
    first, second = await login(api, "alice"), await login(api, "alice")
    rotated = await refresh(api, second["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    old = [first, rotated.json()]
    assert all([await works(api, t["access_token"]) == 200 for t in old])
    reset = await api.client.post("/v1/users/alice/password", json={"password": NEW_PASSWORD},
                                  headers=await api.admin())
    assert reset.status_code == 200, reset.text
    await assert_ended(api, old, "password_reset")
    assert_problem(await refresh(api, second["refresh_token"]), 401, "invalid_grant")  # spent, and ended
    assert ("user-alice", "password_reset") in await recorded(api, "user.sessions_ended")
    fresh = await login(api, "alice", NEW_PASSWORD)  # within the same second as the reset: still good
    assert await works(api, fresh["access_token"]) == 200
    again = await refresh(api, fresh["refresh_token"])
    assert again.status_code == 200, again.text
    assert await works(api, again.json()["access_token"]) == 200


async def test_enabling_a_disabled_user_brings_no_old_session_back(api):
    admin = await api.admin()
    await create_user(api, "gina", "viewer")
    old = await login(api, "gina")
    disabled = await api.client.post("/v1/users/gina/disable", json={"reason": "on leave"}, headers=admin)
    assert disabled.status_code == 200, disabled.text
    enabled = await api.client.post("/v1/users/gina/enable", json={"reason": "back"}, headers=admin)
    assert enabled.status_code == 200, enabled.text
    await assert_ended(api, [old], "user_disabled")
    fresh = await login(api, "gina")
    assert await works(api, fresh["access_token"]) == 200
    assert (await refresh(api, fresh["refresh_token"])).status_code == 200


async def test_a_totp_reset_ends_the_sessions_signed_in_with_the_old_device(api):
    await create_user(api, "root", "platform-admin")
    secret = await enroll_totp(api, "root")
    signed_in = await login(api, "root", totp=current_code(secret))
    assert jwt.decode(signed_in["access_token"], options={"verify_signature": False})["amr"] == ["pwd", "otp"]
    assert await works(api, signed_in["access_token"]) == 200
    reset = await api.client.delete("/v1/users/root/totp", headers=await api.admin())
    assert reset.status_code == 200, reset.text
    await assert_ended(api, [signed_in], "totp_reset")
    assert ("user-root", "totp_reset") in await recorded(api, "user.sessions_ended")
    assert (await login(api, "root"))["mfa_enrollment_required"] is True  # enroll again before anything else


async def test_a_grant_that_needs_totp_does_not_ride_a_refresh_signed_in_without_it(api):
    admin = await api.admin()
    await create_user(api, "bob", "viewer")
    old = await login(api, "bob")
    granted = await api.client.post("/v1/users/bob/roles", json={"role": "auditor"}, headers=admin)
    assert granted.status_code == 200, granted.text
    carried = await refresh(api, old["refresh_token"])  # a grant needing no second factor is carried
    assert carried.status_code == 200, carried.text
    claims = jwt.decode(carried.json()["access_token"], options={"verify_signature": False})
    assert claims["roles"] == ["auditor", "viewer"]
    privileged = await api.client.post("/v1/users/bob/roles", json={"role": "ca-operator"}, headers=admin)
    assert privileged.status_code == 200, privileged.text
    assert_problem(await refresh(api, carried.json()["refresh_token"]), 401, "invalid_grant")
    assert (await login(api, "bob"))["mfa_enrollment_required"] is True  # the sign-in asks for TOTP first


def csm(data_dir: Path, *args: str, input_text: str = "") -> str:
    run = subprocess.run([*CSM, "--data-dir", str(data_dir), *args], capture_output=True, text=True, timeout=120,
                         input=input_text, env={k: v for k, v in os.environ.items() if not k.startswith("CSM_")})
    assert run.returncode == 0, f"exit {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    return run.stdout


async def test_the_cli_ends_the_sessions_of_a_running_server(api, tmp_path):
    data_dir = tmp_path / "data"
    await create_user(api, "alice", "viewer")
    await create_user(api, "root", "platform-admin")
    before_reset = await login(api, "alice")
    csm(data_dir, "user", "reset-password", "alice", "--password-file", "-", input_text=NEW_PASSWORD + "\n")
    await assert_ended(api, [before_reset], "password_reset")
    before_disable = await login(api, "alice", NEW_PASSWORD)
    csm(data_dir, "user", "disable", "alice", "--reason", "x")
    csm(data_dir, "user", "enable", "alice", "--reason", "y")
    await assert_ended(api, [before_disable], "user_disabled")
    assert await works(api, (await login(api, "alice", NEW_PASSWORD))["access_token"]) == 200
    secret = await enroll_totp(api, "root")
    before_totp_reset = await login(api, "root", totp=current_code(secret))
    csm(data_dir, "user", "reset-totp", "root")
    await assert_ended(api, [before_totp_reset], "totp_reset")
