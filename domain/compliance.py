"""The compliance rules: what a tenant's auditor is told is wrong with its certificates and CAs, and why.

Each rule has an id, a severity and a remedy (``RULES``, printed in docs/security.md). The checks are pure: they
take what the read models and the CA streams hold (``CertificateRecord``, a CA's folded ``revocation.Registry``,
the tenant's policy and compromised keys) and a moment, and list ``Finding``s. Time-dependent rules (expiry, CRL
lapses) are why the report is evaluated when asked, not kept: a finding appears when its moment passes, without
an event.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

import msgspec

from domain import crl_publication, revocation
from domain.algorithms import ALGORITHMS
from domain.certspec import SubjectAltNames
from domain.compromised_keys import CompromisedKeys
from domain.discovery import ChainCertificate, chain_complete
from domain.tenant_policy import TenantPolicy, tenant_name_violations

SEVERITIES = ("critical", "high", "medium", "low")  # most severe first
EXPIRED_LOOKBACK = timedelta(days=30)  # an expired certificate nothing replaced is reported this long
EXPIRING_SOON, EXPIRING = timedelta(days=7), timedelta(days=30)
CA_EXPIRING_SOON, CA_EXPIRING = timedelta(days=90), timedelta(days=180)
RENEWAL_GRACE = timedelta(hours=1)  # the scheduler runs every few minutes: an hour late is not a race
PUBLICATION_GRACE = timedelta(hours=1)  # likewise for a revocation no CRL of its (online) CA lists yet
POST_QUANTUM_FAMILIES = frozenset({"ml-dsa", "hybrid", "slh-dsa", "falcon"})


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    severity: str
    title: str
    remedy: str


RULES: dict[str, Rule] = {
    "ca_key_compromised": Rule(
        severity="critical", title="An active CA signs with a key reported compromised",
        remedy="A root: roll it over with `compromised` true (`csm ca rollover --compromised`: no link certificate, "
               "its keys leave every truststore) and re-issue what it lists. An intermediate: revoke it "
               "`key_compromise`, create another and re-issue what it signed."),
    "ca_expired": Rule(
        severity="critical", title="An active CA's certificate has expired: nothing it signed validates",
        remedy="Create a new CA (or re-certify an intermediate under its parent) and re-issue its certificates."),
    "ca_crl_overdue": Rule(
        severity="critical", title="A CA key's CRL is past its nextUpdate: relying parties that check CRLs fail",
        remedy="Publish the CRL (`GET /v1/cas/{id}/crl` publishes a due one; an offline root needs its "
               "`csm ca root sign-crl` ceremony) and check the revocation scheduler is running."),
    "ca_crl_missing": Rule(
        severity="high", title="An offline CA key has no CRL yet",
        remedy="Publish its first CRL (for an offline root: `csm ca root sign-crl`)."),
    "ca_crl_behind": Rule(
        severity="high", title="A revocation (an hour old; for an offline key, any) is on no CRL of its CA key yet",
        remedy="Publish the CRL again (for an offline root: `csm ca root sign-crl`); until then relying parties "
               "that check CRLs accept the revoked certificate."),
    "ca_expiring_soon": Rule(
        severity="high", title="An active CA's certificate expires within 90 days",
        remedy="Roll the CA over (`POST /v1/cas/{id}/rollover`) and distribute the new chain before it expires."),
    "ca_expiring": Rule(
        severity="medium", title="An active CA's certificate expires within 180 days",
        remedy="Plan the CA's rollover and the truststore update that goes with it."),
    "certificate_expired": Rule(
        severity="high", title="A certificate expired in the last 30 days and nothing replaced it",
        remedy="Renew it if its node still runs (`POST /v1/certificates/{id}/renew`), or revoke it "
               "`cessation_of_operation` if the node is gone."),
    "certificate_renewal_failed": Rule(
        severity="high", title="The scheduler's last renewal of a live certificate failed",
        remedy="Read `renewal_failure` on the certificate, fix the cause (policy, CA, quota) and renew it."),
    "certificate_renewal_overdue": Rule(
        severity="high", title="A certificate set to renew automatically is more than an hour past its renewal time",
        remedy="Check that `csm serve` (its renewal scheduler) is running, or renew it by hand."),
    "certificate_expiring_soon": Rule(
        severity="high", title="A certificate that is not renewed automatically expires within 7 days",
        remedy="Renew it (`POST /v1/certificates/{id}/renew`) and deploy the new one, or revoke it if unused."),
    "certificate_expiring": Rule(
        severity="medium", title="A certificate that is not renewed automatically expires within 30 days",
        remedy="Renew it, or give its profile a renewal policy so that the scheduler does."),
    "certificate_algorithm_not_allowed": Rule(
        severity="medium", title="A live certificate's algorithm is not one the tenant's policy allows now",
        remedy="Re-issue it with an allowed algorithm (the policy changed after it was issued)."),
    "certificate_validity_exceeds_policy": Rule(
        severity="medium", title="A live certificate lives longer than the tenant's policy allows now",
        remedy="Re-issue it within the policy's maximum validity (the policy changed after it was issued)."),
    "certificate_name_not_allowed": Rule(
        severity="medium", title="A live certificate names a host, address or email the tenant's policy does not "
                                 "allow now",
        remedy="Re-issue it with allowed names, or revoke it (the policy changed after it was issued)."),
    "certificate_wildcard_name": Rule(
        severity="medium", title="A live certificate carries a wildcard DNS name",
        remedy="Issue one certificate per node: with a wildcard, one stolen key impersonates every host it "
               "covers. A tenant policy with allow_wildcards false refuses them at issuance (ACME orders get them "
               "only when it is true)."),
    "certificate_key_exported": Rule(
        severity="low", title="A live certificate's server-generated private key has been exported",
        remedy="Confirm the exports in the audit log (`certificate.private_key_exported`) were expected."),
    "discovered_revoked": Rule(
        severity="critical", title="A node serves a certificate this service revoked",
        remedy="Deploy a live certificate to the node (`csm cert issue`, then its keystore export) and restart its "
               "TLS listener; relying parties that check revocation refuse it, those that do not trust it still."),
    "discovered_expired": Rule(
        severity="high", title="A node serves an expired certificate",
        remedy="Deploy the certificate's renewal (or a new one) to the node; clients refuse the expired one."),
    "discovered_superseded": Rule(
        severity="high", title="A node serves a certificate this service has renewed: the renewal was never deployed",
        remedy="Export the successor (`superseded_by`) into the node's keystore and reload it; the old one expires "
               "or is revoked while the node still serves it."),
    "discovered_unmanaged": Rule(
        severity="medium", title="A node serves a certificate this service did not issue (in this tenant)",
        remedy="Issue the node a certificate here and deploy it, so that it is renewed, revoked and audited; or "
               "record why the node is managed elsewhere."),
    "discovered_incomplete_chain": Rule(
        severity="medium", title="A node serves this service's certificate without its intermediate CA's certificate",
        remedy="Deploy a keystore that holds the chain (`csm cluster deploy`, or the PKCS#12/JKS export, both carry "
               "it): a client that trusts only the root, as Cassandra's drivers and peers do with the truststore "
               "bundle, cannot build the path and refuses the node."),
    "discovered_unreachable": Rule(
        severity="low", title="An endpoint that served a certificate no longer completes a TLS handshake",
        remedy="Check the node is meant to be down (then it drops out after 14 days unseen) or that its TLS "
               "listener still runs; the reason says what the scan met."),
    "tenant_policy_unrestricted": Rule(
        severity="low", title="The tenant's policy restricts no names and no validity",
        remedy="Set allowed DNS names, networks and a maximum validity (`PUT /v1/tenants/{id}/policy`)."),
}


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    rule: str
    severity: str
    subject_type: str  # certificate | ca | tenant
    subject_id: str
    detail: str
    ca_id: str | None = None  # the issuing CA of a certificate


class CertificateRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What the rules read of one certificate (the certificates read model's row)."""

    certificate_id: str
    ca_id: str
    profile: str
    common_name: str | None
    algorithm: str
    key_source: str
    not_before: datetime
    not_after: datetime
    sans: SubjectAltNames
    key_exports: int = 0
    auto_renew: bool = False
    renew_at: datetime | None = None
    renewal_failed_at: datetime | None = None
    renewal_failure: str | None = None


class DiscoveredRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What the rules read of one endpoint's latest observation (the discovery read model's row), joined to the
    certificate of this tenant it served, if this service issued it."""

    endpoint: str  # host:port, [v6]:port
    observed_at: datetime
    last_served_at: datetime | None  # when it last served a certificate (None: never)
    error: str | None = None
    reason: str | None = None
    fingerprint_sha256: str | None = None
    not_after: datetime | None = None  # the served certificate's
    certificate_id: str | None = None  # the tenant's certificate of that fingerprint
    ca_id: str | None = None
    status: str | None = None  # its read-model status: issued | revoked
    revocation_reason: str | None = None
    superseded_by: str | None = None
    issuer_dn: str | None = None  # the served leaf's
    ca_kind: str | None = None  # root | intermediate: the kind of the tenant's CA that issued it
    chain: list[ChainCertificate] | None = None  # what the endpoint sent after its leaf (None: not recorded)


def _finding(rule: str, subject_type: str, subject_id: str, detail: str, ca_id: str | None = None) -> Finding:
    return Finding(rule=rule, severity=RULES[rule].severity, subject_type=subject_type, subject_id=subject_id,
                   detail=detail, ca_id=ca_id)


def _days(delta: timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:.1f} days" if days < 10 else f"{days:.0f} days"


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def certificate_findings(cert: CertificateRecord, policy: TenantPolicy, now: datetime) -> list[Finding]:
    """The findings of one certificate that is not revoked and not superseded (live, or expired without renewal)."""

    def found(rule: str, detail: str) -> None:
        out.append(_finding(rule, "certificate", cert.certificate_id, detail, cert.ca_id))

    out: list[Finding] = []
    if cert.not_after <= now:
        if now - cert.not_after <= EXPIRED_LOOKBACK:
            found("certificate_expired", f"expired at {_when(cert.not_after)}, {_days(now - cert.not_after)} ago")
        return out  # an expired certificate's other findings no longer matter
    left = cert.not_after - now
    if cert.renewal_failed_at is not None:
        found("certificate_renewal_failed", f"renewal failed at {_when(cert.renewal_failed_at)}: "
              f"{cert.renewal_failure or 'no reason recorded'}; expires in {_days(left)}")
    elif cert.auto_renew and cert.renew_at is not None and cert.renew_at <= now - RENEWAL_GRACE:
        found("certificate_renewal_overdue", f"renewal was due at {_when(cert.renew_at)}; expires in {_days(left)}")
    elif not cert.auto_renew and left <= EXPIRING:
        found("certificate_expiring_soon" if left <= EXPIRING_SOON else "certificate_expiring",
              f"expires at {_when(cert.not_after)}, in {_days(left)}, and is not renewed automatically")
    if policy.allowed_algorithms is not None and cert.algorithm not in policy.allowed_algorithms:
        found("certificate_algorithm_not_allowed", f"{cert.algorithm}; the policy allows "
              f"{', '.join(policy.allowed_algorithms) or 'none'}")
    lifetime = cert.not_after - cert.not_before
    if policy.max_validity_days is not None and lifetime > timedelta(days=policy.max_validity_days):
        found("certificate_validity_exceeds_policy",
              f"{_days(lifetime)}; the policy allows {policy.max_validity_days} days")
    for violation in tenant_name_violations(cert.sans, cert.common_name, policy):
        found("certificate_name_not_allowed", f"{violation.field}: {violation.message}")
    wildcards = [name for name in (*cert.sans.dns, cert.common_name or "") if name.startswith("*")]
    if wildcards:
        found("certificate_wildcard_name", ", ".join(sorted(set(wildcards))))
    if cert.key_source == "server" and cert.key_exports:
        found("certificate_key_exported", f"exported {cert.key_exports} time{'s' if cert.key_exports > 1 else ''}")
    return out


def ca_findings(state: revocation.Registry, compromised: CompromisedKeys, now: datetime) -> list[Finding]:
    """The findings of one CA in service (active or disabled), from its folded stream."""
    ca = state.ca
    current = ca.current
    if current is None or ca.status not in ("active", "disabled"):
        return []
    out: list[Finding] = []

    def found(rule: str, detail: str) -> None:
        out.append(_finding(rule, "ca", ca.ca_id, detail))

    if current.facts.public_key_sha256 in compromised.keys:
        report = compromised.keys[current.facts.public_key_sha256]
        found("ca_key_compromised", f"its current key {current.facts.public_key_sha256} was reported "
              f"{report.reason} at {_when(report.reported_at)}")
    left = current.facts.not_after - now
    if left <= timedelta(0):
        found("ca_expired", f"expired at {_when(current.facts.not_after)}")
    elif left <= CA_EXPIRING:
        found("ca_expiring_soon" if left <= CA_EXPIRING_SOON else "ca_expiring",
              f"expires at {_when(current.facts.not_after)}, in {_days(left)}")
    offline = crl_publication.key_offline(state)
    if crl_publication.can_publish(state) or offline:
        _crl_findings(state, offline, now, found)
    return out


def _crl_findings(state: revocation.Registry, offline: bool, now: datetime, found: Callable[[str, str], None]) -> None:
    """A CA whose key is here publishes a missing or due CRL at once when it is fetched, and at the scheduler's
    next pass: only a lapse (the scheduler has not run for two thirds of a period) or a revocation an hour old
    that no CRL lists is a finding. An offline key's CRLs come only from its ceremony: any gap is."""
    for signer in crl_publication.publishing_keys(state, now):
        key, last = revocation.key_id(signer), state.crls.get(signer.facts.public_key_sha256)
        if last is None:
            if offline:
                found("ca_crl_missing", f"key {key} has published no CRL")
            continue
        if last.published.next_update <= now:
            found("ca_crl_overdue", f"key {key}'s CRL {last.published.crl_number} lapsed at "
                  f"{_when(last.published.next_update)}")
        missing = [serial for serial, version in state.recorded_at.items() if version > last.version
                   and (offline or state.revoked[serial].revoked_at <= now - PUBLICATION_GRACE)]
        if missing:
            found("ca_crl_behind", f"key {key}'s CRL {last.published.crl_number} lacks {len(missing)} "
                  f"revocation{'s' if len(missing) > 1 else ''}")


