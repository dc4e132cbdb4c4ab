"""ACME protocol commands (RFC 8555): orders, authorizations and their challenges, finalize, revokeCert; what
every ACME command checks of the signing account (accounts themselves: commands/acme_accounts.py).

The API has checked the request's JWS (domain/jose.py) and passes the account it names; these handlers check that
the order, authorization or certificate is that account's, then act. Issuance and revocation go through the
ordinary commands (``issue_certificate``, ``revoke_certificate``) as the account's principal (auth method "acme"),
so tenant policy, profiles, quotas, suspension and the audit trail apply as to any request.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any

import msgspec

from commands import pki
from commands.authz import Principal, authorize
from commands.certificates import IssueCertificate, issue_certificate, issuing_context
from commands.ids import uuid7
from commands.revoke import RevokeCertificate, revoke_certificate
from commands.runtime import CommandContext, Services, load, rfc3339, run
from commands.tenants import allowed_while_suspended, refused_while_suspended
from domain import (acme_account, acme_authz, acme_challenges, acme_eab_key, acme_order, acme_requests, certificate,
                    jose, tenant, tenant_policy)
from domain.acme_problems import AcmeProblem
from domain.certspec import DistinguishedName, SubjectAltNames
from domain.errors import DomainError
from domain.events import Payload

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


async def load_account(services: Services, tenant_id: str, account_id: str) -> acme_account.Account:
    state = await load(services, tenant_id, acme_account.account_stream_id(account_id), acme_account.fold_account)
    if state.created is None:
        raise AcmeProblem("accountDoesNotExist", f"no account {account_id}", field="protected.kid")
    if state.status != "valid":
        raise AcmeProblem("unauthorized", f"account {account_id} is {state.status}", field="protected.kid",
                          status=403)
    return state


async def _account_key(services: Services, tenant_id: str, account: acme_account.Account) -> acme_eab_key.EabKeyCreated:
    """The EAB key that opened ``account``: a revoked one stops its account from ordering and finalizing."""
    key_id = account.created.eab_key_id
    state = await load(services, tenant_id, acme_eab_key.eab_stream_id(key_id), acme_eab_key.fold_eab)
    if state.status == "revoked" or state.created is None:
        raise AcmeProblem("unauthorized", f"the external account key {key_id} of this account is revoked",
                          field="protected.kid", status=403)
    return state.created


class NewOrder(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    account_id: str
    identifiers: Any
    not_before: Any = None
    not_after: Any = None


@refused_while_suspended("starts an issuance")
async def new_order(cmd: NewOrder, ctx: CommandContext, services: Services) -> str:
    """RFC 8555 7.4: an order for DNS names and IP addresses (RFC 8738) within the account's key's patterns and
    networks, one authorization per identifier. An address must also be one the tenant policy and the key's profile
    allow (as at issuance, which checks them again)."""
    authorize(ctx.principal, "cert:issue", cmd.tenant_id)
    account = await load_account(services, cmd.tenant_id, cmd.account_id)
    key = await _account_key(services, cmd.tenant_id, account)
    names, ips = acme_requests.check_identifiers(cmd.identifiers, key.allowed_names,
                                                 wildcard_problem=await _wildcard_problem(services, cmd.tenant_id))
    if ips:
        await _check_ips(services, cmd.tenant_id, key, ips)
    not_after = await _not_after(services, cmd, key)
    # a challenge not validated by then expires, and the validator stops sending it (docs/operations.md, "ACME")
    expires = rfc3339(services.clock.now() + services.acme_authorization_lifetime)
    order_id, authz_ids = uuid7().replace("-", ""), []
    for name, kind in [*((n, "dns") for n in names), *((a, "ip") for a in ips)]:
        authz_id = uuid7().replace("-", "")
        challenges = [acme_authz.Challenge(challenge_id=uuid7().replace("-", ""), challenge_type=challenge_type,
                                           token=secrets.token_urlsafe(32))
                      for challenge_type in acme_challenges.offered(name, dns01=services.acme_dns01, ip=kind == "ip")]
        created = acme_authz.AuthorizationCreated(authz_id=authz_id, order_id=order_id, account_id=cmd.account_id,
                                                  identifier=name, expires=expires, challenges=challenges,
                                                  identifier_type=kind)
        await run(services, ctx.without_key(), cmd, tenant_id=cmd.tenant_id,
                  stream_id=acme_authz.authz_stream_id(authz_id), stream_type=acme_authz.AUTHZ_STREAM_TYPE,
                  fold=acme_authz.fold_authz, decide=lambda s, c=created: [c], presume_new=True)
        authz_ids.append(authz_id)
    order = acme_order.OrderCreated(order_id=order_id, account_id=cmd.account_id, identifiers=names,
                                    authorization_ids=authz_ids, expires=expires, not_after=not_after,
                                    ip_identifiers=ips)
    await run(services, ctx.without_key(), cmd, tenant_id=cmd.tenant_id, stream_id=acme_order.order_stream_id(order_id),
              stream_type=acme_order.ORDER_STREAM_TYPE, fold=acme_order.fold_order, decide=lambda s: [order],
              presume_new=True)
    return order_id


async def _wildcard_problem(services: Services, tenant_id: str, *, finalizing: bool = False) -> str | None:
    """Why an ACME order may not name a wildcard now, or None: dns-01 alone proves one, and the tenant's policy
    must allow them to ACME orders (``allow_wildcards`` true; the profile and the rest of the policy still apply
    at issuance)."""
    if not finalizing and not services.acme_dns01:
        return "a wildcard is proved by dns-01 alone, which this server does not offer (no CSM_ACME_DNS_RESOLVERS)"
    state = await load(services, tenant_id, tenant.stream_id(tenant_id), tenant.fold)
    if not tenant_policy.wildcards_allowed(state.policy, acme=True):
        return "the tenant policy does not allow wildcard names to ACME orders (allow_wildcards is not true)"
    return None


async def _check_ips(services: Services, tenant_id: str, key: acme_eab_key.EabKeyCreated, ips: list[str]) -> None:
    """IP identifiers need a profile that allows IP SANs and addresses the tenant policy allows
    (``allowed_ip_networks``), as API issuance does: refused when ordered, not after the client proved them."""
    where = await issuing_context(services, tenant_id, key.ca_id, key.profile)
    if "ip" not in where.profile.allowed_san_types:
        raise AcmeProblem("rejectedIdentifier", f"profile {key.profile} does not allow IP addresses "
                          f"({', '.join(sorted(where.profile.allowed_san_types))} only)", field="identifiers")
    for violation in tenant_policy.tenant_name_violations(SubjectAltNames(ip=tuple(ips)), None, where.tenant.policy):
        raise AcmeProblem("rejectedIdentifier", f"{violation.message} (tenant policy, rule {violation.rule})",
                          field="identifiers")


async def _not_after(services: Services, cmd: NewOrder, key: acme_eab_key.EabKeyCreated) -> str | None:
    """The order's notAfter, checked against the longest validity the key's profile and the tenant policy allow."""
    if cmd.not_before is None and cmd.not_after is None:
        return None
    where = await issuing_context(services, cmd.tenant_id, key.ca_id, key.profile)
    limits = [where.profile.max_validity_days, where.tenant.policy.max_validity_days]
    return acme_requests.check_validity(cmd.not_before, cmd.not_after, services.clock.now(),
                                        min(limit for limit in limits if limit is not None))


async def owned_order(services: Services, tenant_id: str, account_id: str, order_id: str) -> acme_order.Order:
    """The account's order; another account's (or none) is 404, as if it did not exist."""
    state = await load(services, tenant_id, acme_order.order_stream_id(order_id), acme_order.fold_order)
    if state.created is None or state.created.account_id != account_id:
        raise AcmeProblem("malformed", f"no order {order_id} of this account", field="order_id", status=404)
    return state


async def owned_authz(services: Services, tenant_id: str, account_id: str, authz_id: str) -> acme_authz.Authorization:
    state = await load(services, tenant_id, acme_authz.authz_stream_id(authz_id), acme_authz.fold_authz)
    if state.created is None or state.created.account_id != account_id:
        raise AcmeProblem("malformed", f"no authorization {authz_id} of this account", field="authz_id", status=404)
    return state


async def order_authorizations(services: Services, tenant_id: str,
                               order: acme_order.Order) -> list[acme_authz.Authorization]:
    return [await load(services, tenant_id, acme_authz.authz_stream_id(a), acme_authz.fold_authz)
            for a in order.created.authorization_ids]


def deactivate_authz_stream(services: Services, ctx: CommandContext, cmd: msgspec.Struct, tenant_id: str, authz_id: str,
                      reason: str):
    now = services.clock.now()
    return run(services, ctx.without_key(), cmd, tenant_id=tenant_id, stream_id=acme_authz.authz_stream_id(authz_id),
               stream_type=acme_authz.AUTHZ_STREAM_TYPE, fold=acme_authz.fold_authz,
               decide=lambda s: acme_authz.decide_deactivate_authz(s, now, reason))


class DeactivateAuthorization(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    account_id: str
    authz_id: str


@allowed_while_suspended("an account gives up an authorization")
async def deactivate_authorization(cmd: DeactivateAuthorization, ctx: CommandContext,
                                   services: Services) -> acme_authz.Authorization:
    """RFC 8555 7.5.2: the account's pending or valid authorization is deactivated; its orders become invalid."""
    await owned_authz(services, cmd.tenant_id, cmd.account_id, cmd.authz_id)
    await deactivate_authz_stream(services, ctx, cmd, cmd.tenant_id, cmd.authz_id, "client")
    return await load(services, cmd.tenant_id, acme_authz.authz_stream_id(cmd.authz_id), acme_authz.fold_authz)


