"""Revoking certificates and intermediate CAs: the issuer's stream first (CRL and OCSP read it), then the subject's.

Order is what keeps revocation fail-safe without a transaction across streams: once the
issuing CA's stream holds ``ca.certificate_revoked`` the certificate *is* revoked for every
relying party; a crash before the subject's own event leaves a certificate that reads as
issued in the inventory but is revoked on the CRL and in OCSP, never the other way round,
and retrying the revocation completes it (so does a renewal that finds it revoked on the CA). A
CA about to be revoked first gets what its own relying parties need to hear about its subtree (a
current OCSP responder and CRL), which a revoked CA could no longer certify: that step changes no
answer, so it comes before the commit point, and a retry redoes only what it lacks.

A renewal of the certificate may be in flight (commands/renewal.py): it refuses once it finds the
revocation on either stream, and revokes the successor it issued. The revocation, in turn, revokes
the successor of a renewal whose claim it finds open, or whose link landed while it was in flight,
so neither order of the race leaves a valid successor of a revoked certificate.

A key_compromise revocation revokes the tenant's other certificates of the same public key that
are still trusted (a renewal that kept the key, another CSR of it, a hybrid sharing one half): a
compromised key is compromised in each of them. The read model finds them (``Services.key_holders``;
``revoke_holders``, which a key reported apart and the sweep of a blocked key use too:
commands/compromise_report.py, commands/compromise_sweep.py). Before anything
else is recorded, it records the key on the tenant's ``compromised-keys`` stream (as does a CA's
key_compromise or ca_compromise revocation, for each key the CA held): no command certifies it
again in the tenant (commands/compromised_keys.py). That stream has no transaction with the others,
so it comes first: a crash after it leaves a key blocked whose revocation a retry completes, never
a revoked key that can be certified again.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

import msgspec

from commands import compromised_keys, crl, ocsp
from commands.authz import SYSTEM, authorize
from commands.cas import CaId
from commands.ids import CertificateId
from commands.runtime import CommandContext, CommandResult, Services, load, replayed, run
from commands.tenants import TenantId, allowed_while_suspended
from domain import ca, certificate, crl_publication, revocation
from domain.compromised_keys import CA_REASONS, CERTIFICATE_REASONS, KeyCompromiseRecorded
from domain.errors import Contention, KeyUnavailable
from domain.revocation import RevocationRecorded

log = logging.getLogger(__name__)

ReasonName = Annotated[str, msgspec.Meta(pattern=r"^[a-z_]{1,40}$", description="an RFC 5280 reason, snake case: "
                                         + ", ".join(revocation.REASONS))]


class RevokeCertificate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: TenantId
    certificate_id: CertificateId
    reason: ReasonName = "unspecified"
    invalidity_date: datetime | None = None  # when the key was (suspected) compromised


class RevokeCa(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Revoke an intermediate: its issuers' CRLs list its certificates, and it certifies nothing more."""

    tenant_id: TenantId
    ca_id: CaId
    reason: ReasonName = "unspecified"
    invalidity_date: datetime | None = None


class Revocation(msgspec.Struct, frozen=True, kw_only=True):
    """What a revocation did: the subject stream's result, the recorded facts, and the CRLs now listing it."""

    result: CommandResult
    reason: str
    revoked_at: datetime
    invalidity_date: datetime | None
    crls: tuple[crl.PublishedCrl, ...]
    # issuers whose key is offline: their CRL lists the revocation once the ceremony signs one (csm ca crl-request)
    awaiting_ceremony: tuple[str, ...] = ()
    # certificates revoked with it: a racing renewal's successor, and (key_compromise) the others of its key
    also_revoked: tuple[str, ...] = ()

    @property
    def replayed(self) -> bool:
        return self.result.replayed


async def record_on_issuer(services: Services, ctx: CommandContext, command: msgspec.Struct, tenant_id: str,
                           issuer_id: str, entries: list[RevocationRecorded]) -> tuple[bool, revocation.Registry]:
    """Append the entries the issuer lacks; whether this call appended any, and the issuer's registry, whose
    entries are the authoritative ones."""
    result = await run(services, ctx, command, tenant_id=tenant_id, stream_id=ca.stream_id(issuer_id),
                       stream_type=ca.STREAM_TYPE, fold=revocation.fold,
                       decide=lambda s: revocation.decide_record(s, issuer_id, entries))
    return result.changed, await crl.load_registry(services, tenant_id, issuer_id)


