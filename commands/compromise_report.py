"""A key reported compromised apart from a revocation: one found after what holds it was revoked for another reason (a
revocation is final: its reason stands), or a root's (a root is never revoked: it is replaced).

As a key_compromise revocation does (commands/revoke.py), the report records the key (both halves of a hybrid's) on
the tenant's ``compromised-keys`` stream first, so nothing certifies it again in the tenant, then revokes key_compromise
the tenant's certificates of it that are still trusted (``revoke.revoke_holders``), the named one too if it still is.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from commands import compromised_keys, revoke
from commands.authz import authorize
from commands.cas import CaId
from commands.compromised_keys import KeyHash
from commands.ids import CertificateId
from commands.runtime import CommandContext, CommandResult, Services, load
from commands.tenants import TenantId, allowed_while_suspended
from domain import ca, certificate, revocation
from domain.compromised_keys import KeyCompromiseRecorded
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
    a key not known before), and the certificates of them it revoked (key_compromise)."""

    result: CommandResult  # of the tenant's compromised-keys stream (unchanged if every key was known)
    public_keys_sha256: tuple[str, ...]
    revoked: tuple[str, ...] = ()

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
    if cmd.ca_id is not None:
        authorize(ctx.principal, "ca:manage", cmd.tenant_id)
        state = await load(services, cmd.tenant_id, ca.stream_id(cmd.ca_id), ca.fold)
        ca.require(state, cmd.ca_id)
        held = state.held
        if cmd.public_key_sha256 is not None:
            held = [c for c in held if c.facts.public_key_sha256 == cmd.public_key_sha256]
            if not held:
                raise DomainError("key_not_held", f"CA {cmd.ca_id} has held no key of SHA-256 {cmd.public_key_sha256} "
                                  "(GET /v1/cas/{id} lists its certificates)", field="public_key_sha256")
        reports = [half for c in held for half in compromised_keys.halves(
            services, c.certificate_pem, KeyCompromiseRecorded(
                public_key_sha256=c.facts.public_key_sha256, reason="key_compromise", reported_at=now,
                invalidity_date=cmd.invalidity_date, subject_ca_id=cmd.ca_id, through="report"))]
        result = await compromised_keys.record(services, ctx, cmd, cmd.tenant_id, reports)
        return KeyCompromiseReported(result=result,
                                     public_keys_sha256=tuple(dict.fromkeys(r.public_key_sha256 for r in reports)))
    authorize(ctx.principal, "cert:revoke", cmd.tenant_id)
    assert cmd.certificate_id is not None
    if cmd.public_key_sha256 is not None:
        raise DomainError("key_with_ca_only", "a certificate has one key: give public_key_sha256 only with ca_id",
                          field="public_key_sha256")
    state = await load(services, cmd.tenant_id, certificate.stream_id(cmd.certificate_id), certificate.fold)
    issued = certificate.require_exists(state, cmd.certificate_id)
    revocation.check_invalidity_date(cmd.invalidity_date, now=now, not_before=issued.facts.not_before)
    key = issued.facts.public_key_sha256
    reports = compromised_keys.halves(services, issued.certificate_pem, KeyCompromiseRecorded(
        public_key_sha256=key, reason="key_compromise", reported_at=now, invalidity_date=cmd.invalidity_date,
        certificate_id=cmd.certificate_id, ca_id=issued.ca_id, through="report"))
    result = await compromised_keys.record(services, ctx, cmd, cmd.tenant_id, reports)
    # the named certificate, if it is still trusted, is one of its key's holders: revoked as the others are
    sweep = RevocationRecorded(serial_hex=issued.facts.serial_hex, certificate_id=None, subject_ca_id=None,
                               reason="key_compromise", revoked_at=now, invalidity_date=cmd.invalidity_date,
                               not_after=issued.facts.not_after)
    revoked: tuple[str, ...] = ()
    for report in reports:  # a hybrid's ML-DSA half too: a pure ML-DSA certificate of it
        revoked += (await revoke.revoke_holders(services, ctx, cmd.tenant_id, report.public_key_sha256, sweep,
                                                named=None))[0]
    return KeyCompromiseReported(result=result, public_keys_sha256=tuple(r.public_key_sha256 for r in reports),
                                 revoked=revoked)
