"""A stolen CA key's certificates that CAs here issued, revoked ``key_compromise`` on each issuer's stream.

A CA's keys are certified on its own stream only: its certificates (an intermediate's, from its parent), the
cross-certificates other CAs of the tenant issued for them (``ca.cross_certified``), and a root's link certificates.
When a CA's key is reported compromised (commands/compromise_report.py) or a root rolls over away from it
(commands/ca_rollover.py), each of them still trusted is revoked: a relying party that trusts the other CA would
otherwise accept, through its cross-certificate, whatever the thief signs. A revocation of the CA itself
(``revoke.revoke_ca``) revokes every one of them already, for its own reason.

It runs after the key is blocked, and is idempotent (only what is still trusted is revoked), so a retry and the
compromised-key sweep (commands/compromise_sweep.py) complete what a crash left; each issuer's CRLs are published
at once.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime

import msgspec

from commands import compromised_keys, crl, ocsp, revoke
from commands.runtime import CommandContext, Services, load
from domain import ca, compromise

log = logging.getLogger(__name__)


class RevokedCaCertificate(msgspec.Struct, frozen=True, kw_only=True):
    """A CA certificate revoked with a stolen key: ``serial_hex``, on ``issuer_ca_id``'s CRL, certified ``ca_id``."""

    ca_id: str
    issuer_ca_id: str
    serial_hex: str


async def revoke_ca_certificates(services: Services, ctx: CommandContext, command: msgspec.Struct, tenant_id: str,
                                 ca_id: str, keys: Collection[str], *, invalidity_date: datetime | None,
                                 links: bool = True) -> tuple[RevokedCaCertificate, ...]:
    """Revoke, ``key_compromise``, the still trusted certificates of CA ``ca_id``'s ``keys`` that a CA here issued;
    not the root's own links if ``links`` is False (a compromise rollover revokes them in its own append). The
    certificates this call revoked."""
    state = await load(services, tenant_id, ca.stream_id(ca_id), ca.fold)
    by_issuer = compromise.certificates_of_keys(
        state, keys, lambda held: compromised_keys.alternative_key_sha256(services, held.certificate_pem))
    if not links:
        by_issuer.pop(ca_id, None)
    revoked: tuple[RevokedCaCertificate, ...] = ()
    for issuer_id, certificates in by_issuer.items():
        registry = await crl.load_registry(services, tenant_id, issuer_id)
        entries = compromise.key_compromise_entries(ca_id, certificates, registry.revoked, now=services.clock.now(),
                                                    invalidity_date=invalidity_date)
        if not entries:
            continue
        _appended, registry = await revoke.record_on_issuer(services, ctx.without_key(), command, tenant_id,
                                                            issuer_id, entries)
        serials = [entry.serial_hex for entry in entries]
        await revoke.publish_crls(services, tenant_id, registry, serials)  # none for an offline key: the ceremony's
        ocsp.RESPONSES.invalidate(issuer_id)
        revoked += tuple(RevokedCaCertificate(ca_id=ca_id, issuer_ca_id=issuer_id, serial_hex=serial)
                         for serial in serials)
    if revoked:
        log.warning("CA %s's key compromised: revoked %d certificate(s) of it that CAs here issued: %s", ca_id,
                    len(revoked), ", ".join(f"{r.serial_hex} by CA {r.issuer_ca_id}" for r in revoked))
    return revoked
