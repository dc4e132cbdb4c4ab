"""The revocation scheduler: republishes CRLs before they lapse and renews OCSP responders, on a timer; and sweeps
blocked keys for certificates an issuance left valid by racing their report (commands/compromise_sweep.py): each
pass the keys reported lately and those it has not swept yet, and a share of the others, so that every blocked key
is swept again about once an hour.

It finds CAs in the read model (a CA it misses this pass is caught on the next, and its first
CRL is published on demand anyway); what to publish is decided from each CA's stream. Several
instances may run it at once: the CA stream's optimistic concurrency lets one CRL per number win.
"""

from __future__ import annotations

import asyncio
import logging

from commands import compromise_sweep, crl, ocsp
from commands.crl import PublishedCrl
from commands.runtime import Services
from infra import telemetry
from infra.periodic import repeat
from projections import cas as ca_model
from projections.runner import ProjectionRunner

log = logging.getLogger(__name__)
INTERVAL_SECONDS = 60.0
SWEEP_REACH_SECONDS = 5.0  # how long a pass waits for the read models to reach the log's head before it sweeps
_PAGE = 500


class RevocationScheduler:
    def __init__(self, services: Services, runner: ProjectionRunner, interval: float = INTERVAL_SECONDS) -> None:
        self.services = services
        self.runner = runner
        self.interval = interval
        self.swept: compromise_sweep.Swept = {}  # (tenant, key) -> when this process last swept it

    def _cas(self) -> list[tuple[str, str]]:
        """Every CA that may sign a CRL here (active, disabled or revoked), as (tenant, CA id)."""
        conn = self.runner.connection()
        try:
            found = []
            for status in ("active", "disabled", "revoked"):
                after = None
                while rows := ca_model.search(conn, None, status=status, after=after, limit=_PAGE):
                    found += [(row["tenant_id"], row["ca_id"]) for row in rows]
                    after = rows[-1]["ca_id"]
            return found
        finally:
            conn.close()

    async def run_once(self) -> list[PublishedCrl]:
        """One pass: the CRLs it published (renewed OCSP responders are logged)."""
        cas = await asyncio.to_thread(self._cas)
        failed: list[str] = []
        published = await crl.republish_due(self.services, cas, failed)
        telemetry.CRL_PUBLICATION_FAILURES.inc(len(failed))
        await self._export_lapses(cas)
        for tenant_id, ca_id in cas:
            try:
                if await ocsp.renew_signers(self.services, tenant_id, ca_id):
                    log.info("renewed the OCSP responder of CA %s", ca_id)
            except Exception:  # one CA's failure must not stop the others' renewals
                log.exception("OCSP responder renewal for CA %s failed", ca_id)
        await self.sweep_compromised({tenant_id for tenant_id, _ in cas})
        return published

    async def sweep_compromised(self, tenants: set[str]) -> tuple[str, ...]:
        """Revoke certificates of keys blocked in ``tenants`` that raced their report (none while the read models are
        behind the log's head: the next pass sweeps)."""
        if not await self.runner.reach(await self.services.store.head_position(), SWEEP_REACH_SECONDS):
            log.info("the read models lag the log: the compromised-key sweep waits for the next pass")
            return ()
        revoked: tuple[str, ...] = ()
        share = min(1.0, self.interval / compromise_sweep.FULL_PASS.total_seconds())  # a full pass per FULL_PASS
        for tenant_id in sorted(tenants):
            try:
                revoked += await compromise_sweep.sweep_tenant(self.services, tenant_id, self.swept, share)
            except Exception:  # one tenant's failure must not stop the others'
                log.exception("the compromised-key sweep of tenant %s failed", tenant_id)
        return revoked

    async def _export_lapses(self, cas: list[tuple[str, str]]) -> None:
        """Set ``csm_crl_next_update_timestamp_seconds`` of every CA with a CRL (after this pass's publications)."""
        for tenant_id, ca_id in cas:
            try:
                lapses = await crl.lapses_at(self.services, tenant_id, ca_id)
            except Exception:  # the gauge keeps its last value: it goes on approaching the lapse the alert watches
                log.exception("reading the CRLs of CA %s failed", ca_id)
                continue
            if lapses is not None:
                # whole seconds, as the CRL's nextUpdate (X.509 time) says it
                telemetry.CRL_NEXT_UPDATE.labels(tenant_id, ca_id).set(int(lapses.timestamp()))

    async def run(self) -> None:
        await repeat(self.run_once, self.interval, "revocation scheduler")