class StartChallenge(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    account_id: str
    authz_id: str
    challenge_id: str


@allowed_while_suspended("proves control of a name; issuance itself is refused while suspended")
async def start_challenge(cmd: StartChallenge, ctx: CommandContext, services: Services) -> acme_authz.Authorization:
    """RFC 8555 7.5.1: the client is ready; the validator (infra/acme) fetches the response in the background."""
    await owned_authz(services, cmd.tenant_id, cmd.account_id, cmd.authz_id)
    now = services.clock.now()
    await run(services, ctx.without_key(), cmd, tenant_id=cmd.tenant_id,
              stream_id=acme_authz.authz_stream_id(cmd.authz_id), stream_type=acme_authz.AUTHZ_STREAM_TYPE,
              fold=acme_authz.fold_authz, decide=lambda s: acme_authz.decide_start_challenge(s, cmd.challenge_id, now))
    return await load(services, cmd.tenant_id, acme_authz.authz_stream_id(cmd.authz_id), acme_authz.fold_authz)


class RecordChallenge(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    authz_id: str
    result: acme_authz.ChallengeValidated | acme_authz.ChallengeFailed


@allowed_while_suspended("the system records what a validation found")
async def record_challenge(cmd: RecordChallenge, ctx: CommandContext, services: Services) -> list[Payload]:
    """What was recorded: the result, or the authorization's expiry if it came too late, or nothing."""
    now, recorded = services.clock.now(), []

    def decide(state: acme_authz.Authorization) -> list[Payload]:
        recorded[:] = acme_authz.decide_challenge_result(state, cmd.result, now)
        return list(recorded)

    await run(services, ctx, cmd, tenant_id=cmd.tenant_id, stream_id=acme_authz.authz_stream_id(cmd.authz_id),
              stream_type=acme_authz.AUTHZ_STREAM_TYPE, fold=acme_authz.fold_authz, decide=decide)
    return recorded


class ExpireAuthorization(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    authz_id: str


@allowed_while_suspended("the system ends an authorization whose validation never came back")
async def expire_authorization(cmd: ExpireAuthorization, ctx: CommandContext, services: Services) -> bool:
    """A processing challenge past its authorization's expiry ends (``acme.authorization_expired``); whether it did."""
    now = services.clock.now()
    result = await run(services, ctx, cmd, tenant_id=cmd.tenant_id, stream_id=acme_authz.authz_stream_id(cmd.authz_id),
                       stream_type=acme_authz.AUTHZ_STREAM_TYPE, fold=acme_authz.fold_authz,
                       decide=lambda s: acme_authz.decide_expire(s, now))
    return result.changed


class FinalizeOrder(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    account_id: str
    order_id: str
    csr_der: bytes


@refused_while_suspended("signs a certificate")
async def finalize_order(cmd: FinalizeOrder, ctx: CommandContext, services: Services) -> acme_order.Order:
    """RFC 8555 7.4: a ready order's CSR, for exactly its names, issued by the ordinary issuance command."""
    order = await owned_order(services, cmd.tenant_id, cmd.account_id, cmd.order_id)
    if order.certificate_id is not None:
        return order
    account = await load_account(services, cmd.tenant_id, cmd.account_id)
    key = await _account_key(services, cmd.tenant_id, account)
    now = services.clock.now()
    status = acme_order.order_status(order, await order_authorizations(services, cmd.tenant_id, order), now)
    if status != "ready":
        raise AcmeProblem("orderNotReady", f"the order is {status}, not ready: every authorization must be valid",
                          field="order_id", status=403)
    csr_pem = pki.pem("CERTIFICATE REQUEST", cmd.csr_der)
    try:
        facts, _ = pki.crypto_of(services).parse_csr(csr_pem.encode())
    except DomainError as exc:
        raise AcmeProblem("badCSR", exc.detail, field="csr") from None
    names, ips = order.created.identifiers, order.created.ip_identifiers
    if any(map(acme_challenges.is_wildcard, names)) and (
            problem := await _wildcard_problem(services, cmd.tenant_id, finalizing=True)):
        raise AcmeProblem("rejectedIdentifier", problem, field="identifiers")  # the policy changed since the order
    common_name = facts.subject.common_name if facts.subject else None
    acme_requests.check_csr_names(names, facts.sans.dns, common_name, order_ips=ips, csr_ips=facts.sans.ip)
    if facts.sans.email or facts.sans.uri:
        raise AcmeProblem("badCSR", "the CSR may name DNS names and IP addresses only", field="csr")
    if facts.public_key_sha256 == jose.spki_sha256(account.jwk):
        raise AcmeProblem("badCSR", "the CSR's key is the account key: certify another key", field="csr")
    validity_days = None
    if order.created.not_after is not None:
        validity_days = acme_requests.validity_days_until(datetime.fromisoformat(order.created.not_after), now)
        if validity_days < 1:
            raise AcmeProblem("malformed", "the order's notAfter is less than a day away now", field="notAfter")
    issue = IssueCertificate(tenant_id=cmd.tenant_id, ca_id=key.ca_id, profile=key.profile, csr=csr_pem,
                             validity_days=validity_days,
                             # only what validation proved: the CSR's CN (one of the order's identifiers), never
                             # its O, OU, C, L, ST or emailAddress
                             subject=DistinguishedName(common_name=acme_requests.subject_name(common_name, names, ips)),
                             sans=SubjectAltNames(dns=tuple(names), ip=tuple(ips)),
                             tags=["acme", owner_tag(cmd.account_id)])
    # The order's id as the Idempotency-Key: a finalize retried after a crash between the two appends gets the
    # certificate the first attempt issued, not a second one.
    issued = await issue_certificate(issue, CommandContext(principal=ctx.principal, correlation_id=ctx.correlation_id,
                                                           idempotency_key=f"acme-finalize-{cmd.order_id}"), services)
    done = acme_order.OrderIssued(certificate_id=issued.certificate_id,
                                  csr_sha256=hashlib.sha256(cmd.csr_der).hexdigest())
    await run(services, ctx.without_key(), cmd, tenant_id=cmd.tenant_id,
              stream_id=acme_order.order_stream_id(cmd.order_id), stream_type=acme_order.ORDER_STREAM_TYPE,
              fold=acme_order.fold_order, decide=lambda s: acme_order.decide_issued(s, done))
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
