"""Service accounts and their API keys (`csm_<id>_<secret>`): create, issue (the secret shown once), revoke."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Annotated, Protocol

import msgspec

from commands.authz import ROLES, authorize, check_grantable
from commands.runtime import CommandContext, CommandResult, Services, load, replayed, rfc3339, run
from commands.tenants import allowed_while_suspended, refused_while_suspended
from domain import api_token, service_account
from domain.errors import DomainError
from domain.events import SYSTEM_TENANT

TOKEN_PREFIX = "csm"


class CredentialVault(Protocol):
    """Where secret verifiers live: never in events, never in read models."""

    def put_verifier(self, token_id: str, verifier: bytes) -> None: ...

    def get_verifier(self, token_id: str) -> bytes | None: ...

    def delete_verifier(self, token_id: str) -> None: ...


class IssueApiToken(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A key for ``service_account`` (created if missing; default: derived from ``name``)."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    roles: list[str]
    tenant_id: str | None = None
    expires_in_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] | None = 90
    service_account: str | None = None


class RevokeApiToken(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    token_id: str
    reason: str = "revoked"


class CreateServiceAccount(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    tenant_id: str | None = None
    description: Annotated[str, msgspec.Meta(max_length=500)] = ""


class IssuedToken(msgspec.Struct, frozen=True, kw_only=True):
    token_id: str
    token: str  # shown once; only its verifier is kept
    expires_at: str | None
    service_account: str
    result: CommandResult


def verifier(secret: str) -> bytes:
    """SHA-256 suffices: the secret is 256 random bits, not a password (no guessing to slow down)."""
    return hashlib.sha256(secret.encode()).digest()


def parse_token(token: str) -> tuple[str, str] | None:
    """Split ``csm_<token_id>_<secret>``; None if it is not of that shape."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or len(parts[1]) != 16 or len(parts[2]) < 32:
        return None
    if not all(c in "0123456789abcdef" for c in parts[1]):
        return None
    return parts[1], parts[2]


def secret_matches(secret: str, stored: bytes | None) -> bool:
    candidate = verifier(secret)
    return hmac.compare_digest(candidate, stored if stored is not None else b"\x00" * len(candidate))


@refused_while_suspended("adds an account")
async def create_service_account(cmd: CreateServiceAccount, ctx: CommandContext, services: Services,
                                 *, reuse: bool = False) -> CommandResult:
    authorize(ctx.principal, "serviceaccount:manage", cmd.tenant_id)
    created = service_account.ServiceAccountCreated(name=cmd.name, tenant_id=cmd.tenant_id,
                                                    description=cmd.description)
    return await run(services, ctx, cmd, tenant_id=cmd.tenant_id or SYSTEM_TENANT,
                     stream_id=service_account.stream_id(cmd.name), stream_type=service_account.STREAM_TYPE,
                     fold=service_account.fold, decide=lambda s: service_account.decide_create(s, created, reuse=reuse))


@refused_while_suspended("adds a credential (an API key)")
async def issue_api_token(cmd: IssueApiToken, ctx: CommandContext, services: Services,
                          vault: CredentialVault, *, permission: str = "token:issue") -> IssuedToken:
    """Issue a key; ``csm admin create-token`` and the tests use it with the account created on the fly."""
    authorize(ctx.principal, permission, cmd.tenant_id)
    for role in cmd.roles:
        check_grantable(ctx.principal, role, tenant_id=cmd.tenant_id, permission=permission)
    account = cmd.service_account or service_account.slug(cmd.name)
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    expires_at = (rfc3339(services.clock.now() + timedelta(days=cmd.expires_in_days))
                  if cmd.expires_in_days else None)
    issued = api_token.ApiTokenIssued(token_id=token_id, name=cmd.name.strip(), roles=sorted(set(cmd.roles)),
                                      scope_tenant_id=cmd.tenant_id, expires_at=expires_at, service_account=account)
    api_token.decide_issue(api_token.ApiToken(), issued, frozenset(ROLES))  # refuse before storing anything
    scope = cmd.tenant_id or SYSTEM_TENANT
    if prior := await replayed(services, ctx, cmd, scope):
        return await _first_key(services, scope, prior, account)
    await _account_for_key(services, ctx, account, cmd, create=cmd.service_account is None)
    vault.put_verifier(token_id, verifier(secret))  # an orphan verifier (if an append fails) grants nothing
    await _record_on_account(services, ctx, vault, scope, account, token_id)
    result = await run(services, ctx, cmd, tenant_id=scope, stream_id=api_token.stream_id(token_id),
                       stream_type=api_token.STREAM_TYPE, fold=api_token.fold,
                       decide=lambda s: api_token.decide_issue(s, issued, frozenset(ROLES)))
    if result.replayed:  # a duplicate of this request landed first: this attempt's verifier names no key
        vault.delete_verifier(token_id)
        return await _first_key(services, scope, result, account)
    await _refuse_if_disabled_meanwhile(services, ctx, vault, scope, account, token_id)
    return IssuedToken(token_id=token_id, token=f"{TOKEN_PREFIX}_{token_id}_{secret}", expires_at=expires_at,
                       service_account=account, result=result)


