"""A CA's key rollover: routine (a root's link certificates join its old and new keys), or a root's compromise
rollover away from a stolen key (no link, the key blocked, the root's earlier certificates withdrawn from trust and
its links revoked), and what a compromise rollover left to re-issue (``read_compromise``)."""

from __future__ import annotations

import logging
from datetime import datetime

import msgspec

from commands import ca_links, compromise_cascade, compromised_keys, crl, ocsp, pki
from commands.authz import authorize
from commands.cas import (AlgorithmName, CaId, Days, Reason, Strict, ca_certificate, keep_key, load_ca, new_key, sign,
                          spec_of)
from commands.ports import Reissue
from commands.runtime import CommandContext, CommandResult, Services, replayed, run
from commands.tenants import TenantId, allowed_while_suspended, refused_while_suspended
from domain import ca, compromise, revocation, spec_builders
from domain.compromised_keys import KeyCompromiseRecorded
from domain.errors import DomainError

log = logging.getLogger(__name__)


class RolloverCaKey(Strict):
    """``compromised``: a root's key was stolen (``rollover_ca_key``); ``invalidity_date``, only then: since when."""

    tenant_id: TenantId
    ca_id: CaId
    reason: Reason
    algorithm: AlgorithmName | None = None  # None: the CA's current algorithm
    validity_days: Days | None = None
    compromised: bool = False
    invalidity_date: datetime | None = None


class RolledOver(CommandResult, frozen=True, kw_only=True):
    """A rollover's result; after a compromise rollover also what is left to issue again under a trusted key (None
    where nothing could count it, and for a routine rollover)."""

    compromised: bool = False
    reissue: Reissue | None = None


@refused_while_suspended("makes a CA key and signs its certificate")
async def rollover_ca_key(cmd: RolloverCaKey, ctx: CommandContext, services: Services) -> RolledOver:
    """A new key and certificate for a CA; the old certificate stays valid (overlap) until it expires. A root's
    rollover also signs its link certificates (``commands.ca_links``); an offline root cannot roll over here (its
    key is not held: ``require_active``), and an intermediate's parent signs its new certificate.

    ``compromised`` (a root only): the old key was stolen. No link certificate is signed, and the old key is
    recorded on the tenant's compromised-keys stream first, as a key_compromise revocation records its key
    (commands/revoke.py): no transaction spans the two streams, and a crash between them leaves the key blocked and
    the CA on it, which a retry rolls over; the other order could leave a rolled-over CA whose stolen key may be
    certified again. Chains and truststores drop the CA's keys until then (``domain.ca.CaKeyRolledOver``); what
    they signed is counted for re-issuance, and every link certificate the root signed until then is revoked
    key_compromise in the same append as the rollover (``domain.compromise``): the earlier keys' CRLs and OCSP
    answers then tell relying parties that still trust them not to follow a link to the stolen key. Before that
    append, once the key is blocked, the cross-certificates other CAs here issued for the stolen key are revoked
    key_compromise on their issuers' streams (``compromise_cascade``): a relying party that trusts such a CA would
    otherwise follow one to the thief's chains. A retry revokes only what is still trusted."""
    authorize(ctx.principal, "ca:manage", cmd.tenant_id)
    if cmd.invalidity_date is not None and not cmd.compromised:
        raise DomainError("compromised_only", "invalidity_date says since when a key was compromised: give it with "
                          "compromised true", field="invalidity_date")
    if prior := await replayed(services, ctx, cmd, cmd.tenant_id):
        return await _rolled_over(services, cmd, prior)
    state = await _may_roll_over(services, cmd)
    rolled = await _new_key_certified(services, cmd, state)
    if cmd.compromised:  # before the commit point: a crash after it leaves the key blocked
        assert state.current is not None
        await compromised_keys.record(services, ctx.without_key(), cmd, cmd.tenant_id, compromised_keys.halves(
            services, state.current.certificate_pem, KeyCompromiseRecorded(
                public_key_sha256=state.current.facts.public_key_sha256, reason="key_compromise",
                reported_at=services.clock.now(), invalidity_date=cmd.invalidity_date, subject_ca_id=cmd.ca_id,
                through="rollover")))
        # Other CAs' cross-certificates of the stolen key (its own links are revoked in the rollover's append)
        await compromise_cascade.revoke_ca_certificates(
            services, ctx, cmd, cmd.tenant_id, cmd.ca_id, {state.current.facts.public_key_sha256},
            invalidity_date=cmd.invalidity_date, links=False)
    now = services.clock.now()
    result = await run(services, ctx, cmd, tenant_id=cmd.tenant_id, stream_id=ca.stream_id(cmd.ca_id),
                       stream_type=ca.STREAM_TYPE, fold=revocation.fold,
                       decide=lambda s: compromise.decide_rollover(s, cmd.ca_id, rolled, now=now,
                                                                   invalidity_date=cmd.invalidity_date))
    if cmd.compromised and state.links:  # its links were revoked
        await _publish_after(services, cmd.tenant_id, cmd.ca_id)
    return await _rolled_over(services, cmd, result)


