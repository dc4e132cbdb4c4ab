"""The sweep that closes the compromised-key race left by a crash: certificates of a blocked key issued as it was
reported, by a process that died before its own second check (commands/certificates.py ``_withdraw_if_compromised``).

An issuance checks the tenant's compromised keys before signing and again after its append; a report's own sweep
revokes the key's certificates the certificates read model holds once it has reached the log's head. An issuance
that passed its first check just before the report, appended after the report's sweep read the read model (or while
that read model lagged or rebuilt), and whose process died before its second check, leaves a valid certificate of a
blocked key. This sweep revokes it: each pass of the revocation scheduler sweeps every key reported within
``RACE_WINDOW`` (an issuance in flight lands within it), every key this process has not swept yet (a restart after a
crash reaches what the dead process appended), and, a share of them per pass, each key last swept more than
``FULL_PASS`` ago, oldest first (an issuance that landed later than the window and crashed, with no restart since).
A key counts as swept only once the certificates read model answered for it caught up and not rebuilding: a sweep
while it rebuilds finds nothing, and would otherwise not look again for an hour. A hybrid's ML-DSA half is recorded
as a key of its own (``alternative_of``), and its sweep finds the hybrid certificates that share only that half (the
read model indexes both keys of each). A CA's key reported apart from a revocation of the CA (a report, a compromise
rollover) also has the CA certificates of it that CAs here issued revoked (``compromise_cascade``), which a crash
between the report and its cascade may have left trusted.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta

from commands import compromise_cascade, compromised_keys, revoke
from commands.authz import SYSTEM
from commands.runtime import CommandContext, Services
from domain.compromised_keys import KeyCompromiseRecorded
from domain.revocation import RevocationRecorded

log = logging.getLogger(__name__)
RACE_WINDOW = timedelta(minutes=15)  # how long after a report an issuance that passed its first check may land
FULL_PASS = timedelta(hours=1)  # every blocked key is swept again about this often
Swept = dict[tuple[str, str], datetime]  # (tenant, key) -> when this process last swept it completely


async def sweep_key(services: Services, tenant_id: str, report: KeyCompromiseRecorded) -> tuple[tuple[str, ...], bool]:
    """Revoke, key_compromise, the tenant's still trusted certificates of a blocked key (and for a CA's key reported
    apart from the CA's revocation, the CA certificates of it that CAs here issued): the certificates revoked, and
    whether the sweep is complete (False: the read model lagged or rebuilt, and may have missed some)."""
    sweep = RevocationRecorded(serial_hex="", certificate_id=None, subject_ca_id=None, reason="key_compromise",
                               revoked_at=services.clock.now(), invalidity_date=report.invalidity_date,
                               not_after=services.clock.now())
    ctx = CommandContext(principal=SYSTEM)
    if report.subject_ca_id is not None and report.through != "revocation":  # a CA's revocation revoked them all
        await compromise_cascade.revoke_ca_certificates(
            services, ctx, report, tenant_id, report.subject_ca_id, {report.public_key_sha256},
            invalidity_date=report.invalidity_date, links=report.through != "rollover")
    return await revoke.revoke_holders(services, ctx, tenant_id, report.public_key_sha256, sweep, named=None)


def due(state, swept: Swept, tenant_id: str, now: datetime, share: float = 1.0) -> list:
    """The tenant's blocked keys to sweep now: those not yet swept by this process or reported within
    ``RACE_WINDOW``, and of those swept ``FULL_PASS`` ago or longer the ``share`` of all its keys (at least one)
    swept longest ago."""
    urgent, stale = [], []
    for key, report in state.keys.items():
        last = swept.get((tenant_id, key))
        if last is None or now - report.reported_at <= RACE_WINDOW:
            urgent.append(report)
        elif now - last >= FULL_PASS:
            stale.append((last, report))
    stale.sort(key=lambda found: found[0])
    return urgent + [report for _last, report in stale[:max(1, math.ceil(len(state.keys) * share))]]


async def sweep_tenant(services: Services, tenant_id: str, swept: Swept, share: float = 1.0) -> tuple[str, ...]:
    """One pass over one tenant (the caller has brought the read models to the log's head): the certificates revoked.
    ``swept`` is the process's memory of when it last swept each key; ``share`` of the keys swept ``FULL_PASS`` ago
    are swept again (the scheduler's interval over ``FULL_PASS``: each key about once per ``FULL_PASS``)."""
    state = await compromised_keys.load_keys(services, tenant_id)
    revoked: tuple[str, ...] = ()
    for report in due(state, swept, tenant_id, services.clock.now(), share):
        found, complete = await sweep_key(services, tenant_id, report)
        if found:
            log.warning("key %s is blocked in tenant %s, yet %d certificate(s) of it were still trusted (an issuance "
                        "that raced its report): revoked %s", report.public_key_sha256, tenant_id, len(found),
                        ", ".join(found))
        revoked += found
        if complete:  # a read model that lagged or rebuilt may have missed some: swept again on the next pass
            swept[(tenant_id, report.public_key_sha256)] = services.clock.now()
    return revoked
