"""Sign-in: the password, refresh_token and client_credentials grants, each ending in a recorded session."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Annotated

import msgspec

from commands import blocking, mfa
from commands.authz import Principal
from commands.identity import Identity
from commands.ids import uuid7
from commands.runtime import CommandContext, Services, load, rfc3339, run
from commands.tenants import allowed_while_suspended
from commands.tokens import secret_matches, verifier
from domain import login, session, user
from domain.errors import DomainError
from domain.events import SYSTEM_TENANT
from domain.tenant import TENANT_ID_RE

REFRESH_PREFIX = "csmr"
ENROLL_SCOPE = "mfa:enroll"  # a privileged account without TOTP yet may only enroll it
EPOCH_CLAIM = "sep"  # a local user's sessions epoch when the token's session began (domain/user.py)


class PasswordGrant(msgspec.Struct, frozen=True, kw_only=True):
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    totp: str | None = None
    tenant_id: str | None = None


class TokenResponse(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """RFC 6749 section 5.1, plus ``mfa_enrollment_required`` for a token good only for TOTP enrollment."""

    access_token: str
    token_type: str  # always "Bearer" (no default: omit_defaults would drop it)
    expires_in: int
    refresh_token: str | None = None
    scope: str | None = None
    mfa_enrollment_required: bool = False


class KeyFacts(msgspec.Struct, frozen=True, kw_only=True):
    """An API key as the read model knows it (looked up by the caller)."""

    token_id: str
    tenant_id: str | None
    roles: list[str]
    service_account: str | None


class LoginRefused(DomainError):
    """The one refusal for an unknown account, a wrong password and a disabled account."""

    status = 401

    def __init__(self) -> None:
        super().__init__("invalid_grant", "the username or password is wrong", field="password")


class MfaRequired(DomainError):
    status = 401

    def __init__(self, detail: str = "this account needs a current TOTP code (field totp)") -> None:
        super().__init__("mfa_required", detail, field="totp")


def _anonymous(name: str) -> CommandContext:
    return CommandContext(principal=Principal(id=name, auth_method="anonymous", roles=frozenset()),
                          correlation_id=None)


def _context(subject: str, method: str, correlation_id: str | None) -> CommandContext:
    return CommandContext(principal=Principal(id=subject, auth_method=method, roles=frozenset()),
                          correlation_id=correlation_id)


async def _record_failure(services: Services, identity: Identity, tenant_id: str | None, username: str,
                          method: str, reason: str, correlation_id: str | None) -> None:
    now = services.clock.now()
    failed = login.LoginFailed(username=username, method=method, reason=reason, at=rfc3339(now))
    until = rfc3339(now + timedelta(seconds=identity.policy.lockout_seconds))
    ctx = CommandContext(principal=_anonymous(f"login:{username}").principal, correlation_id=correlation_id)
    await run(services, ctx, failed, tenant_id=tenant_id or SYSTEM_TENANT,
              stream_id=login.stream_id(tenant_id, username), stream_type=login.STREAM_TYPE, fold=login.fold,
              decide=lambda s: login.decide_failure(s, failed, now, identity.policy, until))


class Checked(msgspec.Struct, frozen=True, kw_only=True):
    """Who good credentials belong to: ``sessions_epoch`` is a local user's as its password was checked."""

    subject: str
    roles: frozenset[str]
    amr: list[str]
    method: str
    grant_expiry: str | None  # the earliest expiry of the grants carried
    sessions_epoch: int | None  # None: not a local user (no epoch to carry)


