"""domain.ca: a root's rollover records link certificates (RFC 4210 4.4); schema 1 rollovers decode without them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from domain import ca
from domain.certspec import CertificateFacts, DistinguishedName, NameConstraints
from domain.errors import DomainError
from domain.events import Actor, EventEnvelope, decode_payload, to_payload_dict

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def held(serial: str, key: str, issuer_key: str, key_ref: str | None = None) -> ca.CaCertificate:
    facts = CertificateFacts(serial_hex=serial, fingerprint_sha256=serial.rjust(64, "0"), subject_dn="CN=Root",
                             issuer_dn="CN=Root", not_before=NOW, not_after=NOW + timedelta(days=3650),
                             algorithm="ecdsa-p384", public_key_sha256=key * 32, subject_key_identifier=key,
                             authority_key_identifier=issuer_key)
    return ca.CaCertificate(certificate_pem="", facts=facts, issuer_ca_id=None, key_ref=key_ref or f"ref-{key}")


OLD, NEW = held("01", "aa", "aa"), held("02", "bb", "bb")
NEW_WITH_OLD, OLD_WITH_NEW = held("03", "bb", "aa"), held("04", "aa", "bb")


def created(kind: str) -> ca.CaCreated:
    return ca.CaCreated(ca_id="r1", name="Root", kind=kind, origin="online", algorithm="ecdsa-p384",
                        subject=DistinguishedName(common_name="Root"), parent_id=None if kind == "root" else "p",
                        path_length=1, name_constraints=NameConstraints(), certificate=OLD)


def rolled(new_with_old=NEW_WITH_OLD, old_with_new=OLD_WITH_NEW) -> ca.CaKeyRolledOver:
    return ca.CaKeyRolledOver(certificate=NEW, reason="root key update", new_with_old=new_with_old,
                              old_with_new=old_with_new)


def test_a_root_rollover_keeps_both_link_certificates_and_the_state_lists_them():
    state = ca.fold([created("root")])
    decided = ca.decide_rollover(state, "r1", rolled())
    after = ca.fold(decided, start=state)
    assert (after.current, after.previous, after.links) == (NEW, (OLD,), (NEW_WITH_OLD, OLD_WITH_NEW))


@pytest.mark.parametrize("kind, links", [
    ("intermediate", (NEW_WITH_OLD, OLD_WITH_NEW)),  # its parent certifies each key: no links
    ("root", (NEW_WITH_OLD, None)),  # both or neither
    ("root", (OLD_WITH_NEW, NEW_WITH_OLD)),  # each certifies the other key
    ("root", (NEW_WITH_OLD, NEW_WITH_OLD)),
])
def test_link_certificates_that_do_not_link_a_roots_two_keys_are_refused(kind, links):
    with pytest.raises(DomainError) as caught:
        ca.decide_rollover(ca.fold([created(kind)]), "r1", rolled(*links))
    assert (caught.value.code, caught.value.field) == ("link_certificates_invalid", "certificate")


def test_a_rollover_without_links_is_as_before():
    for kind in ("root", "intermediate"):
        state = ca.fold([created(kind)])
        assert ca.fold(ca.decide_rollover(state, "r1", rolled(None, None)), start=state).links == ()


def test_a_schema_1_rollover_decodes_with_no_link_certificates():
    v1 = {k: v for k, v in to_payload_dict(rolled()).items() if k not in ("new_with_old", "old_with_new")}
    envelope = EventEnvelope(event_id="e", stream_id="ca-r1", stream_type="ca", version=2, global_position=2,
                             tenant_id="acme", type="ca.key_rolled_over", schema_version=1,
                             occurred_at="2026-06-01T12:00:00.000000Z",
                             actor=Actor(principal="p", auth_method="token"), correlation_id=None,
                             causation_id=None, payload=v1, prev_hash="0")
    decoded = decode_payload(envelope)
    assert decoded == rolled(None, None)
    v2 = {k: v for k, v in to_payload_dict(rolled()).items() if k != "compromised"}
    assert decode_payload(msgspec.structs.replace(envelope, schema_version=2, payload=v2)) == rolled()
    current = msgspec.structs.replace(envelope, schema_version=3, payload=to_payload_dict(rolled()))
    assert decode_payload(current) == rolled()
    assert ca.CaKeyRolledOver.schema_version == 3
