"""The sweep that closes the compromised-key race left by a crash: certificates of a blocked key issued as it was
reported, by a process that died before its own second check (commands/certificates.py ``_withdraw_if_compromised``).

An issuance checks the tenant's compromised keys before signing and again after its append; a report's own sweep
revokes the key's certificates the certificates read model holds once it has reached the log's head. An issuance
that passed its first check just before the report, appended after the report's sweep read the read model (or while
that read model lagged or rebuilt), and whose process died before its second check, leaves a valid certificate of a
blocked key. This sweep revokes it: each pass of the revocation scheduler sweeps every key reported within
``RACE_WINDOW`` (an issuance in flight lands within it), and each process sweeps every blocked key once, on its first
pass with the read models at the log's head (a restart after a crash reaches what the dead process appended). A key
counts as swept only once the certificates read model answered for it caught up and not rebuilding: a sweep while it
rebuilds finds nothing, and would otherwise never look again. A hybrid's ML-DSA half is recorded as a key of its own
(``alternative_of``), and its sweep finds the hybrid certificates that share only that half (the read model indexes
both keys of each).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from commands import compromised_keys, revoke
from commands.authz import SYSTEM
from commands.runtime import CommandContext, Services
from domain.compromised_keys import KeyCompromiseRecorded
from domain.revocation import RevocationRecorded

log = logging.getLogger(__name__)
RACE_WINDOW = timedelta(minutes=15)  # how long after a report an issuance that passed its first check may land


async def sweep_key(services: Services, tenant_id: str, report: KeyCompromiseRecorded) -> tuple[tuple[str, ...], bool]:
    """Revoke, key_compromise, the tenant's still trusted certificates of a blocked key: those revoked, and whether the
    sweep is complete (False: the read model lagged or rebuilt, and may have missed some)."""
    sweep = RevocationRecorded(serial_hex="", certificate_id=None, subject_ca_id=None, reason="key_compromise",
                               revoked_at=services.clock.now(), invalidity_date=report.invalidity_date,
                               not_after=services.clock.now())
    return await revoke.revoke_holders(services, CommandContext(principal=SYSTEM), tenant_id,
                                       report.public_key_sha256, sweep, named=None)


def due(state, swept: set[tuple[str, str]], tenant_id: str, now: datetime) -> list:
    """The tenant's blocked keys to sweep now: not yet swept by this process, or reported within ``RACE_WINDOW``."""
    return [report for key, report in state.keys.items()
            if (tenant_id, key) not in swept or now - report.reported_at <= RACE_WINDOW]


async def sweep_tenant(services: Services, tenant_id: str, swept: set[tuple[str, str]]) -> tuple[str, ...]:
    """One pass over one tenant (the caller has brought the read models to the log's head): the certificates revoked.
    ``swept`` is the process's memory of the keys it has swept once."""
    state = await compromised_keys.load_keys(services, tenant_id)
    revoked: tuple[str, ...] = ()
    for report in due(state, swept, tenant_id, services.clock.now()):
        found, complete = await sweep_key(services, tenant_id, report)
        if found:
            log.warning("key %s is blocked in tenant %s, yet %d certificate(s) of it were still trusted (an issuance "
                        "that raced its report): revoked %s", report.public_key_sha256, tenant_id, len(found),
                        ", ".join(found))
        revoked += found
        if complete:  # a read model that lagged or rebuilt may have missed some: swept again on the next pass
            swept.add((tenant_id, report.public_key_sha256))
    return revoked
