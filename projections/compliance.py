"""A tenant's compliance report: the rules of ``domain.compliance`` evaluated now over its read models and streams.

Certificates come from the certificates read model (live ones, and those expired in the last 30 days that nothing
replaced); CAs from their own streams, folded as the revocation scheduler folds them (``commands.crl``), so that
CRL lapses and compromised keys are judged by the same rules that publish and refuse; the tenant's policy and its
compromised keys from their streams; what endpoints served when last scanned from the discovery read model, joined to
the certificates read model by fingerprint. The report says up to which log position its read-model part is current.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import msgspec

from commands import crl
from commands.authz import Principal, authorize
from commands.compromised_keys import load_keys
from commands.runtime import Services, load, rfc3339
from domain import compliance, compromised_keys, tenant
from domain.errors import NotFound
from domain.certspec import SubjectAltNames
from domain.compliance import CertificateRecord, Finding
from projections import discovery
from projections.certificates import live, validity_time

CERTIFICATE_COLUMNS = ("certificate_id", "ca_id", "profile", "common_name", "algorithm", "key_source", "not_before",
                       "not_after", "sans", "key_exports", "auto_renew", "renew_at", "renewal_failed_at",
                       "renewal_failure")
EXPIRY_WINDOWS = (7, 30, 90)
REVOKED_WINDOW = timedelta(days=30)

Query = Callable[..., Awaitable[Any]]  # ReadModels.query: fn(conn, *args) on a thread with a views connection


class ComplianceSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The tenant's figures beside the findings. ``compromised_keys`` counts the keys blocked now (reported and not
    lifted), a hybrid's two halves as one key: its classical key and the ML-DSA half recorded with it
    (``alternative_of``) were stolen together and are lifted together; an ML-DSA key reported alone counts as one."""

    live_certificates: int
    by_algorithm: dict[str, int]
    by_profile: dict[str, int]
    by_key_source: dict[str, int]
    expiring_within_days: dict[str, int]  # "7", "30", "90": live certificates expiring within that many days
    revoked_last_30_days: dict[str, int]  # by reason
    cas_by_status: dict[str, int]
    post_quantum_cas: int  # CAs in service signing with ML-DSA, a hybrid or another post-quantum algorithm
    cas_in_service: int
    post_quantum_certificates: int  # live certificates with a post-quantum key
    compromised_keys: int  # domain.compromised_keys.blocked_count; each listed in GET /v1/tenants/{id}/compromised-keys
    endpoints_observed: int = 0  # endpoints scanned in the last 14 days (discovery; csm discover scan)