async def _publish_after(services: Services, tenant_id: str, ca_id: str) -> None:
    """The revoked links onto every key's CRL now (best effort: a CRL is published on demand too); OCSP answers
    move with the stream's revocations (``ocsp.ResponseCache``), and this process's are dropped at once."""
    ocsp.RESPONSES.invalidate(ca_id)
    try:
        await crl.publish(services, tenant_id, ca_id, only_if_due=True)
    except Exception:
        log.exception("CA %s: no CRL published after its compromise rollover; it is published on demand", ca_id)


async def _may_roll_over(services: Services, cmd: RolloverCaKey) -> ca.CertificateAuthority:
    """The CA, if it may roll over in the mode asked (``ca.check_rollover``), before anything is made or recorded."""
    state = await load_ca(services, cmd.tenant_id, cmd.ca_id)
    current = state.current.facts if state.current else None
    blocked = (await compromised_keys.load_keys(services, cmd.tenant_id)).keys
    reported = current is not None and state.current is not None and (current.public_key_sha256 in blocked or (
        compromised_keys.alternative_key_sha256(services, state.current.certificate_pem) in blocked))
    ca.check_rollover(state, cmd.ca_id, compromised=cmd.compromised, key_reported=reported)
    if cmd.invalidity_date is not None and current is not None:
        revocation.check_invalidity_date(cmd.invalidity_date, now=services.clock.now(), not_before=current.not_before)
    return state


async def _new_key_certified(services: Services, cmd: RolloverCaKey,
                             state: ca.CertificateAuthority) -> ca.CaKeyRolledOver:
    """The CA's new key, kept in the vault, and its certificate (self-signed, or by the parent's current key); a
    root's link certificates with them."""
    assert state.current is not None
    current = state.current.facts
    parent = None
    if state.kind == "intermediate":
        parent = await load_ca(services, cmd.tenant_id, state.parent_id or "", "parent_id")
        ca.require_active(parent, parent.ca_id, "parent_id")
        await pki.require_trusted_chain(services, cmd.tenant_id, parent, "parent_id")  # its parent's key first
    algorithm = cmd.algorithm or state.algorithm
    ca.require_token_algorithm(state.key_storage, algorithm, "algorithm")  # a CA on the token stays there
    days = cmd.validity_days or spec_builders.default_validity_days(
        max(1, (current.not_after - current.not_before).days), now=services.clock.now(),
        issuer_not_after=parent.current.facts.not_after if parent else None)  # as long as the last, within the parent
    spec = spec_of(services, subject=state.subject, validity_days=days, path_length=state.path_length,
                 name_constraints=state.name_constraints, issuer=parent, algorithm=algorithm)
    crypto = pki.crypto_of(services)
    key = await new_key(services, algorithm, key_storage=state.key_storage, tenant_id=cmd.tenant_id,
                         ca_id=state.ca_id)
    der = await sign(services, spec, crypto.public_keys(key), cmd.tenant_id, parent, self_key=key)
    key_ref = await keep_key(services, cmd.tenant_id, key, algorithm)
    certificate = ca_certificate(services, der, parent.ca_id if parent else None, key_ref)
    # A root's relying parties hold its certificate itself: link its old and new keys (an intermediate's parent
    # certifies each of its keys, so chains to either key already end at a root they trust). Not away from a
    # stolen key: NewWithOld is the thief's signature as much as ours, and OldWithNew would vouch for the thief.
    links = await ca_links.link_certificates(services, cmd.tenant_id, state, key, certificate) \
        if parent is None and not cmd.compromised else None
    new_with_old, old_with_new = links or (None, None)
    return ca.CaKeyRolledOver(certificate=certificate, reason=cmd.reason, new_with_old=new_with_old,
                              old_with_new=old_with_new, compromised=cmd.compromised)


