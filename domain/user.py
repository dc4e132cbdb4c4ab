"""The User aggregate: a local account, its password reference, status, (optionally expiring) role grants, and the
sessions epoch that ends every session issued before it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

import msgspec

from domain.errors import AlreadyExists, DomainError, NotFound
from domain.events import SYSTEM_TENANT, Payload, event, resumable

STREAM_TYPE = "user"
USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
MAX_DISPLAY_NAME = 200


@event("user.created")
class UserCreated(Payload, frozen=True, kw_only=True):
    """``password_ref`` names the argon2 verifier in the credential vault; the hash is never here."""

    username: str
    tenant_id: str | None
    display_name: str | None
    password_ref: str


@event("user.role_granted")
class RoleGranted(Payload, frozen=True, kw_only=True):
    role: str
    expires_at: str | None  # a just-in-time grant stops counting at this instant, by itself


@event("user.role_revoked")
class RoleRevoked(Payload, frozen=True, kw_only=True):
    role: str
    reason: str


@event("user.password_reset")
class PasswordReset(Payload, frozen=True, kw_only=True):
    password_ref: str


@event("user.sessions_ended")
class SessionsEnded(Payload, frozen=True, kw_only=True):
    """Every session issued before this ends: the user's sessions epoch goes up by one (see ``User``), except
    ``kept_session`` (the session of a user who signed out everywhere else, keeping the one they asked from)."""

    reason: str  # password_reset | totp_reset | user_disabled | signed_out_everywhere
    kept_session: str | None = None


@event("user.disabled")
class UserDisabled(Payload, frozen=True, kw_only=True):
    reason: str


@event("user.enabled")
class UserEnabled(Payload, frozen=True, kw_only=True):
    reason: str


class User(msgspec.Struct, frozen=True, kw_only=True):
    username: str = ""
    tenant_id: str | None = None
    status: str = "absent"  # absent | active | disabled
    password_ref: str | None = None
    grants: dict[str, str | None] = {}  # role -> expires_at (None: permanent)
    # How many times every session was ended: tokens and refresh families carry the epoch they were issued in,
    # and one from an earlier epoch is refused (a counter, not a time: a token minted in the same second after
    # the end still works, one minted before it never does, whatever the clocks say).
    sessions_epoch: int = 0
    kept_session: str | None = None  # a session the last end of sessions spared (until the next one)
    version: int = 0


def stream_id(username: str) -> str:
    return f"user-{username}"


def stream_tenant(tenant_id: str | None) -> str:
    return tenant_id or SYSTEM_TENANT


def subject(tenant_id: str | None, username: str) -> str:
    """The principal id of a local user: unique across tenants."""
    return f"user:{stream_tenant(tenant_id)}:{username}"


def validate_username(username: str) -> None:
    if not USERNAME_RE.fullmatch(username):
        raise DomainError("invalid_username", "username must be 1-64 characters: lower-case letters, digits and "
                          "'.', '_', '@', '-', starting with a letter or digit", field="username")


@resumable
def fold(payloads: Iterable[Payload], start: User | None = None) -> User:
    state = User() if start is None else start
    for payload in payloads:
        match payload:
            case UserCreated():
                state = User(username=payload.username, tenant_id=payload.tenant_id, status="active",
                             password_ref=payload.password_ref, version=state.version)
            case RoleGranted():
                state = msgspec.structs.replace(state, grants={**state.grants, payload.role: payload.expires_at})
            case RoleRevoked():
                state = msgspec.structs.replace(state, grants={r: e for r, e in state.grants.items()
                                                               if r != payload.role})
            case PasswordReset():
                state = msgspec.structs.replace(state, password_ref=payload.password_ref)
            case SessionsEnded():
                state = msgspec.structs.replace(state, sessions_epoch=state.sessions_epoch + 1,
                                                kept_session=payload.kept_session)
            case UserDisabled():
                state = msgspec.structs.replace(state, status="disabled")
            case UserEnabled():
                state = msgspec.structs.replace(state, status="active")
        state = msgspec.structs.replace(state, version=state.version + 1)
    return state


def grant_active(expires_at: str | None, now: datetime) -> bool:
    """A grant counts until its expiry; an unreadable expiry grants nothing."""
    if expires_at is None:
        return True
    try:
        return datetime.fromisoformat(expires_at) > now
    except ValueError:
        return False


def active_roles(state: User, now: datetime) -> frozenset[str]:
    return frozenset(role for role, expires_at in state.grants.items() if grant_active(expires_at, now))


def _require(state: User) -> None:
    if state.status == "absent":
        raise NotFound("user_not_found", "no such user", field="username")


def _check_role(role: str, known_roles: frozenset[str]) -> None:
    if role not in known_roles:
        raise DomainError("unknown_role", f"unknown role {role!r}", field="role")


def decide_create(state: User, created: UserCreated, grants: list[RoleGranted],
                  known_roles: frozenset[str]) -> list[Payload]:
    if state.status != "absent":
        raise AlreadyExists("user_exists", f"user {created.username} exists", field="username")
    validate_username(created.username)
    name = created.display_name
    if name is not None and (not name.strip() or len(name) > MAX_DISPLAY_NAME or not name.isprintable()):
        raise DomainError("invalid_display_name", "display_name must be 1-200 printable characters",
                          field="display_name")
    for grant in grants:
        _check_role(grant.role, known_roles)
    return [created, *grants]


def decide_grant(state: User, grant: RoleGranted, known_roles: frozenset[str], now: datetime) -> list[Payload]:
    _require(state)
    _check_role(grant.role, known_roles)
    if grant.expires_at is not None and not grant_active(grant.expires_at, now):
        raise DomainError("expiry_in_past", "expires_at must be in the future", field="expires_at")
    if grant.role in state.grants and state.grants[grant.role] == grant.expires_at:
        return []
    return [grant]


def decide_revoke(state: User, role: str, reason: str) -> list[Payload]:
    _require(state)
    if role not in state.grants:
        return []
    return [RoleRevoked(role=role, reason=reason[:500] or "revoked")]


def decide_reset_password(state: User, password_ref: str) -> list[Payload]:
    """A new password ends every session that the old one opened (OWASP ASVS 3.3)."""
    _require(state)
    return [PasswordReset(password_ref=password_ref), SessionsEnded(reason="password_reset")]


class SessionAlreadyEnded(DomainError):
    status = 401

    def __init__(self) -> None:
        super().__init__("session_ended", "this session was ended while the request was on its way: it cannot be "
                         "the one kept; sign in again", field="Authorization")


def decide_end_sessions(state: User, reason: str, kept_session: str | None = None,
                        kept_epoch: int | None = None) -> list[Payload]:
    """``kept_session`` (begun in sessions epoch ``kept_epoch``) is spared, if it has not itself been ended since
    its request was authenticated: a session ended by a racing end of sessions (the victim's sign-out everywhere
    recorded first) must not make itself the kept one and end the others'."""
    _require(state)
    if kept_session is not None and (kept_epoch is None or session_ended(state, kept_epoch, kept_session)):
        raise SessionAlreadyEnded()
    return [SessionsEnded(reason=reason, kept_session=kept_session)]


def session_ended(state: User, epoch: int, session_id: str) -> bool:
    """Whether a session of the user that began in sessions epoch ``epoch`` has been ended since (its tokens and
    its refresh family are refused): an earlier epoch than the user's, unless it is the session the last end kept."""
    return epoch < state.sessions_epoch and session_id != state.kept_session


def decide_disable(state: User, reason: str) -> list[Payload]:
    """A disabled account's sessions end for good: enabling it again does not bring them back."""
    _require(state)
    if state.status == "disabled":
        return []
    return [UserDisabled(reason=reason[:500] or "disabled"), SessionsEnded(reason="user_disabled")]


def decide_enable(state: User, reason: str) -> list[Payload]:
    _require(state)
    return [] if state.status == "active" else [UserEnabled(reason=reason[:500] or "enabled")]
