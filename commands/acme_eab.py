"""ACME external account binding keys: a tenant admin creates one (the HMAC key shown once) and revokes it.

The HMAC key is made here, stored encrypted in the key vault (purpose "acme-eab") and named in events only by
``secret_ref``. A key names the issuing CA and profile its account's certificates get, and optionally the names it
may ask for (within the tenant's policy, which issuance checks as always). It binds one account, once.
"""

from __future__ import annotations

import base64
import re
import secrets
from typing import Annotated

import msgspec

from commands.authz import authorize
from commands.cas import CaId
from commands.certificates import ProfileName, issuing_context
from commands.ids import uuid7
from commands.pki import vault_of
from commands.runtime import CommandContext, CommandResult, Services, load, replayed, run
from commands.tenants import TenantId, allowed_while_suspended, refused_while_suspended
from domain import acme_eab_key
from domain.errors import NotFound

SECRET_PURPOSE = "acme-eab"
SECRET_ALGORITHM = "hmac-sha256"
KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
KeyId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Pattern = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
Patterns = Annotated[list[Pattern], msgspec.Meta(max_length=acme_eab_key.MAX_PATTERNS)]
Description = Annotated[str, msgspec.Meta(max_length=200)]


class CreateEabKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: TenantId
    ca_id: CaId
    profile: ProfileName = "cassandra-node"
    allowed_names: Patterns = []
    description: Description = ""


class RevokeEabKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: TenantId
    key_id: KeyId
    reason: Annotated[str, msgspec.Meta(max_length=200)] = "revoked"


class NewEabKey(msgspec.Struct, frozen=True, kw_only=True):
    """The key id and its HMAC key (base64url, as certbot's --eab-hmac-key takes it): shown this once (None when a
    retry replays the first answer)."""

    key_id: str
    hmac_key: str | None
    result: CommandResult


def _run(services: Services, ctx: CommandContext, cmd: msgspec.Struct, tenant_id: str, key_id: str, decide):
    return run(services, ctx, cmd, tenant_id=tenant_id, stream_id=acme_eab_key.eab_stream_id(key_id),
               stream_type=acme_eab_key.EAB_STREAM_TYPE, fold=acme_eab_key.fold_eab, decide=decide)


@refused_while_suspended("hands out a credential that opens an ACME account")
async def create_eab_key(cmd: CreateEabKey, ctx: CommandContext, services: Services) -> NewEabKey:
    authorize(ctx.principal, "acme:manage", cmd.tenant_id)
    if prior := await replayed(services, ctx, cmd, cmd.tenant_id):
        return NewEabKey(key_id=prior.stream_id.removeprefix("acme-eab-"), hmac_key=None, result=prior)
    patterns = acme_eab_key.check_allowed_names(cmd.allowed_names)
    await issuing_context(services, cmd.tenant_id, cmd.ca_id, cmd.profile)  # the CA issues, the profile exists
    material = secrets.token_bytes(32)
    secret_ref = await vault_of(services).put(cmd.tenant_id, material, algorithm=SECRET_ALGORITHM,
                                              purpose=SECRET_PURPOSE)
    key_id = uuid7().replace("-", "")
    created = acme_eab_key.EabKeyCreated(key_id=key_id, ca_id=cmd.ca_id, profile=cmd.profile, allowed_names=patterns,
                                         description=cmd.description, secret_ref=secret_ref)
    result = await _run(services, ctx, cmd, cmd.tenant_id, key_id, lambda s: acme_eab_key.decide_create_eab(s, created))
    encoded = base64.urlsafe_b64encode(material).rstrip(b"=").decode("ascii")
    return NewEabKey(key_id=result.stream_id.removeprefix("acme-eab-"),
                     hmac_key=None if result.replayed else encoded, result=result)


@allowed_while_suspended("takes a credential away")
async def revoke_eab_key(cmd: RevokeEabKey, ctx: CommandContext, services: Services) -> CommandResult:
    """A revoked key opens no account; an account it opened places no more orders and finalizes none."""
    authorize(ctx.principal, "acme:manage", cmd.tenant_id)
    if not KEY_ID.fullmatch(cmd.key_id):
        raise NotFound("eab_key_not_found", f"no EAB key {cmd.key_id}", field="key_id")
    return await _run(services, ctx, cmd, cmd.tenant_id, cmd.key_id,
                      lambda s: acme_eab_key.decide_revoke_eab(s, cmd.key_id, cmd.reason))


async def hmac_key(services: Services, tenant_id: str, key_id: str) -> tuple[acme_eab_key.EabKeyCreated, bytes]:
    """What a newAccount checks its binding with: the usable key's record and its HMAC key from the vault."""
    state = await load(services, tenant_id, acme_eab_key.eab_stream_id(key_id), acme_eab_key.fold_eab)
    created = acme_eab_key.usable_eab(state, key_id)
    return created, await vault_of(services).get(tenant_id, created.secret_ref)
