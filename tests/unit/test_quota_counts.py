"""The certificates read model's counts for quotas and the expiry gauges: after any history, they equal counting the
rows themselves.

Hypothesis writes histories of two tenants' issuances (any day, any lifetime), revocations, renewals and CA
revocations (a CA above revokes everything below it, even certificates issued after it); ``live_count``, ``issued_on``
and ``expiring_counts`` must then equal a plain count over the certificate rows, at any moment, for each tenant.
``live_count`` reads the counts the expiry gauges keep (by day of expiry, tenant and CA) summed over the tenant's CAs:
another tenant's counts, or a CA's revocation in one tenant, must not show in the other's.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from commands.runtime import rfc3339
from domain.events import Actor, EventEnvelope
from projections.certificate_queries import expiring_bounds, expiring_counts, issued_on, live_count
from projections.certificates import CertificatesProjector

T0 = datetime(2026, 12, 6, 0, 0, tzinfo=UTC)
CAS = {"root": None, "mid": "root", "leaf": "mid"}  # a chain: revoking one untrusts everything below it
TENANTS = ("acme", "globex")  # each with the chain above, under the same CA ids
ACTOR = Actor(principal="test", auth_method="internal")


class History:
    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:", isolation_level=None)
        self.projector = CertificatesProjector("", "t")
        self.projector.create(self.conn)
        self.position = 0
        self.issued: list[tuple[str, str]] = []  # (tenant, certificate id)
        for tenant in TENANTS:
            for ca_id, parent in CAS.items():
                self.event(f"ca-{ca_id}", "ca", "ca.created", {"parent_id": parent}, T0, tenant)

    def event(self, stream_id: str, stream_type: str, type_: str, payload: dict, at: datetime,
              tenant: str = "acme") -> None:
        self.position += 1
        self.projector.apply(self.conn, EventEnvelope(
            event_id=f"e{self.position}", stream_id=stream_id, stream_type=stream_type, version=1,
            global_position=self.position, tenant_id=tenant, type=type_, schema_version=1, occurred_at=rfc3339(at),
            actor=ACTOR, correlation_id=None, causation_id=None, payload=payload, prev_hash=""))

    def issue(self, ca_id: str, at: datetime, lifetime: timedelta, tenant: str = "acme") -> str:
        certificate_id = f"{len(self.issued) + 1:040x}"
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        facts = {"serial_hex": certificate_id, "fingerprint_sha256": certificate_id, "public_key_sha256": certificate_id,
                 "subject_dn": "CN=n", "issuer_dn": "CN=ca", "algorithm": "ecdsa-p256",
                 "not_before": (at - timedelta(hours=2)).strftime(fmt),
                 "not_after": (at + lifetime).strftime(fmt)}
        self.event(f"certificate-{certificate_id}", "certificate", "certificate.issued", {
            "certificate_id": certificate_id, "ca_id": ca_id, "issuer_fingerprint": "f", "profile": "cassandra-node",
            "subject": {"common_name": "n"}, "sans": {"dns": ["n.acme.internal"]}, "key_source": "csr",
            "key_ref": None, "certificate_pem": "", "tags": [], "facts": facts}, at, tenant)
        self.issued.append((tenant, certificate_id))
        return certificate_id

    def counted_live(self, now: datetime, tenant: str = "acme") -> int:
        """The tenant's live rows counted directly. Compared in Python, as instants: not_after is an X.509 time
        (whole seconds), ``now`` is not."""
        rows = self.conn.execute("SELECT not_after FROM certificates WHERE tenant_id = ? AND "
                                 "status = 'issued' AND superseded_by IS NULL", (tenant,)).fetchall()
        return sum(datetime.fromisoformat(not_after) > now for (not_after,) in rows)

    def counted_expiring(self, now: datetime, windows: tuple[int, ...]) -> list[tuple]:
        """expiring_counts as it was: every live row expiring within the longest window read and grouped."""
        bounds = [expiring_bounds(now, timedelta(days=days)) for days in windows]
        rows = self.conn.execute(
            f"SELECT tenant_id, ca_id, {', '.join('SUM(not_after < ?)' for _ in windows)} FROM certificates "
            "WHERE status = 'issued' AND superseded_by IS NULL AND not_after >= ? AND not_after < ? "
            "GROUP BY tenant_id, ca_id ORDER BY tenant_id, ca_id",
            (*(upper for _lower, upper in bounds), bounds[0][0], max(upper for _lower, upper in bounds))).fetchall()
        return [(tenant, ca, days, count) for tenant, ca, *counts in rows for days, count in zip(windows, counts)]

    def counted_issued(self, day, tenant: str = "acme") -> int:
        return self.conn.execute("SELECT count(*) FROM certificates WHERE tenant_id = ? AND "
                                 "substr(issued_at, 1, 10) = ?", (tenant, day.isoformat())).fetchone()[0]


steps = st.lists(st.one_of(
    st.tuples(st.just("issue"), st.sampled_from(sorted(CAS)), st.integers(0, 72), st.integers(1, 24 * 400),
              st.sampled_from(TENANTS)),
    st.tuples(st.just("revoke"), st.integers(0, 40)),
    st.tuples(st.just("renew"), st.integers(0, 40), st.integers(1, 24 * 400)),
    st.tuples(st.just("revoke_ca"), st.sampled_from(sorted(CAS)), st.sampled_from(TENANTS))), max_size=40)


# moments: any hour, an issued certificate's expiry, or a window's length before it (the window ends there); give or
# take up to 1.5 s (microseconds)
moments_ = st.lists(st.tuples(st.sampled_from(["hour", "expiry", "window"]), st.integers(0, 24 * 500),
                              st.integers(-1_500_000, 1_500_000)), min_size=1, max_size=6)


windows_ = st.lists(st.integers(0, 400), min_size=1, max_size=3).map(tuple)


@settings(max_examples=150, deadline=None)
@given(steps, moments_, windows_)
def test_the_counts_equal_counting_the_rows(history_steps, moments, windows):
    history = History()
    for step in history_steps:
        match step:
            case ("issue", ca_id, hour, lifetime_hours, tenant):
                history.issue(ca_id, T0 + timedelta(hours=hour, minutes=7), timedelta(hours=lifetime_hours), tenant)
            case ("revoke", index) if history.issued:
                tenant, certificate_id = history.issued[index % len(history.issued)]
                history.event(f"certificate-{certificate_id}", "certificate", "certificate.revoked",
                              {"reason": "superseded", "revoked_at": rfc3339(T0)}, T0, tenant)
            case ("renew", index, lifetime_hours) if history.issued:
                tenant, old = history.issued[index % len(history.issued)]
                new = history.issue("leaf", T0 + timedelta(hours=1), timedelta(hours=lifetime_hours), tenant)
                history.event(f"certificate-{old}", "certificate", "certificate.renewed",
                              {"new_certificate_id": new}, T0, tenant)
            case ("revoke_ca", ca_id, tenant):
                history.event(f"ca-{ca_id}", "ca", "ca.revoked", {"revoked_at": rfc3339(T0)}, T0, tenant)
    expiries = [datetime.fromisoformat(row[0]) for row in history.conn.execute("SELECT not_after FROM certificates")]
    for kind, n, microseconds in moments:
        at = expiries[n % len(expiries)] if kind != "hour" and expiries else T0 + timedelta(hours=n)
        if kind == "window" and expiries:
            at -= timedelta(days=windows[n % len(windows)])
        now = at + timedelta(microseconds=microseconds)
        for tenant in TENANTS:
            assert live_count(history.conn, tenant, now) == history.counted_live(now, tenant)
            assert issued_on(history.conn, tenant, now.date()) == history.counted_issued(now.date(), tenant)
        for gauge in (windows, (7, 30, 90)):
            assert expiring_counts(history.conn, now, gauge) == history.counted_expiring(now, gauge)
    for tenant in TENANTS:  # at any moment before every expiry: every live row, counted by expiry day and CA
        assert live_count(history.conn, tenant, T0 - timedelta(days=1)) == history.counted_live(T0 - timedelta(days=1),
                                                                                               tenant)
    # one count of live certificates: certificate_counts keeps issuances only
    assert history.conn.execute("SELECT count(*) FROM certificate_counts WHERE kind != 'issued'").fetchone()[0] == 0
    assert live_count(history.conn, "initech", T0) == 0 and issued_on(history.conn, "initech", T0.date()) == 0
