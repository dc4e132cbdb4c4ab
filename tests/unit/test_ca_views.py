"""The CA read model: a CA below a revoked CA reads as revoked by it, whatever its own stream records after."""

from __future__ import annotations

import sqlite3

from domain.events import Actor, EventEnvelope
from projections import cas
from projections.cas import CasProjector

ACTOR = Actor(principal="test", auth_method="internal")
FACTS = {"subject_dn": "CN=x", "issuer_dn": "CN=y", "not_before": "2026-01-01T00:00:00Z",
         "not_after": "2030-01-01T00:00:00Z", "subject_key_identifier": "01", "authority_key_identifier": "02",
         "algorithm": "ecdsa-p384"}


class Views:
    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:", isolation_level=None)
        self.projector = CasProjector("", "t")
        self.projector.create(self.conn)
        self.position = 0

    def event(self, ca_id: str, type_: str, payload: dict) -> None:
        self.position += 1
        self.projector.apply(self.conn, EventEnvelope(
            event_id=f"e{self.position}", stream_id=f"ca-{ca_id}", stream_type="ca", version=1,
            global_position=self.position, tenant_id="acme", type=type_, schema_version=1,
            occurred_at=f"2026-06-01T00:00:{self.position:02d}.000000Z", actor=ACTOR, correlation_id=None,
            causation_id=None, payload=payload, prev_hash=""))

    def created(self, ca_id: str, parent_id: str | None) -> None:
        certificate = {"certificate_pem": "", "issuer_ca_id": parent_id,
                       "facts": {**FACTS, "fingerprint_sha256": ca_id}}
        self.event(ca_id, "ca.created", {"name": ca_id, "kind": "intermediate" if parent_id else "root",
                                         "origin": "online", "algorithm": "ecdsa-p384", "parent_id": parent_id,
                                         "path_length": None, "name_constraints": {}, "certificate": certificate})

    def revoked(self, ca_id: str, at: str, reason: str = "superseded") -> None:
        self.event(ca_id, "ca.revoked", {"reason": reason, "revoked_at": at, "invalidity_date": None})

    def read(self, ca_id: str) -> tuple:
        row = cas.get(self.conn, ca_id, None)
        return row["status"], row["revocation_reason"], row["revoked_ca_id"], row["revoked_at"]


def test_a_ca_below_a_revoked_ca_reads_revoked_by_the_nearest_revoked_ca_and_stays_so():
    views = Views()
    views.created("root", None)
    views.created("mid", "root")
    views.created("sub", "mid")
    views.created("leafca", "sub")
    views.created("other", "root")
    views.event("pending", "ca.intermediate_requested", {"name": "p", "algorithm": "ecdsa-p384",
                                                         "parent_id": "sub", "csr_pem": "CSR", "key_ref": "k"})
    views.revoked("sub", "T1", reason="key_compromise")
    views.revoked("mid", "T2")
    assert views.read("root") == views.read("other") == ("active", None, None, None)
    assert views.read("mid") == ("revoked", "superseded", None, "T2")
    assert views.read("sub") == ("revoked", "key_compromise", None, "T1")  # its own revocation, not its parent's
    assert views.read("leafca") == views.read("pending") == ("revoked", "ca_revoked", "sub", "T1")

    views.event("leafca", "ca.disabled", {"reason": "r"})  # its own stream never heard of the revocation above
    views.event("leafca", "ca.enabled", {"reason": "r"})
    views.event("pending", "ca.certificate_installed", {
        "certificate": {"certificate_pem": "", "issuer_ca_id": "sub", "facts": {**FACTS, "fingerprint_sha256": "p"}},
        "path_length": 0, "name_constraints": {}})
    assert views.read("leafca") == views.read("pending") == ("revoked", "ca_revoked", "sub", "T1")
    views.created("late", "leafca")  # recorded after the revocation it raced
    assert views.read("late") == ("revoked", "ca_revoked", "sub", "T1")
    assert cas.held_count(views.conn, "acme") == 2  # root and other
    assert {row["ca_id"] for row in cas.search(views.conn, None, status="active")} == {"root", "other"}


def test_where_a_cas_keys_live_reads_from_its_creation_and_older_events_read_vault():
    views = Views()
    views.created("old", None)  # recorded before key_storage existed
    views.event("token", "ca.created", {"name": "t", "kind": "root", "origin": "online", "algorithm": "ecdsa-p384",
                                        "parent_id": None, "path_length": None, "name_constraints": {},
                                        "key_storage": "hsm", "certificate": {
                                            "certificate_pem": "", "issuer_ca_id": None,
                                            "facts": {**FACTS, "fingerprint_sha256": "token"}}})
    views.event("pending", "ca.intermediate_requested", {"name": "p", "algorithm": "ecdsa-p256", "parent_id": "old",
                                                         "csr_pem": "CSR", "key_ref": "k", "key_storage": "hsm"})
    assert [cas.get(views.conn, ca_id, None)["key_storage"] for ca_id in ("old", "token", "pending")] == \
        ["vault", "hsm", "hsm"]