async def _mirror(services: Services, ctx: CommandContext, tenant_id: str, certificate_id: str,
                  recorded: RevocationRecorded) -> tuple[CommandResult, certificate.Certificate]:
    """Copy the issuer's entry onto the certificate's own stream (nothing if it is there); the result, and the
    certificate's state as the append found it."""
    command = RevokeCertificate(tenant_id=tenant_id, certificate_id=certificate_id, reason=recorded.reason,
                                invalidity_date=recorded.invalidity_date)
    revoked = certificate.CertificateRevoked(reason=recorded.reason, revoked_at=recorded.revoked_at,
                                             invalidity_date=recorded.invalidity_date)
    seen: list[certificate.Certificate] = []

    def decide(state: certificate.Certificate) -> list:
        seen[:] = [state]
        return certificate.decide_revoke(state, certificate_id, revoked)

    result = await run(services, ctx, command, tenant_id=tenant_id, stream_id=certificate.stream_id(certificate_id),
                       stream_type=certificate.STREAM_TYPE, fold=certificate.fold, decide=decide)
    return result, seen[0]


async def revoked_by_issuer(services: Services, tenant_id: str,
                            issued: certificate.CertificateIssued) -> RevocationRecorded | None:
    """The issuing CA's entry for this certificate if it is revoked: the authority, whatever the certificate's own
    stream says yet (a revocation in flight, or one that stopped between the two appends)."""
    return (await crl.load_registry(services, tenant_id, issued.ca_id)).revoked.get(issued.facts.serial_hex)


async def complete_revocation(services: Services, ctx: CommandContext, tenant_id: str,
                              issued: certificate.CertificateIssued) -> RevocationRecorded | None:
    """The issuer's entry if the certificate is revoked, copied onto its own stream first if a revocation stopped
    short of it (what retrying that revocation would do); None if it is not revoked."""
    recorded = await revoked_by_issuer(services, tenant_id, issued)
    if recorded is not None:
        await _mirror(services, ctx.without_key(), tenant_id, issued.certificate_id, recorded)
    return recorded


def on_own_account(ctx: CommandContext) -> CommandContext:
    """What the service does on its own account to finish a request (completing or undoing a revocation that raced
    it), whatever the caller may do itself, traced to the request."""
    return CommandContext(principal=SYSTEM, correlation_id=ctx.correlation_id, causation_id=ctx.causation_id)


RENEWAL_RACED = "the renewal that issued it raced its predecessor's revocation"


async def revoke_raced(services: Services, ctx: CommandContext, tenant_id: str, certificate_id: str, *,
                      reason: str, invalidity_date: datetime | None, same_key: bool, raced: str) -> bool:
    """Revoke a certificate issued while a revocation it must share was in flight (``raced`` says which: the
    successor of a certificate revoked while it was renewed, a certificate of a key reported compromised while it
    was signed), through the normal path (its CA's stream, its own, the CRL), carrying ``reason``: the race leaves
    no valid certificate. Whether that certificate was issued (it is revoked now, by this call or by the other
    side of the race); False if not."""
    state = await load(services, tenant_id, certificate.stream_id(certificate_id), certificate.fold)
    if state.issued is None or state.status == "revoked":
        return state.issued is not None
    reason, invalidity_date = revocation.carried_revocation(reason, invalidity_date, same_key=same_key,
                                                            not_before=state.issued.facts.not_before)
    try:
        await revoke_certificate(RevokeCertificate(tenant_id=tenant_id, certificate_id=certificate_id, reason=reason,
                                                   invalidity_date=invalidity_date), ctx.without_key(), services)
    except revocation.AlreadyRevoked:
        return True
    log.warning("revoked certificate %s (%s): %s", certificate_id, reason, raced)
    return True


