"""Renewal policy arithmetic and the certificate aggregate's renewal decisions (pure: no store, no clock)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from domain import certificate, certificate_renewal
from domain.certificate import CertificateRenewed, ExpiryWarned, RenewalFailed, RenewalStarted
from domain.certificate_renewal import RenewalRefused
from domain.certspec import CertificateFacts, DistinguishedName, SubjectAltNames, SubjectKeyFacts
from domain.errors import DomainError
from domain.events import known_event_types
from domain.profile import BUILTIN_PROFILES, validate_profile
from domain.renewal import RenewalPolicy, check_reused_key, parse_duration, renew_at, rotate_key, warning_due
from domain.revocation import carried_revocation

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def issued(days: int = 300, key_source: str = "server") -> certificate.CertificateIssued:
    facts = CertificateFacts(serial_hex="1", fingerprint_sha256="f", subject_dn="CN=x", issuer_dn="CN=ca",
                             not_before=T0, not_after=T0 + days * DAY, algorithm="ecdsa-p256", public_key_sha256="k",
                             subject_key_identifier="s", authority_key_identifier="a")
    return certificate.CertificateIssued(
        certificate_id="1".rjust(40, "0"), ca_id="ca", issuer_fingerprint="i", profile="cassandra-node",
        subject=DistinguishedName(common_name="x"), sans=SubjectAltNames(), key_source=key_source,
        key_ref="key" if key_source == "server" else None, csr_sha256=None, certificate_pem="", facts=facts)


def claim(new: str = "2", at: datetime = T0) -> RenewalStarted:
    return RenewalStarted(certificate_id="1".rjust(40, "0"), new_certificate_id=new.rjust(40, "0"), rotate_key=True,
                          attempt=0, trigger="scheduled", started_at=at)


@pytest.mark.parametrize("policy, due_after_days", [
    (RenewalPolicy(), 201),  # 67% of 300 days
    (RenewalPolicy(renew_at_percent=50), 150),
    (RenewalPolicy(renew_before_days=30), 270),  # a fixed lead time wins over the share
    (RenewalPolicy(renew_before_days=299), 1),
    # a lead time not shorter than the lifetime would be due from the start, and so would every successor: the share
    (RenewalPolicy(renew_before_days=300), 201),
    (RenewalPolicy(renew_before_days=400, renew_at_percent=50), 150),
])
def test_renew_at_is_a_share_of_the_lifetime_or_a_lead_time(policy, due_after_days):
    assert renew_at(policy, T0, T0 + 300 * DAY) == T0 + due_after_days * DAY


@pytest.mark.parametrize("policy, key_source, requested, rotated, refused", [
    (RenewalPolicy(), "server", None, True, None),
    (RenewalPolicy(), "server", True, None, "key_reuse_not_allowed"),
    (RenewalPolicy(), "csr", None, None, "new_csr_required"),
    (RenewalPolicy(reuse_key=True), "server", None, False, None),
    (RenewalPolicy(reuse_key=True), "server", False, True, None),  # a rotation may always be asked for
    (RenewalPolicy(reuse_key=True), "csr", None, False, None),
    (RenewalPolicy(reuse_key=True), "csr", False, None, "new_csr_required"),
])
def test_key_reuse_only_where_the_policy_allows_it(policy, key_source, requested, rotated, refused):
    if refused:
        with pytest.raises(DomainError) as caught:
            rotate_key(policy, key_source, requested)
        assert (caught.value.code, caught.value.field) == (refused, "reuse_key")
    else:
        assert rotate_key(policy, key_source, requested) is rotated


AVAILABLE = frozenset({"rsa-3072", "rsa-4096", "ecdsa-p256"})


@pytest.mark.parametrize("key, refused", [
    (SubjectKeyFacts(algorithm="rsa-3072", key_bits=3072, rsa_exponent=65537), False),
    (SubjectKeyFacts(algorithm="ecdsa-p256", key_bits=256), False),
    (SubjectKeyFacts(algorithm="rsa-3072", key_bits=3072, rsa_exponent=3), True),  # before the exponent rule
    (SubjectKeyFacts(algorithm="rsa-2048", key_bits=2048, rsa_exponent=65537), True),  # before the 3072-bit floor
    (SubjectKeyFacts(algorithm="ecdsa-secp256k1", key_bits=256), True),
])
def test_a_reused_key_meets_the_key_rules_of_issuance_and_the_refusal_names_the_way_out(key, refused):
    for key_source, way_out in (("server", "reuse_key false"), ("csr", "new CSR")):
        found = check_reused_key(key, key_source, AVAILABLE)
        assert [(v.field, v.rule) for v in found] == ([("reuse_key", "weak_key")] if refused else [])
        assert all(way_out in v.message for v in found)


def test_the_tightest_threshold_crossed_is_warned_once_and_covers_the_wider_ones():
    end = T0 + 100 * DAY
    assert warning_due(end, end - 40 * DAY, (30, 7, 1), None) is None
    assert warning_due(end, end - 20 * DAY, (30, 7, 1), None) == 30
    assert warning_due(end, end - 20 * DAY, (30, 7, 1), 30) is None
    assert warning_due(end, end - 5 * DAY, (30, 7, 1), None) == 7  # first seen late: one warning, not two
    assert warning_due(end, end - 5 * DAY, (30, 7, 1), 7) is None
    assert warning_due(end, end - timedelta(hours=2), (30, 7, 1), 7) == 1
    assert warning_due(end, end, (30, 7, 1), None) is None  # expired: nothing to warn of


@pytest.mark.parametrize("text, expected", [("30d", 30 * DAY), ("12h", timedelta(hours=12)), ("3650d", 3650 * DAY)])
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "0d", "-1d", "1.5d", "30m", "d", "3651d", "87601h", "30 days"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_profiles_validate_their_renewal_policy():
    profile = BUILTIN_PROFILES["cassandra-node"]
    assert profile.renewal == RenewalPolicy()
    too_long = msgspec.structs.replace(profile, renewal=RenewalPolicy(renew_before_days=profile.max_validity_days))
    assert [(v.field, v.rule) for v in validate_profile(too_long)] == [("renewal.renew_before_days",
                                                                       "renewal_invalid")]
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"renew_at_percent": 100}, RenewalPolicy)
    for days in (profile.default_validity_days, profile.default_validity_days + 1):  # due as soon as issued
        storm = msgspec.structs.replace(profile, renewal=RenewalPolicy(renew_before_days=days))
        violations = validate_profile(storm)
        assert [(v.field, v.rule) for v in violations] == [("renewal.renew_before_days", "renewal_invalid")]
        assert "default_validity_days" in violations[0].message
    fine = msgspec.structs.replace(profile, renewal=RenewalPolicy(renew_before_days=profile.default_validity_days - 1))
    assert validate_profile(fine) == []


def test_a_renewal_is_claimed_once_then_linked_once():
    state = certificate.fold([issued()])
    started = certificate_renewal.decide_start_renewal(state, state.certificate_id, claim())
    assert [p.attempt for p in started] == [1]
    state = certificate.fold([issued(), *started])
    with pytest.raises(RenewalRefused) as caught:  # a racing scheduler re-reads and finds the claim
        certificate_renewal.decide_start_renewal(state, state.certificate_id, claim("3"))
    assert caught.value.code == "renewal_in_progress"
    with pytest.raises(RenewalRefused):  # only the claimed successor may be linked
        certificate_renewal.decide_renewed(state, claim("3"))
    linked = certificate_renewal.decide_renewed(state, started[0])
    assert linked == [CertificateRenewed(certificate_id=state.certificate_id, new_certificate_id="2".rjust(40, "0"),
                                         rotated=True, attempt=1)]
    state = certificate.fold([issued(), *started, *linked])
    assert certificate_renewal.decide_renewed(state, started[0]) == []  # a completer that lost the race writes nothing
    with pytest.raises(RenewalRefused) as caught:
        certificate_renewal.decide_start_renewal(state, state.certificate_id, claim("4"))
    assert caught.value.code == "already_renewed"
    assert certificate_renewal.decide_expiry_warning(state, T0 + 299 * DAY, (30, 7, 1)) == []  # superseded: no warning


def test_a_claim_is_not_linked_once_the_certificate_is_revoked():
    """The revocation reached the certificate's stream between claim and link: the renewal is refused there."""
    started = certificate_renewal.decide_start_renewal(certificate.fold([issued()]), "1".rjust(40, "0"), claim())
    revoked = certificate.CertificateRevoked(reason="key_compromise", revoked_at=T0, invalidity_date=None)
    state = certificate.fold([issued(), *started, revoked])
    with pytest.raises(RenewalRefused) as caught:
        certificate_renewal.decide_renewed(state, started[0])
    assert (caught.value.code, caught.value.field) == ("certificate_revoked", "id")
    linked = certificate_renewal.decide_renewed(certificate.fold([issued(), *started]), started[0])
    state = certificate.fold([issued(), *started, *linked, revoked])
    # linked before the revocation: a retry is a no-op
    assert certificate_renewal.decide_renewed(state, started[0]) == []


