"""Login attempts per account name: failures, exponential back-off, lockout, and the last TOTP step used."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import msgspec

from domain.errors import DomainError
from domain.events import Payload, event, resumable

STREAM_TYPE = "login"


@event("auth.login_succeeded")
class LoginSucceeded(Payload, frozen=True, kw_only=True):
    username: str
    method: str  # password | ldap | client_credentials
    amr: list[str]
    otp_step: int | None  # the TOTP time step consumed (a code is accepted once)


@event("auth.login_failed")
class LoginFailed(Payload, frozen=True, kw_only=True):
    """``reason`` is for auditors only; the caller always reads the same refusal."""

    username: str
    method: str
    reason: str  # invalid_credentials | invalid_otp | otp_replayed
    at: str  # when, for the back-off (the fold sees payloads only)


@event("auth.account_locked")
class AccountLocked(Payload, frozen=True, kw_only=True):
    username: str
    until: str
    failures: int


@event("auth.account_unlocked")
class AccountUnlocked(Payload, frozen=True, kw_only=True):
    username: str
    reason: str


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    """After each failure the next attempt waits ``backoff_base * 2**(n-1)`` seconds (capped); N failures lock."""

    max_failures: int = 5
    lockout_seconds: float = 900.0
    backoff_base: float = 1.0
    backoff_max: float = 60.0


class LoginState(msgspec.Struct, frozen=True, kw_only=True):
    failures: int = 0  # consecutive, since the last success, lock or unlock
    last_failure_at: str | None = None
    locked_until: str | None = None
    last_otp_step: int = -1
    version: int = 0


class LoginThrottled(DomainError):
    """Too many recent failures for this account name: wait, then try again."""

    status = 429

    def __init__(self, code: str, detail: str, retry_after: float) -> None:
        super().__init__(code, detail, field="username")
        self.retry_after_seconds = max(1, int(retry_after + 0.999))


def stream_id(tenant_id: str | None, username: str) -> str:
    """One stream per (tenant, account name), whether or not such an account exists."""
    digest = hashlib.sha256(f"{tenant_id or ''}\x00{username}".encode()).hexdigest()[:32]
    return f"login-{digest}"


@resumable
def fold(payloads: Iterable[Payload], start: LoginState | None = None) -> LoginState:
    state = LoginState() if start is None else start
    for payload in payloads:
        match payload:
            case LoginSucceeded():
                step = state.last_otp_step if payload.otp_step is None else max(payload.otp_step, state.last_otp_step)
                state = LoginState(last_otp_step=step, version=state.version)
            case LoginFailed():
                state = msgspec.structs.replace(state, failures=state.failures + 1, last_failure_at=payload.at)
            case AccountLocked():
                state = msgspec.structs.replace(state, failures=0, locked_until=payload.until, last_failure_at=None)
            case AccountUnlocked():
                state = msgspec.structs.replace(state, failures=0, locked_until=None, last_failure_at=None)
        state = msgspec.structs.replace(state, version=state.version + 1)
    return state


def _parse(moment: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(moment) if moment else None
    except ValueError:
        return None


def check_allowed(state: LoginState, now: datetime, policy: LoginPolicy) -> None:
    """Raise LoginThrottled while the account is locked or backing off; the same for known and unknown names."""
    locked_until = _parse(state.locked_until)
    if locked_until is not None and now < locked_until:
        raise LoginThrottled("account_locked", "too many failed logins: this account is locked for a while",
                             (locked_until - now).total_seconds())
    last = _parse(state.last_failure_at)
    if state.failures and last is not None:
        wait = min(policy.backoff_base * 2 ** (state.failures - 1), policy.backoff_max)
        ready = last + timedelta(seconds=wait)
        if now < ready:
            raise LoginThrottled("login_throttled", "too many failed logins: wait before trying again",
                                 (ready - now).total_seconds())


def decide_failure(state: LoginState, failed: LoginFailed, now: datetime, policy: LoginPolicy,
                   until: str) -> list[Payload]:
    """A failure, and the lock it triggers when it is the Nth in a row (``until``: now + lockout)."""
    if state.failures + 1 >= policy.max_failures:
        return [failed, AccountLocked(username=failed.username, until=until, failures=state.failures + 1)]
    return [failed]


def decide_success(state: LoginState, succeeded: LoginSucceeded) -> list[Payload]:
    if succeeded.otp_step is not None and succeeded.otp_step <= state.last_otp_step:
        raise DomainError("otp_replayed", "this one-time code was already used", field="totp")
    return [succeeded]


def decide_unlock(state: LoginState, username: str, reason: str, now: datetime) -> list[Payload]:
    locked_until = _parse(state.locked_until)
    if state.failures == 0 and (locked_until is None or locked_until <= now):
        return []
    return [AccountUnlocked(username=username, reason=reason[:500] or "unlocked")]