async def _revoke_racing_successor(services: Services, ctx: CommandContext, tenant_id: str,
                                   recorded: RevocationRecorded, before: certificate.Certificate,
                                   after: certificate.Certificate) -> tuple[str, ...]:
    """A renewal still open when the revocation reached the certificate's stream (``after``), or one that linked
    its successor while this revocation was in flight (not yet in ``before``, read before the issuer's append):
    its successor is revoked too. A renewal finished before the revocation began stands: revoking a superseded
    certificate leaves its successor alone."""
    if after.pending is not None:
        successor, rotated = after.pending.new_certificate_id, after.pending.rotate_key
    elif after.renewed is not None and before.renewed is None:
        successor, rotated = after.renewed.new_certificate_id, after.renewed.rotated
    else:
        return ()
    issued = await revoke_raced(services, ctx, tenant_id, successor, reason=recorded.reason,
                                invalidity_date=recorded.invalidity_date, same_key=not rotated, raced=RENEWAL_RACED)
    return (successor,) if issued else ()


async def _revoke_same_key(services: Services, ctx: CommandContext, tenant_id: str,
                           issued: certificate.CertificateIssued, recorded: RevocationRecorded) -> tuple[str, ...]:
    """A compromised key is compromised in every certificate of it: the tenant's others that are still trusted
    (another CSR of the same key, a renewal that kept it) are revoked key_compromise too, each from the same
    invalidity date or its own notBefore. Found by the read model (``Services.key_holders``), each checked on its
    own stream; their revocations do not look for the key again."""
    if recorded.reason != "key_compromise":
        return ()
    keys = [issued.facts.public_key_sha256]  # and a hybrid's ML-DSA half: a pure ML-DSA certificate of it
    if (alternative := compromised_keys.alternative_key_sha256(services, issued.certificate_pem)) is not None:
        keys.append(alternative)
    revoked: tuple[str, ...] = ()
    for key in keys:
        revoked += (await revoke_holders(services, ctx, tenant_id, key, recorded, named=issued.certificate_id))[0]
    return revoked


async def revoke_holders(services: Services, ctx: CommandContext, tenant_id: str, key: str,
                          recorded: RevocationRecorded, *, named: str | None) -> tuple[tuple[str, ...], bool]:
    """Revoke the tenant's still trusted certificates of ``key`` (the compromise ``recorded`` says), as their subject
    key or as a hybrid's ML-DSA half, but ``named`` (the one the caller revokes itself; None: every one, a report's
    named certificate too). The certificates revoked, and whether the read model could have missed none."""
    if services.key_holders is None:
        return (), False
    holding = await services.key_holders.holding_key(tenant_id, key, services.clock.now())
    revoked = []
    for other_id in holding.certificate_ids:
        other = await load(services, tenant_id, certificate.stream_id(other_id), certificate.fold)
        if other_id == named or other.status != "issued" or other.issued is None \
                or not _certifies(services, other.issued, key):
            continue
        reason, invalidity_date = revocation.carried_revocation(recorded.reason, recorded.invalidity_date,
                                                                same_key=True, not_before=other.issued.facts.not_before)
        try:
            await _revoke(RevokeCertificate(tenant_id=tenant_id, certificate_id=other_id, reason=reason,
                                            invalidity_date=invalidity_date), ctx.without_key(), services,
                          same_key=False)
        except revocation.AlreadyRevoked:
            continue
        revoked.append(other_id)
    if revoked:
        log.warning("key %s compromised (%s): revoked %d more certificate(s) of it: %s", key,
                    f"certificate {named}" if named else "reported", len(revoked), ", ".join(revoked))
    return tuple(revoked), holding.complete


def _certifies(services: Services, issued: certificate.CertificateIssued, key: str) -> bool:
    """Whether ``key`` is the certificate's subject key or a hybrid's ML-DSA half (the read model found it by one)."""
    return key == issued.facts.public_key_sha256 \
        or key == compromised_keys.alternative_key_sha256(services, issued.certificate_pem)


async def publish_crls(services: Services, tenant_id: str, registry: revocation.Registry,
                       serials: list[str]) -> list[crl.PublishedCrl]:
    """Publish the issuer's next CRLs (one per key that publishes) now, unless those published since already list
    ``serials``.

    Empty if other processes kept changing the CA's stream meanwhile, or the CA's key cannot sign now (its token or
    KEK does not answer): the revocation is recorded (OCSP answers it now), and the revocation scheduler, or the
    CRL URL when it is fetched, publishes the CRL that lacks it once it can. A revocation that happened is never
    answered as a failure."""
    covering = max(registry.recorded_at[serial] for serial in serials)
    try:
        return await crl.publish(services, tenant_id, registry.ca.ca_id, covering=covering) or []
    except Contention:
        log.warning("CRL of CA %s not published now: its stream kept changing; the scheduler will",
                    registry.ca.ca_id)
        return []
    except KeyUnavailable as exc:
        log.warning("CRL of CA %s not published now: %s; the scheduler will once the key can sign",
                    registry.ca.ca_id, exc.detail)
        return []


