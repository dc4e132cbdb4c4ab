"""Ending every session of a local user: its sessions epoch moves on, then each open refresh family is revoked; by
an administrator's command (password or TOTP reset, disable) or by the user signing out everywhere."""

from __future__ import annotations

import logging

import msgspec

from commands.runtime import CommandContext, CommandResult, Services, run
from commands.tenants import allowed_while_suspended
from domain import session, user
from domain.errors import DomainError
from domain.events import SYSTEM_TENANT

log = logging.getLogger(__name__)


class EndSessions(msgspec.Struct, frozen=True, kw_only=True):
    username: str
    tenant_id: str | None
    reason: str


class RevokeFamily(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    reason: str


class SignOutEverywhere(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """End every session of the caller (a local user); ``keep_current``: except the one this request comes from."""

    keep_current: bool = False


class SignedOutEverywhere(msgspec.Struct, frozen=True, kw_only=True):
    sessions_revoked: int  # refresh families recorded as revoked (the epoch ends access-only sessions as well)
    kept_session: bool  # the caller's own session goes on
    result: CommandResult  # the user's stream (``user.sessions_ended``)


class NotALocalUser(DomainError):
    def __init__(self) -> None:
        super().__init__("sessions_for_local_users", "signing out everywhere is for local user accounts: an API key "
                         "or service account revokes its key, a directory user's tokens end by POST /v1/auth/revoke "
                         "or expire", field="Authorization")


async def end_sessions(services: Services, ctx: CommandContext, tenant_id: str | None, username: str,
                       reason: str) -> CommandResult:
    """Record ``user.sessions_ended`` (for a command whose own event is in another stream), then revoke families."""
    result, _ = await _end_sessions(services, ctx, tenant_id, username, reason, None, None)
    return result


async def _end_sessions(services: Services, ctx: CommandContext, tenant_id: str | None, username: str, reason: str,
                        kept_session: str | None, kept_epoch: int | None) -> tuple[CommandResult, int]:
    """The user's stream, and how many families were recorded as revoked (all but ``kept_session``)."""
    user.validate_username(username)
    command = EndSessions(username=username, tenant_id=tenant_id, reason=reason)
    result = await run(services, ctx.without_key(), command, tenant_id=user.stream_tenant(tenant_id),
                       stream_id=user.stream_id(username), stream_type=user.STREAM_TYPE, fold=user.fold,
                       decide=lambda s: user.decide_end_sessions(s, reason, kept_session, kept_epoch))
    revoked = await revoke_families(services, ctx, user.subject(tenant_id, username), reason, keep=kept_session)
    return result, revoked


@allowed_while_suspended("signing out everywhere only takes the caller's own credentials away")
async def sign_out_everywhere(cmd: SignOutEverywhere, ctx: CommandContext, services: Services) -> SignedOutEverywhere:
    """The caller's own sessions end: every access token and refresh token of them is refused from the next
    request on (the user's sessions epoch moves on, read from the log), and each open refresh family is recorded
    as revoked. No permission: anyone signed in as a local user may end their own sessions."""
    subject, kept = ctx.principal.id, ctx.principal.session_id if cmd.keep_current else None
    if not subject.startswith("user:") or (cmd.keep_current and kept is None):
        raise NotALocalUser()
    _, scope, username = subject.split(":", 2)
    tenant_id = None if scope == SYSTEM_TENANT else scope
    result, revoked = await _end_sessions(services, ctx, tenant_id, username, "signed_out_everywhere", kept,
                                          ctx.principal.session_epoch)
    return SignedOutEverywhere(sessions_revoked=revoked, kept_session=kept is not None, result=result)


async def revoke_families(services: Services, ctx: CommandContext, subject: str, reason: str, *,
                          keep: str | None = None) -> int:
    """``session.revoked`` for each of the subject's open refresh families but ``keep``; returns how many were
    revoked.

    Called once the user's stream says its sessions ended, which already refuses their tokens: these events
    record it per family (as a detected reuse is), so an auditor sees which sessions ended and why.
    """
    if services.sessions is None:
        return 0
    revoked = 0
    for scope, session_id in await services.sessions.open_sessions(subject, services.clock.now()):
        if session_id == keep:
            continue
        try:
            result = await run(services, ctx.without_key(), RevokeFamily(session_id=session_id, reason=reason),
                               tenant_id=scope, stream_id=session.stream_id(session_id),
                               stream_type=session.STREAM_TYPE, fold=session.fold,
                               decide=lambda s: session.decide_revoke(s, reason))
        except DomainError as exc:  # contention: the epoch has ended it anyway; the next family is still recorded
            log.warning("recording the end of session %s failed (%s); the sessions epoch refuses it", session_id,
                        exc.code)
            continue
        revoked += result.changed
    return revoked