async def _check_password(services: Services, identity: Identity, cmd: PasswordGrant) -> Checked | None:
    """Who the credentials belong to when they are good; None otherwise, after the same work."""
    scope = user.stream_tenant(cmd.tenant_id)
    state = user.User()
    if user.USERNAME_RE.fullmatch(cmd.username):
        state = await load(services, scope, user.stream_id(cmd.username), user.fold)
    if state.status != "absent":
        stored = identity.vault.get_verifier(state.password_ref) if state.password_ref else None
        ok = await blocking.slow(identity.passwords.verify, stored, cmd.password)
        if not ok or state.status != "active":
            return None
        now = services.clock.now()
        roles = user.active_roles(state, now)
        expiries = sorted(e for r, e in state.grants.items() if r in roles and e is not None)
        return Checked(subject=user.subject(cmd.tenant_id, cmd.username), roles=roles, amr=["pwd"],
                       method="password", grant_expiry=(expiries or [None])[0], sessions_epoch=state.sessions_epoch)
    if services.directory is not None:
        found = await services.directory.authenticate(cmd.username, cmd.password)
        if found is None or found.tenant_id != cmd.tenant_id:
            return None
        return Checked(subject=f"ldap:{scope}:{found.username}", roles=frozenset(found.roles), amr=["ldap"],
                       method="ldap", grant_expiry=None, sessions_epoch=None)
    await blocking.slow(identity.passwords.verify, None, cmd.password)  # an unknown name costs the same
    return None


@allowed_while_suspended("sign-in: a suspended tenant's people still read and revoke")
async def password_login(cmd: PasswordGrant, services: Services, identity: Identity,
                         correlation_id: str | None = None) -> TokenResponse:
    if cmd.tenant_id is not None and not TENANT_ID_RE.fullmatch(cmd.tenant_id):
        raise LoginRefused()
    scope = cmd.tenant_id or SYSTEM_TENANT
    attempts = await load(services, scope, login.stream_id(cmd.tenant_id, cmd.username), login.fold)
    login.check_allowed(attempts, services.clock.now(), identity.policy)  # before any work: 429
    checked = await _check_password(services, identity, cmd)
    if checked is None:
        await _record_failure(services, identity, cmd.tenant_id, cmd.username, "password", "invalid_credentials",
                              correlation_id)
        raise LoginRefused()
    subject, roles, amr, method = checked.subject, checked.roles, checked.amr, checked.method
    enrolled = await mfa.enrolled_secret(services, scope, subject)
    otp_step = None
    if enrolled is not None:
        otp_step = await _check_totp(services, identity, cmd, enrolled, attempts, method, correlation_id)
        amr = [*amr, "otp"]
    succeeded = login.LoginSucceeded(username=cmd.username, method=method, amr=amr, otp_step=otp_step)
    try:
        await run(services, _context(subject, method, correlation_id), succeeded, tenant_id=scope,
                  stream_id=login.stream_id(cmd.tenant_id, cmd.username), stream_type=login.STREAM_TYPE,
                  fold=login.fold, decide=lambda s: login.decide_success(s, succeeded))
    except DomainError as exc:  # a concurrent login spent the same code first
        if exc.code != "otp_replayed":
            raise
        await _record_failure(services, identity, cmd.tenant_id, cmd.username, method, "otp_replayed",
                              correlation_id)
        raise MfaRequired("this code was already used; wait for the next one") from None
    if enrolled is None and roles & identity.mfa_roles:
        return await _start(services, identity, subject=subject, tenant_id=cmd.tenant_id, roles=frozenset(),
                            amr=amr, method=method, refresh=False, correlation_id=correlation_id,
                            scope=ENROLL_SCOPE, sessions_epoch=checked.sessions_epoch)
    # No refresh token for directory users: the port cannot re-check an account without its password,
    # so they sign in again when the access token expires (a directory lockout then applies at once).
    return await _start(services, identity, subject=subject, tenant_id=cmd.tenant_id, roles=roles, amr=amr,
                        method=method, refresh=method != "ldap", correlation_id=correlation_id,
                        not_after=checked.grant_expiry, sessions_epoch=checked.sessions_epoch)


async def _check_totp(services: Services, identity: Identity, cmd: PasswordGrant, enrolled: mfa.Enrolled,
                      attempts: login.LoginState, method: str, correlation_id: str | None) -> int:
    if not cmd.totp:
        raise MfaRequired()  # the password was right: step one of two, not a failure
    step = mfa.match(enrolled, cmd.totp, services.clock.now())
    reason = None if step is not None else "invalid_otp"
    if step is not None and step <= max(attempts.last_otp_step, enrolled.confirmed_step):
        reason = "otp_replayed"
    if reason is not None:
        await _record_failure(services, identity, cmd.tenant_id, cmd.username, method, reason, correlation_id)
        raise MfaRequired("the TOTP code is wrong or was already used")
    return step


