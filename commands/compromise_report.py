"""A key reported compromised apart from a revocation: one found after what holds it was revoked for another reason (a
revocation is final: its reason stands), or a root's (a root is never revoked: it is replaced).

As a key_compromise revocation does (commands/revoke.py), the report records the key (both halves of a hybrid's) on
the tenant's ``compromised-keys`` stream first, so nothing certifies it again in the tenant, then revokes key_compromise
the tenant's certificates of it that are still trusted (``revoke.revoke_holders``), the named one too if it still is,
and for a CA's key the certificates of it CAs here issued (``compromise_cascade``: a cross-certificate another CA
signed for it, a root's link certifying it). A retry under the same Idempotency-Key answers what the first call
revoked (read back from the log: ``_first_call``), and completes what a crash left. Every report appends (a report
of keys already recorded from its source, ``key.compromise_report_repeated``), so every retry finds its first call.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from commands import compromise_cascade, compromised_keys, revoke
from commands.authz import authorize
from commands.cas import CaId
from commands.compromise_cascade import RevokedCaCertificate
from commands.compromised_keys import KeyHash
from commands.ids import CertificateId
from commands.runtime import CommandContext, CommandResult, Services, first_append, load
from commands.tenants import TenantId, allowed_while_suspended
from domain import ca, certificate, revocation
from domain.compromised_keys import KeyCompromiseRecorded
from domain.compromised_keys import stream_id as compromised_keys_stream
from domain.errors import DomainError
from domain.revocation import RevocationRecorded


class ReportKeyCompromise(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The key of ``certificate_id``, or every key of CA ``ca_id`` (only ``public_key_sha256``, one of them, if
    given: a root's old key after a rollover), was found compromised: for a certificate revoked for another reason
    already, or a root (which is never revoked). One of ``certificate_id`` and ``ca_id``."""

    tenant_id: TenantId
    certificate_id: CertificateId | None = None
    ca_id: CaId | None = None
    public_key_sha256: KeyHash | None = None
    invalidity_date: datetime | None = None  # when the key was (suspected) compromised


class KeyCompromiseReported(msgspec.Struct, frozen=True, kw_only=True):
    """The keys the report named (SHA-256 of each SubjectPublicKeyInfo), the append's result (``changed``: it recorded
    a key not known before), and the certificates of them it revoked (key_compromise): the tenant's certificates by
    id, and for a CA's key the CA certificates of it that CAs here issued (cross-certificates, a root's links)."""

    result: CommandResult  # of the tenant's compromised-keys stream (unchanged if every key was known)
    public_keys_sha256: tuple[str, ...]
    revoked: tuple[str, ...] = ()
    revoked_ca_certificates: tuple[RevokedCaCertificate, ...] = ()

    @property
    def replayed(self) -> bool:
        return self.result.replayed


@allowed_while_suspended("it only takes trust away: a suspended tenant still reports a stolen key")
async def report_key_compromise(cmd: ReportKeyCompromise, ctx: CommandContext,
                                services: Services) -> KeyCompromiseReported:
    """Record a key found compromised after what holds it was revoked for another reason (a revocation is final: its
    reason stands), or a root's keys (a root is never revoked: replace it): never certified again in the tenant,
    and the tenant's certificates of it that are still trusted are revoked key_compromise."""
    if (cmd.certificate_id is None) == (cmd.ca_id is None):
        raise DomainError("one_of_required", "name the certificate or the CA whose key was compromised (one of them)",
                          field="certificate_id")
    now = services.clock.now()
    reports = await (_ca_reports if cmd.ca_id is not None else _certificate_reports)(cmd, ctx, services, now)
    result = await compromised_keys.record(services, ctx, cmd, cmd.tenant_id, reports, report=True)
    if result.replayed:  # the CA's keys are worked out again: only those blocked count (not a key rolled to since)
        blocked = (await compromised_keys.load_keys(services, cmd.tenant_id)).keys
        reports = [r for r in reports if r.public_key_sha256 in blocked]
    revoked, revoked_cas = await _revoke_certificates_of(services, ctx, cmd, reports)
    if result.replayed:  # a retry (same Idempotency-Key): what the first call answered, and what this one completed
        changed, first, first_cas = await _first_call(services, ctx, cmd)
        result = msgspec.structs.replace(result, changed=changed)
        revoked = tuple(dict.fromkeys((*first, *revoked)))
        revoked_cas = tuple(dict.fromkeys((*first_cas, *revoked_cas)))
    return KeyCompromiseReported(result=result, public_keys_sha256=tuple(dict.fromkeys(
        r.public_key_sha256 for r in reports)), revoked=revoked, revoked_ca_certificates=revoked_cas)


