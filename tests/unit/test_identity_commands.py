"""Identity commands through the real runtime (SQLite store, argon2, JWT): sign-in, escalation, audit shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from commands import identity as cmd
from commands import sessions
from commands.authz import SYSTEM, Forbidden, Principal
from commands.runtime import CommandContext
from commands.tenants import CreateTenant, create_tenant
from commands.tokens import IssueApiToken, issue_api_token
from domain.errors import DomainError, NotFound
from domain.login import LoginThrottled
from infra.passwords import Argon2Passwords

ADMIN = CommandContext(principal=SYSTEM)
PASSWORD = "a long enough password"


class Clock:
    def __init__(self) -> None:
        self.moment = datetime.now(UTC)

    def now(self) -> datetime:
        return self.moment


class CountingPasswords(Argon2Passwords):
    """Real argon2; remembers which verifies ran against the dummy hash."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[bool] = []

    def verify(self, stored, password):
        self.calls.append(stored is None)
        return super().verify(stored, password)


@pytest.fixture
def clock(runtime) -> Clock:
    runtime.services.clock = clock = Clock()
    return clock


@pytest.fixture
def identity(runtime):
    runtime.identity.passwords = CountingPasswords()
    return runtime.identity


async def make_user(runtime, identity, name="alice", *roles, tenant_id=None):
    return await cmd.create_user(cmd.CreateUser(username=name, password=PASSWORD, roles=list(roles),
                                                tenant_id=tenant_id), ADMIN, runtime.services, identity)


def grant(username: str, password: str = PASSWORD, **extra) -> sessions.PasswordGrant:
    return sessions.PasswordGrant(username=username, password=password, **extra)


async def test_unknown_user_and_wrong_password_fail_alike_after_the_same_work(runtime, identity, clock):
    await make_user(runtime, identity, "alice", "viewer")
    refusals = []
    for attempt in (grant("nobody"), grant("alice", "the wrong password")):
        with pytest.raises(sessions.LoginRefused) as caught:
            await sessions.password_login(attempt, runtime.services, identity)
        refusals.append((caught.value.code, caught.value.detail, caught.value.field, caught.value.status))
    assert refusals[0] == refusals[1] == ("invalid_grant", "the username or password is wrong", "password", 401)
    assert identity.passwords.calls == [True, False]  # one argon2 verify each: the dummy hash for the unknown name


async def test_the_password_and_its_hash_never_enter_an_event(runtime, identity, clock):
    await make_user(runtime, identity, "alice", "viewer")
    issued = await sessions.password_login(grant("alice"), runtime.services, identity)
    stored = str(await runtime.store.read_all(0, 10_000))
    assert PASSWORD not in stored and "$argon2id$" not in stored and issued.access_token not in stored
    created = [e for e in await runtime.store.read_all(0, 100) if e.type == "user.created"][0]
    digest = runtime.vault.get_verifier(created.payload["password_ref"])
    assert digest.startswith(b"$argon2id$v=19$m=19456,t=2,p=1$")


async def test_backoff_and_lockout_follow_the_injected_clock(runtime, identity, clock):
    await make_user(runtime, identity, "alice", "viewer")
    for expected_wait in (1, 2, 4, 8):
        with pytest.raises(sessions.LoginRefused):
            await sessions.password_login(grant("alice", "wrong password!"), runtime.services, identity)
        with pytest.raises(LoginThrottled) as caught:  # even the right password waits
            await sessions.password_login(grant("alice"), runtime.services, identity)
        assert caught.value.retry_after_seconds == expected_wait
        clock.moment += timedelta(seconds=expected_wait)
    with pytest.raises(sessions.LoginRefused):  # the fifth: locked
        await sessions.password_login(grant("alice", "wrong password!"), runtime.services, identity)
    clock.moment += timedelta(seconds=100)
    with pytest.raises(LoginThrottled) as caught:
        await sessions.password_login(grant("alice"), runtime.services, identity)
    assert caught.value.code == "account_locked"
    await cmd.unlock_account(cmd.UnlockAccount(username="alice"), ADMIN, runtime.services)
    assert (await sessions.password_login(grant("alice"), runtime.services, identity)).access_token
    types = [e.type for e in await runtime.store.read_all(0, 1000) if e.type.startswith("auth.")]
    assert types == ["auth.login_failed"] * 5 + ["auth.account_locked", "auth.account_unlocked",
                                                 "auth.login_succeeded"]


async def test_an_unknown_name_backs_off_exactly_like_a_known_one(runtime, identity, clock):
    with pytest.raises(sessions.LoginRefused):
        await sessions.password_login(grant("ghost", "wrong password!"), runtime.services, identity)
    with pytest.raises(LoginThrottled):
        await sessions.password_login(grant("ghost"), runtime.services, identity)