DISCOVERY_STALE = timedelta(days=14)  # an endpoint not scanned for this long drops out of the report


def discovered_findings(record: DiscoveredRecord, now: datetime) -> list[Finding]:
    """The findings of one endpoint's latest observation; none once it is ``DISCOVERY_STALE``."""
    if now - record.observed_at > DISCOVERY_STALE:
        return []
    out: list[Finding] = []

    def found(rule: str, detail: str) -> None:
        out.append(_finding(rule, "endpoint", record.endpoint, detail, record.ca_id))

    seen = f"seen {_when(record.observed_at)}"
    if record.error is not None:
        if record.last_served_at is not None:
            found("discovered_unreachable", f"{record.error}: {record.reason or 'no reason given'} ({seen}); it "
                  f"last served a certificate at {_when(record.last_served_at)}")
        return out
    served = f"certificate {record.certificate_id or record.fingerprint_sha256}"
    if record.certificate_id is None:
        found("discovered_unmanaged", f"SHA-256 {record.fingerprint_sha256} is no certificate of this tenant ({seen})")
    elif record.status == "revoked":
        found("discovered_revoked", f"{served} was revoked ({record.revocation_reason}) ({seen})")
    elif record.superseded_by is not None:
        found("discovered_superseded", f"{served} was renewed as {record.superseded_by}, which the endpoint does not "
              f"serve ({seen})")
    if record.not_after is not None and record.not_after <= now:
        found("discovered_expired", f"{served} expired at {_when(record.not_after)} ({seen})")
    if record.certificate_id is not None and chain_complete(record.issuer_dn, record.ca_kind, record.chain) is False:
        sent = f"{len(record.chain or [])} certificate{'s' if len(record.chain or []) != 1 else ''} after it"
        found("discovered_incomplete_chain", f"{served} was served with {sent}, none of them its issuer "
              f"{record.issuer_dn} ({seen})")
    return out


