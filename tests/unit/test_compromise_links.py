"""domain/compromise.py: a compromise rollover revokes the root's link certificates in its own append, and which
certificate of a parent signed a CA's certificate once a compromise rollover withdrew the parent's earlier keys."""

from __future__ import annotations

from datetime import timedelta

import msgspec
from hypothesis import given, strategies as st

from domain import ca, compromise, revocation
from domain.revocation import RevocationRecorded
from test_ca_link_certificates import NEW, NEW_WITH_OLD, NOW, OLD, OLD_WITH_NEW, created, held, rolled

THIRD = held("05", "cc", "cc")


def stolen() -> ca.CaKeyRolledOver:
    return ca.CaKeyRolledOver(certificate=THIRD, reason="root key stolen", compromised=True)


def registry(*events) -> revocation.Registry:
    return revocation.fold([created("root"), rolled(), *events])


@given(days=st.integers(-30, 30))
def test_the_links_are_revoked_key_compromise_before_the_rollover_in_one_decision(days):
    invalidity = NOW + timedelta(days=days)
    decided = compromise.decide_rollover(registry(), "r1", stolen(), now=NOW + timedelta(days=40),
                                         invalidity_date=invalidity)
    *links, rollover = decided
    assert isinstance(rollover, ca.CaKeyRolledOver) and rollover.compromised
    assert [(e.serial_hex, e.reason, e.subject_ca_id, e.certificate_id) for e in links] == [
        ("03", "key_compromise", "r1", None), ("04", "key_compromise", "r1", None)]
    assert all(e.invalidity_date == max(invalidity, NOW) for e in links)  # not before the link (RFC 5280 5.3.2)
    after = revocation.fold(decided, start=registry())
    assert {"03", "04"} <= after.revoked.keys() and after.ca.withdrawn == {
        c.facts.fingerprint_sha256 for c in (OLD, NEW, NEW_WITH_OLD, OLD_WITH_NEW)}


def test_a_revoked_or_expired_link_is_not_revoked_again_and_a_routine_rollover_revokes_nothing():
    earlier = RevocationRecorded(serial_hex="03", certificate_id=None, subject_ca_id="r1", reason="superseded",
                                 revoked_at=NOW, invalidity_date=None, not_after=NOW + timedelta(days=1))
    decided = compromise.decide_rollover(registry(earlier), "r1", stolen(), now=NOW, invalidity_date=None)
    assert [e.serial_hex for e in decided if isinstance(e, RevocationRecorded)] == ["04"]
    expired = NOW + timedelta(days=3651)
    assert [type(e) for e in compromise.decide_rollover(registry(), "r1", stolen(), now=expired,
                                                        invalidity_date=None)] == [ca.CaKeyRolledOver]
    routine = msgspec.structs.replace(stolen(), compromised=False)
    assert [type(e) for e in compromise.decide_rollover(registry(), "r1", routine, now=NOW,
                                                        invalidity_date=None)] == [ca.CaKeyRolledOver]


def test_a_certificate_signed_by_a_withdrawn_key_has_no_trusted_signer_one_signed_since_has():
    parent = revocation.fold([created("root"), rolled(), stolen()]).ca
    by_old = held("10", "dd", "aa")  # an intermediate's certificate the first key signed
    by_stolen = held("11", "dd", "bb")
    by_new = held("12", "dd", "cc")
    assert compromise.signer_of(parent, by_old) == [] and compromise.signer_of(parent, by_stolen) == []
    assert compromise.signer_of(parent, by_new) == [THIRD]
    before = revocation.fold([created("root"), rolled()]).ca  # no compromise rollover: nothing withdrawn
    assert compromise.signer_of(before, by_old) == [OLD]


def test_a_stolen_keys_certificates_that_cas_here_issued_are_found_by_issuer_and_revoked_once():
    """Another CA's cross-certificate of the key and the root's own link certifying it, not a self-signed one (no
    CA here lists it) nor a certificate of another key; a hybrid's ML-DSA half finds its certificates too."""
    replace = msgspec.structs.replace
    new_with_old, old_with_new = (replace(link, issuer_ca_id="r1") for link in (NEW_WITH_OLD, OLD_WITH_NEW))
    cross = replace(held("05", "bb", "ee"), issuer_ca_id="bridge")
    state = ca.fold([created("root"), rolled(new_with_old, old_with_new), ca.CaCrossCertified(certificate=cross)])
    assert compromise.certificates_of_keys(state, {"bb" * 32}, lambda _held: None) == {
        "bridge": [cross], "r1": [new_with_old]}
    assert compromise.certificates_of_keys(state, {"ff" * 32}, lambda held_: "ff" * 32 if held_ is cross else None
                                           ) == {"bridge": [cross]}
    earlier = RevocationRecorded(serial_hex="05", certificate_id=None, subject_ca_id="r1", reason="superseded",
                                 revoked_at=NOW, invalidity_date=None, not_after=cross.facts.not_after)
    later = NOW + timedelta(days=1)
    [entry] = compromise.key_compromise_entries("r1", [cross, new_with_old], {"05": earlier}, now=later,
                                                invalidity_date=NOW - timedelta(days=9))
    assert (entry.serial_hex, entry.subject_ca_id, entry.reason, entry.invalidity_date) == (
        "03", "r1", "key_compromise", NOW)  # not before the certificate (RFC 5280 5.3.2)
    assert compromise.key_compromise_entries("r1", [cross], {}, now=NOW + timedelta(days=3651),
                                             invalidity_date=None) == []  # expired