async def test_no_escalation_through_grants_keys_or_password_resets(runtime, identity, clock):
    await create_tenant(CreateTenant(tenant_id="acme", name="Acme"), ADMIN, runtime.services)
    await make_user(runtime, identity, "root", "platform-admin")
    await make_user(runtime, identity, "ann", "viewer", tenant_id="acme")
    manager = CommandContext(principal=Principal(id="p", auth_method="t", roles=frozenset({"viewer"})))
    limited = Principal(id="m", auth_method="t", roles=frozenset(), tenant_id="acme")
    object.__setattr__(limited, "permissions", frozenset({"user:manage", "serviceaccount:manage", "tenant:read"}))
    lim = CommandContext(principal=limited)
    with pytest.raises(Forbidden):
        await cmd.grant_role(cmd.GrantRole(username="ann", role="viewer", tenant_id="acme"), manager,
                             runtime.services)
    with pytest.raises(Forbidden, match="platform-admin"):
        await cmd.grant_role(cmd.GrantRole(username="ann", role="platform-admin", tenant_id="acme"), lim,
                             runtime.services)
    with pytest.raises(Forbidden):
        await issue_api_token(IssueApiToken(name="k", roles=["auditor"], tenant_id="acme"), lim, runtime.services,
                              runtime.vault, permission="serviceaccount:manage")
    with pytest.raises(Forbidden):  # another tenant's, or a platform user
        await cmd.reset_password(cmd.ResetPassword(username="root", password=PASSWORD), lim, runtime.services,
                                 identity)


async def test_a_tenant_admin_makes_tenant_auditors_but_grants_no_platform_power(runtime, identity, clock):
    """The auditor role carries audit:verify, which only a platform-wide principal can use: granting it to a
    tenant's user or key hands over nothing the tenant-admin lacks, so it is allowed there, and nowhere else."""
    await create_tenant(CreateTenant(tenant_id="acme", name="Acme"), ADMIN, runtime.services)
    admin = CommandContext(principal=Principal(id="ta", auth_method="t", roles=frozenset({"tenant-admin"}),
                                               tenant_id="acme"))
    await cmd.create_user(cmd.CreateUser(username="aud", password=PASSWORD, roles=["auditor"], tenant_id="acme"),
                          admin, runtime.services, identity)
    issued = await issue_api_token(IssueApiToken(name="siem", roles=["auditor"], tenant_id="acme"), admin,
                                   runtime.services, runtime.vault, permission="serviceaccount:manage")
    assert issued.token
    platform_manager = CommandContext(principal=Principal(id="pm", auth_method="t", roles=frozenset({"tenant-admin"})))
    with pytest.raises(Forbidden, match="auditor"):  # a platform-wide auditor could verify every tenant's chains
        await cmd.create_user(cmd.CreateUser(username="paud", password=PASSWORD, roles=["auditor"]),
                              platform_manager, runtime.services, identity)
    with pytest.raises(Forbidden, match="platform-admin"):
        await cmd.grant_role(cmd.GrantRole(username="aud", role="platform-admin", tenant_id="acme"), admin,
                             runtime.services)


def test_platform_only_permissions_are_used_on_platform_routes_alone():
    from api.permissions import ROUTE_PERMISSIONS
    from commands.authz import PERMISSIONS, PLATFORM_ONLY
    assert PLATFORM_ONLY <= PERMISSIONS.keys()
    for route, rule in ROUTE_PERMISSIONS.items():
        if PLATFORM_ONLY & set(rule.permissions):
            assert rule.scope == "platform", route


async def test_users_live_in_existing_tenants_and_passwords_are_checked(runtime, identity, clock):
    with pytest.raises(NotFound, match="tenant nowhere"):
        await make_user(runtime, identity, "x", tenant_id="nowhere")
    with pytest.raises(DomainError) as caught:
        await cmd.create_user(cmd.CreateUser(username="y", password="short"), ADMIN, runtime.services, identity)
    assert caught.value.code == "invalid_password" and caught.value.field == "password"


async def test_refresh_re_reads_grants_and_stops_for_a_disabled_user(runtime, identity, clock):
    await make_user(runtime, identity, "alice", "viewer")
    await cmd.grant_role(cmd.GrantRole(username="alice", role="auditor",
                                       expires_at=clock.moment + timedelta(minutes=5)), ADMIN, runtime.services)
    first = await sessions.password_login(grant("alice"), runtime.services, identity)
    claims = identity.tokens.verify(first.access_token, clock.now())
    assert claims["roles"] == ["auditor", "viewer"] and first.expires_in == 300  # never outlives the grant
    clock.moment += timedelta(minutes=6)
    second = await sessions.refresh(first.refresh_token, runtime.services, identity)
    assert identity.tokens.verify(second.access_token, clock.now())["roles"] == ["viewer"]
    await cmd.set_user_status(cmd.SetUserStatus(username="alice", enabled=False, reason="left"), ADMIN,
                              runtime.services)
    with pytest.raises(DomainError):
        await sessions.refresh(second.refresh_token, runtime.services, identity)


async def test_client_credentials_tokens_name_the_service_account(runtime, identity, clock):
    issued = await issue_api_token(IssueApiToken(name="CI pipeline", roles=["viewer"]), ADMIN, runtime.services,
                                   runtime.vault)
    assert issued.service_account == "ci-pipeline"
    again = await issue_api_token(IssueApiToken(name="CI pipeline", roles=["auditor"]), ADMIN, runtime.services,
                                  runtime.vault)
    assert again.service_account == "ci-pipeline"  # reused
    types = [e.type for e in await runtime.store.read_all(0, 100)]
    assert types.count("service_account.created") == 1 and types.count("api_token.issued") == 2
    key = sessions.KeyFacts(token_id=issued.token_id, tenant_id=None, roles=["viewer"],
                            service_account="ci-pipeline")
    token = await sessions.client_credentials(key, runtime.services, identity)
    claims = identity.tokens.verify(token.access_token, clock.now())
    assert claims["sub"] == "sa:_system:ci-pipeline" and claims["amr"] == ["api_key"]
    assert claims["key"] == issued.token_id and token.refresh_token is None
