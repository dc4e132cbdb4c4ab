"""The compliance rules (domain/compliance.py) at their edges, and as properties over any certificate and moment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from domain import compliance
from domain.certspec import SubjectAltNames
from domain.compliance import RULES, SEVERITIES, CertificateRecord, certificate_findings
from domain.discovery import ChainCertificate
from domain.tenant_policy import TenantPolicy

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
OPEN = TenantPolicy()


def cert(**changes) -> CertificateRecord:
    fields = dict(certificate_id="c1", ca_id="ca1", profile="cassandra-node", common_name="n1.acme.internal",
                  algorithm="ecdsa-p256", key_source="csr", not_before=NOW - timedelta(days=10),
                  not_after=NOW + timedelta(days=300), sans=SubjectAltNames(dns=("n1.acme.internal",)))
    return CertificateRecord(**{**fields, **changes})


def found(record: CertificateRecord, policy: TenantPolicy = OPEN, now: datetime = NOW) -> list[str]:
    return [f.rule for f in certificate_findings(record, policy, now)]


def test_a_healthy_certificate_has_no_finding():
    assert found(cert()) == []
    assert found(cert(auto_renew=True, renew_at=NOW + timedelta(days=200))) == []


def test_expiry_without_renewal_at_7_and_30_days_and_expired_within_the_lookback():
    assert found(cert(not_after=NOW + timedelta(days=30, seconds=1))) == []
    assert found(cert(not_after=NOW + timedelta(days=30))) == ["certificate_expiring"]
    assert found(cert(not_after=NOW + timedelta(days=7, seconds=1))) == ["certificate_expiring"]
    assert found(cert(not_after=NOW + timedelta(days=7))) == ["certificate_expiring_soon"]
    assert found(cert(not_after=NOW + timedelta(days=3), auto_renew=True, renew_at=NOW)) == []  # the grace
    assert found(cert(not_after=NOW)) == ["certificate_expired"]
    assert found(cert(not_after=NOW - compliance.EXPIRED_LOOKBACK)) == ["certificate_expired"]
    assert found(cert(not_after=NOW - compliance.EXPIRED_LOOKBACK - timedelta(seconds=1))) == []
    # an expired certificate's other findings no longer matter
    assert found(cert(not_after=NOW - timedelta(days=1), key_source="server", key_exports=2,
                      sans=SubjectAltNames(dns=("*.acme.internal",)))) == ["certificate_expired"]


def test_renewal_overdue_after_an_hour_and_a_failure_reported_instead():
    due = dict(auto_renew=True, not_after=NOW + timedelta(days=20))
    assert found(cert(**due, renew_at=NOW - compliance.RENEWAL_GRACE + timedelta(seconds=1))) == []
    assert found(cert(**due, renew_at=NOW - compliance.RENEWAL_GRACE)) == ["certificate_renewal_overdue"]
    failed = cert(**due, renew_at=NOW - timedelta(days=2), renewal_failed_at=NOW - timedelta(days=1),
                  renewal_failure="quota_exceeded: 3 of 3")
    [finding] = certificate_findings(failed, OPEN, NOW)
    assert finding.rule == "certificate_renewal_failed" and "quota_exceeded: 3 of 3" in finding.detail


def test_the_policy_as_it_is_now_judges_certificates_issued_before_it():
    assert found(cert(), TenantPolicy(allowed_algorithms=("ecdsa-p256",))) == []
    assert found(cert(), TenantPolicy(allowed_algorithms=("ml-dsa-65",))) == ["certificate_algorithm_not_allowed"]
    lifetime = cert(not_before=NOW - timedelta(days=10), not_after=NOW + timedelta(days=80))  # exactly 90 days
    assert found(lifetime, TenantPolicy(max_validity_days=90)) == []
    longer = cert(not_before=NOW - timedelta(days=10), not_after=NOW + timedelta(days=80, seconds=1))
    assert found(longer, TenantPolicy(max_validity_days=90)) == ["certificate_validity_exceeds_policy"]
    assert found(cert(), TenantPolicy(allowed_dns=(".acme.internal",))) == []
    outside = certificate_findings(cert(), TenantPolicy(allowed_dns=(".other.internal",)), NOW)
    assert [(f.rule, f.detail.split(":")[0]) for f in outside] == [
        ("certificate_name_not_allowed", "sans.dns[0]"), ("certificate_name_not_allowed", "subject.common_name")]
    networks = TenantPolicy(allowed_ip_networks=("10.0.0.0/8",))
    assert found(cert(sans=SubjectAltNames(ip=("10.1.2.3", "192.168.1.1"))), networks) == \
        ["certificate_name_not_allowed"]


def test_wildcards_and_exported_server_keys():
    wild = cert(sans=SubjectAltNames(dns=("*.acme.internal", "n1.acme.internal")), common_name="*.acme.internal")
    [finding] = certificate_findings(wild, OPEN, NOW)
    assert finding.rule == "certificate_wildcard_name" and finding.detail == "*.acme.internal"
    assert found(cert(key_source="server", key_exports=1)) == ["certificate_key_exported"]
    assert found(cert(key_source="server", key_exports=0)) == []


def test_the_tenant_finding_goes_once_the_policy_restricts_names_or_validity():
    assert [f.rule for f in compliance.tenant_findings("acme", OPEN)] == ["tenant_policy_unrestricted"]
    for policy in (TenantPolicy(allowed_dns=(".acme.internal",)), TenantPolicy(allowed_ip_networks=("10.0.0.0/8",)),
                   TenantPolicy(max_validity_days=90)):
        assert compliance.tenant_findings("acme", policy) == []


def test_order_counts_and_the_ci_gate():
    findings = compliance.ordered([
        *certificate_findings(cert(certificate_id="b", key_source="server", key_exports=1), OPEN, NOW),
        *certificate_findings(cert(certificate_id="a", not_after=NOW - timedelta(days=1)), OPEN, NOW),
        *compliance.tenant_findings("acme", OPEN)])
    assert [(f.rule, f.subject_id) for f in findings] == [
        ("certificate_expired", "a"), ("certificate_key_exported", "b"), ("tenant_policy_unrestricted", "acme")]
    assert compliance.severity_counts(findings) == {"critical": 0, "high": 1, "medium": 0, "low": 2}
    assert [f.rule for f in compliance.at_least(findings, "high")] == ["certificate_expired"]
    assert compliance.at_least(findings, "critical") == []
    assert len(compliance.at_least(findings, "low")) == 3


def test_post_quantum_families():
    assert compliance.post_quantum("ml-dsa-65") and compliance.post_quantum("hybrid-p384-ml-dsa-65")
    assert not compliance.post_quantum("ecdsa-p384") and not compliance.post_quantum("no-such-algorithm")


moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC))
names = st.sampled_from(["n1.acme.internal", "*.acme.internal", "x.other.internal", "10.0.0.1", ""])


@given(not_before=moments, lifetime=st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=4000)),
       now=moments, auto_renew=st.booleans(), renew_offset=st.none() | st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)),
       failed=st.booleans(), exports=st.integers(0, 5), source=st.sampled_from(["csr", "server"]),
       dns=st.lists(names.filter(lambda n: n and not n[0].isdigit()), max_size=3),
       max_days=st.none() | st.integers(1, 3650), allowed_dns=st.lists(st.sampled_from([".acme.internal",
                                                                                       "*.other.internal"]), max_size=2))
def test_any_certificate_at_any_moment_gets_well_formed_findings(not_before, lifetime, now, auto_renew, renew_offset,
                                                                 failed, exports, source, dns, max_days, allowed_dns):
    record = cert(not_before=not_before, not_after=not_before + lifetime, auto_renew=auto_renew,
                  renew_at=None if renew_offset is None else not_before + renew_offset,
                  renewal_failed_at=now if failed else None, key_exports=exports, key_source=source,
                  sans=SubjectAltNames(dns=tuple(dns)), common_name=dns[0] if dns else None)
    policy = TenantPolicy(max_validity_days=max_days, allowed_dns=tuple(allowed_dns))
    findings = certificate_findings(record, policy, now)
    for finding in findings:
        assert finding.rule in RULES and finding.severity == RULES[finding.rule].severity in SEVERITIES
        assert finding.subject_id == "c1" and finding.ca_id == "ca1" and finding.detail
    rules = [f.rule for f in findings]
    if record.not_after <= now:  # expired: one finding at most, and only within the lookback
        assert rules == (["certificate_expired"] if now - record.not_after <= compliance.EXPIRED_LOOKBACK else [])
    else:
        # at most one of the expiry/renewal findings
        assert len({"certificate_expiring", "certificate_expiring_soon", "certificate_renewal_overdue",
                    "certificate_renewal_failed"} & set(rules)) <= 1
        assert ("certificate_renewal_failed" in rules) == failed
    assert compliance.ordered(findings) == compliance.ordered(list(reversed(findings)))


# discovery: what an endpoint served when last scanned -------------------------------------------------------------

def endpoint(**changes) -> compliance.DiscoveredRecord:
    fields = dict(endpoint="10.0.0.1:9042", observed_at=NOW - timedelta(hours=1), last_served_at=NOW - timedelta(hours=1),
                  fingerprint_sha256="ab" * 32, not_after=NOW + timedelta(days=100), certificate_id="c1", ca_id="ca1",
                  status="issued")
    return compliance.DiscoveredRecord(**{**fields, **changes})


def seen(record: compliance.DiscoveredRecord, now: datetime = NOW) -> list[str]:
    return [f.rule for f in compliance.discovered_findings(record, now)]


def test_an_endpoint_serving_a_live_certificate_of_the_tenant_has_no_finding():
    assert seen(endpoint()) == []


def test_what_an_endpoint_serves_revoked_superseded_expired_or_unmanaged_is_found_by_rule():
    assert seen(endpoint(status="revoked", revocation_reason="key_compromise")) == ["discovered_revoked"]
    # a revoked certificate's renewal is no matter: revoked says more
    assert seen(endpoint(status="revoked", revocation_reason="superseded", superseded_by="c2")) == \
        ["discovered_revoked"]
    assert seen(endpoint(superseded_by="c2")) == ["discovered_superseded"]
    assert seen(endpoint(not_after=NOW)) == ["discovered_expired"]
    assert seen(endpoint(not_after=NOW + timedelta(seconds=1))) == []
    assert seen(endpoint(certificate_id=None, ca_id=None, status=None)) == ["discovered_unmanaged"]
    assert seen(endpoint(certificate_id=None, ca_id=None, status=None, not_after=NOW - timedelta(days=1))) == \
        ["discovered_unmanaged", "discovered_expired"]
    assert seen(endpoint(certificate_id=None, not_after=None)) == ["discovered_unmanaged"]  # unparsed certificate
    finding = compliance.discovered_findings(endpoint(status="revoked", revocation_reason="superseded"), NOW)[0]
    assert (finding.severity, finding.subject_type, finding.subject_id, finding.ca_id) == \
        ("critical", "endpoint", "10.0.0.1:9042", "ca1")
    assert "c1 was revoked (superseded)" in finding.detail


def test_an_endpoint_that_stopped_answering_is_found_only_if_it_served_before_and_stale_ones_drop_out():
    failing = dict(error="refused", reason="connection refused", fingerprint_sha256=None, not_after=None,
                   certificate_id=None, status=None)
    assert seen(endpoint(**failing)) == ["discovered_unreachable"]
    assert seen(endpoint(**failing, last_served_at=None)) == []  # never a node: an empty address of a sweep
    assert seen(endpoint(observed_at=NOW - compliance.DISCOVERY_STALE, status="revoked")) == ["discovered_revoked"]
    assert seen(endpoint(observed_at=NOW - compliance.DISCOVERY_STALE - timedelta(seconds=1), status="revoked")) == []


def test_a_leaf_of_an_intermediate_served_without_its_issuer_is_an_incomplete_chain():
    issuer = "CN=Acme Nodes CA,O=Acme"
    inter = ChainCertificate(fingerprint_sha256="cd" * 32, subject_dn=issuer, issuer_dn="CN=Acme Root")
    root = ChainCertificate(fingerprint_sha256="ef" * 32, subject_dn="CN=Acme Root", issuer_dn="CN=Acme Root")
    ours = dict(issuer_dn=issuer, ca_kind="intermediate")
    assert seen(endpoint(**ours, chain=[inter])) == [] and seen(endpoint(**ours, chain=[inter, root])) == []
    assert seen(endpoint(**ours, chain=[])) == ["discovered_incomplete_chain"]
    assert seen(endpoint(**ours, chain=[root])) == ["discovered_incomplete_chain"]  # the root alone builds no path
    assert seen(endpoint(**ours, chain=None)) == []  # not recorded: nothing to judge
    assert seen(endpoint(issuer_dn="CN=Acme Root", ca_kind="root", chain=[])) == []  # a root's leaf needs none
    assert seen(endpoint(**ours, chain=[], certificate_id=None, status=None)) == ["discovered_unmanaged"]
    finding = compliance.discovered_findings(endpoint(**ours, chain=[root]), NOW)[0]
    assert "1 certificate after it, none of them its issuer CN=Acme Nodes CA,O=Acme" in finding.detail
    assert seen(endpoint(**ours, chain=[], status="revoked")) == ["discovered_revoked", "discovered_incomplete_chain"]


def test_every_discovery_rule_is_documented_with_a_severity():
    for rule in ("discovered_revoked", "discovered_expired", "discovered_superseded", "discovered_unmanaged",
                 "discovered_unreachable", "discovered_incomplete_chain"):
        assert RULES[rule].severity in SEVERITIES and RULES[rule].remedy