async def _start(services: Services, identity: Identity, *, subject: str, tenant_id: str | None,
                 roles: frozenset[str], amr: list[str], method: str, refresh: bool, correlation_id: str | None,
                 scope: str | None = None, not_after: str | None = None, key_id: str | None = None,
                 sessions_epoch: int | None = None) -> TokenResponse:
    """Record ``session.started`` and sign the access token (and a refresh token, when ``refresh``)."""
    now = services.clock.now()
    session_id = secrets.token_hex(8)
    refresh_id = secrets.token_hex(8) if refresh else None
    refresh_secret = secrets.token_urlsafe(32)
    refresh_expires = rfc3339(now + timedelta(seconds=identity.refresh_ttl)) if refresh else None
    access_exp = _access_expiry(now, identity.access_ttl, not_after)
    jti = uuid7()
    started = session.SessionStarted(session_id=session_id, subject=subject, tenant_id=tenant_id,
                                     roles=sorted(roles), amr=amr, method=method, access_jti=jti,
                                     access_expires_at=rfc3339(access_exp), refresh_token_id=refresh_id,
                                     refresh_expires_at=refresh_expires, sessions_epoch=sessions_epoch or 0)
    if refresh_id:
        identity.vault.put_verifier(f"session:{session_id}", (tenant_id or SYSTEM_TENANT).encode())
        identity.vault.put_verifier(_refresh_key(session_id, refresh_id), verifier(refresh_secret))
    await run(services, _context(subject, method, correlation_id), started,
              tenant_id=tenant_id or SYSTEM_TENANT, stream_id=session.stream_id(session_id),
              stream_type=session.STREAM_TYPE, fold=session.fold, decide=lambda s: [started])
    token = _sign(identity, now, access_exp, subject=subject, tenant_id=tenant_id, roles=roles, amr=amr, jti=jti,
                  session_id=session_id, scope=scope, key_id=key_id, sessions_epoch=sessions_epoch)
    return TokenResponse(access_token=token, token_type="Bearer", expires_in=int((access_exp - now).total_seconds()),
                         refresh_token=f"{REFRESH_PREFIX}_{session_id}_{refresh_id}_{refresh_secret}"
                         if refresh_id else None,
                         scope=scope, mfa_enrollment_required=scope == ENROLL_SCOPE)


def _access_expiry(now: datetime, ttl: int, not_after: str | None) -> datetime:
    """A token never outlives the just-in-time grant it carries."""
    expiry = now + timedelta(seconds=ttl)
    if not_after:
        expiry = min(expiry, datetime.fromisoformat(not_after))
    return expiry


def _sign(identity: Identity, now: datetime, exp: datetime, *, subject: str, tenant_id: str | None,
          roles: frozenset[str], amr: list[str], jti: str, session_id: str, scope: str | None,
          key_id: str | None, sessions_epoch: int | None) -> str:
    claims = {"sub": subject, "tenant": tenant_id, "roles": sorted(roles), "amr": amr, "iat": int(now.timestamp()),
              "nbf": int(now.timestamp()), "exp": int(exp.timestamp()), "jti": jti, "sid": session_id}
    if scope:
        claims["scope"] = scope
    if key_id:
        claims["key"] = key_id
    if sessions_epoch is not None:  # a local user's: api/auth.py refuses the token once the user's epoch moves on
        claims[EPOCH_CLAIM] = sessions_epoch
    return identity.tokens.sign(claims, now)


def _refresh_key(session_id: str, token_id: str) -> str:
    return f"refresh:{session_id}:{token_id}"


