"""The renewal scheduler: renews certificates when their profile's policy says so, and warns of expiry, on a timer.

It finds candidates in the certificates read model (one it misses this pass is caught on the
next); what to do is decided from each certificate's stream. Several instances may run it at
once: the claim on the old certificate's stream (commands/renewal.py) lets one renewal win,
and an expiry warning's append with the version read lets one warning per threshold win.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from commands import renewal
from commands.runtime import Services
from infra import telemetry
from infra.periodic import repeat
from projections import certificate_queries as read_model
from projections.runner import ProjectionRunner

log = logging.getLogger(__name__)
INTERVAL_SECONDS = 300.0
_BATCH = 500


@dataclass
class PassReport:
    renewed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    warned: list[tuple[str, int]] = field(default_factory=list)  # (certificate, threshold days)


class RenewalScheduler:
    def __init__(self, services: Services, runner: ProjectionRunner, interval: float = INTERVAL_SECONDS,
                 schedule: renewal.Schedule | None = None) -> None:
        self.services = services
        self.runner = runner
        self.interval = interval
        self.schedule = schedule or renewal.Schedule()

    def _candidates(self) -> tuple[list[tuple], list[tuple]]:
        now = self.services.clock.now()
        conn = self.runner.connection()
        try:
            due = read_model.renewal_candidates(conn, now, now - self.schedule.retry_window, _BATCH)
            expiring = read_model.warning_candidates(conn, now, self.schedule.warning_days, _BATCH)
            return due, expiring
        finally:
            conn.close()

    async def run_once(self) -> PassReport:
        """One pass: renew what is due, then warn of what expires soon (a renewed certificate is not warned of)."""
        report = PassReport()
        due, expiring = await asyncio.to_thread(self._candidates)
        for tenant_id, certificate_id in due:
            try:
                outcome = await renewal.renew_if_due(self.services, tenant_id, certificate_id, self.schedule)
            except Exception:  # one certificate's failure must not stop the others' renewals
                log.exception("renewal of certificate %s failed", certificate_id)
                outcome = "failed"
            if outcome in ("renewed", "failed"):
                getattr(report, outcome).append(certificate_id)
                telemetry.RENEWALS.labels(outcome).inc()
        for tenant_id, certificate_id in expiring:
            try:
                days = await renewal.warn_if_expiring(self.services, tenant_id, certificate_id,
                                                      self.schedule.warning_days)
            except Exception:
                log.exception("expiry warning for certificate %s failed", certificate_id)
                continue
            if days is not None:
                report.warned.append((certificate_id, days))
        return report

    async def run(self) -> None:
        await repeat(self.run_once, self.interval, "renewal scheduler")
