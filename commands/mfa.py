"""TOTP enrollment (start: the otpauth URI once; confirm: a valid code) and the secret lookup sign-in uses."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated

import msgspec

from commands.authz import authorize
from commands.runtime import CommandContext, CommandResult, Services, load, run
from commands.session_end import end_sessions
from commands.tenants import allowed_while_suspended, refused_while_suspended
from domain import totp, user
from domain.errors import DomainError, NotFound
from domain.events import SYSTEM_TENANT

PURPOSE = "totp"
ALGORITHM = "totp-hmac-sha1"


class ConfirmTotp(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    code: Annotated[str, msgspec.Meta(min_length=6, max_length=6, pattern="^[0-9]{6}$")]


class ResetTotp(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    username: str
    tenant_id: str | None = None
    reason: str = "reset by an administrator"


class TotpEnrollment(msgspec.Struct, frozen=True, kw_only=True):
    otpauth_uri: str  # shown once: the secret is kept only encrypted
    secret: str  # base32, for typing into an app by hand
    result: CommandResult


class Enrolled(msgspec.Struct, frozen=True, kw_only=True):
    secret: bytes
    confirmed_step: int


class TotpUnavailable(DomainError):
    status = 503

    def __init__(self) -> None:
        super().__init__("totp_unavailable", "no key vault is configured to keep TOTP secrets", field="totp")


def _scope(tenant_id: str | None) -> str:
    return tenant_id or SYSTEM_TENANT


def _account(subject: str) -> str:
    if not subject.startswith(("user:", "ldap:")):
        raise DomainError("totp_for_people", "TOTP is for user accounts, not API keys or service accounts",
                          field="totp")
    return subject.split(":", 2)[2]


async def enrolled_secret(services: Services, scope: str, subject: str) -> Enrolled | None:
    """The confirmed TOTP secret of ``subject`` (decrypted from the key vault), or None when TOTP is off."""
    state = await load(services, scope, totp.stream_id(subject), totp.fold)
    if state.key_ref is None:
        return None
    if services.keys is None:
        raise TotpUnavailable()
    return Enrolled(secret=await services.keys.get(scope, state.key_ref), confirmed_step=state.confirmed_step)


def match(enrolled: Enrolled, code: str, now: datetime) -> int | None:
    return totp.matching_step(enrolled.secret, code.strip(), now.timestamp())


@allowed_while_suspended("a second factor for the caller's own account: it strengthens sign-in, and a privileged "
                         "account must enroll before it can sign in to revoke")
async def start_enrollment(ctx: CommandContext, services: Services, issuer: str) -> TotpEnrollment:
    """A fresh secret, stored encrypted (purpose "totp"); TOTP is on only once a code confirms it."""
    subject = ctx.principal.id
    account = _account(subject)
    if services.keys is None:
        raise TotpUnavailable()
    scope = _scope(ctx.principal.tenant_id)
    state = await load(services, scope, totp.stream_id(subject), totp.fold)
    totp.decide_start(state, totp.TotpEnrollmentStarted(subject=subject, key_ref=""))  # refuse before storing
    secret = secrets.token_bytes(totp.SECRET_BYTES)
    key_ref = await services.keys.put(scope, secret, algorithm=ALGORITHM, purpose=PURPOSE)
    started = totp.TotpEnrollmentStarted(subject=subject, key_ref=key_ref)
    result = await run(services, ctx, started, tenant_id=scope, stream_id=totp.stream_id(subject),
                       stream_type=totp.STREAM_TYPE, fold=totp.fold, decide=lambda s: totp.decide_start(s, started))
    return TotpEnrollment(otpauth_uri=totp.provisioning_uri(secret, account, issuer), secret=totp.b32(secret),
                          result=result)


@allowed_while_suspended("completes the enrollment above")
async def confirm_enrollment(cmd: ConfirmTotp, ctx: CommandContext, services: Services) -> CommandResult:
    subject = ctx.principal.id
    _account(subject)
    scope = _scope(ctx.principal.tenant_id)
    state = await load(services, scope, totp.stream_id(subject), totp.fold)
    if state.pending_ref is None:
        raise DomainError("no_pending_enrollment", "start a TOTP enrollment first (POST /v1/auth/totp)",
                          field="totp")
    if services.keys is None:
        raise TotpUnavailable()
    secret = await services.keys.get(scope, state.pending_ref)
    step = totp.matching_step(secret, cmd.code, services.clock.now().timestamp())
    if step is None:
        raise DomainError("invalid_otp", "the code does not match the enrolled secret; check the device's clock",
                          field="code")
    pending = state.pending_ref
    return await run(services, ctx, cmd, tenant_id=scope, stream_id=totp.stream_id(subject),
                     stream_type=totp.STREAM_TYPE, fold=totp.fold,
                     decide=lambda s: totp.decide_confirm(s, subject, pending, step))


@refused_while_suspended("removes a second factor: the password alone would then sign in")
async def reset_totp(cmd: ResetTotp, ctx: CommandContext, services: Services) -> CommandResult:
    """An administrator turns a user's TOTP off (lost device); the user enrolls again at the next sign-in.

    Every session of the user ends first (whoever holds the lost device may hold a session too): if the reset
    then fails, the user signs in again, never the other way round. A reset with no TOTP to remove ends nothing.
    """
    authorize(ctx.principal, "user:manage", cmd.tenant_id)
    account = await load(services, user.stream_tenant(cmd.tenant_id), user.stream_id(cmd.username), user.fold)
    if account.status == "absent":  # a mistyped name is not "nothing to change": the operator would think it done
        raise NotFound("user_not_found", "no such user", field="username")
    subject = user.subject(cmd.tenant_id, cmd.username)
    state = await load(services, _scope(cmd.tenant_id), totp.stream_id(subject), totp.fold)
    if totp.decide_remove(state, subject, cmd.reason):
        await end_sessions(services, ctx, cmd.tenant_id, cmd.username, "totp_reset")
    return await run(services, ctx, cmd, tenant_id=_scope(cmd.tenant_id), stream_id=totp.stream_id(subject),
                     stream_type=totp.STREAM_TYPE, fold=totp.fold,
                     decide=lambda s: totp.decide_remove(s, subject, cmd.reason))