def parse_refresh(token: str) -> tuple[str, str, str] | None:
    parts = token.split("_", 3)
    if len(parts) != 4 or parts[0] != REFRESH_PREFIX or len(parts[3]) < 32:
        return None
    if not all(len(p) == 16 and all(c in "0123456789abcdef" for c in p) for p in parts[1:3]):
        return None
    return parts[1], parts[2], parts[3]


def _genuine_refresh(token: str, identity: Identity) -> tuple[str, str, str] | None:
    """(session id, token id, secret) of a refresh token whose secret matches its stored verifier (always compared,
    so an unknown id costs the same time); None for anything else."""
    parsed = parse_refresh(token)
    stored = identity.vault.get_verifier(_refresh_key(parsed[0], parsed[1])) if parsed else None
    if parsed is None or not secret_matches(parsed[2], stored) or stored is None:
        return None
    return parsed


def _session_scope(identity: Identity, session_id: str) -> str:
    """The tenant whose log holds a refresh family's session stream, as the vault remembers it beside the
    verifiers (the system tenant when it remembers none)."""
    scope = identity.vault.get_verifier(f"session:{session_id}")
    return scope.decode() if scope else SYSTEM_TENANT


@allowed_while_suspended("sign-in (refresh_token grant)")
async def refresh(refresh_token: str, services: Services, identity: Identity,
                  correlation_id: str | None = None) -> TokenResponse:
    """Rotate: the presented token is spent; presenting a spent one revokes the whole family."""
    parsed = _genuine_refresh(refresh_token, identity)
    if parsed is None:
        raise session.RefreshRefused("unknown_token")
    session_id, presented, _ = parsed
    state = await _find_session(services, identity, session_id)
    now = services.clock.now()
    roles, not_after, epoch = await _current_roles(services, identity, state, now)
    new_id, new_secret, jti = secrets.token_hex(8), secrets.token_urlsafe(32), uuid7()
    access_exp = _access_expiry(now, identity.access_ttl, not_after)
    refreshed = session.SessionRefreshed(refresh_token_id=new_id, access_jti=jti,
                                         access_expires_at=rfc3339(access_exp), generation=state.generation + 1)
    identity.vault.put_verifier(_refresh_key(session_id, new_id), verifier(new_secret))
    outcome: list[str] = []

    def decide(current: session.Session):
        payloads = session.decide_refresh(current, presented, refreshed, now)
        outcome[:] = [type(p).__name__ for p in payloads]
        return payloads

    await run(services, _context(state.subject, "refresh_token", correlation_id), refreshed,
              tenant_id=state.tenant_id or SYSTEM_TENANT, stream_id=session.stream_id(session_id),
              stream_type=session.STREAM_TYPE, fold=session.fold, decide=decide)
    if outcome != ["SessionRefreshed"]:
        raise session.RefreshRefused("reuse")
    token = _sign(identity, now, access_exp, subject=state.subject, tenant_id=state.tenant_id, roles=roles,
                  amr=list(state.amr), jti=jti, session_id=session_id, scope=None, key_id=None,
                  sessions_epoch=epoch)
    return TokenResponse(access_token=token, token_type="Bearer", expires_in=int((access_exp - now).total_seconds()),
                         refresh_token=f"{REFRESH_PREFIX}_{session_id}_{new_id}_{new_secret}")


