"""The identity aggregates, pure: users and just-in-time grants, login back-off and lockout, refresh families."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commands.sessions import parse_refresh
from commands.tokens import parse_token
from domain import login, session, user
from domain.errors import AlreadyExists, DomainError, NotFound

T0 = datetime(2030, 1, 1, tzinfo=UTC)
ROLES = frozenset({"viewer", "auditor", "platform-admin"})


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def created(name: str = "alice") -> user.UserCreated:
    return user.UserCreated(username=name, tenant_id=None, display_name=None, password_ref="pw_1")


# users ------------------------------------------------------------------------------------------

def test_a_user_is_created_with_its_grants_once():
    events = user.decide_create(user.User(), created(), [user.RoleGranted(role="viewer", expires_at=None)], ROLES)
    state = user.fold(events)
    assert state.status == "active" and state.grants == {"viewer": None} and state.version == 2
    with pytest.raises(AlreadyExists):
        user.decide_create(state, created(), [], ROLES)


@pytest.mark.parametrize("name", ["", "Alice", "-x", "a" * 65, "a b", "ä", "a/b"])
def test_usernames_are_restricted(name):
    with pytest.raises(DomainError) as caught:
        user.decide_create(user.User(), created(name), [], ROLES)
    assert caught.value.field == "username"


def test_an_unknown_role_is_refused_by_name():
    with pytest.raises(DomainError) as caught:
        user.decide_create(user.User(), created(), [user.RoleGranted(role="god", expires_at=None)], ROLES)
    assert caught.value.code == "unknown_role"


def test_just_in_time_grants_stop_counting_by_themselves():
    state = user.fold([created(), user.RoleGranted(role="viewer", expires_at=None),
                       user.RoleGranted(role="auditor", expires_at=at(3600))])
    assert user.active_roles(state, T0) == {"viewer", "auditor"}
    assert user.active_roles(state, T0 + timedelta(seconds=3599)) == {"viewer", "auditor"}
    assert user.active_roles(state, T0 + timedelta(seconds=3600)) == {"viewer"}
    assert not user.grant_active("not a time", T0)


def test_grants_in_the_past_are_refused_and_repeats_are_no_ops():
    state = user.fold([created(), user.RoleGranted(role="viewer", expires_at=None)])
    with pytest.raises(DomainError, match="future"):
        user.decide_grant(state, user.RoleGranted(role="auditor", expires_at=at(-1)), ROLES, T0)
    assert user.decide_grant(state, user.RoleGranted(role="viewer", expires_at=None), ROLES, T0) == []
    assert user.decide_revoke(state, "auditor", "x") == []
    assert user.fold([created(), user.RoleGranted(role="viewer", expires_at=None),
                      *user.decide_revoke(state, "viewer", "")]).grants == {}


def test_commands_on_an_unknown_user_are_not_found():
    for decide in (lambda s: user.decide_reset_password(s, "pw"), lambda s: user.decide_disable(s, "r"),
                   lambda s: user.decide_revoke(s, "viewer", "r")):
        with pytest.raises(NotFound):
            decide(user.User())


# login attempts ---------------------------------------------------------------------------------

POLICY = login.LoginPolicy(max_failures=4, lockout_seconds=600, backoff_base=1.0, backoff_max=60)


def failed(seconds: float) -> login.LoginFailed:
    return login.LoginFailed(username="alice", method="password", reason="invalid_credentials", at=at(seconds))


def fail_at(state: login.LoginState, seconds: float, events: list) -> login.LoginState:
    now = T0 + timedelta(seconds=seconds)
    new = login.decide_failure(state, failed(seconds), now, POLICY, at(seconds + POLICY.lockout_seconds))
    events.extend(new)
    return login.fold(events)


def test_each_failure_doubles_the_wait_before_the_next_attempt():
    events: list = []
    state = fail_at(login.LoginState(), 0, events)
    for failures, wait in ((1, 1), (2, 2), (3, 4)):
        start = float(sum(2 ** i for i in range(failures - 1)))  # when the last failure happened
        with pytest.raises(login.LoginThrottled) as caught:
            login.check_allowed(state, T0 + timedelta(seconds=start + wait - 0.5), POLICY)
        assert caught.value.code == "login_throttled" and caught.value.status == 429
        login.check_allowed(state, T0 + timedelta(seconds=start + wait), POLICY)  # allowed again
        if failures < 3:
            state = fail_at(state, start + wait, events)


def test_the_nth_failure_locks_until_the_lockout_lapses_or_an_admin_unlocks():
    events: list = []
    state = login.LoginState()
    for seconds in (0, 10, 20, 30):
        state = fail_at(state, seconds, events)
    assert isinstance(events[-1], login.AccountLocked) and events[-1].failures == 4
    with pytest.raises(login.LoginThrottled) as caught:
        login.check_allowed(state, T0 + timedelta(seconds=600), POLICY)
    assert caught.value.code == "account_locked" and caught.value.retry_after_seconds == 30
    login.check_allowed(state, T0 + timedelta(seconds=630), POLICY)  # lapsed: no job needed
    unlocked = login.fold(events + login.decide_unlock(state, "alice", "help desk", T0 + timedelta(seconds=40)))
    login.check_allowed(unlocked, T0 + timedelta(seconds=41), POLICY)
    assert login.decide_unlock(unlocked, "alice", "again", T0) == []


def test_success_resets_failures_and_a_time_step_is_spent_once():
    events = [failed(0), failed(1)]
    ok = login.LoginSucceeded(username="alice", method="password", amr=["pwd", "otp"], otp_step=100)
    state = login.fold(events + login.decide_success(login.fold(events), ok))
    assert state.failures == 0 and state.last_otp_step == 100
    with pytest.raises(DomainError) as caught:
        login.decide_success(state, ok)
    assert caught.value.code == "otp_replayed"


def test_login_streams_are_per_tenant_and_name_and_reveal_neither():
    one, two = login.stream_id(None, "alice"), login.stream_id("acme", "alice")
    assert one != two and "alice" not in one and one.startswith("login-")


# refresh families -------------------------------------------------------------------------------

def started(expires: str) -> session.SessionStarted:
    return session.SessionStarted(session_id="s1", subject="user:_system:alice", tenant_id=None, roles=["viewer"],
                                  amr=["pwd"], method="password", access_jti="j0", access_expires_at=expires,
                                  refresh_token_id="r0", refresh_expires_at=expires, sessions_epoch=0)


def refreshed(new: str, generation: int) -> session.SessionRefreshed:
    return session.SessionRefreshed(refresh_token_id=new, access_jti=f"j{generation}", access_expires_at=at(900),
                                    generation=generation)


def test_rotation_spends_the_token_and_reuse_revokes_the_family():
    events: list = [started(at(3600))]
    events += session.decide_refresh(session.fold(events), "r0", refreshed("r1", 1), T0)
    state = session.fold(events)
    assert state.refresh_token_id == "r1" and state.spent == {"r0"}
    reuse = session.decide_refresh(state, "r0", refreshed("r2", 2), T0)
    assert reuse == [session.SessionRevoked(reason="refresh_token_reuse")]
    revoked = session.fold(events + reuse)
    with pytest.raises(session.RefreshRefused):
        session.decide_refresh(revoked, "r1", refreshed("r3", 2), T0)


def test_an_expired_family_or_a_foreign_token_is_refused():
    state = session.fold([started(at(60))])
    with pytest.raises(session.RefreshRefused):
        session.decide_refresh(state, "r0", refreshed("r1", 1), T0 + timedelta(seconds=60))
    with pytest.raises(session.RefreshRefused):
        session.decide_refresh(state, "rX", refreshed("r1", 1), T0)
    with pytest.raises(NotFound):
        session.decide_refresh(session.Session(), "r0", refreshed("r1", 1), T0)


# credentials' shapes ----------------------------------------------------------------------------

@given(st.text(max_size=200))
def test_parsing_any_string_as_a_key_or_refresh_token_never_raises(text):
    parsed = parse_token(text)
    assert parsed is None or (len(parsed[0]) == 16 and len(parsed[1]) >= 32)
    refreshed_parts = parse_refresh(text)
    assert refreshed_parts is None or len(refreshed_parts) == 3


def test_well_formed_credentials_parse():
    assert parse_token("csm_0123456789abcdef_" + "s" * 43) == ("0123456789abcdef", "s" * 43)
    assert parse_token("csm_0123456789ABCDEF_" + "s" * 43) is None
    secret = "a_b-" * 11
    assert parse_refresh(f"csmr_0123456789abcdef_fedcba9876543210_{secret}") == (
        "0123456789abcdef", "fedcba9876543210", secret)


# ending every session -----------------------------------------------------------------------------

def test_a_password_reset_and_a_disable_move_the_sessions_epoch_and_an_enable_does_not():
    state = user.fold([user.UserCreated(username="alice", tenant_id=None, display_name=None, password_ref="pw0")])
    assert state.sessions_epoch == 0
    reset = user.decide_reset_password(state, "pw1")
    assert reset == [user.PasswordReset(password_ref="pw1"), user.SessionsEnded(reason="password_reset")]
    state = user.fold(reset, start=state)
    disabled = user.decide_disable(state, "left")
    assert disabled[-1] == user.SessionsEnded(reason="user_disabled")
    state = user.fold(disabled + user.decide_enable(user.fold(disabled, start=state), "back"), start=state)
    assert (state.status, state.sessions_epoch) == ("active", 2)
    assert user.decide_disable(user.fold([user.UserDisabled(reason="x")], start=state), "again") == []
    assert user.fold(user.decide_end_sessions(state, "totp_reset"), start=state).sessions_epoch == 3


def test_signing_out_everywhere_keeps_only_the_named_session_and_only_until_the_next_end():
    state = user.fold([user.UserCreated(username="bob", tenant_id=None, display_name=None, password_ref="pw0")])
    kept = user.fold(user.decide_end_sessions(state, "signed_out_everywhere", "aaaa", 0), start=state)
    assert (kept.sessions_epoch, kept.kept_session) == (1, "aaaa")
    assert not user.session_ended(kept, 0, "aaaa")  # the asking session, begun in the earlier epoch
    assert user.session_ended(kept, 0, "bbbb") and not user.session_ended(kept, 1, "bbbb")
    again = user.fold(user.decide_end_sessions(kept, "signed_out_everywhere", "cccc", 1), start=kept)
    assert user.session_ended(again, 0, "aaaa") and user.session_ended(again, 1, "bbbb")
    assert not user.session_ended(again, 1, "cccc")
    reset = user.fold(user.decide_reset_password(again, "pw1"), start=again)
    assert reset.kept_session is None and user.session_ended(reset, 1, "cccc")
    assert user.SessionsEnded(reason="password_reset").kept_session is None  # events before the field: none kept


def test_a_session_ended_since_its_request_was_authenticated_cannot_keep_itself():
    """Two sign-outs everywhere racing: the victim's (keeping V) is recorded first; the thief's request from
    session A, authenticated a moment before, must not then record A as the kept session and end V."""
    state = user.fold([user.UserCreated(username="bob", tenant_id=None, display_name=None, password_ref="pw0")])
    victim = user.fold(user.decide_end_sessions(state, "signed_out_everywhere", "vvvv", 0), start=state)
    with pytest.raises(user.SessionAlreadyEnded) as refused:
        user.decide_end_sessions(victim, "signed_out_everywhere", "aaaa", 0)
    assert refused.value.code == "session_ended" and refused.value.status == 401
    assert not user.session_ended(victim, 0, "vvvv")
    assert user.decide_end_sessions(victim, "signed_out_everywhere", "vvvv", 0)  # the kept one may again


def test_sessions_started_before_epochs_existed_were_started_in_epoch_0():
    from domain.events import Actor, EventEnvelope, decode_payload

    body = {"session_id": "s1", "subject": "user:_system:alice", "tenant_id": None, "roles": ["viewer"],
            "amr": ["pwd"], "method": "password", "access_jti": "j0", "access_expires_at": at(900),
            "refresh_token_id": "r0", "refresh_expires_at": at(3600)}
    envelope = EventEnvelope(event_id="e", stream_id="session-s1", stream_type="session", version=1,
                             global_position=1, tenant_id="_system", type="session.started", schema_version=1,
                             occurred_at=at(0), actor=Actor(auth_method="password", principal="user:_system:alice"),
                             correlation_id=None, causation_id=None, payload=body, prev_hash="")
    assert session.fold([decode_payload(envelope)]).sessions_epoch == 0