async def _rolled_over(services: Services, cmd: RolloverCaKey, result: CommandResult) -> RolledOver:
    """``result`` as a rollover's; after a compromise rollover (or a retry of one) with what is left to issue again."""
    reissue = None
    if cmd.compromised and services.untrusted_chains is not None:
        reissue = await services.untrusted_chains.below(cmd.tenant_id, cmd.ca_id, services.clock.now())
    return RolledOver(**msgspec.structs.asdict(result), compromised=cmd.compromised, reissue=reissue)




class ReadCompromise(Strict):
    tenant_id: TenantId
    ca_id: CaId


class CompromiseRollover(msgspec.Struct, frozen=True, kw_only=True):
    """One compromise rollover of the root, from its ``ca.key_rolled_over``."""

    version: int  # of the CA's stream
    rolled_over_at: datetime
    reason: str
    compromised_key_sha256: str  # the key rolled away from (recorded on the tenant's compromised-keys stream)
    certificate_fingerprint: str  # the new key's certificate


class RevokedLink(msgspec.Struct, frozen=True, kw_only=True):
    serial_hex: str
    role: str  # new_with_old | old_with_new
    reason: str
    revoked_at: datetime


class CompromiseReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a root's compromise rollovers did, and what is still outstanding (``reissue``: None before any, or where
    nothing could count it)."""

    ca_id: str
    tenant_id: str
    rollovers: list[CompromiseRollover]  # oldest first; empty: the root never rolled over in compromise mode
    withdrawn_certificates: int  # the root's certificates and links left out of every chain and truststore
    revoked_links: list[RevokedLink]
    reissue: Reissue | None


@allowed_while_suspended("a read: a suspended tenant's operators still see what a compromise left to re-issue")
async def read_compromise(cmd: ReadCompromise, ctx: CommandContext, services: Services) -> CompromiseReport:
    """The root's compromise rollovers (from its stream), its revoked links, and what still chains only to a withdrawn
    key (``Services.untrusted_chains``, read again now: it shrinks as the runbook's re-issuance goes on)."""
    authorize(ctx.principal, "ca:read", cmd.tenant_id)
    state = await crl.load_registry(services, cmd.tenant_id, cmd.ca_id)
    ca.require(state.ca, cmd.ca_id)
    rollovers, key = [], None
    for envelope in await services.store.read_stream(cmd.tenant_id, ca.stream_id(cmd.ca_id)):
        certificate = envelope.payload.get("certificate")
        if envelope.type == "ca.key_rolled_over" and envelope.payload.get("compromised"):
            rollovers.append(CompromiseRollover(
                version=envelope.version, rolled_over_at=datetime.fromisoformat(envelope.occurred_at),
                reason=envelope.payload["reason"], compromised_key_sha256=key or "",
                certificate_fingerprint=certificate["facts"]["fingerprint_sha256"]))
        if envelope.type in ("ca.created", "ca.certificate_installed", "ca.key_rolled_over") and certificate:
            key = certificate["facts"]["public_key_sha256"]
    roles = {link.facts.serial_hex: role for pair in zip(state.ca.links[::2], state.ca.links[1::2], strict=True)
             for link, role in zip(pair, ("new_with_old", "old_with_new"), strict=True)}
    revoked = [RevokedLink(serial_hex=serial, role=role, reason=entry.reason, revoked_at=entry.revoked_at)
               for serial, role in roles.items() if (entry := state.revoked.get(serial)) is not None]
    reissue = None
    if rollovers and services.untrusted_chains is not None:
        reissue = await services.untrusted_chains.below(cmd.tenant_id, cmd.ca_id, services.clock.now())
    return CompromiseReport(ca_id=cmd.ca_id, tenant_id=cmd.tenant_id, rollovers=rollovers,
                            withdrawn_certificates=len(state.ca.withdrawn), revoked_links=revoked, reissue=reissue)
