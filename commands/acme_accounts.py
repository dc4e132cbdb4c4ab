"""ACME accounts (RFC 8555 7.3): opened with an external account binding, found by their key, key rollover
(7.3.5) and deactivation (7.3.6).

An account's id is its first key's thumbprint and never changes; each key it signs with is claimed by its own
stream, so one key never signs for two accounts, and a key it gave up signs for nothing.
"""

from __future__ import annotations

from typing import Any

import msgspec

from commands import acme as acme_commands
from commands import acme_eab
from commands.runtime import CommandContext, Services, load, run
from commands.tenants import active_tenant, allowed_while_suspended, refused_while_suspended
from domain import acme_account, acme_eab_key, jose
from domain.acme_problems import AcmeProblem


class NewAccount(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    jwk: dict[str, Any]
    contact: list[str]
    eab: Any
    url: str  # the newAccount URL, which the binding must name
    only_return_existing: bool = False


class Created(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    created: bool


async def key_owner(services: Services, tenant_id: str, key_thumbprint: str) -> str | None:
    """The account a key belongs (or belonged) to: its claim, or, for an account opened before keys were claimed,
    the account whose id is the key's thumbprint."""
    owner = await load(services, tenant_id, acme_account.key_stream_id(key_thumbprint), acme_account.fold_key)
    if owner is not None:
        return owner
    first = await load(services, tenant_id, acme_account.account_stream_id(key_thumbprint), acme_account.fold_account)
    return key_thumbprint if first.created is not None else None


async def account_of_key(services: Services, tenant_id: str, key_thumbprint: str) -> acme_account.Account | None:
    """The account that signs with this key now; a key it replaced is ``unauthorized`` (it opens nothing)."""
    owner = await key_owner(services, tenant_id, key_thumbprint)
    if owner is None:
        return None
    state = await load(services, tenant_id, acme_account.account_stream_id(owner), acme_account.fold_account)
    if state.created is None:
        return None  # a claim whose account was never written (a crash between the two): opened again
    if state.key_thumbprint != key_thumbprint:
        raise AcmeProblem("unauthorized", "this key was replaced by its account's key change and signs for nothing",
                          field="protected.jwk", status=403)
    return state


def _claim_key(services: Services, ctx: CommandContext, cmd: msgspec.Struct, tenant_id: str, key_thumbprint: str,
               account_id: str):
    return run(services, ctx, cmd, tenant_id=tenant_id, stream_id=acme_account.key_stream_id(key_thumbprint),
               stream_type=acme_account.KEY_STREAM_TYPE, fold=acme_account.fold_key,
               decide=lambda owner: acme_account.decide_claim_key(owner, account_id))


@refused_while_suspended("opens an account that can obtain certificates")
async def new_account(cmd: NewAccount, ctx: CommandContext, services: Services) -> Created:
    """RFC 8555 7.3: the account of ``jwk`` (200), or a new one bound to a usable EAB key (201)."""
    await active_tenant(services, cmd.tenant_id)
    key_thumbprint = jose.thumbprint(cmd.jwk)
    existing = await account_of_key(services, cmd.tenant_id, key_thumbprint)
    if existing is not None:
        await acme_commands.load_account(services, cmd.tenant_id, existing.created.account_id)
        return Created(id=existing.created.account_id, created=False)
    if cmd.only_return_existing:
        raise AcmeProblem("accountDoesNotExist", "no account has this key", field="protected.jwk")
    if cmd.eab is None:
        raise AcmeProblem("externalAccountRequired", "this server requires an external account binding: ask the "
                          "tenant's admin for an EAB key", field="externalAccountBinding")
    key_id = jose.eab_key_id(cmd.eab)
    if not acme_eab.KEY_ID.fullmatch(key_id):
        raise AcmeProblem("unauthorized", "no such external account key", field="externalAccountBinding.kid",
                          status=403)
    created, material = await acme_eab.hmac_key(services, cmd.tenant_id, key_id)
    jose.verify_eab(cmd.eab, account_jwk=cmd.jwk, url=cmd.url, hmac_key=material)
    system, account_id = ctx.without_key(), key_thumbprint
    await run(services, system, cmd, tenant_id=cmd.tenant_id, stream_id=acme_eab_key.eab_stream_id(key_id),
              stream_type=acme_eab_key.EAB_STREAM_TYPE, fold=acme_eab_key.fold_eab,
              decide=lambda s: acme_eab_key.decide_bind_eab(s, key_id, account_id))
    await _claim_key(services, system, cmd, cmd.tenant_id, key_thumbprint, account_id)
    opened = acme_account.AccountCreated(account_id=account_id, jwk=jose.public_jwk(cmd.jwk), contact=cmd.contact,
                                         eab_key_id=created.key_id)
    await run(services, system, cmd, tenant_id=cmd.tenant_id, stream_id=acme_account.account_stream_id(account_id),
              stream_type=acme_account.ACCOUNT_STREAM_TYPE, fold=acme_account.fold_account,
              decide=lambda s: [] if s.created is not None else [opened])
    return Created(id=account_id, created=True)


class ChangeAccountKey(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    account_id: str
    key_change: jose.KeyChange  # the inner JWS, verified with the new key


@allowed_while_suspended("an account replaces a key it may have lost control of")
async def change_key(cmd: ChangeAccountKey, ctx: CommandContext, services: Services) -> None:
    """RFC 8555 7.3.5: the account signs with the new key from now on; the old one signs for nothing. The account
    keeps its id, so its orders and certificates (tagged with the id) stay its own."""
    account = await acme_commands.load_account(services, cmd.tenant_id, cmd.account_id)
    new_jwk = cmd.key_change.new_jwk
    new_thumbprint, old_thumbprint = jose.thumbprint(new_jwk), jose.thumbprint_or_none(cmd.key_change.old_jwk)
    acme_account.decide_change_key(account, old_thumbprint, new_thumbprint, new_jwk)  # refuse before claiming anything
    owner = await key_owner(services, cmd.tenant_id, new_thumbprint)
    if owner is not None and owner != cmd.account_id:
        raise acme_account.KeyInUse(owner)
    system = ctx.without_key()
    await _claim_key(services, system, cmd, cmd.tenant_id, new_thumbprint, cmd.account_id)
    await run(services, system, cmd, tenant_id=cmd.tenant_id, stream_id=acme_account.account_stream_id(cmd.account_id),
              stream_type=acme_account.ACCOUNT_STREAM_TYPE, fold=acme_account.fold_account,
              decide=lambda s: acme_account.decide_change_key(s, old_thumbprint, new_thumbprint, new_jwk))


class DeactivateAccount(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    account_id: str


@allowed_while_suspended("an account gives itself up")
async def deactivate_account(cmd: DeactivateAccount, ctx: CommandContext, services: Services) -> None:
    """RFC 8555 7.3.6: its pending authorizations first (so a retry after a crash finishes them), then the account:
    every later request signed for it is ``unauthorized``."""
    await acme_commands.load_account(services, cmd.tenant_id, cmd.account_id)
    if services.acme_authorizations is not None:
        now = services.clock.now()
        for authz_id in await services.acme_authorizations.open_authorizations(cmd.tenant_id, cmd.account_id, now):
            await acme_commands.deactivate_authz_stream(services, ctx, cmd, cmd.tenant_id, authz_id, "account_deactivated")
    await run(services, ctx, cmd, tenant_id=cmd.tenant_id, stream_id=acme_account.account_stream_id(cmd.account_id),
              stream_type=acme_account.ACCOUNT_STREAM_TYPE, fold=acme_account.fold_account,
              decide=lambda s: [] if s.status != "valid" else [acme_account.AccountDeactivated()])