async def _keep_answering(services: Services, tenant_id: str, ca_id: str) -> None:
    """Before a CA is revoked, while it may still certify: a current OCSP responder for each of its keys that may
    have valid certificates, and a CRL, so its own OCSP and CRL URLs answer from the first question after it.

    A revoked CA certifies no responder, and one never asked before had none. Best effort: the revocation must not
    wait on them, and what fails here is made good later (its key signs its OCSP answers once no responder may, and
    its CRL is published on demand or by the scheduler). Both steps are idempotent, so a retry redoes only what is
    missing."""
    state = await crl.load_registry(services, tenant_id, ca_id)
    if state.ca.status not in ("active", "disabled"):
        return  # pending (nothing to answer), or revoked already (a retry)
    for issuer in crl_publication.publishing_keys(state, services.clock.now()):
        try:
            await ocsp.signer_for(services, tenant_id, state, issuer)
        except Exception:
            log.exception("CA %s: no OCSP responder for key %s before its revocation; its key signs its answers",
                          ca_id, revocation.key_id(issuer))
    try:
        await crl.publish(services, tenant_id, ca_id, only_if_due=True)
    except Exception:
        log.exception("CA %s: no CRL published before its revocation; it is published on demand", ca_id)


@allowed_while_suspended("revocation must always work: a suspended tenant still revokes a compromised certificate")
async def revoke_certificate(cmd: RevokeCertificate, ctx: CommandContext, services: Services) -> Revocation:
    """Revoke a certificate; with it, a racing renewal's successor and, for key_compromise, the key's others."""
    return await _revoke(cmd, ctx, services, same_key=True)


async def _revoke(cmd: RevokeCertificate, ctx: CommandContext, services: Services, *, same_key: bool) -> Revocation:
    authorize(ctx.principal, "cert:revoke", cmd.tenant_id)
    revocation.check_reason(cmd.reason)
    prior = await replayed(services, ctx, cmd, cmd.tenant_id)
    state = await load(services, cmd.tenant_id, certificate.stream_id(cmd.certificate_id), certificate.fold)
    issued = certificate.require_exists(state, cmd.certificate_id)
    if state.status == "revoked" and prior is None:
        raise revocation.AlreadyRevoked(f"certificate {cmd.certificate_id}")
    now = services.clock.now()
    revocation.check_invalidity_date(cmd.invalidity_date, now=now, not_before=issued.facts.not_before)
    # Before the commit point: a crash after it leaves the key blocked. Not for a certificate revoked with another's
    # compromised key (``same_key`` False): that key is recorded, and its other keys (a hybrid's other half) are not
    # known to be stolen.
    if cmd.reason in CERTIFICATE_REASONS and same_key:
        await compromised_keys.record(services, ctx.without_key(), cmd, cmd.tenant_id, compromised_keys.halves(
            services, issued.certificate_pem, KeyCompromiseRecorded(
                public_key_sha256=issued.facts.public_key_sha256, reason=cmd.reason, reported_at=now,
                invalidity_date=cmd.invalidity_date, certificate_id=cmd.certificate_id, ca_id=issued.ca_id)))
    serial = issued.facts.serial_hex
    entry = RevocationRecorded(serial_hex=serial, certificate_id=cmd.certificate_id, subject_ca_id=None,
                               reason=cmd.reason, revoked_at=now, invalidity_date=cmd.invalidity_date,
                               not_after=issued.facts.not_after)
    recorded_here, registry = await record_on_issuer(services, ctx, cmd, cmd.tenant_id, issued.ca_id, [entry])
    recorded = registry.revoked[serial]  # a concurrent or earlier attempt's entry wins over this one's
    result, found = await _mirror(services, ctx.without_key(), cmd.tenant_id, cmd.certificate_id, recorded)
    # Another request revoked it first; not so if this one's entry on the issuer is the revocation (a renewal
    # that found it there may have copied it onto the certificate's stream meanwhile: complete_revocation).
    if not (recorded_here or result.changed) and prior is None:
        raise revocation.AlreadyRevoked(f"certificate {cmd.certificate_id}")
    also = await _revoke_racing_successor(services, ctx, cmd.tenant_id, recorded, state, found)
    published = await publish_crls(services, cmd.tenant_id, registry, [serial])
    ocsp.RESPONSES.invalidate(issued.ca_id)
    if same_key:
        also += tuple(c for c in await _revoke_same_key(services, ctx, cmd.tenant_id, issued, recorded)
                      if c not in also)
    return Revocation(result=msgspec.structs.replace(result, replayed=True) if prior else result,
                      reason=recorded.reason, revoked_at=recorded.revoked_at,
                      invalidity_date=recorded.invalidity_date, crls=tuple(published), also_revoked=also)