@pytest.mark.parametrize("reason, same_key, invalidity, expected", [
    ("key_compromise", True, T0 - DAY, ("key_compromise", T0)),  # the same key: from the certificate's first second
    ("key_compromise", True, T0 + DAY, ("key_compromise", T0 + DAY)),
    ("key_compromise", True, None, ("key_compromise", None)),
    ("key_compromise", False, T0 + DAY, ("unspecified", None)),  # nothing is known against a new key
    ("affiliation_changed", False, None, ("affiliation_changed", None)),  # about the subject, which it names again
    ("cessation_of_operation", True, None, ("cessation_of_operation", None)),
])
def test_a_revocation_carries_to_another_certificate_what_applies_to_it(reason, same_key, invalidity, expected):
    assert carried_revocation(reason, invalidity, same_key=same_key, not_before=T0) == expected


def test_a_claim_goes_stale_and_failures_are_recorded_once_per_window():
    started = certificate_renewal.decide_start_renewal(certificate.fold([issued()]), "1".rjust(40, "0"), claim())
    state = certificate.fold([issued(), *started])
    assert not certificate_renewal.claim_stale(state, T0 + timedelta(minutes=5), timedelta(minutes=10))
    assert certificate_renewal.claim_stale(state, T0 + timedelta(minutes=10), timedelta(minutes=10))
    failure = RenewalFailed(certificate_id=state.certificate_id, reason="ca_disabled", attempt=1, failed_at=T0)
    assert certificate_renewal.decide_renewal_failed(state, failure, DAY) == [failure]  # closes the claim
    state = certificate.fold([issued(), *started, failure])
    assert state.pending is None and state.last_failure_at == T0
    early = RenewalFailed(certificate_id=state.certificate_id, reason="new_csr_required", attempt=0,
                          failed_at=T0 + 23 * timedelta(hours=1))
    assert certificate_renewal.decide_renewal_failed(state, early, DAY) == []
    late = msgspec.structs.replace(early, failed_at=T0 + DAY)
    assert certificate_renewal.decide_renewal_failed(state, late, DAY) == [late]
    stale = msgspec.structs.replace(failure, attempt=7)  # a claim that is not the open one
    assert certificate_renewal.decide_renewal_failed(state, stale, DAY) == []


def test_expiry_warnings_are_once_per_threshold_and_never_for_a_revoked_certificate():
    state = certificate.fold([issued(days=100)])
    first = certificate_renewal.decide_expiry_warning(state, T0 + 80 * DAY, (30, 7, 1))
    assert first == [ExpiryWarned(certificate_id=state.certificate_id, ca_id="ca", threshold_days=30,
                                  not_after=T0 + 100 * DAY)]
    state = certificate.fold([issued(days=100), *first])
    assert certificate_renewal.decide_expiry_warning(state, T0 + 81 * DAY, (30, 7, 1)) == []
    revoked = certificate.CertificateRevoked(reason="superseded", revoked_at=T0, invalidity_date=None)
    state = certificate.fold([issued(days=100), revoked])
    assert certificate_renewal.decide_expiry_warning(state, T0 + 95 * DAY, (30, 7, 1)) == []


def test_docs_events_lists_every_certificate_event_type():
    catalogue = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", DOC.read_text(), re.M))
    registered = {t for t in known_event_types() if t.startswith("certificate.")}
    assert registered <= catalogue, f"docs/events.md lacks {sorted(registered - catalogue)}"
