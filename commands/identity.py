"""Local users: create, grant and revoke roles (optionally until a time), reset passwords, disable, enable.

Resetting a password and disabling an account end every session of the user (``commands/session_end.py``)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Protocol

import msgspec

from commands import blocking
from commands.authz import ROLES, authorize, check_grantable
from commands.runtime import CommandContext, CommandResult, Services, load, rfc3339, run
from commands.session_end import revoke_families
from commands.tenants import allowed_while_suspended, refused_while_suspended
from commands.tokens import CredentialVault
from domain import tenant as tenant_domain
from domain import login, user
from domain.errors import DomainError, NotFound
from domain.login import LoginPolicy

MIN_PASSWORD, MAX_PASSWORD = 12, 1024
PRIVILEGED_ROLES = ("platform-admin", "tenant-admin", "ca-operator")

Password = Annotated[str, msgspec.Meta(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)]
Username = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class PasswordHasher(Protocol):
    """Slow, salted password hashing (infra/passwords implements it with argon2id)."""

    def hash(self, password: str) -> bytes: ...

    def verify(self, stored: bytes | None, password: str) -> bool: ...  # None: the same work, then False


class TokenSigner(Protocol):
    """Access-token signing (infra/jwt implements it): adds iss and aud, picks the current key."""

    def sign(self, claims: dict[str, Any], now: datetime) -> str: ...

    def verify(self, token: str, now: datetime) -> dict[str, Any] | None: ...

    def jwks(self, now: datetime) -> dict[str, list[dict[str, str | list[str]]]]: ...  # the keys that verify, public halves


@dataclass(slots=True)
class Identity:
    """The identity adapters and policy, wired once in the composition root."""

    vault: CredentialVault
    passwords: PasswordHasher
    tokens: TokenSigner
    policy: LoginPolicy = field(default_factory=LoginPolicy)
    access_ttl: int = 900
    refresh_ttl: int = 43_200
    mfa_roles: frozenset[str] = frozenset(PRIVILEGED_ROLES)
    issuer_label: str = "CSM"  # what authenticator apps show


class CreateUser(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    username: Username
    password: Password
    tenant_id: str | None = None
    display_name: str | None = None
    roles: list[str] = []


class GrantRole(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    username: Username
    role: str
    tenant_id: str | None = None
    expires_at: datetime | None = None  # just in time: the grant lapses by itself


class RevokeRole(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    username: Username
    role: str
    tenant_id: str | None = None
    reason: str = "revoked"


class ResetPassword(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    username: Username
    password: Password
    tenant_id: str | None = None


class SetUserStatus(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    username: Username
    enabled: bool
    tenant_id: str | None = None
    reason: str = ""


class UnlockAccount(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    username: Username
    tenant_id: str | None = None
    reason: str = "unlocked by an administrator"


class _Fingerprint(msgspec.Struct, frozen=True, kw_only=True):
    """What identifies a password-bearing command for idempotency: everything but the password."""

    action: str
    username: str
    tenant_id: str | None
    extra: list[str] = []


async def require_tenant(services: Services, tenant_id: str | None) -> None:
    if tenant_id is None:
        return
    tenant_domain.validate_tenant_id(tenant_id)
    state = await load(services, tenant_id, tenant_domain.stream_id(tenant_id), tenant_domain.fold)
    if state.status == "absent":
        raise NotFound("tenant_not_found", f"tenant {tenant_id} does not exist", field="tenant_id")


def _run_user(services: Services, ctx: CommandContext, command: msgspec.Struct, tenant_id: str | None,
              username: str, decide) -> Any:
    user.validate_username(username)
    return run(services, ctx, command, tenant_id=user.stream_tenant(tenant_id), stream_id=user.stream_id(username),
               stream_type=user.STREAM_TYPE, fold=user.fold, decide=decide)


async def _store_password(identity: Identity, password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise DomainError("invalid_password", f"a password has {MIN_PASSWORD}-{MAX_PASSWORD} characters",
                          field="password")
    if not password.isprintable() or password.strip() != password:
        raise DomainError("invalid_password", "a password is printable and neither starts nor ends with a blank",
                          field="password")
    digest = await blocking.slow(identity.passwords.hash, password)
    ref = f"pw_{secrets.token_hex(16)}"
    identity.vault.put_verifier(ref, digest)  # an orphan (the append failed) is referenced by nothing
    return ref


@refused_while_suspended("adds an account and its password")
async def create_user(cmd: CreateUser, ctx: CommandContext, services: Services, identity: Identity) -> CommandResult:
    authorize(ctx.principal, "user:manage", cmd.tenant_id)
    for role in cmd.roles:
        check_grantable(ctx.principal, role, tenant_id=cmd.tenant_id, permission="user:manage")
    user.validate_username(cmd.username)
    await require_tenant(services, cmd.tenant_id)
    print_ = _Fingerprint(action="create", username=cmd.username, tenant_id=cmd.tenant_id,
                          extra=sorted(set(cmd.roles)) + [cmd.display_name or ""])
    grants = [user.RoleGranted(role=role, expires_at=None) for role in sorted(set(cmd.roles))]
    probe = user.UserCreated(username=cmd.username, tenant_id=cmd.tenant_id, display_name=cmd.display_name,
                             password_ref="")
    existing = await load(services, user.stream_tenant(cmd.tenant_id), user.stream_id(cmd.username), user.fold)
    if not ctx.idempotency_key:  # refuse before the slow hash; a retry under its key replays instead
        user.decide_create(existing, probe, grants, frozenset(ROLES))
    ref = await _store_password(identity, cmd.password)
    created = msgspec.structs.replace(probe, password_ref=ref)
    return await _run_user(services, ctx, print_, cmd.tenant_id, cmd.username,
                           lambda s: user.decide_create(s, created, grants, frozenset(ROLES)))


@refused_while_suspended("adds a privilege")
async def grant_role(cmd: GrantRole, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "user:manage", cmd.tenant_id)
    check_grantable(ctx.principal, cmd.role, tenant_id=cmd.tenant_id, permission="user:manage", field="role")
    now = services.clock.now()
    if cmd.expires_at is not None and cmd.expires_at.tzinfo is None:
        raise DomainError("naive_time", "expires_at needs a time zone (e.g. Z)", field="expires_at")
    expires = None if cmd.expires_at is None else rfc3339(cmd.expires_at)
    granted = user.RoleGranted(role=cmd.role, expires_at=expires)
    return await _run_user(services, ctx, cmd, cmd.tenant_id, cmd.username,
                           lambda s: user.decide_grant(s, granted, frozenset(ROLES), now))


@allowed_while_suspended("takes a privilege away")
async def revoke_role(cmd: RevokeRole, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "user:manage", cmd.tenant_id)
    check_grantable(ctx.principal, cmd.role, tenant_id=cmd.tenant_id, permission="user:manage", field="role")
    return await _run_user(services, ctx, cmd, cmd.tenant_id, cmd.username,
                           lambda s: user.decide_revoke(s, cmd.role, cmd.reason))


@refused_while_suspended("sets a new credential (disable the account to shut someone out: that stays open)")
async def reset_password(cmd: ResetPassword, ctx: CommandContext, services: Services,
                         identity: Identity) -> CommandResult:
    authorize(ctx.principal, "user:manage", cmd.tenant_id)
    existing = await load(services, user.stream_tenant(cmd.tenant_id), user.stream_id(cmd.username), user.fold)
    user.decide_reset_password(existing, "")  # unknown user: refuse before the slow hash
    for role in existing.grants:  # resetting an admin's password is taking over the admin
        check_grantable(ctx.principal, role, tenant_id=cmd.tenant_id, permission="user:manage", field="username")
    ref = await _store_password(identity, cmd.password)
    print_ = _Fingerprint(action="reset", username=cmd.username, tenant_id=cmd.tenant_id)
    result = await _run_user(services, ctx, print_, cmd.tenant_id, cmd.username,
                             lambda s: user.decide_reset_password(s, ref))
    await revoke_families(services, ctx, user.subject(cmd.tenant_id, cmd.username), "password_reset")
    return result


@refused_while_suspended("enabling lets a disabled account sign in again; disabling stays open (it ends the sessions)",
                         when=lambda cmd: cmd.enabled)
async def set_user_status(cmd: SetUserStatus, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "user:manage", cmd.tenant_id)
    if ctx.principal.id == user.subject(cmd.tenant_id, cmd.username) and not cmd.enabled:
        raise DomainError("cannot_disable_self", "an account cannot disable itself", field="username")
    decide = ((lambda s: user.decide_enable(s, cmd.reason)) if cmd.enabled
              else (lambda s: user.decide_disable(s, cmd.reason)))
    result = await _run_user(services, ctx, cmd, cmd.tenant_id, cmd.username, decide)
    if not cmd.enabled:  # enabling brings no session back: the epoch moved on when it was disabled
        await revoke_families(services, ctx, user.subject(cmd.tenant_id, cmd.username), "user_disabled")
    return result


@allowed_while_suspended("lifts a sign-in lockout: adds no credential, and sign-in stays open for reads and revocation")
async def unlock_account(cmd: UnlockAccount, ctx: CommandContext, services: Services) -> CommandResult:
    """Lift a lockout (and the back-off) before it lapses by itself."""
    authorize(ctx.principal, "user:manage", cmd.tenant_id)
    now = services.clock.now()
    return await run(services, ctx, cmd, tenant_id=user.stream_tenant(cmd.tenant_id),
                     stream_id=login.stream_id(cmd.tenant_id, cmd.username), stream_type=login.STREAM_TYPE,
                     fold=login.fold, decide=lambda s: login.decide_unlock(s, cmd.username, cmd.reason, now))
