"""Disable a service account (every key of it, and every access token those keys obtained, refused at once), and
enable it again (its old keys stay revoked).

Who: ``serviceaccount:manage`` (platform-admin; tenant-admin within its own tenant), the permission that creates the
account and issues and revokes its keys. Disabling takes away only what that holder could already take away key by
key, and adds the guarantee that no key is issued for the account until it is enabled; enabling restores no key
(every key it had is revoked), so it grants nothing a new key issue would not check again (no escalation there).
Auditors and ca-operators cannot do either. Disabling stays open while the tenant is suspended (it takes credentials
away); enabling does not (it lets keys be issued again).

How disabling takes effect at once, whatever the read models say: the ``service_account.disabled`` event names every
key of the account (those its stream recorded, and older ones the read model lists); once it is recorded each key's
verifier is deleted from the credential vault, which every process reads at every request (an API key, and an access
token with a ``key`` claim, are refused without it), then each key's revocation is recorded. The bearer check also
reads the account's status from the log (api/auth.py). A key being issued meanwhile either is recorded on the account
before the disable (then named by it) or is refused (``commands/tokens.py``).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from commands.authz import authorize
from commands.runtime import CommandContext, CommandResult, Services, load, run
from commands.tenants import allowed_while_suspended, refused_while_suspended
from commands.tokens import CredentialVault, RevokeApiToken
from domain import api_token, service_account
from domain.errors import NotFound
from domain.events import SYSTEM_TENANT

Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class DisableServiceAccount(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    reason: Reason
    tenant_id: str | None = None


class EnableServiceAccount(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    reason: Reason
    tenant_id: str | None = None


@allowed_while_suspended("takes credentials away: every key of the account")
async def disable_service_account(cmd: DisableServiceAccount, ctx: CommandContext, services: Services,
                                  vault: CredentialVault) -> CommandResult:
    """Disable the account and revoke its keys. Disabling a disabled account records nothing new, but finishes the
    revocations of the keys its disable named (should a crash have stopped them halfway)."""
    authorize(ctx.principal, "serviceaccount:manage", cmd.tenant_id)
    scope = cmd.tenant_id or SYSTEM_TENANT
    older = await services.account_keys.active_keys(cmd.tenant_id, cmd.name) if services.account_keys else []
    result = await run(services, ctx, cmd, tenant_id=scope, stream_id=service_account.stream_id(cmd.name),
                       stream_type=service_account.STREAM_TYPE, fold=service_account.fold,
                       decide=lambda s: service_account.decide_disable(s, cmd.reason, older))
    state = await load(services, scope, service_account.stream_id(cmd.name), service_account.fold)
    if state.status == "disabled":  # not enabled again meanwhile by someone else
        await _revoke_keys(services, ctx, vault, scope, state.disabled_keys,
                           f"service account disabled: {cmd.reason.strip()}"[:500])
    return result


async def _revoke_keys(services: Services, ctx: CommandContext, vault: CredentialVault, scope: str,
                       keys: tuple[str, ...], revoked: str) -> None:
    for token_id in keys:  # every verifier first: from here on, no key of the account authenticates
        vault.delete_verifier(token_id)
    for token_id in keys:
        try:
            await run(services, ctx.without_key(), RevokeApiToken(token_id=token_id, reason=revoked), tenant_id=scope,
                      stream_id=api_token.stream_id(token_id), stream_type=api_token.STREAM_TYPE,
                      fold=api_token.fold, decide=lambda s: api_token.decide_revoke(s, revoked))
        except NotFound:  # recorded on the account, its own stream not yet written: its issuer revokes it
            continue


@refused_while_suspended("enabling lets keys be issued to the account again; disabling stays open")
async def enable_service_account(cmd: EnableServiceAccount, ctx: CommandContext, services: Services,
                                 vault: CredentialVault) -> CommandResult:
    """Let the account be issued keys again: the keys it had stay revoked. Before the account is enabled, its disable's
    revocations are finished (should a crash have stopped them), and so are those of keys the disable could not name
    that the read model lists: while an account is disabled no key is issued to it, so every key it lists is old."""
    authorize(ctx.principal, "serviceaccount:manage", cmd.tenant_id)
    scope = cmd.tenant_id or SYSTEM_TENANT
    state = await load(services, scope, service_account.stream_id(cmd.name), service_account.fold)
    service_account.decide_enable(state, cmd.reason)  # refuse (no such account, a bad reason) before revoking anything
    if state.status == "disabled":
        listed = await services.account_keys.active_keys(cmd.tenant_id, cmd.name) if services.account_keys else []
        await _revoke_keys(services, ctx, vault, scope, tuple(sorted({*state.disabled_keys, *listed})),
                           "service account disabled (revoked as it was enabled again)")
    return await run(services, ctx, cmd, tenant_id=scope, stream_id=service_account.stream_id(cmd.name),
                     stream_type=service_account.STREAM_TYPE, fold=service_account.fold,
                     decide=lambda s: service_account.decide_enable(s, cmd.reason))
