"""domain.revocation, domain.crl_publication and domain.ocsp_signing: reasons, invalidity dates, the CA stream
folded for CRLs, and when to publish or renew."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from domain import ca, certificate, crl_publication, ocsp_signing, revocation
from domain.certspec import CertificateFacts, DistinguishedName, NameConstraints, SubjectAltNames
from domain.errors import AlreadyExists, DomainError
from domain.revocation import CrlPublished, OcspSignerIssued, RevocationRecorded

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


def facts(serial: str, not_before: datetime = NOW - timedelta(days=30), days: int = 365,
          key: str = "ab") -> CertificateFacts:
    return CertificateFacts(serial_hex=serial, fingerprint_sha256=serial.rjust(64, "0"), subject_dn="CN=x",
                            issuer_dn="CN=ca", not_before=not_before, not_after=not_before + timedelta(days=days),
                            algorithm="ecdsa-p384", public_key_sha256=key * 32, subject_key_identifier=f"{key}01",
                            authority_key_identifier="02")


def held(serial: str, key_ref: str | None = "key_1", **kwargs) -> ca.CaCertificate:
    return ca.CaCertificate(certificate_pem="", facts=facts(serial, **kwargs), issuer_ca_id=None, key_ref=key_ref)


CREATED = ca.CaCreated(ca_id="c1", name="Issuing", kind="intermediate", origin="online", algorithm="ecdsa-p384",
                       subject=DistinguishedName(common_name="Issuing"), parent_id="r1", path_length=0,
                       name_constraints=NameConstraints(), certificate=held("aa"))


def entry(serial: str, *, not_after: datetime = NOW + timedelta(days=300), reason="key_compromise"):
    return RevocationRecorded(serial_hex=serial, certificate_id=serial.rjust(40, "0"), subject_ca_id=None,
                              reason=reason, revoked_at=NOW, invalidity_date=None, not_after=not_after)


def published(number: int, this_update: datetime = NOW,
              signer: ca.CaCertificate = CREATED.certificate) -> CrlPublished:
    return CrlPublished(crl_number=number, this_update=this_update, next_update=this_update + WEEK,
                        revoked_count=0, sha256=format(number, "064x"),
                        signer_fingerprint=signer.facts.fingerprint_sha256)


@pytest.mark.parametrize("reason, code", [
    ("certificate_hold", "reason_not_supported"),
    ("remove_from_crl", "reason_not_supported"),
    ("keyCompromise", "invalid_reason"),
    ("", "invalid_reason"),
])
def test_reasons_outside_the_final_rfc_5280_set_are_refused_by_name(reason, code):
    with pytest.raises(DomainError) as caught:
        revocation.check_reason(reason)
    assert (caught.value.code, caught.value.field) == (code, "reason")


def test_every_offered_reason_has_its_rfc_5280_code():
    assert revocation.REASONS == {"unspecified": 0, "key_compromise": 1, "ca_compromise": 2,
                                  "affiliation_changed": 3, "superseded": 4, "cessation_of_operation": 5,
                                  "privilege_withdrawn": 9, "aa_compromise": 10}
    for reason in revocation.REASONS:
        assert revocation.check_reason(reason) == reason


@pytest.mark.parametrize("invalidity, code", [
    (NOW + timedelta(seconds=1), "invalidity_date_in_future"),
    (NOW - timedelta(days=31), "invalidity_date_before_validity"),
    (datetime(2026, 5, 1), "invalid_invalidity_date"),  # no time zone
    (None, None),
    (NOW, None),
    (NOW - timedelta(days=30), None),
])
def test_an_invalidity_date_lies_between_issuance_and_now(invalidity, code):
    def check() -> None:
        revocation.check_invalidity_date(invalidity, now=NOW, not_before=NOW - timedelta(days=30))

    if code is None:
        check()
        return
    with pytest.raises(DomainError) as caught:
        check()
    assert (caught.value.code, caught.value.field) == (code, "invalidity_date")


def test_the_fold_keeps_revocations_with_their_stream_versions_the_last_crl_and_signers():
    signer = OcspSignerIssued(issuer_fingerprint="fp", certificate=held("5"))
    state = revocation.fold([CREATED, entry("1"), published(1), entry("2"), signer,
                             ca.CaRevoked(reason="superseded", revoked_at=NOW, invalidity_date=None)])
    assert state.version == 6 and state.ca.status == "revoked"
    assert state.recorded_at == {"1": 2, "2": 4}
    assert (state.crl.crl_number, state.crl_version) == (1, 3)
    assert state.signers == {"fp": signer.certificate} and state.ca_revoked.reason == "superseded"
    assert crl_publication.covers(state, 2, NOW) and not crl_publication.covers(state, 4, NOW)
    assert crl_publication.can_publish(state)  # a revoked CA certifies nothing, but keeps its CRL current


def test_recording_adds_only_what_the_ca_does_not_list_yet():
    state = revocation.fold([CREATED, entry("1")])
    assert revocation.decide_record(state, "c1", [entry("1"), entry("2")]) == [entry("2")]
    assert revocation.decide_record(state, "c1", [entry("1", reason="superseded")]) == []  # the first one stands


FLOOR = crl_publication.crl_number_floor(NOW)  # the least number a CRL signed at NOW may carry


def test_a_crl_built_from_an_older_stream_version_is_refused_and_numbers_follow_on():
    state = revocation.fold([CREATED, entry("1"), published(1)])
    with pytest.raises(crl_publication.CrlOutdated):
        crl_publication.decide_publish(state, state.version - 1, [published(FLOOR)])
    for wrong in (2, FLOOR + 1):  # the count from the last CRL is below the clock's floor; and no skipping above it
        with pytest.raises(DomainError) as caught:
            crl_publication.decide_publish(state, state.version, [published(wrong)])
        assert caught.value.code == "crl_number_invalid"
    assert crl_publication.decide_publish(state, state.version, [published(FLOOR)]) == [published(FLOOR)]
    with pytest.raises(DomainError):  # one publication's CRLs (one per key) take the numbers in turn
        crl_publication.decide_publish(state, state.version, [published(FLOOR), published(FLOOR)])
    assert crl_publication.decide_publish(state, state.version, [published(FLOOR), published(FLOOR + 1)]) == [
        published(FLOOR), published(FLOOR + 1)]
    ahead = revocation.fold([CREATED, entry("1"), published(FLOOR + 40)])  # published faster than the clock
    assert crl_publication.next_crl_number(ahead, NOW) == FLOOR + 41


@hsettings(max_examples=200)
@given(last=st.integers(min_value=1, max_value=FLOOR), gaps=st.lists(st.integers(1, 10**8), min_size=1, max_size=20),
       restored_after=st.integers(min_value=1, max_value=10**8))
def test_crl_numbers_after_a_restore_never_repeat_those_published_since_the_backup(last, gaps, restored_after):
    """The backup's last CRL is ``last`` (at NOW); CRLs go on being published ``gaps`` ms apart (at most one a
    millisecond); the backup is restored ``restored_after`` ms after the last of them: its next CRL number is
    above every number published since the backup."""
    backup = revocation.fold([CREATED, published(last)])
    state, at, since = backup, NOW, []
    for gap in gaps:
        at += timedelta(milliseconds=gap)
        since.append(crl_publication.next_crl_number(state, at))
        state = revocation.fold([published(since[-1], this_update=at)], state)
    assert since == sorted(set(since)) and since[0] > last
    assert crl_publication.next_crl_number(backup, at + timedelta(milliseconds=restored_after)) > since[-1]


@pytest.mark.parametrize("events, now, due", [
    ([CREATED], NOW, True),  # no CRL yet
    ([CREATED, published(1)], NOW + timedelta(days=4, hours=16), False),  # 2 days 8 hours left
    ([CREATED, published(1)], NOW + timedelta(days=4, hours=17), True),  # 2 days 7 hours left: under a third
    ([CREATED, published(1), entry("1")], NOW, True),  # a revocation the last CRL lacks (its publication failed)
    ([CREATED, entry("1"), published(1)], NOW, False),
])
def test_publication_is_due_without_a_crl_with_an_unlisted_revocation_or_a_third_before_next_update(
        events, now, due):
    assert crl_publication.publication_due(revocation.fold(events), now) is due


NEW_KEY = held("bb", not_before=NOW - timedelta(days=1), key="cd", key_ref="key_2")


def test_after_a_rollover_each_key_publishes_its_own_crl_until_its_certificates_have_expired():
    old = CREATED.certificate  # expires NOW + 335 days
    rolled = [CREATED, entry("1"), published(1), ca.CaKeyRolledOver(certificate=NEW_KEY, reason="scheduled")]
    state = revocation.fold(rolled)
    assert crl_publication.publishing_keys(state, NOW) == [old, NEW_KEY]  # oldest key first, the current one last
    assert crl_publication.publication_due(state, NOW) and not crl_publication.covers(state, 2, NOW)  # the new key has none
    assert crl_publication.next_crl_number(state, NOW) == FLOOR

    state = revocation.fold([*rolled, published(2, signer=old), published(3, signer=NEW_KEY)])
    assert not crl_publication.publication_due(state, NOW) and crl_publication.covers(state, 2, NOW)
    assert {key: last.published.crl_number for key, last in state.crls.items()} == {"ab" * 32: 2, "cd" * 32: 3}
    assert crl_publication.crl_of_key(state, "CD01", NOW).published.crl_number == 3  # by key identifier, any case
    assert crl_publication.crl_of_key(state, "ab01", NOW).published.crl_number == 2
    assert crl_publication.crl_of_key(state, "ef01", NOW) is None
    assert crl_publication.crl_of_key(state, None, NOW).published.crl_number == 2  # the plain URL: the oldest key's
    assert crl_publication.next_crl_number(state, NOW) == FLOOR  # one sequence per CA: each key's numbers still increase
    assert crl_publication.publication_due(revocation.fold([*rolled, published(2, signer=old), published(3, signer=NEW_KEY),
                                                       entry("2")]), NOW)  # a revocation neither CRL lists

    later = NOW + timedelta(days=336)  # the old CA certificate has expired: nothing it signed is valid
    assert crl_publication.publishing_keys(state, later) == [NEW_KEY]
    assert crl_publication.crl_of_key(state, None, later).published.crl_number == 3
    assert crl_publication.crl_of_key(state, "ab01", later).published.crl_number == 2  # its last CRL stays readable
    assert not crl_publication.stale(state, crl_publication.crl_of_key(state, "ab01", later), later)  # and is not renewed
    assert crl_publication.stale(state, crl_publication.crl_of_key(state, "cd01", later), later)  # the new key's has lapsed
    assert crl_publication.stale(state, None, NOW) and not crl_publication.stale(state, state.crls["ab" * 32], NOW)


def test_a_cross_certificate_keeps_a_previous_key_publishing_and_a_key_not_held_here_publishes_nothing():
    cross = ca.CaCrossCertified(certificate=held("cc", days=800))  # the first key, certified until NOW + 770 days
    rolled = ca.CaKeyRolledOver(certificate=NEW_KEY, reason="scheduled")
    state = revocation.fold([CREATED, cross, rolled])
    assert crl_publication.publishing_keys(state, NOW + timedelta(days=400)) == [CREATED.certificate, NEW_KEY]
    offline = msgspec.structs.replace(CREATED, certificate=held("aa", key_ref=None))
    assert crl_publication.publishing_keys(revocation.fold([offline, rolled]), NOW) == [NEW_KEY]
    assert revocation.first_key(state.ca) == "ab" * 32


def test_entries_leave_the_crl_one_period_after_their_certificate_expired():
    expired = entry("1", not_after=NOW - timedelta(days=6))
    long_gone = entry("2", not_after=NOW - timedelta(days=8))
    state = revocation.fold([CREATED, entry("10"), expired, long_gone])
    assert [e.serial_hex for e in crl_publication.crl_entries(state, NOW, WEEK)] == ["10", "1"]  # as revoked


def test_a_responder_certificate_is_renewed_with_a_third_of_its_life_left():
    signer = held("5", not_before=NOW, days=30)
    assert ocsp_signing.signer_due(None, NOW)
    assert not ocsp_signing.signer_due(signer, NOW + timedelta(days=19))
    assert ocsp_signing.signer_due(signer, NOW + timedelta(days=21))
    state = revocation.fold([CREATED, OcspSignerIssued(issuer_fingerprint="fp", certificate=signer)])
    fresh = OcspSignerIssued(issuer_fingerprint="fp", certificate=held("6", not_before=NOW, days=30))
    assert ocsp_signing.decide_signer(state, fresh, NOW) == []  # another instance renewed it already
    assert ocsp_signing.decide_signer(state, fresh, NOW + timedelta(days=25)) == [fresh]


def test_a_revoked_ca_answers_with_its_last_responder_while_it_outlives_an_answer_then_with_its_own_key():
    answer = timedelta(hours=1)
    issuer = CREATED.certificate  # expires NOW + 335 days
    signer = held("5", not_before=NOW, days=30)
    issued = OcspSignerIssued(issuer_fingerprint=issuer.facts.fingerprint_sha256, certificate=signer)
    revoked = ca.CaRevoked(reason="key_compromise", revoked_at=NOW, invalidity_date=None)
    in_service = revocation.fold([CREATED, issued])
    gone = revocation.fold([CREATED, issued, revoked])
    last_hour = signer.facts.not_after - timedelta(minutes=30)
    assert ocsp_signing.answering_signer(gone, issuer, NOW + timedelta(days=25), answer) == signer
    assert ocsp_signing.answering_signer(gone, issuer, last_hour, answer) == issuer  # RFC 6960 4.2.2.2
    assert ocsp_signing.answering_signer(gone, issuer, NOW + timedelta(days=334), answer) == issuer
    assert ocsp_signing.answering_signer(gone, issuer, NOW + timedelta(days=336), answer) is None  # CA expired
    assert ocsp_signing.answering_signer(revocation.fold([CREATED, revoked]), issuer, NOW, answer) == issuer
    offline = msgspec.structs.replace(issuer, key_ref=None)
    assert ocsp_signing.answering_signer(gone, offline, last_hour, answer) is None
    # in service, a CA that cannot certify a responder keeps its last one to the end, and never signs itself
    assert ocsp_signing.answering_signer(in_service, issuer, last_hour, answer) == signer
    assert ocsp_signing.answering_signer(in_service, issuer, signer.facts.not_after, answer) is None


@pytest.mark.parametrize("reason, subordinates", [
    ("key_compromise", "ca_compromise"), ("ca_compromise", "ca_compromise"), ("superseded", "superseded"),
    ("cessation_of_operation", "cessation_of_operation")])
def test_certificates_under_a_revoked_ca_carry_its_reason_and_a_compromised_key_becomes_ca_compromise(
        reason, subordinates):
    assert ocsp_signing.ca_reason_for_subordinates(reason) == subordinates


def test_a_revoked_ca_is_final_and_a_root_is_never_revoked():
    revoked = ca.CaRevoked(reason="superseded", revoked_at=NOW, invalidity_date=None)
    state = ca.fold([CREATED, revoked])
    for decide in (lambda: ca.require_active(state, "c1"), lambda: ca.decide_disable(state, "c1", "x"),
                   lambda: ca.decide_enable(state, "c1", "x")):
        with pytest.raises(DomainError) as caught:
            decide()
        assert caught.value.code == "ca_revoked"
    with pytest.raises(AlreadyExists):
        ca.decide_revoke(state, "c1", revoked)
    root = ca.fold([msgspec.structs.replace(CREATED, kind="root", parent_id=None)])
    with pytest.raises(DomainError) as caught:
        ca.decide_revoke(root, "c1", revoked)
    assert caught.value.code == "root_not_revocable"


def test_a_certificate_stream_records_its_revocation_once():
    issued = certificate.CertificateIssued(
        certificate_id="1".rjust(40, "0"), ca_id="c1", issuer_fingerprint="f", profile="cassandra-node",
        subject=DistinguishedName(common_name="n"), sans=SubjectAltNames(), key_source="csr",
        key_ref=None, csr_sha256=None, certificate_pem="", facts=facts("1"))
    revoked = certificate.CertificateRevoked(reason="superseded", revoked_at=NOW, invalidity_date=None)
    state = certificate.fold([issued])
    assert certificate.decide_revoke(state, issued.certificate_id, revoked) == [revoked]
    state = certificate.fold([issued, revoked])
    assert state.status == "revoked" and certificate.decide_revoke(state, issued.certificate_id, revoked) == []


# Any event a CA stream holds, over a few serials and signer keys so that later events overwrite earlier ones.
_SERIALS = st.sampled_from(["1", "2", "3", "a", "ff"])
_CA_STREAM_EVENT = st.one_of(
    st.builds(lambda serial, reason: entry(serial, reason=reason), _SERIALS, st.sampled_from(list(revocation.REASONS))),
    st.builds(lambda number, serial: published(number, signer=held(serial)), st.integers(1, 9),
              st.sampled_from(["aa", "1", "2"])),  # signed by the first key, or by a key it rolled over to
    st.builds(lambda fp, serial: OcspSignerIssued(issuer_fingerprint=fp, certificate=held(serial)),
              st.sampled_from(["f1", "f2"]), _SERIALS),
    st.builds(lambda serial, key: ca.CaKeyRolledOver(certificate=held(serial, key=key), reason="scheduled"), _SERIALS,
              st.sampled_from(["ab", "cd", "ef"])),
    st.builds(lambda serial: ca.CaCrossCertified(certificate=held(serial)), _SERIALS),
    st.just(ca.CaDisabled(reason="audit")), st.just(ca.CaEnabled(reason="audit")),
    st.just(ca.CaRevoked(reason="key_compromise", revoked_at=NOW, invalidity_date=None)),
)


@hsettings(max_examples=300)
@given(events=st.lists(_CA_STREAM_EVENT, max_size=12), data=st.data())
def test_a_fold_resumed_from_an_earlier_state_equals_the_whole_fold_and_leaves_that_state_alone(events, data):
    events = [CREATED, *events]
    split = data.draw(st.integers(0, len(events)), label="split")
    for fold in (revocation.fold, ca.fold):
        earlier = fold(events[:split])
        kept = copy.deepcopy(earlier)
        assert fold(events[split:], start=earlier) == fold(events)
        assert earlier == kept  # a kept state is shared by every later load: resuming must not change it


OFFLINE_ROOT = ca.CaCreated(ca_id="r1", name="Offline", kind="root", origin="offline", algorithm="ecdsa-p384",
                            subject=DistinguishedName(common_name="Offline"), parent_id=None, path_length=None,
                            name_constraints=NameConstraints(), certificate=held("ee", key_ref=None, key="ee"))


def signed_crl(number: int = 5, reasons: dict[str, str] | None = None, *, this_update: datetime = NOW,
               period: timedelta = timedelta(days=90), signer: ca.CaCertificate = OFFLINE_ROOT.certificate,
               sha256: str = "ab" * 32, next_update: datetime | None | bool = True) -> crl_publication.SignedCrl:
    return crl_publication.SignedCrl(crl_number=number, this_update=this_update,
                                next_update=this_update + period if next_update is True else next_update,
                                reasons=reasons or {}, signer_fingerprint=signer.facts.fingerprint_sha256,
                                sha256=sha256)


@pytest.mark.parametrize("signed, code", [
    (signed_crl(reasons={}), "crl_incomplete"),
    (signed_crl(reasons={"a1": "key_compromise", "a2": "key_compromise", "ff": "key_compromise"}),
     "crl_lists_unrecorded"),
    (signed_crl(reasons={"a1": "key_compromise", "a2": "unspecified"}), "crl_reason_mismatch"),
    (signed_crl(3, {"a1": "key_compromise", "a2": "key_compromise"}), "crl_number_not_increasing"),
    (signed_crl(reasons={"a1": "key_compromise", "a2": "key_compromise"}, next_update=None), "crl_next_update_missing"),
    (signed_crl(reasons={"a1": "key_compromise", "a2": "key_compromise"}, this_update=NOW + timedelta(minutes=6)),
     "crl_not_yet_valid"),
    (signed_crl(reasons={"a1": "key_compromise", "a2": "key_compromise"}, this_update=NOW - timedelta(days=91)),
     "crl_lapsed"),
    (signed_crl(reasons={"a1": "key_compromise", "a2": "key_compromise"}, period=timedelta(days=366)),
     "crl_period_too_long"),
    (signed_crl(reasons={"a1": "key_compromise", "a2": "key_compromise"}, signer=held("dd", key_ref=None)),
     "crl_signer_not_current"),
])
def test_an_offline_crl_is_installed_only_if_it_lists_exactly_what_the_stream_records(signed, code):
    state = revocation.fold([OFFLINE_ROOT, entry("a1"), entry("a2"), published(3, signer=OFFLINE_ROOT.certificate)])
    with pytest.raises(DomainError) as caught:
        crl_publication.decide_install(state, signed, NOW)
    assert caught.value.code == code
    assert caught.value.field == ("ca_id" if code.startswith("ca_") else "crl_pem")


def test_an_offline_crl_that_lists_every_recorded_revocation_is_published_once_and_drops_long_expired_ones():
    expired = entry("a0", not_after=NOW - timedelta(days=200))  # expired more than a 90-day period ago: may go
    state = revocation.fold([OFFLINE_ROOT, expired, published(3, signer=OFFLINE_ROOT.certificate), entry("a1")])
    assert crl_publication.publication_due(state, NOW)  # the last CRL lacks a1
    good = signed_crl(7, {"a1": "key_compromise"}, this_update=NOW + timedelta(minutes=4))  # a gap, a skewed clock
    [event] = crl_publication.decide_install(state, good, NOW)
    assert (event.crl_number, event.revoked_count, event.sha256) == (7, 1, good.sha256)
    state = revocation.fold([event], state)
    assert crl_publication.decide_install(state, good, NOW) == []  # the same CRL again: nothing new
    assert not crl_publication.publication_due(state, NOW)
    assert crl_publication.crl_of_key(state, None, NOW).published == event
    also_expired = signed_crl(8, {"a0": "key_compromise", "a1": "key_compromise"}, sha256="cd" * 32)
    assert crl_publication.decide_install(state, also_expired, NOW)[0].crl_number == 8  # listing it still is fine


def test_a_ca_that_signs_its_own_crls_takes_none_from_a_ceremony():
    with pytest.raises(DomainError) as caught:
        crl_publication.decide_install(revocation.fold([CREATED]), signed_crl(signer=CREATED.certificate), NOW)
    assert (caught.value.code, caught.value.field) == ("ca_key_online", "ca_id")
    assert crl_publication.key_offline(revocation.fold([OFFLINE_ROOT]))
    assert not crl_publication.key_offline(revocation.fold([CREATED]))


@given(recorded=st.sets(st.sampled_from(["a1", "a2", "a3", "b4", "c5"])),
       listed=st.dictionaries(st.sampled_from(["a1", "a2", "a3", "b4", "c5", "ff"]),
                              st.sampled_from(["key_compromise", "superseded"])))
def test_an_installed_offline_crl_never_disagrees_with_the_audit_trail(recorded, listed):
    state = revocation.fold([OFFLINE_ROOT, *(entry(serial) for serial in sorted(recorded))])
    try:
        [event] = crl_publication.decide_install(state, signed_crl(reasons=listed), NOW)
    except DomainError:
        return
    assert event.revoked_count == len(recorded)
    assert listed == {serial: "key_compromise" for serial in recorded}