class ComplianceReport(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    generated_at: str
    position: int  # the read models' position the certificates were read at
    counts: dict[str, int]  # findings by severity (all of them, however many are listed)
    findings: list[Finding]  # most severe first
    truncated: bool  # more findings than ``limit`` were found
    summary: ComplianceSummary


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


_SANS = msgspec.json.Decoder(SubjectAltNames)


def _record(row: tuple) -> CertificateRecord:
    """A certificates read-model row (``CERTIFICATE_COLUMNS``) as the rules read it."""
    (certificate_id, ca_id, profile, common_name, algorithm, key_source, not_before, not_after, sans, key_exports,
     auto_renew, renew_at, renewal_failed_at, renewal_failure) = row
    return CertificateRecord(
        certificate_id=certificate_id, ca_id=ca_id, profile=profile, common_name=common_name, algorithm=algorithm,
        key_source=key_source, not_before=datetime.fromisoformat(not_before),
        not_after=datetime.fromisoformat(not_after), sans=_SANS.decode(sans), key_exports=key_exports or 0,
        auto_renew=bool(auto_renew), renew_at=_time(renew_at), renewal_failed_at=_time(renewal_failed_at),
        renewal_failure=renewal_failure)


def _grouped(conn: sqlite3.Connection, sql: str, args: tuple) -> dict[str, int]:
    return {str(key): n for key, n in conn.execute(sql, args).fetchall()}


def _live_counts(records: list[CertificateRecord], now: datetime) -> dict[str, Any]:
    """The summary's counts of live certificates (not expired at ``now``), in one pass over the records the rules
    read (which hold them all, and those expired within the lookback)."""
    live_now = [r for r in records if r.not_after > now]
    horizons = {str(days): now + timedelta(days=days) for days in EXPIRY_WINDOWS}
    return {
        "live_certificates": len(live_now),
        "by_algorithm": dict(sorted(Counter(r.algorithm for r in live_now).items())),
        "by_profile": dict(sorted(Counter(r.profile for r in live_now).items())),
        "by_key_source": dict(sorted(Counter(r.key_source for r in live_now).items())),
        "expiring_within_days": {days: sum(1 for r in live_now if r.not_after < horizon)
                                 for days, horizon in horizons.items()},
    }


def facts(conn: sqlite3.Connection, tenant_id: str, now: datetime) -> tuple[list[CertificateRecord], list[tuple],
                                                                           dict, int]:
    """The tenant's certificates the rules read (live, or expired in the lookback and not replaced), its CAs in
    service (id, algorithm), the summary's counts, and the certificates read model's position. One scan of the
    tenant's live certificates: the summary counts them from the same rows."""
    position = conn.execute("SELECT position FROM projection_checkpoints WHERE name = 'certificates'").fetchone()
    rows = conn.execute(
        f"SELECT {', '.join(CERTIFICATE_COLUMNS)} FROM certificates WHERE tenant_id = ? AND {live()} "
        "AND not_after > ? ORDER BY not_after, certificate_id", (tenant_id, validity_time(now - compliance.EXPIRED_LOOKBACK))).fetchall()
    records = [_record(row) for row in rows]
    counts: dict[str, Any] = {
        **_live_counts(records, now),
        "revoked_last_30_days": _grouped(
            conn, "SELECT revocation_reason, count(*) FROM certificates WHERE tenant_id = ? AND status = 'revoked' "
                  "AND revoked_at >= ? GROUP BY 1", (tenant_id, rfc3339(now - REVOKED_WINDOW))),
        "cas_by_status": _grouped(conn, "SELECT status, count(*) FROM cas WHERE tenant_id = ? GROUP BY 1",
                                  (tenant_id,)),
    }
    cas = conn.execute("SELECT ca_id, algorithm FROM cas WHERE tenant_id = ? AND status IN ('active', 'disabled') "
                       "ORDER BY ca_id", (tenant_id,)).fetchall()
    return records, cas, counts, position[0] if position else 0


async def report(query: Query, services: Services, principal: Principal, tenant_id: str, now: datetime,
                 limit: int = 1000) -> ComplianceReport:
    """The tenant's compliance report as of ``now``; at most ``limit`` findings listed, every one counted. Its
    reader needs what reading the certificates and the CAs needs (cert:read, ca:read)."""
    authorize(principal, "cert:read", tenant_id)
    authorize(principal, "ca:read", tenant_id)
    state = await load(services, tenant_id, tenant.stream_id(tenant_id), tenant.fold)
    if state.status == "absent":
        raise NotFound("tenant_not_found", f"tenant {tenant_id} does not exist", field="tenant_id")
    compromised = await load_keys(services, tenant_id)
    records, cas, counts, position = await query(facts, tenant_id, now)
    findings: list[Finding] = compliance.tenant_findings(tenant_id, state.policy)
    for record in records:
        findings += compliance.certificate_findings(record, state.policy, now)
    for ca_id, _algorithm in cas:
        findings += compliance.ca_findings(await crl.load_registry(services, tenant_id, ca_id), compromised, now)
    endpoints = await query(discovery.records, tenant_id, now - compliance.DISCOVERY_STALE)
    for endpoint in endpoints:
        findings += compliance.discovered_findings(endpoint, now)
    findings = compliance.ordered(findings)
    summary = ComplianceSummary(
        **counts, cas_in_service=len(cas), post_quantum_cas=sum(compliance.post_quantum(a) for _, a in cas),
        post_quantum_certificates=sum(n for a, n in counts["by_algorithm"].items() if compliance.post_quantum(a)),
        compromised_keys=compromised_keys.blocked_count(compromised), endpoints_observed=len(endpoints))
    return ComplianceReport(tenant_id=tenant_id, generated_at=rfc3339(now), position=position,
                            counts=compliance.severity_counts(findings), findings=findings[:limit],
                            truncated=len(findings) > limit, summary=summary)
