"""Renewal and rotation of certificates, and expiry warnings: what the renewal scheduler and the renew API run.

A renewal is three appends, made safe against crashes and racing schedulers without a
transaction across streams:

1. ``certificate.renewal_started`` on the OLD certificate's stream, with the version that was
   read: of two racing renewals exactly one claims; the other re-reads, finds the claim and
   stops. The claim names the successor's serial, drawn now.
2. ``certificate.issued`` for that serial, at version 0 of its new stream: a second issuance of
   the same claim (a retry, or another instance completing a claim whose holder died) fails
   there, so there is never an orphan certificate.
3. ``certificate.renewed`` on the old stream: the link, closing the claim.

A refusal after the claim appends ``certificate.renewal_failed`` (closing it, the reason code
only); the scheduler then leaves the certificate alone for the retry window.

A revocation races a renewal on other streams: it appends to the issuing CA's stream first (the
authority), then to the certificate's. So a renewal asks the CA's stream before claiming, again
once the successor is issued, and once more after the link (3), which is refused if the
certificate's stream says revoked. A renewal that finds the certificate revoked after issuing
answers 409 ``certificate_revoked`` and revokes its successor (the revocation does too, if it
sees the claim open or the link land while in flight: commands/revoke.py), so the race leaves
no valid successor of a revoked certificate.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timedelta
from typing import NoReturn

import msgspec

from commands import compromised_keys, pki, revoke
from commands.revoke import RENEWAL_RACED
from commands.authz import SYSTEM, authorize
from commands.certificates import issue, issuing_context, renewal_request
from commands.ids import CertificateId
from commands.profiles import resolve_profile
from commands.runtime import CommandContext, CommandResult, Services, load, replayed, run
from commands.tenants import TenantId, is_suspended, refused_while_suspended
from domain import certificate, certificate_renewal, renewal
from domain.certificate import RenewalFailed, RenewalStarted
from domain.certificate_renewal import RenewalRefused
from domain.errors import AlreadyExists, DomainError

log = logging.getLogger(__name__)
CLAIM_TIMEOUT = timedelta(minutes=10)  # a claim older than this was abandoned: another may complete it
RETRY_WINDOW = timedelta(hours=24)  # after a failure the scheduler waits this long (one failure event per window)


class RenewCertificate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Renew now: same CA and profile; ``reuse_key`` None follows the profile's policy."""

    tenant_id: TenantId
    certificate_id: CertificateId
    reuse_key: bool | None = None


