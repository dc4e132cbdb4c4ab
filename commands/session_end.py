"""Ending every session of a local user: its sessions epoch moves on, then each open refresh family is revoked."""

from __future__ import annotations

import logging

import msgspec

from commands.runtime import CommandContext, CommandResult, Services, run
from domain import session, user
from domain.errors import DomainError

log = logging.getLogger(__name__)


class EndSessions(msgspec.Struct, frozen=True, kw_only=True):
    username: str
    tenant_id: str | None
    reason: str


class RevokeFamily(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    reason: str


async def end_sessions(services: Services, ctx: CommandContext, tenant_id: str | None, username: str,
                       reason: str) -> CommandResult:
    """Record ``user.sessions_ended`` (for a command whose own event is in another stream), then revoke families."""
    user.validate_username(username)
    command = EndSessions(username=username, tenant_id=tenant_id, reason=reason)
    result = await run(services, ctx.without_key(), command, tenant_id=user.stream_tenant(tenant_id),
                       stream_id=user.stream_id(username), stream_type=user.STREAM_TYPE, fold=user.fold,
                       decide=lambda s: user.decide_end_sessions(s, reason))
    await revoke_families(services, ctx, user.subject(tenant_id, username), reason)
    return result


async def revoke_families(services: Services, ctx: CommandContext, subject: str, reason: str) -> int:
    """``session.revoked`` for each of the subject's open refresh families; returns how many were revoked.

    Called once the user's stream says its sessions ended, which already refuses their tokens: these events
    record it per family (as a detected reuse is), so an auditor sees which sessions ended and why.
    """
    if services.sessions is None:
        return 0
    revoked = 0
    for scope, session_id in await services.sessions.open_sessions(subject, services.clock.now()):
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

