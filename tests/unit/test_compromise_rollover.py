"""A root's compromise rollover: the domain's rules (``domain.ca.check_rollover``, ``decide_rollover``), and the CA
read model withdrawing the root's earlier keys from every chain and truststore, for any history of rollovers."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from domain import ca
from domain.errors import DomainError
from domain.events import Actor, EventEnvelope
from projections import cas as views
from projections.cas import CasProjector
from test_ca_link_certificates import NEW, NEW_WITH_OLD, OLD, OLD_WITH_NEW, created

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def rolled(*, compromised: bool, links: bool = False) -> ca.CaKeyRolledOver:
    return ca.CaKeyRolledOver(certificate=NEW, reason="root key stolen", compromised=compromised,
                              new_with_old=NEW_WITH_OLD if links else None, old_with_new=OLD_WITH_NEW if links else None)


def test_a_compromise_rollover_of_a_root_records_the_mode_and_no_link():
    state = ca.fold([created("root")])
    decided = ca.decide_rollover(state, "r1", rolled(compromised=True))
    assert [(e.compromised, e.new_with_old, e.old_with_new) for e in decided] == [(True, None, None)]
    after = ca.fold(decided, start=state)
    assert (after.current, after.previous, after.links) == (NEW, (OLD,), ())


def test_a_compromise_rollover_with_link_certificates_is_refused():
    with pytest.raises(DomainError) as caught:
        ca.decide_rollover(ca.fold([created("root")]), "r1", rolled(compromised=True, links=True))
    assert (caught.value.code, caught.value.field) == ("link_certificates_invalid", "certificate")


@given(kind=st.sampled_from(["root", "intermediate"]), compromised=st.booleans(), reported=st.booleans())
def test_who_may_roll_over_in_which_mode(kind, compromised, reported):
    """A compromise rollover is a root's (an intermediate's stolen key is revoked); a key reported compromised rolls
    over only in compromise mode (a routine rollover's links would vouch for it); reporting it first is fine."""
    state = ca.fold([created(kind)])
    refusal = None
    if compromised and kind != "root":
        refusal = "compromise_rollover_root_only"
    elif reported and not compromised:
        refusal = "key_compromised"
    try:
        ca.check_rollover(state, "r1", compromised=compromised, key_reported=reported)
    except DomainError as error:
        assert (error.code, error.field) == (refusal, "compromised")
    else:
        assert refusal is None
    if refusal != "key_compromised":  # the append's own decision agrees (it does not know of reports)
        try:
            ca.decide_rollover(state, "r1", rolled(compromised=compromised))
        except DomainError as error:
            assert error.code == refusal
        else:
            assert refusal is None


# The read model ------------------------------------------------------------------------------------------------

ACTOR = Actor(principal="test", auth_method="internal")


def certificate(fingerprint: str, subject: str, issuer: str, key: str, issuer_key: str, issuer_ca: str | None) -> dict:
    return {"certificate_pem": fingerprint, "issuer_ca_id": issuer_ca, "key_ref": None, "facts": {
        "fingerprint_sha256": fingerprint, "subject_dn": subject, "issuer_dn": issuer, "subject_key_identifier": key,
        "authority_key_identifier": issuer_key, "not_before": "2026-01-01T00:00:00Z",
        "not_after": "2035-01-01T00:00:00Z", "algorithm": "ecdsa-p384"}}


def root_certificate(generation: int) -> dict:
    return certificate(f"root{generation}", "CN=Root", "CN=Root", f"k{generation}", f"k{generation}", None)


class Views:
    """The CA projector on an in-memory database: a root whose key generation ``g`` is ``k{g}``, and under each
    generation an intermediate ``i{g}`` its key signed."""

    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:", isolation_level=None)
        self.projector = CasProjector("", "t")
        self.projector.create(self.conn)
        self.position = self.generation = 0
        self.event("root", "ca.created", {"name": "root", "kind": "root", "origin": "online", "parent_id": None,
                                          "algorithm": "ecdsa-p384", "path_length": None, "name_constraints": {},
                                          "certificate": root_certificate(0)})
        self.intermediate()

    def event(self, ca_id: str, type_: str, payload: dict) -> None:
        self.position += 1
        self.projector.apply(self.conn, EventEnvelope(
            event_id=f"e{self.position}", stream_id=f"ca-{ca_id}", stream_type="ca", version=1,
            global_position=self.position, tenant_id="acme", type=type_, schema_version=3,
            occurred_at=f"2026-06-01T00:{self.position // 60:02d}:{self.position % 60:02d}.000000Z", actor=ACTOR,
            correlation_id=None, causation_id=None, payload=payload, prev_hash=""))

    def intermediate(self) -> None:
        g = self.generation
        self.event(f"i{g}", "ca.created", {
            "name": f"i{g}", "kind": "intermediate", "origin": "online", "parent_id": "root",
            "algorithm": "ecdsa-p384", "path_length": 0, "name_constraints": {},
            "certificate": certificate(f"i{g}", f"CN=I{g}", "CN=Root", f"ik{g}", f"k{g}", "root")})

    def rollover(self, compromised: bool) -> None:
        old, g = self.generation, self.generation + 1
        links = {} if compromised else {
            "new_with_old": certificate(f"nwo{g}", "CN=Root", "CN=Root", f"k{g}", f"k{old}", "root"),
            "old_with_new": certificate(f"own{g}", "CN=Root", "CN=Root", f"k{old}", f"k{g}", "root")}
        self.event("root", "ca.key_rolled_over", {"certificate": root_certificate(g), "reason": "r",
                                                  "compromised": compromised, **links})
        self.generation = g
        self.intermediate()


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.booleans(), min_size=1, max_size=5))
def test_after_any_rollovers_nothing_served_holds_a_key_before_the_last_compromise(modes):
    """Each True is a compromise rollover. From the last one on, only the keys since (``trusted``) appear in a chain,
    a truststore or as the plain caIssuers certificate; what an earlier key signed has a chain without a root, a
    truststore of the trusted roots alone, and is listed for re-issuance. Routine rollovers alone keep every
    generation, as before."""
    model = Views()
    for compromised in modes:
        model.rollover(compromised)
    conn, last = model.conn, model.generation
    first_trusted = max((g + 1 for g, compromised in enumerate(modes) if compromised), default=0)
    trusted_roots = {f"root{g}" for g in range(first_trusted, last + 1)}
    for g in range(last + 1):
        store = [row["fingerprint"] for row in views.truststore_chain(conn, "acme", f"i{g}", NOW)]
        chain = [row["fingerprint"] for row in views.issuer_chain(conn, "acme", f"i{g}", NOW)]
        served = set(store) | set(chain)
        assert not {row["fingerprint"] for row in views.certificates_of(conn, "acme", "root")
                    if row["distrusted_at"] is not None} & served
        if g >= first_trusted:
            assert store[:2] == [f"i{g}", f"root{g}"] and set(store[1:]) == trusted_roots
            assert chain[0] == f"i{g}" and chain[-1] == f"root{g}"
            assert all(int(link[3:]) > first_trusted for link in chain[1:-1])  # links among trusted keys only
            assert views.withdrawn_path(conn, "acme", f"i{g}", "root") is None
        else:
            assert set(store) == trusted_roots and chain == [f"i{g}"]
            assert views.withdrawn_path(conn, "acme", f"i{g}", "root") == 2
    assert views.untrusted_cas(conn, "acme", "root", NOW) == [f"i{g}" for g in range(first_trusted)]
    plain = views.plain_issuer_certificate(conn, "acme", "root", NOW)
    assert plain["fingerprint"] == f"root{first_trusted}"
    assert [row["fingerprint"] for row in views.chain_from(conn, "acme", views.certificate_by_fingerprint(
        conn, "acme", f"root{last}"))] == [f"root{last}"]