async def _ca_reports(cmd: ReportKeyCompromise, ctx: CommandContext, services: Services,
                      now: datetime) -> list[KeyCompromiseRecorded]:
    """The reports of every key CA ``ca_id`` has held (or the one ``public_key_sha256`` names), both halves of a
    hybrid's. An intermediate in service on the key is refused: revoking it is what retires its key."""
    authorize(ctx.principal, "ca:manage", cmd.tenant_id)
    assert cmd.ca_id is not None
    state = await load(services, cmd.tenant_id, ca.stream_id(cmd.ca_id), ca.fold)
    ca.require(state, cmd.ca_id)
    held = state.held
    if cmd.public_key_sha256 is not None:
        held = [c for c in held if c.facts.public_key_sha256 == cmd.public_key_sha256]
        if not held:
            raise DomainError("key_not_held", f"CA {cmd.ca_id} has held no key of SHA-256 {cmd.public_key_sha256} "
                              "(GET /v1/cas/{id} lists its certificates)", field="public_key_sha256")
    if state.kind == "intermediate" and state.status in ("active", "disabled") and state.current is not None \
            and state.current.facts.public_key_sha256 in {c.facts.public_key_sha256 for c in held}:
        raise DomainError("revoke_ca_instead", f"CA {cmd.ca_id} is an intermediate that signs with this key: revoke it "
                          "with reason key_compromise (POST /v1/cas/{id}/revoke), which records its keys, has its "
                          "issuers' CRLs list its certificates, and stops it certifying",
                          field="public_key_sha256" if cmd.public_key_sha256 is not None else "ca_id")
    return [half for c in held for half in compromised_keys.halves(
        services, c.certificate_pem, KeyCompromiseRecorded(
            public_key_sha256=c.facts.public_key_sha256, reason="key_compromise", reported_at=now,
            invalidity_date=cmd.invalidity_date, subject_ca_id=cmd.ca_id, through="report"))]


async def _certificate_reports(cmd: ReportKeyCompromise, ctx: CommandContext, services: Services,
                               now: datetime) -> list[KeyCompromiseRecorded]:
    """The report of certificate ``certificate_id``'s key, and of a hybrid's ML-DSA half."""
    authorize(ctx.principal, "cert:revoke", cmd.tenant_id)
    assert cmd.certificate_id is not None
    if cmd.public_key_sha256 is not None:
        raise DomainError("key_with_ca_only", "a certificate has one key: give public_key_sha256 only with ca_id",
                          field="public_key_sha256")
    state = await load(services, cmd.tenant_id, certificate.stream_id(cmd.certificate_id), certificate.fold)
    issued = certificate.require_exists(state, cmd.certificate_id)
    revocation.check_invalidity_date(cmd.invalidity_date, now=now, not_before=issued.facts.not_before)
    return compromised_keys.halves(services, issued.certificate_pem, KeyCompromiseRecorded(
        public_key_sha256=issued.facts.public_key_sha256, reason="key_compromise", reported_at=now,
        invalidity_date=cmd.invalidity_date, certificate_id=cmd.certificate_id, ca_id=issued.ca_id, through="report"))


async def _revoke_certificates_of(services: Services, ctx: CommandContext, cmd: ReportKeyCompromise,
                                  reports: list[KeyCompromiseRecorded]
                                  ) -> tuple[tuple[str, ...], tuple[RevokedCaCertificate, ...]]:
    """Revoke key_compromise the tenant's still trusted certificates of the reported keys (a certificate named in
    the report too, and a hybrid's ML-DSA half's: a pure ML-DSA certificate of it), and for a CA's keys the CA
    certificates of them that CAs here issued."""
    if not reports:
        return (), ()
    sweep = RevocationRecorded(serial_hex="", certificate_id=None, subject_ca_id=None, reason="key_compromise",
                               revoked_at=reports[0].reported_at, invalidity_date=cmd.invalidity_date,
                               not_after=reports[0].reported_at)  # only its reason and invalidity date are carried
    revoked: tuple[str, ...] = ()
    for report in reports:
        revoked += (await revoke.revoke_holders(services, ctx, cmd.tenant_id, report.public_key_sha256, sweep,
                                                named=None))[0]
    revoked_cas: tuple[RevokedCaCertificate, ...] = ()
    if cmd.ca_id is not None:
        revoked_cas = await compromise_cascade.revoke_ca_certificates(
            services, ctx, cmd, cmd.tenant_id, cmd.ca_id, {r.public_key_sha256 for r in reports},
            invalidity_date=cmd.invalidity_date)
    return tuple(dict.fromkeys(revoked)), revoked_cas


async def _first_call(services: Services, ctx: CommandContext, cmd: ReportKeyCompromise
                      ) -> tuple[bool, tuple[str, ...], tuple[RevokedCaCertificate, ...]]:
    """What the first request under this retry's Idempotency-Key answered: whether its append (every report makes
    one) recorded a key, and the key_compromise revocations its request (the correlation id of that append's events)
    made after it, read from the log up to its head."""
    first = await first_append(services, ctx, cmd, cmd.tenant_id)
    if first is None:
        return False, (), ()
    count = first.global_position - first.first_position + 1  # one append's events are contiguous in its stream
    appended = [event for event in await services.store.read_stream(
        cmd.tenant_id, compromised_keys_stream(), from_version=max(1, first.version - count + 1))
        if event.version <= first.version]
    changed = any(event.type == "key.compromise_recorded" for event in appended)
    correlation = appended[-1].correlation_id if appended else None  # the request's, on all of them
    if correlation is None:
        return changed, (), ()
    certificates: list[str] = []
    cas: list[RevokedCaCertificate] = []
    after, head = first.global_position, await services.store.head_position()
    while after < head and (page := await services.store.read_all(after, limit=1000)):
        for event in page:
            if event.tenant_id != cmd.tenant_id or event.correlation_id != correlation \
                    or event.payload.get("reason") != "key_compromise":
                continue
            if event.type == "certificate.revoked":
                certificates.append(event.stream_id.removeprefix("certificate-"))
            elif event.type == "ca.certificate_revoked" and event.payload.get("subject_ca_id") is not None:
                cas.append(RevokedCaCertificate(ca_id=event.payload["subject_ca_id"],
                                                issuer_ca_id=event.stream_id.removeprefix("ca-"),
                                                serial_hex=event.payload["serial_hex"]))
        after = page[-1].global_position or head
    return changed, tuple(dict.fromkeys(certificates)), tuple(cas)