class SignOut(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str


def _session_of(token: str, identity: Identity, now: datetime) -> tuple[str, str] | None:
    """(scope, session id) of a refresh token whose secret matches (spent or current: either is the family's), or
    of a genuine, unexpired access token; None for anything else. The refresh secret is always compared."""
    if token.startswith(f"{REFRESH_PREFIX}_"):
        parsed = _genuine_refresh(token, identity)
        return (_session_scope(identity, parsed[0]), parsed[0]) if parsed else None
    claims = identity.tokens.verify(token, now)
    if claims is None or not isinstance(claims.get("sid"), str):
        return None
    tenant_id = claims.get("tenant")
    return (tenant_id if isinstance(tenant_id, str) else SYSTEM_TENANT), claims["sid"]


@allowed_while_suspended("sign-out (token revocation): it only takes a credential away")
async def sign_out(token: str, services: Services, identity: Identity, correlation_id: str | None = None) -> bool:
    """RFC 7009: end the session ``token`` (a refresh or an access token) belongs to, so that neither its refresh
    family nor its access tokens are accepted again. Possession of the token is the authority, as for a refresh.
    True when this call ended it; False for a token that is not ours, or a session already ended."""
    found = _session_of(token, identity, services.clock.now())
    if found is None:
        return False
    scope, session_id = found
    state = await load(services, scope, session.stream_id(session_id), session.fold)
    if state.status != "active":
        return False
    result = await run(services, _context(state.subject, "token_revocation", correlation_id),
                       SignOut(session_id=session_id), tenant_id=scope, stream_id=session.stream_id(session_id),
                       stream_type=session.STREAM_TYPE, fold=session.fold,
                       decide=lambda current: session.decide_revoke(current, "signed_out"))
    return bool(result.changed)


async def _find_session(services: Services, identity: Identity, session_id: str) -> session.Session:
    """A session's stream lives in its subject's tenant, which the vault remembers beside the verifiers."""
    state = await load(services, _session_scope(identity, session_id), session.stream_id(session_id), session.fold)
    if state.status == "absent":
        raise session.RefreshRefused("unknown_session")
    return state


async def _current_roles(services: Services, identity: Identity, state: session.Session, now: datetime
                         ) -> tuple[frozenset[str], str | None, int | None]:
    """A local user's roles are re-read at every refresh (revoked or lapsed grants drop out, new ones count);
    others keep theirs. Returns the roles, the earliest expiry among them and the user's sessions epoch.

    Refused: a disabled user; a session its user's sessions have ended since (password or TOTP reset, disable,
    signing out everywhere: the epoch moved on, and an enable does not move it back); and a session signed in without a TOTP code whose
    roles now need one (a grant since): a refresh must not carry what a sign-in would only give after the code.
    """
    if not state.subject.startswith("user:"):
        return frozenset(state.roles), None, None
    _, scope, username = state.subject.split(":", 2)
    current = await load(services, scope, user.stream_id(username), user.fold)
    if current.status != "active":
        raise session.RefreshRefused("user_disabled")
    if user.session_ended(current, state.sessions_epoch, state.session_id):
        raise session.RefreshRefused("sessions_ended")
    roles = user.active_roles(current, now)
    if roles & identity.mfa_roles and "otp" not in state.amr:
        raise session.RefreshRefused("mfa_required")
    expiries = sorted(e for r, e in current.grants.items() if r in roles and e is not None)
    return roles, (expiries or [None])[0], current.sessions_epoch


async def client_credentials_failed(services: Services, identity: Identity, token_id: str | None,
                                    correlation_id: str | None = None) -> None:
    """Record a refused API key by its id; garbage is not recorded, and keys are not locked (256-bit secrets)."""
    if not token_id:
        return
    name = f"key:{token_id}"
    now = services.clock.now()
    failed = login.LoginFailed(username=name, method="client_credentials", reason="invalid_credentials",
                               at=rfc3339(now))
    await run(services, CommandContext(principal=_anonymous(name).principal, correlation_id=correlation_id),
              failed, tenant_id=SYSTEM_TENANT, stream_id=login.stream_id(None, name), stream_type=login.STREAM_TYPE,
              fold=login.fold, decide=lambda s: [failed])


@allowed_while_suspended("sign-in (client_credentials grant) with an API key issued before the suspension")
async def client_credentials(key: KeyFacts, services: Services, identity: Identity,
                             correlation_id: str | None = None) -> TokenResponse:
    """An access token for a service account, from its (already verified) API key."""
    account = key.service_account or f"token-{key.token_id}"
    subject = f"sa:{key.tenant_id or SYSTEM_TENANT}:{account}"
    return await _start(services, identity, subject=subject, tenant_id=key.tenant_id, roles=frozenset(key.roles),
                        amr=["api_key"], method="client_credentials", refresh=False,
                        correlation_id=correlation_id, key_id=key.token_id)