def tenant_findings(tenant_id: str, policy: TenantPolicy) -> list[Finding]:
    if policy.allowed_dns or policy.allowed_ip_networks or policy.max_validity_days is not None:
        return []
    return [_finding("tenant_policy_unrestricted", "tenant", tenant_id,
                     "no allowed DNS names, no allowed networks, no maximum validity")]


def ordered(findings: list[Finding]) -> list[Finding]:
    """Most severe first; then by rule and subject, so that two reports of the same state list alike."""
    rank = {severity: i for i, severity in enumerate(SEVERITIES)}
    return sorted(findings, key=lambda f: (rank[f.severity], f.rule, f.subject_id, f.detail))


def severity_counts(findings: list[Finding]) -> dict[str, int]:
    counted = Counter(f.severity for f in findings)
    return {severity: counted.get(severity, 0) for severity in SEVERITIES}


def at_least(findings: list[Finding], severity: str) -> list[Finding]:
    """The findings as severe as ``severity`` or more (a CI gate: ``csm tenant compliance --fail-on high``)."""
    cut = SEVERITIES.index(severity)
    return [f for f in findings if SEVERITIES.index(f.severity) <= cut]


def post_quantum(algorithm: str) -> bool:
    known = ALGORITHMS.get(algorithm)
    return known is not None and known.family in POST_QUANTUM_FAMILIES