class WarnExpiry(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    certificate_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class Schedule:
    """The scheduler's knobs (infra/config.py Settings)."""

    warning_days: tuple[int, ...] = (30, 7, 1)
    retry_window: timedelta = RETRY_WINDOW
    claim_timeout: timedelta = CLAIM_TIMEOUT


class Renewal(msgspec.Struct, frozen=True, kw_only=True):
    result: CommandResult  # of the old stream's certificate.renewed
    certificate_id: str
    new_certificate_id: str
    rotated: bool

    @property
    def replayed(self) -> bool:
        return self.result.replayed


def _stream(certificate_id: str) -> str:
    return certificate.stream_id(certificate_id)


async def _state(services: Services, tenant_id: str, certificate_id: str) -> certificate.Certificate:
    return await load(services, tenant_id, _stream(certificate_id), certificate.fold)


@refused_while_suspended("signs a successor (refused before the claim: nothing is recorded); the scheduler skips a "
                         "suspended tenant's certificates")
async def renew_certificate(cmd: RenewCertificate, ctx: CommandContext, services: Services) -> Renewal:
    """Manual renewal (POST /v1/certificates/{id}/renew, ``csm cert renew``): refusals are raised, not recorded."""
    authorize(ctx.principal, "cert:issue", cmd.tenant_id)
    if prior := await replayed(services, ctx, cmd, cmd.tenant_id):
        state = await _state(services, cmd.tenant_id, cmd.certificate_id)
        assert state.renewed is not None
        return Renewal(result=prior, certificate_id=cmd.certificate_id,
                       new_certificate_id=state.renewed.new_certificate_id, rotated=state.renewed.rotated)
    state = await _state(services, cmd.tenant_id, cmd.certificate_id)
    issued = certificate.require_exists(state, cmd.certificate_id)
    if certificate_renewal.claim_stale(state, services.clock.now(), CLAIM_TIMEOUT):
        claim = state.pending  # its holder died: finish that renewal rather than start a second one
    else:
        await _refuse_if_revoked(services, ctx, cmd.tenant_id, issued)
        profile = await resolve_profile(services, cmd.tenant_id, issued.profile)
        rotate = renewal.rotate_key(profile.renewal, issued.key_source, cmd.reuse_key)
        await _refuse_compromised(services, cmd.tenant_id, issued, rotate)  # before the claim: nothing written
        claim = await _claim(services, ctx.without_key(), cmd, rotate, "manual")
    return await _complete(services, ctx, cmd, issued, claim, RETRY_WINDOW)


async def _claim(services: Services, ctx: CommandContext, cmd: RenewCertificate, rotate: bool,
                 trigger: str) -> RenewalStarted:
    draft = RenewalStarted(certificate_id=cmd.certificate_id,
                           new_certificate_id=certificate.certificate_id(pki.new_serial()), rotate_key=rotate,
                           attempt=0, trigger=trigger, started_at=services.clock.now())
    claimed: list[RenewalStarted] = []

    def decide(state: certificate.Certificate) -> list:
        claimed[:] = certificate_renewal.decide_start_renewal(state, cmd.certificate_id, draft)
        return list(claimed)

    await run(services, ctx, cmd, tenant_id=cmd.tenant_id, stream_id=_stream(cmd.certificate_id),
              stream_type=certificate.STREAM_TYPE, fold=certificate.fold, decide=decide)
    return claimed[0]


async def _refuse_compromised(services: Services, tenant_id: str, issued: certificate.CertificateIssued,
                              rotate: bool) -> None:
    """A renewal that would keep a key reported compromised in the tenant is refused before it claims anything
    (the issuance refuses it too: a stale claim completed later)."""
    if not rotate:
        await compromised_keys.refuse_certificate_keys(services, tenant_id, issued.facts.public_key_sha256,
                                                       issued.certificate_pem, "reuse_key")


async def _refuse_if_revoked(services: Services, ctx: CommandContext, tenant_id: str,
                             issued: certificate.CertificateIssued) -> None:
    """Refuse a certificate its CA recorded revoked, whatever its own stream says yet (which is then completed)."""
    if await revoke.complete_revocation(services, revoke.on_own_account(ctx), tenant_id, issued) is not None:
        raise RenewalRefused("certificate_revoked", f"certificate {issued.certificate_id} is revoked", field="id")


async def _withdraw(services: Services, ctx: CommandContext, cmd: RenewCertificate,
                    issued: certificate.CertificateIssued, claim: RenewalStarted) -> bool:
    """The certificate was revoked while this claim was open: revoke the claim's successor too, if it was issued
    (whether it was). Its CA's entry is there: a revocation appends to the CA's stream before the certificate's."""
    recorded = await revoke.revoked_by_issuer(services, cmd.tenant_id, issued)
    if recorded is None:
        revoked = (await _state(services, cmd.tenant_id, cmd.certificate_id)).revoked
        assert revoked is not None, "refused as revoked, yet revoked on neither stream"
        reason, invalidity_date = revoked.reason, revoked.invalidity_date
    else:
        reason, invalidity_date = recorded.reason, recorded.invalidity_date
    return await revoke.revoke_raced(services, revoke.on_own_account(ctx), cmd.tenant_id, claim.new_certificate_id, reason=reason,
                                     invalidity_date=invalidity_date, same_key=not claim.rotate_key,
                                     raced=RENEWAL_RACED)


def _validity_days(issued: certificate.CertificateIssued, profile_max: int, tenant_max: int | None) -> int:
    """The old certificate's lifetime in whole days, within what profile and tenant allow today."""
    lifetime = (issued.facts.not_after - issued.facts.not_before + timedelta(hours=12)).days
    return max(1, min(lifetime, profile_max, tenant_max or profile_max))


async def _complete(services: Services, ctx: CommandContext, cmd: RenewCertificate,
                    issued: certificate.CertificateIssued, claim: RenewalStarted, window: timedelta) -> Renewal:
    """Issue the claim's successor (at most once: its serial is fixed), then link it to the old certificate, unless
    the certificate was revoked meanwhile: then the successor is revoked too, and the renewal refused."""
    try:
        await _refuse_if_revoked(services, ctx, cmd.tenant_id, issued)  # a stale claim's, revoked since
        where = await issuing_context(services, cmd.tenant_id, issued.ca_id, issued.profile)
        validity = _validity_days(issued, where.profile.max_validity_days, where.tenant.policy.max_validity_days)
        await issue(services, ctx.without_key(), cmd, where, request=renewal_request(services, issued,
                                                                                      claim.rotate_key),
                    validity_days=validity, tags=issued.tags, serial=int(claim.new_certificate_id, 16), renewal=True)
    except AlreadyExists as exc:
        if exc.code != "serial_exists":
            await _fail(services, ctx, cmd, exc.code, claim.attempt, window)
            raise
        # The successor exists: this claim was completed by a racing instance (or an earlier try of this one).
    except RenewalRefused as exc:
        await _refused(services, ctx, cmd, issued, claim, window, exc)
    except DomainError as exc:
        await _fail(services, ctx, cmd, exc.code, claim.attempt, window)
        raise
    except Exception:
        await _fail(services, ctx, cmd, "internal_error", claim.attempt, window)
        raise
    try:
        await _refuse_if_revoked(services, ctx, cmd.tenant_id, issued)  # revoked while the successor was issued
        result = await run(services, ctx, cmd, tenant_id=cmd.tenant_id, stream_id=_stream(cmd.certificate_id),
                           stream_type=certificate.STREAM_TYPE, fold=certificate.fold,
                           decide=lambda s: certificate_renewal.decide_renewed(s, claim))
        # Revoked on the CA just before the link landed: the renewal did not finish before the revocation.
        await _refuse_if_revoked(services, ctx, cmd.tenant_id, issued)
    except RenewalRefused as exc:
        await _refused(services, ctx, cmd, issued, claim, window, exc)
    log.info("renewed certificate %s as %s (rotated: %s)", cmd.certificate_id, claim.new_certificate_id,
             claim.rotate_key)
    return Renewal(result=result, certificate_id=cmd.certificate_id, new_certificate_id=claim.new_certificate_id,
                   rotated=claim.rotate_key)


async def _refused(services: Services, ctx: CommandContext, cmd: RenewCertificate,
                   issued: certificate.CertificateIssued, claim: RenewalStarted, window: timedelta,
                   exc: RenewalRefused) -> NoReturn:
    """A claimed renewal refused: a revoked certificate's successor is revoked first, then the claim closed."""
    if exc.code != "certificate_revoked":
        raise exc
    if await _withdraw(services, ctx, cmd, issued, claim):
        exc = RenewalRefused("certificate_revoked", f"certificate {cmd.certificate_id} was revoked while it was "
                             f"being renewed: its successor {claim.new_certificate_id} is revoked too", field="id")
    await _fail(services, ctx, cmd, exc.code, claim.attempt, window)
    raise exc


async def _fail(services: Services, ctx: CommandContext, cmd: RenewCertificate, reason: str, attempt: int,
                window: timedelta) -> None:
    failure = RenewalFailed(certificate_id=cmd.certificate_id, reason=reason, attempt=attempt,
                            failed_at=services.clock.now())
    log.warning("renewal of certificate %s failed: %s", cmd.certificate_id, reason)
    try:
        await run(services, ctx.without_key(), failure, tenant_id=cmd.tenant_id, stream_id=_stream(cmd.certificate_id),
                  stream_type=certificate.STREAM_TYPE, fold=certificate.fold,
                  decide=lambda s: certificate_renewal.decide_renewal_failed(s, failure, window))
    except Exception:  # the original refusal matters more; an open claim goes stale and is completed later
        log.exception("recording the failed renewal of certificate %s failed", cmd.certificate_id)


def _due(issued: certificate.CertificateIssued, policy: renewal.RenewalPolicy, now: datetime) -> bool:
    facts = issued.facts
    return policy.auto and renewal.renew_at(policy, facts.not_before, facts.not_after) <= now < facts.not_after


async def renew_if_due(services: Services, tenant_id: str, certificate_id: str, schedule: Schedule) -> str:
    """One certificate of a scheduler pass, decided from its stream: "renewed", "failed" or "skipped"."""
    state = await _state(services, tenant_id, certificate_id)
    issued = state.issued
    if state.status != "issued" or issued is None or state.renewed is not None:
        return "skipped"
    if await is_suspended(services, tenant_id):  # nothing is signed for it, and nothing recorded: no failure to retry
        return "skipped"  # a claim it holds (taken before the suspension) goes stale, and is completed once resumed
    now = services.clock.now()
    cmd = RenewCertificate(tenant_id=tenant_id, certificate_id=certificate_id)
    ctx = CommandContext(principal=SYSTEM)
    if state.pending is not None:
        if not certificate_renewal.claim_stale(state, now, schedule.claim_timeout):
            return "skipped"  # another instance is renewing it right now
        claim = state.pending
    else:
        if state.last_failure_at is not None and now < state.last_failure_at + schedule.retry_window:
            return "skipped"
        try:
            profile = await resolve_profile(services, tenant_id, issued.profile)
            if not _due(issued, profile.renewal, now):
                return "skipped"
            rotate = renewal.rotate_key(profile.renewal, issued.key_source, None)
            await _refuse_compromised(services, tenant_id, issued, rotate)
        except DomainError as exc:
            await _fail(services, ctx, cmd, exc.code, 0, schedule.retry_window)
            return "failed"
        if await revoke.complete_revocation(services, ctx, tenant_id, issued) is not None:
            return "skipped"  # revoked on its CA, now on its own stream too: the read model drops it
        try:
            claim = await _claim(services, ctx, cmd, rotate, "scheduled")
        except RenewalRefused:
            return "skipped"  # lost the race for the claim: the winner renews it
    try:
        await _complete(services, ctx, cmd, issued, claim, schedule.retry_window)
    except RenewalRefused as exc:
        return "failed" if exc.code == "certificate_revoked" else "skipped"  # recorded by _complete, or lost
    except DomainError:
        return "failed"  # recorded by _complete
    return "renewed"


async def warn_if_expiring(services: Services, tenant_id: str, certificate_id: str,
                           thresholds: tuple[int, ...]) -> int | None:
    """Append ``certificate.expiry_warned`` for the tightest threshold crossed, once; the threshold or None."""
    now = services.clock.now()
    warned: list = []

    def decide(state: certificate.Certificate) -> list:
        warned[:] = certificate_renewal.decide_expiry_warning(state, now, thresholds)
        return list(warned)

    result = await run(services, CommandContext(principal=SYSTEM), WarnExpiry(tenant_id=tenant_id,
                                                                              certificate_id=certificate_id),
                       tenant_id=tenant_id, stream_id=_stream(certificate_id), stream_type=certificate.STREAM_TYPE,
                       fold=certificate.fold, decide=decide)
    return warned[0].threshold_days if result.changed and warned else None