@allowed_while_suspended("revocation must always work, of a CA too")
async def revoke_ca(cmd: RevokeCa, ctx: CommandContext, services: Services) -> Revocation:
    """The CA's own OCSP responder and CRL are made ready (``_keep_answering``); every certificate of its keys goes
    onto the CRL of the CA that signed it; then ``ca.revoked``."""
    authorize(ctx.principal, "ca:manage", cmd.tenant_id)
    revocation.check_reason(cmd.reason)
    prior = await replayed(services, ctx, cmd, cmd.tenant_id)
    state = await load(services, cmd.tenant_id, ca.stream_id(cmd.ca_id), ca.fold)
    now = services.clock.now()
    draft = ca.CaRevoked(reason=cmd.reason, revoked_at=now, invalidity_date=cmd.invalidity_date)
    if prior is None:
        ca.decide_revoke(state, cmd.ca_id, draft)  # refuse (root, pending, revoked) before touching an issuer
    certificates = state.held
    if certificates:
        earliest = min(c.facts.not_before for c in certificates)
        revocation.check_invalidity_date(cmd.invalidity_date, now=now, not_before=earliest)
    if cmd.reason in CA_REASONS and certificates:  # first, as for a certificate: every key the CA has held
        await compromised_keys.record(services, ctx.without_key(), cmd, cmd.tenant_id, [
            half for held in certificates for half in compromised_keys.halves(
                services, held.certificate_pem, KeyCompromiseRecorded(
                    public_key_sha256=held.facts.public_key_sha256, reason=cmd.reason, reported_at=now,
                    invalidity_date=cmd.invalidity_date, subject_ca_id=cmd.ca_id))])
    await _keep_answering(services, cmd.tenant_id, cmd.ca_id)
    by_issuer: dict[str, list[RevocationRecorded]] = {}
    for held in certificates:
        if held.issuer_ca_id is not None and held.issuer_ca_id != cmd.ca_id:
            by_issuer.setdefault(held.issuer_ca_id, []).append(RevocationRecorded(
                serial_hex=held.facts.serial_hex, certificate_id=None, subject_ca_id=cmd.ca_id, reason=cmd.reason,
                revoked_at=now, invalidity_date=cmd.invalidity_date, not_after=held.facts.not_after))
    registries = []
    for issuer_id, entries in by_issuer.items():
        registries.append(((await record_on_issuer(services, ctx.without_key(), cmd, cmd.tenant_id, issuer_id,
                                                   entries))[1], [e.serial_hex for e in entries]))
    if registries:  # what the parent recorded first is the revocation's time and reason
        registry, serials = registries[0]
        first = registry.revoked[serials[0]]
        draft = ca.CaRevoked(reason=first.reason, revoked_at=first.revoked_at, invalidity_date=first.invalidity_date)
    result = await run(services, ctx, cmd, tenant_id=cmd.tenant_id, stream_id=ca.stream_id(cmd.ca_id),
                       stream_type=ca.STREAM_TYPE, fold=ca.fold, decide=lambda s: ca.decide_revoke(s, cmd.ca_id, draft))
    published, offline = [], []
    for registry, serials in registries:
        if crl_publication.key_offline(registry):
            offline.append(registry.ca.ca_id)
        else:
            published += await publish_crls(services, cmd.tenant_id, registry, serials)
    ocsp.RESPONSES.invalidate_all()  # every certificate below this CA now answers "revoked"
    return Revocation(result=result, reason=draft.reason, revoked_at=draft.revoked_at,
                      invalidity_date=draft.invalidity_date, crls=tuple(published), awaiting_ceremony=tuple(offline))
