"""A session: one issued access token and its refresh-token family (rotated on use; reuse revokes the family)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from domain.errors import DomainError, NotFound
from domain.events import Payload, event, resumable, upcaster

STREAM_TYPE = "session"


@event("session.started", schema_version=2)
class SessionStarted(Payload, frozen=True, kw_only=True):
    """A token issue: the login's outcome. Ids only; the tokens themselves are never here.

    ``sessions_epoch``: the subject's (a local user's) sessions epoch when it signed in; once the user's epoch has
    moved past it (``user.sessions_ended``), the session's tokens are refused. 0 for other subjects.
    """

    session_id: str
    subject: str
    tenant_id: str | None
    roles: list[str]
    amr: list[str]
    method: str  # password | ldap | client_credentials
    access_jti: str
    access_expires_at: str
    refresh_token_id: str | None
    refresh_expires_at: str | None
    sessions_epoch: int


@upcaster("session.started", 1)
def _v1_had_no_epoch(data: dict) -> dict:
    return {**data, "sessions_epoch": 0}  # every user's epoch was 0 before epochs existed


@event("session.refreshed")
class SessionRefreshed(Payload, frozen=True, kw_only=True):
    refresh_token_id: str  # the new one; the presented one is now spent
    access_jti: str
    access_expires_at: str
    generation: int


@event("session.revoked")
class SessionRevoked(Payload, frozen=True, kw_only=True):
    reason: str  # refresh_token_reuse | password_reset | totp_reset | user_disabled | signed_out (RFC 7009)


class Session(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str = ""
    status: str = "absent"  # absent | active | revoked
    subject: str = ""
    tenant_id: str | None = None
    roles: tuple[str, ...] = ()
    amr: tuple[str, ...] = ()
    refresh_token_id: str | None = None
    refresh_expires_at: str | None = None
    generation: int = 0
    sessions_epoch: int = 0
    spent: frozenset[str] = frozenset()  # refresh token ids already rotated away
    version: int = 0


class RefreshRefused(DomainError):
    status = 401

    def __init__(self, reason: str) -> None:
        super().__init__("invalid_grant", "the refresh token is invalid, expired or revoked", field="refresh_token")
        self.reason = reason


def stream_id(session_id: str) -> str:
    return f"session-{session_id}"


@resumable
def fold(payloads: Iterable[Payload], start: Session | None = None) -> Session:
    state = Session() if start is None else start
    for payload in payloads:
        match payload:
            case SessionStarted():
                state = Session(session_id=payload.session_id, status="active", subject=payload.subject,
                                tenant_id=payload.tenant_id, roles=tuple(payload.roles), amr=tuple(payload.amr),
                                refresh_token_id=payload.refresh_token_id,
                                refresh_expires_at=payload.refresh_expires_at,
                                sessions_epoch=payload.sessions_epoch, version=state.version)
            case SessionRefreshed():
                spent = state.spent | ({state.refresh_token_id} if state.refresh_token_id else set())
                state = msgspec.structs.replace(state, refresh_token_id=payload.refresh_token_id,
                                                generation=payload.generation, spent=frozenset(spent))
            case SessionRevoked():
                state = msgspec.structs.replace(state, status="revoked")
        state = msgspec.structs.replace(state, version=state.version + 1)
    return state


def decide_refresh(state: Session, presented: str, refreshed: SessionRefreshed, now: datetime) -> list[Payload]:
    """Rotate, or (a spent token presented again: someone holds a copy) revoke the whole family.

    Returns ``[SessionRevoked]`` for reuse so that the revocation is recorded; the caller
    then refuses the request. Any other refusal raises RefreshRefused and writes nothing.
    """
    if state.status == "absent":
        raise NotFound("invalid_grant", "the refresh token is invalid, expired or revoked", field="refresh_token")
    if state.status == "revoked":
        raise RefreshRefused("revoked")
    if presented in state.spent:
        return [SessionRevoked(reason="refresh_token_reuse")]
    if presented != state.refresh_token_id:
        raise RefreshRefused("unknown_token")
    try:
        expires = datetime.fromisoformat(state.refresh_expires_at or "")
    except ValueError:
        raise RefreshRefused("expired") from None
    if now >= expires:
        raise RefreshRefused("expired")
    return [refreshed]


def decide_revoke(state: Session, reason: str) -> list[Payload]:
    if state.status != "active":
        return []
    return [SessionRevoked(reason=reason)]