async def _first_key(services: Services, scope: str, result: CommandResult, account: str) -> IssuedToken:
    """A retry of a request that already issued a key: its secret was shown then, not again; the rest is the first
    key's, from its stream (not this retry's token_id and expiry, never recorded)."""
    first = await load(services, scope, result.stream_id, api_token.fold)
    holder = await load(services, scope, service_account.stream_id(first.service_account or account),
                        service_account.fold)
    if first.status == "revoked" and holder.status == "disabled":  # the first answer, or what it would be now
        raise _disabled_meanwhile()
    return IssuedToken(token_id=first.token_id, token="", expires_at=first.expires_at,
                       service_account=first.service_account or account, result=result)


async def _account_for_key(services: Services, ctx: CommandContext, account: str, cmd: IssueApiToken,
                           *, create: bool) -> None:
    """The key's account must be active; a key named without one gets (or reuses) the account of its name."""
    scope = cmd.tenant_id or SYSTEM_TENANT
    state = await load(services, scope, service_account.stream_id(account), service_account.fold)
    if create and state.status == "absent":
        created = service_account.ServiceAccountCreated(name=account, tenant_id=cmd.tenant_id,
                                                        description=f"created for the key {cmd.name}"[:500])
        await run(services, ctx.without_key(), CreateServiceAccount(name=account,
                  tenant_id=cmd.tenant_id), tenant_id=scope, stream_id=service_account.stream_id(account),
                  stream_type=service_account.STREAM_TYPE, fold=service_account.fold,
                  decide=lambda s: service_account.decide_create(s, created, reuse=True))
        state = await load(services, scope, service_account.stream_id(account), service_account.fold)
    service_account.require_active(state)


async def _record_on_account(services: Services, ctx: CommandContext, vault: CredentialVault, scope: str,
                             account: str, token_id: str) -> None:
    """Record the key on its account's stream, at the version read: a disable appended meanwhile makes this append
    lose, and the next attempt sees the account disabled and refuses (the verifier stored for the key goes too).
    The verifier is stored before: a disable that lands after this record finds it, and deletes it."""
    try:
        await run(services, ctx.without_key(), service_account.ServiceAccountKeyIssued(token_id=token_id),
                  tenant_id=scope, stream_id=service_account.stream_id(account),
                  stream_type=service_account.STREAM_TYPE, fold=service_account.fold,
                  decide=lambda s: service_account.decide_issue_key(s, token_id))
    except DomainError:
        vault.delete_verifier(token_id)
        raise


async def _refuse_if_disabled_meanwhile(services: Services, ctx: CommandContext, vault: CredentialVault, scope: str,
                                        account: str, token_id: str) -> None:
    """A disable that landed between the key's record on the account and its own stream named the key and deleted
    its verifier, but could not revoke a stream not yet written: the key is revoked here, and the caller told."""
    state = await load(services, scope, service_account.stream_id(account), service_account.fold)
    if state.status == "active" and token_id in state.keys:
        return
    vault.delete_verifier(token_id)
    await run(services, ctx.without_key(), RevokeApiToken(token_id=token_id), tenant_id=scope,
              stream_id=api_token.stream_id(token_id), stream_type=api_token.STREAM_TYPE, fold=api_token.fold,
              decide=lambda s: api_token.decide_revoke(s, "its service account was disabled as it was issued"))
    raise _disabled_meanwhile()


def _disabled_meanwhile() -> DomainError:
    return DomainError("service_account_disabled", "the service account was disabled as the key was issued: the key "
                       "is revoked", field="service_account")


@allowed_while_suspended("takes a credential away")
async def revoke_api_token(cmd: RevokeApiToken, ctx: CommandContext, services: Services, vault: CredentialVault,
                           scope_tenant_id: str | None, *, permission: str = "token:issue") -> CommandResult:
    """Revoke a key, and delete its verifier once that is recorded: the key is refused from the next request on, by
    every process that shares the vault, without waiting for the read models to apply the revocation (they may lag:
    a projector in another process, a rebuild). A retry deletes nothing more."""
    authorize(ctx.principal, permission, scope_tenant_id)
    result = await run(services, ctx, cmd, tenant_id=scope_tenant_id or SYSTEM_TENANT,
                       stream_id=api_token.stream_id(cmd.token_id), stream_type=api_token.STREAM_TYPE,
                       fold=api_token.fold, decide=lambda s: api_token.decide_revoke(s, cmd.reason))
    vault.delete_verifier(cmd.token_id)
    return result
