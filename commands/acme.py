"""ACME protocol commands (RFC 8555): accounts bound by EAB, orders, http-01 challenges, finalize, revokeCert.

The API has checked the request's JWS (domain/jose.py) and passes the account it names; these handlers check that
the order, authorization or certificate is that account's, then act. Issuance and revocation go through the
ordinary commands (``issue_certificate``, ``revoke_certificate``) as the account's principal (auth method "acme"),
so tenant policy, profiles, quotas, suspension and the audit trail apply as to any request.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

import msgspec

from commands import acme_eab, pki
from commands.authz import Principal, authorize
from commands.certificates import IssueCertificate, issue_certificate
from commands.ids import uuid7
from commands.revoke import RevokeCertificate, revoke_certificate
from commands.runtime import CommandContext, Services, load, rfc3339, run
from commands.tenants import active_tenant, allowed_while_suspended, refused_while_suspended
from domain import acme, certificate, jose, tenant
from domain.acme import AcmeProblem
from domain.certspec import DistinguishedName, SubjectAltNames
from domain.errors import DomainError

LIFETIME = timedelta(days=1)  # of an order and its authorizations
ACCOUNT_ROLE = "acme-account"
# RFC 5280 reason codes an ACME client may give (RFC 8555 7.6), by the names the revocation command takes.
REASONS = {0: "unspecified", 1: "key_compromise", 3: "affiliation_changed", 4: "superseded",
           5: "cessation_of_operation"}


def account_principal(tenant_id: str, account_id: str) -> Principal:
    return Principal(id=f"acme-account:{account_id}", auth_method="acme", roles=frozenset({ACCOUNT_ROLE}),
                     tenant_id=tenant_id)


def owner_tag(account_id: str) -> str:
    """The tag on every certificate an account obtains: revokeCert checks ownership with it, and a search finds
    them (``?tag=``)."""
    return f"acme-account:{account_id}"


async def require_tenant(services: Services, tenant_id: str) -> None:
    """The tenant of a directory exists (a suspended one's directory answers; its issuance does not)."""
    try:
        tenant.validate_tenant_id(tenant_id)
    except DomainError:
        raise AcmeProblem("malformed", f"no tenant {tenant_id}", field="tenant_id", status=404) from None
    if (await load(services, tenant_id, tenant.stream_id(tenant_id), tenant.fold)).status == "absent":
        raise AcmeProblem("malformed", f"no tenant {tenant_id}", field="tenant_id", status=404)


async def issued_certificate(services: Services, tenant_id: str, certificate_id: str) -> certificate.CertificateIssued:
    return certificate.require_exists(await load(services, tenant_id, certificate.stream_id(certificate_id),
                                                 certificate.fold), certificate_id)


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


async def load_account(services: Services, tenant_id: str, account_id: str) -> acme.Account:
    state = await load(services, tenant_id, acme.account_stream_id(account_id), acme.fold_account)
    if state.created is None:
        raise AcmeProblem("accountDoesNotExist", f"no account {account_id}", field="protected.kid")
    if state.status != "valid":
        raise AcmeProblem("unauthorized", f"account {account_id} is {state.status}", field="protected.kid",
                          status=403)
    return state


async def _account_key(services: Services, tenant_id: str, account: acme.Account) -> acme.EabKeyCreated:
    """The EAB key that opened ``account``: a revoked one stops its account from ordering and finalizing."""
    key_id = account.created.eab_key_id
    state = await load(services, tenant_id, acme.eab_stream_id(key_id), acme.fold_eab)
    if state.status == "revoked" or state.created is None:
        raise AcmeProblem("unauthorized", f"the external account key {key_id} of this account is revoked",
                          field="protected.kid", status=403)
    return state.created


async def key_owner(services: Services, tenant_id: str, key_thumbprint: str) -> str | None:
    """The account a key belongs (or belonged) to: its claim, or, for an account opened before keys were claimed,
    the account whose id is the key's thumbprint."""
    owner = await load(services, tenant_id, acme.key_stream_id(key_thumbprint), acme.fold_key)
    if owner is not None:
        return owner
    first = await load(services, tenant_id, acme.account_stream_id(key_thumbprint), acme.fold_account)
    return key_thumbprint if first.created is not None else None


async def account_of_key(services: Services, tenant_id: str, key_thumbprint: str) -> acme.Account | None:
    """The account that signs with this key now; a key it replaced is ``unauthorized`` (it opens nothing)."""
    owner = await key_owner(services, tenant_id, key_thumbprint)
    if owner is None:
        return None
    state = await load(services, tenant_id, acme.account_stream_id(owner), acme.fold_account)
    if state.created is None:
        return None  # a claim whose account was never written (a crash between the two): opened again
    if state.key_thumbprint != key_thumbprint:
        raise AcmeProblem("unauthorized", "this key was replaced by its account's key change and signs for nothing",
                          field="protected.jwk", status=403)
    return state


def _claim_key(services: Services, ctx: CommandContext, cmd: msgspec.Struct, tenant_id: str, key_thumbprint: str,
               account_id: str):
    return run(services, ctx, cmd, tenant_id=tenant_id, stream_id=acme.key_stream_id(key_thumbprint),
               stream_type=acme.KEY_STREAM_TYPE, fold=acme.fold_key,
               decide=lambda owner: acme.decide_claim_key(owner, account_id))


@refused_while_suspended("opens an account that can obtain certificates")
async def new_account(cmd: NewAccount, ctx: CommandContext, services: Services) -> Created:
    """RFC 8555 7.3: the account of ``jwk`` (200), or a new one bound to a usable EAB key (201)."""
    await active_tenant(services, cmd.tenant_id)
    key_thumbprint = jose.thumbprint(cmd.jwk)
    existing = await account_of_key(services, cmd.tenant_id, key_thumbprint)
    if existing is not None:
        await load_account(services, cmd.tenant_id, existing.created.account_id)
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
    await run(services, system, cmd, tenant_id=cmd.tenant_id, stream_id=acme.eab_stream_id(key_id),
              stream_type=acme.EAB_STREAM_TYPE, fold=acme.fold_eab,
              decide=lambda s: acme.decide_bind_eab(s, key_id, account_id))
    await _claim_key(services, system, cmd, cmd.tenant_id, key_thumbprint, account_id)
    opened = acme.AccountCreated(account_id=account_id, jwk=jose.public_jwk(cmd.jwk), contact=cmd.contact,
                                 eab_key_id=created.key_id)
    await run(services, system, cmd, tenant_id=cmd.tenant_id, stream_id=acme.account_stream_id(account_id),
              stream_type=acme.ACCOUNT_STREAM_TYPE, fold=acme.fold_account,
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
    account = await load_account(services, cmd.tenant_id, cmd.account_id)
    new_jwk = cmd.key_change.new_jwk
    new_thumbprint, old_thumbprint = jose.thumbprint(new_jwk), jose.thumbprint_or_none(cmd.key_change.old_jwk)
    acme.decide_change_key(account, old_thumbprint, new_thumbprint, new_jwk)  # refuse before claiming anything
    owner = await key_owner(services, cmd.tenant_id, new_thumbprint)
    if owner is not None and owner != cmd.account_id:
        raise acme.KeyInUse(owner)
    system = ctx.without_key()
    await _claim_key(services, system, cmd, cmd.tenant_id, new_thumbprint, cmd.account_id)
    await run(services, system, cmd, tenant_id=cmd.tenant_id, stream_id=acme.account_stream_id(cmd.account_id),
              stream_type=acme.ACCOUNT_STREAM_TYPE, fold=acme.fold_account,
              decide=lambda s: acme.decide_change_key(s, old_thumbprint, new_thumbprint, new_jwk))


class DeactivateAccount(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    account_id: str


@allowed_while_suspended("an account gives itself up")
async def deactivate_account(cmd: DeactivateAccount, ctx: CommandContext, services: Services) -> None:
    """RFC 8555 7.3.6: its pending authorizations first (so a retry after a crash finishes them), then the account:
    every later request signed for it is ``unauthorized``."""
    await load_account(services, cmd.tenant_id, cmd.account_id)
    if services.acme_authorizations is not None:
        now = services.clock.now()
        for authz_id in await services.acme_authorizations.open_authorizations(cmd.tenant_id, cmd.account_id, now):
            await _deactivate_authz(services, ctx, cmd, cmd.tenant_id, authz_id, "account_deactivated")
    await run(services, ctx, cmd, tenant_id=cmd.tenant_id, stream_id=acme.account_stream_id(cmd.account_id),
              stream_type=acme.ACCOUNT_STREAM_TYPE, fold=acme.fold_account,
              decide=lambda s: [] if s.status != "valid" else [acme.AccountDeactivated()])


def _deactivate_authz(services: Services, ctx: CommandContext, cmd: msgspec.Struct, tenant_id: str, authz_id: str,
                      reason: str):
    now = services.clock.now()
    return run(services, ctx.without_key(), cmd, tenant_id=tenant_id, stream_id=acme.authz_stream_id(authz_id),
               stream_type=acme.AUTHZ_STREAM_TYPE, fold=acme.fold_authz,
               decide=lambda s: acme.decide_deactivate_authz(s, now, reason))


class DeactivateAuthorization(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    account_id: str
    authz_id: str


@allowed_while_suspended("an account gives up an authorization")
async def deactivate_authorization(cmd: DeactivateAuthorization, ctx: CommandContext,
                                   services: Services) -> acme.Authorization:
    """RFC 8555 7.5.2: the account's pending or valid authorization is deactivated; its orders become invalid."""
    await owned_authz(services, cmd.tenant_id, cmd.account_id, cmd.authz_id)
    await _deactivate_authz(services, ctx, cmd, cmd.tenant_id, cmd.authz_id, "client")
    return await load(services, cmd.tenant_id, acme.authz_stream_id(cmd.authz_id), acme.fold_authz)


class NewOrder(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    account_id: str
    identifiers: Any


@refused_while_suspended("starts an issuance")
async def new_order(cmd: NewOrder, ctx: CommandContext, services: Services) -> str:
    """RFC 8555 7.4: an order for DNS names within the account's key's patterns, one authorization per name."""
    authorize(ctx.principal, "cert:issue", cmd.tenant_id)
    account = await load_account(services, cmd.tenant_id, cmd.account_id)
    key = await _account_key(services, cmd.tenant_id, account)
    names = acme.check_identifiers(cmd.identifiers, key.allowed_names)
    expires = rfc3339(services.clock.now() + LIFETIME)
    order_id, authz_ids = uuid7().replace("-", ""), []
    for name in names:
        authz_id = uuid7().replace("-", "")
        challenges = [acme.Challenge(challenge_id=uuid7().replace("-", ""), challenge_type=kind,
                                     token=secrets.token_urlsafe(32)) for kind in acme.CHALLENGE_TYPES]
        created = acme.AuthorizationCreated(authz_id=authz_id, order_id=order_id, account_id=cmd.account_id,
                                            identifier=name, expires=expires, challenges=challenges)
        await run(services, ctx.without_key(), cmd, tenant_id=cmd.tenant_id, stream_id=acme.authz_stream_id(authz_id),
                  stream_type=acme.AUTHZ_STREAM_TYPE, fold=acme.fold_authz, decide=lambda s, c=created: [c],
                  presume_new=True)
        authz_ids.append(authz_id)
    order = acme.OrderCreated(order_id=order_id, account_id=cmd.account_id, identifiers=names,
                              authorization_ids=authz_ids, expires=expires)
    await run(services, ctx.without_key(), cmd, tenant_id=cmd.tenant_id, stream_id=acme.order_stream_id(order_id),
              stream_type=acme.ORDER_STREAM_TYPE, fold=acme.fold_order, decide=lambda s: [order], presume_new=True)
    return order_id


async def owned_order(services: Services, tenant_id: str, account_id: str, order_id: str) -> acme.Order:
    """The account's order; another account's (or none) is 404, as if it did not exist."""
    state = await load(services, tenant_id, acme.order_stream_id(order_id), acme.fold_order)
    if state.created is None or state.created.account_id != account_id:
        raise AcmeProblem("malformed", f"no order {order_id} of this account", field="order_id", status=404)
    return state


async def owned_authz(services: Services, tenant_id: str, account_id: str, authz_id: str) -> acme.Authorization:
    state = await load(services, tenant_id, acme.authz_stream_id(authz_id), acme.fold_authz)
    if state.created is None or state.created.account_id != account_id:
        raise AcmeProblem("malformed", f"no authorization {authz_id} of this account", field="authz_id", status=404)
    return state


async def order_authorizations(services: Services, tenant_id: str, order: acme.Order) -> list[acme.Authorization]:
    return [await load(services, tenant_id, acme.authz_stream_id(a), acme.fold_authz)
            for a in order.created.authorization_ids]


class StartChallenge(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    account_id: str
    authz_id: str
    challenge_id: str


@allowed_while_suspended("proves control of a name; issuance itself is refused while suspended")
async def start_challenge(cmd: StartChallenge, ctx: CommandContext, services: Services) -> acme.Authorization:
    """RFC 8555 7.5.1: the client is ready; the validator (infra/acme) fetches the response in the background."""
    await owned_authz(services, cmd.tenant_id, cmd.account_id, cmd.authz_id)
    now = services.clock.now()
    await run(services, ctx.without_key(), cmd, tenant_id=cmd.tenant_id, stream_id=acme.authz_stream_id(cmd.authz_id),
              stream_type=acme.AUTHZ_STREAM_TYPE, fold=acme.fold_authz,
              decide=lambda s: acme.decide_start_challenge(s, cmd.challenge_id, now))
    return await load(services, cmd.tenant_id, acme.authz_stream_id(cmd.authz_id), acme.fold_authz)


class RecordChallenge(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    authz_id: str
    result: acme.ChallengeValidated | acme.ChallengeFailed


@allowed_while_suspended("the system records what a validation found")
async def record_challenge(cmd: RecordChallenge, ctx: CommandContext, services: Services) -> None:
    await run(services, ctx, cmd, tenant_id=cmd.tenant_id, stream_id=acme.authz_stream_id(cmd.authz_id),
              stream_type=acme.AUTHZ_STREAM_TYPE, fold=acme.fold_authz,
              decide=lambda s: acme.decide_challenge_result(s, cmd.result))


class FinalizeOrder(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    account_id: str
    order_id: str
    csr_der: bytes


@refused_while_suspended("signs a certificate")
async def finalize_order(cmd: FinalizeOrder, ctx: CommandContext, services: Services) -> acme.Order:
    """RFC 8555 7.4: a ready order's CSR, for exactly its names, issued by the ordinary issuance command."""
    order = await owned_order(services, cmd.tenant_id, cmd.account_id, cmd.order_id)
    if order.certificate_id is not None:
        return order
    account = await load_account(services, cmd.tenant_id, cmd.account_id)
    key = await _account_key(services, cmd.tenant_id, account)
    now = services.clock.now()
    status = acme.order_status(order, await order_authorizations(services, cmd.tenant_id, order), now)
    if status != "ready":
        raise AcmeProblem("orderNotReady", f"the order is {status}, not ready: every authorization must be valid",
                          field="order_id", status=403)
    csr_pem = pki.pem("CERTIFICATE REQUEST", cmd.csr_der)
    try:
        facts, _ = pki.crypto_of(services).parse_csr(csr_pem.encode())
    except DomainError as exc:
        raise AcmeProblem("badCSR", exc.detail, field="csr") from None
    names = order.created.identifiers
    acme.check_csr_names(names, facts.sans.dns, facts.subject.common_name if facts.subject else None)
    if facts.sans.ip or facts.sans.email or facts.sans.uri:
        raise AcmeProblem("badCSR", "the CSR may name DNS names only", field="csr")
    issue = IssueCertificate(tenant_id=cmd.tenant_id, ca_id=key.ca_id, profile=key.profile, csr=csr_pem,
                             subject=facts.subject or DistinguishedName(common_name=names[0]),
                             sans=SubjectAltNames(dns=tuple(names)), tags=["acme", owner_tag(cmd.account_id)])
    # The order's id as the Idempotency-Key: a finalize retried after a crash between the two appends gets the
    # certificate the first attempt issued, not a second one.
    issued = await issue_certificate(issue, CommandContext(principal=ctx.principal, correlation_id=ctx.correlation_id,
                                                           idempotency_key=f"acme-finalize-{cmd.order_id}"), services)
    done = acme.OrderIssued(certificate_id=issued.certificate_id, csr_sha256=hashlib.sha256(cmd.csr_der).hexdigest())
    await run(services, ctx.without_key(), cmd, tenant_id=cmd.tenant_id, stream_id=acme.order_stream_id(cmd.order_id),
              stream_type=acme.ORDER_STREAM_TYPE, fold=acme.fold_order, decide=lambda s: acme.decide_issued(s, done))
    return await owned_order(services, cmd.tenant_id, cmd.account_id, cmd.order_id)


class RevokeByAcme(msgspec.Struct, frozen=True, kw_only=True):
    """``account_id`` when the request is signed by an account (kid), else ``jwk``: the certificate's own key."""

    tenant_id: str
    certificate_der: bytes
    reason: int = 0
    account_id: str | None = None
    jwk: dict[str, Any] | None = None


@allowed_while_suspended("revocation must always work")
async def revoke(cmd: RevokeByAcme, ctx: CommandContext, services: Services) -> None:
    """RFC 8555 7.6: by the account that obtained it, or by a request signed with the certificate's key."""
    if cmd.reason not in REASONS:
        raise AcmeProblem("badRevocationReason", f"reason {cmd.reason} is not one of {sorted(REASONS)}",
                          field="reason")
    try:
        facts = pki.crypto_of(services).describe(cmd.certificate_der)
    except (DomainError, ValueError):
        raise AcmeProblem("malformed", "certificate is not a DER X.509 certificate", field="certificate") from None
    certificate_id = certificate.certificate_id(int(facts.serial_hex, 16))
    state = await load(services, cmd.tenant_id, certificate.stream_id(certificate_id), certificate.fold)
    issued = state.issued
    if issued is None or issued.facts.fingerprint_sha256 != facts.fingerprint_sha256:
        raise AcmeProblem("malformed", "this server did not issue that certificate in this tenant",
                          field="certificate", status=404)
    if cmd.account_id is not None:
        await load_account(services, cmd.tenant_id, cmd.account_id)
        if owner_tag(cmd.account_id) not in issued.tags:
            raise AcmeProblem("unauthorized", "the certificate was not obtained by this account", field="certificate",
                              status=403)
    elif cmd.jwk is None or jose.spki_sha256(cmd.jwk) != facts.public_key_sha256:
        raise AcmeProblem("unauthorized", "the request is signed neither by the account that obtained the certificate "
                          "nor by its key", field="protected.jwk", status=403)
    await revoke_certificate(RevokeCertificate(tenant_id=cmd.tenant_id, certificate_id=certificate_id,
                                               reason=REASONS[cmd.reason]), ctx.without_key(), services)
