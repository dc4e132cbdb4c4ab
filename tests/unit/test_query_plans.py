"""The read models' key lookups go through the key's own index whether or not ANALYZE ever ran, and the process
that writes views.db keeps statistics there (projections/statistics.py).

Without statistics SQLite's plans depend on the schema alone (it takes any ``tenant_id = ?`` for ten rows), so a
database of the projectors' real tables with a few rows in them gets the plan a tenant of 100,000 certificates
gets; docs/architecture.md, "Query plans", has the measurements.
"""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commands.ports import AppendRequest
from commands.runtime import rfc3339
from domain import compliance as domain_compliance
from domain.events import Actor, EventEnvelope
from domain.renewal import RenewalPolicy, renew_at
from infra.eventstore.sqlite import SQLiteEventStore
from projections import audit_log, certificate_queries, compliance, discovery
from projections.certificates import COLUMNS, CertificatesProjector, renew_class
from projections.registry import all_projectors
from projections.runner import ProjectionRunner
from projections.statistics import analyze, has_statistics
from projections.views_db import CHECKPOINTS

NOW = datetime(2026, 12, 1, tzinfo=UTC)


class Recorder:
    """A connection that notes the statements a query function runs through it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn, self.statements = conn, []

    def execute(self, sql, parameters=()):
        self.statements.append((sql, tuple(parameters)))
        return self.conn.execute(sql, parameters)


def plans(conn: sqlite3.Connection, query, *args, **kwargs) -> tuple[list, str]:
    """(what the query returned, the plans of every statement it ran, as one text)."""
    recorder = Recorder(conn)
    found = query(recorder, *args, **kwargs)
    text = " | ".join(row[-1] for sql, params in recorder.statements
                      for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    return found, text


def _certificate(tenant: str, n: int) -> dict:
    row = dict.fromkeys(COLUMNS, "x")
    row.update(tenant_id=tenant, certificate_id=f"{tenant}-cert-{n}", ca_id=f"{tenant}-ca", serial_hex=f"{n:040x}",
               fingerprint=f"{tenant}-fp-{n}", common_name=f"node-{n}", status="issued", has_key=1,
               not_before="2026-01-01T00:00:00Z", not_after="2027-01-01T00:00:00Z", sans="[]", tags="[]",
               key_exports=0, version=1, position=n, renew_at="2026-11-01T00:00:00Z", auto_renew=1,
               public_key_sha256=f"{tenant}-key-{n}", last_verified=None, alternative_key_sha256=None,
               superseded_by=None, revoked_ca_id=None)
    row["renew_class"] = renew_class(row["renew_at"], row["not_after"])
    return row


# What ANALYZE (analysis_limit = 1000) wrote for a views.db of 174,000 certificates in 12 tenants, 250,000 events
# (bench/query_plans.py; the certificates tables' as read model 11 built them, and read model 12's index of the expiry
# counts by tenant), the index tag made "t": statistics that tempt SQLite into walking an index in order.
MEASURED = (
    ("audit_log", "ix_audit_log_t_actor", "577296 667 1"),
    ("audit_log", "ix_audit_log_t_correlation", "272025 2"),
    ("audit_log", "ix_audit_log_t_day", "244584 334 2"),
    ("audit_log", "ix_audit_log_t_stream", "231264 334 1"),
    ("audit_log", "ix_audit_log_t_tenant", "237552 501 1"),
    ("audit_log", "ix_audit_log_t_type", "267894 334 1"),
    ("certificate_cas", "certificate_cas", "24 2 1"),
    ("certificate_expiry_counts", "certificate_expiry_counts", "5400 12 1 1"),
    ("certificate_expiry_counts", "ix_certificates_t_expiry_counts_tenant", "8308 501 1"),
    ("certificate_names", "certificate_names", "395772 1001 2 1"),
    ("certificate_tags", "certificate_tags", "162748 1001 1001 1"),
    ("certificates", "ix_certificates_t_cn_folded", "407056 1001 1"),
    ("certificates", "ix_certificates_t_expiry", "124852 1001 1 1"),
    ("certificates", "ix_certificates_t_fingerprint", "144716 1 1 1 1 1 1 1"),
    ("certificates", "ix_certificates_t_id", "166166 1"),
    ("certificates", "ix_certificates_t_key", "108241 1001 1"),
    ("certificates", "ix_certificates_t_live", "130680 1001 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1"),
    ("certificates", "ix_certificates_t_not_after", "128772 1"),
    ("certificates", "ix_certificates_t_position", "88924 1001 1 1 1 1"),
    ("certificates", "ix_certificates_t_renewal", "111078 1001 1 1 1 1 1 1 1 1"),
    ("certificates", "ix_certificates_t_revoked", "16500 1001 1 1 1"),
    ("certificates", "ix_certificates_t_serial", "144144 1001 1001 1"),
    ("certificates", "sqlite_autoindex_certificates_1", "204930 1001 1"),
    ("discovered_endpoints", "discovered_endpoints", "92169 1001 1 1"),
    ("discovered_endpoints", "ix_discovery_t_observed", "124928 1001 1001"),
)


@pytest.fixture(params=["no statistics", "measured statistics"])
def views(request):
    """The projectors' tables, as a fresh views.db has them (no statistics) or with those of a large one, two
    tenants' certificates, their CAs, audit entries and a discovered endpoint serving one of the certificates."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for projector in all_projectors():
        projector.bound("", "t").create(conn)
    for tenant in ("big", "small"):
        conn.execute("INSERT INTO certificate_cas VALUES (?, ?, NULL, NULL)", (tenant, f"{tenant}-ca"))
        for n in range(1, 4):
            row = _certificate(tenant, n)
            conn.execute(f"INSERT INTO certificates ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                         tuple(row.values()))
            conn.execute("INSERT INTO certificate_names VALUES (?, ?, ?)", (tenant, f"node-{n}.example",
                                                                         row["certificate_id"]))
    conn.execute("INSERT INTO discovered_endpoints (tenant_id, host, port, observed_at, scan_id, fingerprint, "
                 "first_seen, position) VALUES ('big', 'node-2', 9142, ?, 's', 'big-fp-2', ?, 1)",
                 (NOW.isoformat(), NOW.isoformat()))
    for position in range(1, 7):
        tenant = "big" if position % 2 else "small"
        conn.execute("INSERT INTO audit_log VALUES (?, '2026-12-01', '2026-12-01T00:00:00Z', ?, ?, ?, 'certificate', "
                     "1, 'certificate.issued', 'token:a', 'api_token', ?)",
                     (position, f"e{position}", tenant, f"certificate-{position}", f"c{position}"))
    if request.param == "measured statistics":
        conn.execute("ANALYZE")  # creates sqlite_stat1
        conn.execute("DELETE FROM sqlite_stat1")
        conn.executemany("INSERT INTO sqlite_stat1 VALUES (?, ?, ?)", MEASURED)
        conn.execute("ANALYZE sqlite_schema")  # loads them
    yield conn
    conn.close()


@pytest.mark.parametrize("scope", ["big", None])
def test_a_serial_is_found_through_the_serial_index_within_a_tenant_or_across_them(views, scope):
    found, plan = plans(views, certificate_queries.search, scope, serial=f"{2:x}")
    assert [r["certificate_id"] for r in found] == (["big-cert-2"] if scope else ["big-cert-2", "small-cert-2"])
    assert "_serial (tenant_id=? AND ca_id=? AND serial_hex=?)" in plan, plan
    assert not [step for step in plan.split(" | ") if step == "SCAN c" or step.startswith("SCAN c ")], plan


@pytest.mark.parametrize("sort", ["issued", "expiry"])
def test_the_certificates_of_every_tenant_are_listed_through_each_tenants_index_in_order(views, sort):
    every = ["big-cert-1", "small-cert-1", "big-cert-2", "small-cert-2", "big-cert-3", "small-cert-3"]
    if sort == "expiry":  # one not_after for all: by id
        every = sorted(every)
    found, plan = plans(views, certificate_queries.search, None, sort=sort, limit=4)
    assert [r["certificate_id"] for r in found] == every[:4]
    assert "(tenant_id=?)" in plan and "SCAN o" not in plan.split(" | "), plan
    after = certificate_queries.decode_cursor(certificate_queries.encode_cursor(found[1], sort))
    found = certificate_queries.search(views, None, sort=sort, cursor=after, limit=3)
    assert [r["certificate_id"] for r in found] == every[2:5]
    found = certificate_queries.search(views, None, sort=sort, status="issued", ca_id="small-ca")
    assert [r["certificate_id"] for r in found] == [c for c in every if c.startswith("small")]


def test_a_tenants_fingerprint_is_found_through_the_fingerprint_index(views):
    found, plan = plans(views, certificate_queries.search, "big", fingerprint="big-fp-3")
    assert [r["certificate_id"] for r in found] == ["big-cert-3"]
    assert "_fingerprint (fingerprint=?)" in plan, plan
    assert plans(views, certificate_queries.search, "small", fingerprint="big-fp-3")[0] == []


def test_an_endpoints_certificate_is_joined_through_its_fingerprint(views):
    found, plan = plans(views, discovery.of_tenant, "big")
    assert [r["certificate_id"] for r in found] == ["big-cert-2"]
    assert "_fingerprint (fingerprint=?) LEFT-JOIN" in plan, plan
    records, plan = plans(views, discovery.records, "big", NOW - timedelta(days=1))
    assert [r.certificate_id for r in records] == ["big-cert-2"]
    assert "_fingerprint (fingerprint=?) LEFT-JOIN" in plan, plan
    assert plans(views, discovery.of_tenant, "small")[0] == []


@pytest.mark.parametrize(("filters", "index"), [({"stream_id": "certificate-3"}, "_stream (stream_id=?)"),
                                                ({"day": "2026-12-01"}, "_day (day_bucket=?)")])
def test_a_streams_or_a_days_audit_entries_are_found_through_their_own_index(views, filters, index):
    found, plan = plans(views, audit_log.search, "big", **filters)
    assert {r["tenant_id"] for r in found} == {"big"} and found
    assert index in plan, plan


def test_a_tenants_live_certificates_by_issuer_are_read_from_the_live_index_alone(views):
    """Every live row of the tenant is read: from the live index, which holds what the query reads (each row read
    too took 70-125 ms for 26,000)."""
    found, plan = plans(views, certificate_queries.live_by_issuer, "big", NOW)
    assert sum(found.values(), []) == ["big-cert-1", "big-cert-2", "big-cert-3"]
    assert "COVERING INDEX ix_certificates_t_live (tenant_id=? AND not_after>?)" in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # sorted by position in Python
    # oldest first within each issuer, issuers in the order of their oldest: as the query ordered by position did
    views.execute("UPDATE certificates SET position = 40 - position * 10, issuer_fingerprint = 'i' || (position % 2) "
                  "WHERE tenant_id = 'big'")
    row = dict(_certificate("big", 4), position=15, issuer_fingerprint="i1")
    views.execute(f"INSERT INTO certificates ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                  tuple(row.values()))
    rows = views.execute("SELECT issuer_fingerprint, certificate_id FROM certificates WHERE tenant_id = 'big' "
                         "AND not_after > ? AND status = 'issued' AND superseded_by IS NULL ORDER BY position",
                         (certificate_queries.validity_time(NOW),)).fetchall()
    expected: dict[str, list[str]] = {}
    for issuer, certificate_id in rows:
        expected.setdefault(issuer, []).append(certificate_id)
    found = certificate_queries.live_by_issuer(views, "big", NOW)
    assert list(found.items()) == list(expected.items()) == [("i1", ["big-cert-3", "big-cert-4", "big-cert-1"]),
                                                             ("i0", ["big-cert-2"])]


_live_rows = st.lists(st.tuples(
    st.integers(-400, 400),  # not_after, days from NOW
    st.sampled_from(["issued", "revoked"]), st.booleans(),  # status, superseded
    st.sampled_from(["i1", "i2", "i3"]), st.sampled_from(["big", "small"])), max_size=25)


@settings(max_examples=60, deadline=None)
@given(rows=_live_rows, order=st.randoms(use_true_random=False))
def test_what_the_live_index_answers_is_what_reading_the_table_answers(rows, order):
    """live_by_issuer and the compliance report's certificates, read from the live index alone, against the same
    queries made to scan the table (NOT INDEXED): the same rows, in the same order, on any mix of live, revoked,
    renewed and expired certificates, issuers and positions."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for projector in all_projectors():
        projector.bound("", "t").create(conn)
    conn.execute(CHECKPOINTS)
    positions = list(range(len(rows)))
    order.shuffle(positions)
    for n, (days, status, superseded, issuer, tenant) in enumerate(rows):
        row = dict(_certificate(tenant, n), not_after=(NOW + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                   status=status, superseded_by="x" if superseded else None, issuer_fingerprint=issuer,
                   position=positions[n], sans="{}", renewal_failed_at=None)
        conn.execute(f"INSERT INTO certificates ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                     tuple(row.values()))
    live = "status = 'issued' AND superseded_by IS NULL"
    for tenant in ("big", "small"):
        expected: dict[str, list[str]] = {}
        for issuer, certificate_id in conn.execute(
                f"SELECT issuer_fingerprint, certificate_id FROM certificates NOT INDEXED WHERE tenant_id = ? "
                f"AND not_after > ? AND {live} ORDER BY position", (tenant, certificate_queries.validity_time(NOW))):
            expected.setdefault(issuer, []).append(certificate_id)
        assert list(certificate_queries.live_by_issuer(conn, tenant, NOW).items()) == list(expected.items())
        records = compliance.facts(conn, tenant, NOW)[0]
        scanned = conn.execute(
            f"SELECT {', '.join(compliance.CERTIFICATE_COLUMNS)} FROM certificates NOT INDEXED WHERE tenant_id = ? "
            f"AND {live} AND not_after > ? ORDER BY not_after, certificate_id",
            (tenant, certificate_queries.validity_time(NOW - domain_compliance.EXPIRED_LOOKBACK))).fetchall()
        assert records == [compliance._record(row) for row in scanned]
    conn.close()


def _ids(rows: list[dict]) -> list[str]:
    return [r["certificate_id"] for r in rows]


@pytest.mark.parametrize("sort", ["issued", "expiry"])
@pytest.mark.parametrize(("filters", "index", "expected"), [
    ({"common_name": "NODE-2"}, "_cn_folded (tenant_id=? AND <expr>=?)", []),  # an exact name: case counts
    ({"common_name": "node-2"}, "_cn_folded (tenant_id=? AND <expr>=?)", ["big-cert-2"]),
    ({"common_name": "NoDe-*"}, "_cn_folded (tenant_id=? AND <expr>>? AND <expr><?)",
     ["big-cert-1", "big-cert-2", "big-cert-3"]),  # a prefix: LIKE's case folding
    ({"san": "node-3.example"}, "autoindex_certificates_1 (tenant_id=? AND certificate_id=?) | LIST SUBQUERY 1 | "
     "SEARCH n USING PRIMARY KEY (tenant_id=? AND value=?)", ["big-cert-3"]),
    ({"san": "NODE-*"}, "autoindex_certificates_1 (tenant_id=? AND certificate_id=?) | LIST SUBQUERY 1 | "
     "SEARCH n USING PRIMARY KEY (tenant_id=? AND value>? AND value<?)",
     ["big-cert-1", "big-cert-2", "big-cert-3"]),
])
def test_a_name_matching_few_certificates_is_looked_up_in_its_index_and_one_matching_many_walks_in_order(
        views, monkeypatch, sort, filters, index, expected):
    """A common-name prefix or a SAN that matches few of the tenant's certificates goes through its own index (the
    tenant was walked in order and each row tested: 90-150 ms for 56,000 certificates); one matching many
    (FEW or more) keeps the walk, which stops at the page's end. Either way the same rows, in the same order."""
    recorder = Recorder(views)
    found = certificate_queries.search(recorder, "big", sort=sort, **filters)
    assert _ids(found) == expected
    sql, params = recorder.statements[-1]  # the search itself, not the count before it
    plan = " | ".join(row[-1] for row in views.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert index in plan, plan
    assert "_position" not in plan and "_expiry" not in plan, plan
    if "common_name" in filters and not filters["common_name"].endswith("*"):
        return  # an exact name is always looked up (is_selective)
    monkeypatch.setattr(certificate_queries, "FEW", 1)
    walked, plan = plans(views, certificate_queries.search, "big", sort=sort, **filters)
    assert _ids(walked) == expected
    assert ("_position (tenant_id=?)" if sort == "issued" else "_expiry (tenant_id=?)") in plan, plan
    paged = certificate_queries.search(views, "big", sort=sort, limit=1, **filters)  # and the cursor after it
    after = certificate_queries.decode_cursor(certificate_queries.encode_cursor(paged[0], sort))
    monkeypatch.setattr(certificate_queries, "FEW", 1000)
    assert _ids(paged + certificate_queries.search(views, "big", sort=sort, cursor=after, **filters)) == expected


@pytest.mark.parametrize("san", ["node-2.example", "NODE-*"])
def test_a_san_across_tenants_reads_the_matching_names_once(views, monkeypatch, san):
    """Tested certificate by certificate, a SAN prefix scanned the tenant's every name for each certificate walked
    (844 s for one tenant of 56,000 certificates): the names matching are read once, few or many, each tenant's
    through the names' key (without statistics SQLite scanned the whole index for a name across tenants)."""
    every = ["big-cert-1", "small-cert-1", "big-cert-2", "small-cert-2", "big-cert-3", "small-cert-3"]
    expected = every if san.endswith("*") else ["big-cert-2", "small-cert-2"]
    for few in (1000, 1):
        monkeypatch.setattr(certificate_queries, "FEW", few)
        found, plan = plans(views, certificate_queries.search, None, san=san)
        assert _ids(found) == expected
        assert "CORRELATED SCALAR SUBQUERY" not in plan and "LIST SUBQUERY" in plan, plan
        assert "SEARCH n USING PRIMARY KEY (tenant_id=? AND value" in plan and "SCAN n" not in plan, plan


def test_a_san_matching_many_across_tenants_is_tested_on_each_tenants_walk_without_reading_its_rows(views, monkeypatch):
    """Each tenant's walk in order tested each certificate it passed against the matching names, reading the row for
    its id (100-190 ms for a prefix matching 9,500 names in 12 tenants): the position index holds the id."""
    monkeypatch.setattr(certificate_queries, "FEW", 1)
    for sort in ("issued", "expiry"):
        found, plan = plans(views, certificate_queries.search, None, san="NODE-*", sort=sort)
        assert len(found) == 6
        index = "_position" if sort == "issued" else "_expiry"
        assert f"SEARCH c USING COVERING INDEX ix_certificates_t{index} (tenant_id=?)" in plan, plan
        assert "RIGHT PART OF ORDER BY" not in plan, plan


def test_the_expiry_gauges_count_whole_days_from_the_counts_and_the_edges_from_an_index(views):
    """Every live certificate expiring within 90 days was read and grouped (56-112 ms for 174,000); now the counts by
    day, and the rows of the windows' first and last days, through an index over the tenants, not a scan."""
    views.execute("INSERT INTO certificate_expiry_counts VALUES ('2026-12-20', 'big', 'big-ca', 2)")
    views.execute("UPDATE certificates SET not_after = '2026-12-20T10:00:00Z' WHERE certificate_id IN ('big-cert-1', "
                  "'big-cert-2')")
    views.execute("UPDATE certificates SET not_after = '2026-12-01T10:00:00Z' WHERE certificate_id = 'small-cert-1'")
    found, plan = plans(views, certificate_queries.expiring_counts, NOW + timedelta(hours=1), (7, 30))
    assert found == [("big", "big-ca", 7, 0), ("big", "big-ca", 30, 2), ("small", "small-ca", 7, 1),
                     ("small", "small-ca", 30, 1)]
    assert "SEARCH certificate_expiry_counts USING PRIMARY KEY (day>? AND day<?)" in plan, plan
    edges = [step for step in plan.split(" | ") if "not_after>? AND not_after<?" in step]
    assert edges and all(step.startswith("SEARCH certificates USING") for step in edges), plan
    assert not [step for step in plan.split(" | ") if step.startswith("SCAN")], plan


def test_the_quotas_live_count_reads_the_tenants_range_of_the_expiry_counts_and_todays_rows_by_index(views):
    """The quota's live certificates: those expiring after today summed from certificate_expiry_counts over the
    tenant's days (its (tenant_id, day) index, not the primary key's range of every tenant's days), those expiring
    today from the rows (the tenant's live index)."""
    views.executemany("INSERT INTO certificate_expiry_counts VALUES (?, ?, ?, ?)",
                      [("2026-11-30", "big", "big-ca", 5), ("2026-12-02", "big", "big-ca", 2),
                       ("2027-01-01", "big", "big-ca", 3), ("2027-01-01", "big", "other-ca", 1),
                       ("2026-12-02", "small", "small-ca", 7)])
    views.execute("UPDATE certificates SET not_after = '2026-12-01T10:00:00Z' WHERE certificate_id = 'big-cert-1'")
    found, plan = plans(views, certificate_queries.live_count, "big", NOW + timedelta(hours=1))
    assert found == 2 + 3 + 1 + 1, plan  # later days over both CAs, and today's row expiring after now
    assert ("SEARCH certificate_expiry_counts USING INDEX ix_certificates_t_expiry_counts_tenant "
            "(tenant_id=? AND day>?)") in plan, plan
    assert "SEARCH certificates USING" in plan and "(tenant_id=? AND not_after>? AND not_after<?)" in plan, plan
    assert not [step for step in plan.split(" | ") if step.startswith("SCAN")], plan


def test_a_prefix_range_holds_every_name_that_starts_with_it_and_no_other():
    assert certificate_queries._prefix_range("v", "ab") == [("v >= ?", "ab"), ("v < ?", "ac")]
    assert certificate_queries._prefix_range("v", "a\U0010ffff") == [("v >= ?", "a\U0010ffff"), ("v < ?", "b")]
    assert certificate_queries._prefix_range("v", "a\ud7ff") == [("v >= ?", "a\ud7ff"), ("v < ?", "a\ue000")]
    assert certificate_queries._prefix_range("v", "") == [("v >= ?", "")]
    assert certificate_queries._fold("ÄbC-İ") == "Äbc-İ"  # ASCII letters only, as SQLite's lower() and LIKE


NAME_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=5)  # any text SQLite stores as UTF-8


@given(prefix=NAME_TEXT, names=st.lists(NAME_TEXT, max_size=12))
def test_in_sqlite_a_prefix_range_selects_exactly_the_names_that_start_with_it(prefix, names):
    """The range the search adds to a prefix's LIKE must drop no name LIKE would keep: checked by SQLite itself, on
    names that start with the prefix and on others (the code points around the range's ends included)."""
    near = [prefix[:-1] + chr(c) for c in (ord(prefix[-1]) - 1, ord(prefix[-1]) + 1)
            if 0 <= c <= 0x10FFFF and not 0xD800 <= c < 0xE000] if prefix else []
    values = names + [prefix + n for n in names] + near + [prefix + "\U0010ffff", prefix]
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        conn.execute("CREATE TABLE t (v TEXT)")
        conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values])
        ranged = certificate_queries._prefix_range("v", prefix)
        got = [v for (v,) in conn.execute(f"SELECT v FROM t WHERE {' AND '.join(c for c, _ in ranged)}",
                                          [bound for _, bound in ranged])]
    assert sorted(got) == sorted(v for v in values if v.startswith(prefix))


@pytest.mark.parametrize("status", ["valid", "expired"])
def test_a_status_in_issuance_order_walks_the_tenant_in_order_not_its_expiry_range_sorted(views, status):
    """The tenant's expiry range sorted by position read every valid (or expired) certificate for a page (65-95 ms
    for 56,000); walking the position index stops at the page's end, and tests not_after and status from it."""
    views.execute("UPDATE certificates SET not_after = '2026-06-01T00:00:00Z' WHERE certificate_id = 'big-cert-2'")
    found, plan = plans(views, certificate_queries.search, "big", status=status, now=NOW)
    assert _ids(found) == (["big-cert-2"] if status == "expired" else ["big-cert-1", "big-cert-3"])
    assert "_position (tenant_id=?)" in plan and "TEMP B-TREE FOR ORDER BY" not in plan, plan
    found, plan = plans(views, certificate_queries.search, "big", status=status, now=NOW, sort="expiry")
    assert "_expiry (tenant_id=? AND not_after" in plan, plan  # by expiry: the range, in order


def test_renewal_candidates_are_read_from_their_index_alone(views):
    """Expired certificates never renewed stay in the candidates' index (the scheduler skips them by not_after):
    it walked past them reading each row (80-100 ms); the index holds what the query tests and returns, and each
    class of lead time is read in its own bounded range, in order."""
    views.execute("UPDATE certificates SET not_after = '2026-06-01T00:00:00Z' WHERE certificate_id = 'big-cert-2'")
    views.execute("UPDATE certificates SET auto_renew = 0 WHERE certificate_id = 'small-cert-1'")
    views.execute("UPDATE certificates SET renewal_failed_at = NULL")
    found, plan = plans(views, certificate_queries.renewal_candidates, NOW, NOW - timedelta(hours=1))
    assert list(map(tuple, found)) == [("big", "big-cert-1"), ("big", "big-cert-3"), ("small", "small-cert-2"),
                                       ("small", "small-cert-3")]
    steps = plan.split(" | ")
    ranged = [s for s in steps if "(renew_class=? AND renew_at>? AND renew_at<?)" in s]
    assert len(ranged) == certificate_queries.RENEW_CLASSES - 1, plan
    assert all(s.startswith("SEARCH certificates USING COVERING INDEX ix_certificates_t_renewal") for s in ranged)
    assert "COVERING INDEX ix_certificates_t_renewal (renew_class=? AND renew_at<?)" in plan, plan  # the last class
    assert sum("TEMP B-TREE" in s for s in steps) == 1, plan  # only the merge of the classes' first rows


def _work(conn: sqlite3.Connection, query, *args) -> int:
    """How many SQLite virtual-machine steps (in thousands) ``query`` took: the rows it walked, without a clock."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0
    conn.set_progress_handler(count, 1000)
    try:
        query(conn, *args)
    finally:
        conn.set_progress_handler(None, 0)
    return steps[0]


def test_renewal_candidates_do_not_walk_certificates_that_expired_unrenewed_long_ago(views):
    """Each such certificate stayed in the range read, forever: 20,000 of them made a pass walk 20,000 index
    entries. Now the walk is what came due within a lead time."""
    views.execute("UPDATE certificates SET renewal_failed_at = NULL")
    before = _work(views, certificate_queries.renewal_candidates, NOW, NOW - timedelta(hours=1))
    base = dict(_certificate("big", 0))
    expired = []
    for n in range(100, 20_100):
        row = dict(base, certificate_id=f"big-cert-{n}", serial_hex=f"{n:040x}", fingerprint=f"big-fp-{n}",
                   position=n, not_before="2024-01-01T00:00:00Z", not_after="2025-01-01T00:00:00Z",
                   renew_at="2024-09-01T00:00:00.000000Z")
        row["renew_class"] = renew_class(row["renew_at"], row["not_after"])
        expired.append(tuple(row.values()))
    views.executemany(f"INSERT INTO certificates ({', '.join(base)}) VALUES ({', '.join('?' * len(base))})", expired)
    after = _work(views, certificate_queries.renewal_candidates, NOW, NOW - timedelta(hours=1))
    assert after < before + 5, (before, after)  # the naive query: 200 more (20,000 entries)
    assert len(certificate_queries.renewal_candidates(views, NOW, NOW - timedelta(hours=1))) == 6


def test_a_profiles_new_lead_time_moves_its_certificates_into_their_new_class():
    """A profile update moves its certificates' renew_at, and with it their lead time's class: left in the old class,
    one whose lead grew (due 80 days before expiry, not at two thirds of 90) would be bounded out of its range and
    never renewed."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    projector = CertificatesProjector("", "t")
    projector.create(conn)
    actor = Actor(principal="test", auth_method="internal")

    def event(stream_id: str, stream_type: str, type_: str, payload: dict, position: int) -> None:
        projector.apply(conn, EventEnvelope(
            event_id=f"e{position}", stream_id=stream_id, stream_type=stream_type, version=1, global_position=position,
            tenant_id="acme", type=type_, schema_version=1, occurred_at=rfc3339(NOW), actor=actor,
            correlation_id=None, causation_id=None, payload=payload, prev_hash=""))

    fmt = "%Y-%m-%dT%H:%M:%SZ"
    facts = {"serial_hex": "01", "fingerprint_sha256": "f1", "public_key_sha256": "k1", "subject_dn": "CN=n",
             "issuer_dn": "CN=ca", "algorithm": "ecdsa-p256", "not_before": NOW.strftime(fmt),
             "not_after": (NOW + timedelta(days=90)).strftime(fmt)}
    event("certificate-c1", "certificate", "certificate.issued", {
        "certificate_id": "c1", "ca_id": "ca", "issuer_fingerprint": "f", "profile": "custom",
        "subject": {"common_name": "n"}, "sans": {"dns": ["n.example"]}, "key_source": "server", "key_ref": "k",
        "certificate_pem": "", "tags": [], "facts": facts}, 1)
    at = NOW + timedelta(days=85)
    assert certificate_queries.renewal_candidates(conn, at, at - HOUR) == [("acme", "c1")]  # due at two thirds
    event("profile-custom", "profile", "profile.updated",
          {"profile": {"name": "custom", "renewal": {"renew_before_days": 80}}}, 2)
    assert conn.execute("SELECT renew_at FROM certificates").fetchone()[0] == rfc3339(NOW + timedelta(days=10))
    assert certificate_queries.renewal_candidates(conn, at, at - HOUR) == [("acme", "c1")]
    assert _naive_renewal_candidates(conn, at, at - HOUR, 500) == [("acme", "c1")]


def _naive_renewal_candidates(conn, now, failed_before, limit):
    """renewal_candidates as it was (one range of renew_at up to now), its ties broken as the new one's."""
    return conn.execute(
        "SELECT tenant_id, certificate_id FROM certificates WHERE status = 'issued' AND superseded_by IS NULL "
        "AND auto_renew = 1 AND renew_at <= ? AND not_after > ? AND (renewal_failed_at IS NULL OR "
        "renewal_failed_at <= ?) ORDER BY renew_at, tenant_id, certificate_id LIMIT ?",
        (rfc3339(now), certificate_queries.validity_time(now), rfc3339(failed_before), limit)).fetchall()


HOUR = timedelta(hours=1)
_renewable = st.tuples(
    st.integers(-24 * 800, 24 * 400),  # not_before, hours from NOW
    st.tuples(st.integers(0, 900), st.integers(0, 86_399)),  # lifetime: days, seconds
    st.one_of(st.integers(1, 99), st.integers(1, 825).map(lambda d: -d)),  # percent, or -days before expiry
    st.sampled_from(["issued", "revoked"]), st.booleans(), st.booleans(),  # status, superseded, auto_renew
    st.one_of(st.none(), st.integers(-48, 48)))  # renewal_failed_at, hours from NOW


# moments: any (seconds from NOW), or one in a certificate's due time (between its renew_at and its expiry)
_moments = st.lists(st.tuples(st.sampled_from(["any", "due"]), st.integers(-3600 * 24 * 900, 3600 * 24 * 900),
                              st.floats(0, 1)), min_size=1, max_size=4)


@settings(max_examples=100, deadline=None)
@given(certificates=st.lists(_renewable, max_size=30), moments=_moments, limit=st.integers(1, 8))
def test_renewal_candidates_are_the_naive_querys_rows_in_its_order(certificates, moments, limit):
    """Any certificates (lead times from none to years, expired, revoked, renewed, failed), any moment: the same rows
    as reading the whole range of renew_at up to now, in the same order, whatever the limit."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    CertificatesProjector("", "t").create(conn)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    due_times = []
    for n, (start, lifetime, share, status, superseded, auto, failed) in enumerate(certificates):
        not_before = (NOW + start * HOUR).replace(microsecond=0)
        not_after = not_before + timedelta(days=lifetime[0], seconds=lifetime[1])
        policy = RenewalPolicy(renew_at_percent=share) if share > 0 else RenewalPolicy(renew_before_days=-share)
        due = renew_at(policy, not_before, not_after)
        due_times.append((due, not_after))
        row = dict(_certificate("big" if n % 3 else "small", n), not_before=not_before.strftime(fmt),
                   not_after=not_after.strftime(fmt), renew_at=rfc3339(due), status=status, auto_renew=int(auto),
                   superseded_by="x" if superseded else None, renewal_failed_at=None if failed is None else
                   rfc3339(NOW + failed * HOUR), renew_class=renew_class(rfc3339(due), not_after.strftime(fmt)))
        conn.execute(f"INSERT INTO certificates ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                     tuple(row.values()))
    for kind, seconds, share in moments:
        if kind == "due" and due_times:
            due, not_after = due_times[seconds % len(due_times)]
            now = due + (not_after - due) * share
        else:
            now = NOW + timedelta(seconds=seconds, microseconds=seconds % 7 * 100_000)
        found = certificate_queries.renewal_candidates(conn, now, now - HOUR, limit)
        assert found == _naive_renewal_candidates(conn, now, now - HOUR, limit)
    conn.close()


def test_the_compliance_reports_recent_revocations_are_read_from_their_index_alone(views):
    views.execute(CHECKPOINTS)
    views.execute("UPDATE certificates SET sans = '{}', renewal_failed_at = NULL")
    views.execute("UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = 'superseded' "
                  "WHERE certificate_id = 'big-cert-2'", ((NOW - timedelta(days=2)).isoformat(),))
    (_records, _cas, counts, _position), plan = plans(views, compliance.facts, "big", NOW)
    assert counts["revoked_last_30_days"] == {"superseded": 1}
    assert "COVERING INDEX ix_certificates_t_revoked (tenant_id=? AND revoked_at>?)" in plan, plan
    # the report's certificates, from the live index alone (the rows read too: 160 ms of its 182-339)
    assert "COVERING INDEX ix_certificates_t_live (tenant_id=? AND not_after>?)" in plan, plan


@pytest.fixture
def runner(bench, tmp_path):
    """A projection runner, opened, on tmp_path/views.db over an event store holding one tenant's creation."""
    with SQLiteEventStore(tmp_path / "events.db") as store:
        store.append_blocking(AppendRequest(tenant_id="acme", stream_id="tenant-acme", stream_type="tenant",
                                            expected_version=0, events=[bench.phases.tenant_event("acme", 0, "a")]))
        runner = ProjectionRunner(store, tmp_path / "views.db", all_projectors()).open()
        try:
            yield runner
        finally:
            runner.close()


def test_the_runner_analyzes_a_views_database_that_has_no_statistics(runner, tmp_path):
    views = tmp_path / "views.db"
    reader = runner.connection()  # opened before the statistics are written
    try:
        with contextlib.closing(sqlite3.connect(views)) as conn:
            assert not has_statistics(conn)
        runner.catch_up_once()
        with contextlib.closing(sqlite3.connect(views)) as conn:
            assert has_statistics(conn)
            rows = dict(conn.execute("SELECT idx, stat FROM sqlite_stat1 WHERE tbl = 'audit_log'"))
        assert any(name.endswith("_stream") for name in rows), rows
        # a connection opened before reads them too: the ANALYZE committed with a schema change
        assert reader.execute("SELECT count(*) FROM sqlite_stat1").fetchone()[0] > 0
    finally:
        reader.close()


def test_analyze_makes_connections_already_open_plan_with_the_new_statistics(tmp_path):
    """A plain ANALYZE after the first (which creates sqlite_stat1, a schema change) reaches no connection already
    open: an HTTP worker's would plan with the old statistics until it reconnected."""
    writer = sqlite3.connect(tmp_path / "v.db", isolation_level=None)
    writer.execute("CREATE TABLE t (a, b)")
    writer.execute("CREATE INDEX t_b ON t (b)")
    writer.execute("CREATE INDEX t_a ON t (a)")
    writer.executemany("INSERT INTO t VALUES (?, ?)", [(i, i % 2) for i in range(2000)])  # a unique
    analyze(writer)
    reader = sqlite3.connect(tmp_path / "v.db", isolation_level=None)
    query = "SELECT * FROM t WHERE a = 1 AND b = 5"
    reader.execute(query).fetchall()
    assert "t_a" in reader.execute(f"EXPLAIN QUERY PLAN {query}").fetchone()[-1]
    writer.execute("DELETE FROM t")
    writer.executemany("INSERT INTO t VALUES (?, ?)", [(i % 2, i) for i in range(2000)])  # b unique now
    analyze(writer)
    reader.execute(query).fetchall()  # its next statement, cached or not, sees the new statistics
    assert "t_b" in reader.execute(f"EXPLAIN QUERY PLAN {query} ").fetchone()[-1]  # (a new text: EXPLAIN is not run)
    writer.close()
    reader.close()


def test_a_rebuild_swaps_its_tables_in_with_their_statistics(runner, tmp_path):
    runner.rebuild("audit_log")
    with contextlib.closing(sqlite3.connect(tmp_path / "views.db")) as conn:
        tables = {tbl for (tbl,) in conn.execute("SELECT DISTINCT tbl FROM sqlite_stat1")}
    assert "audit_log" in tables
    assert not [t for t in tables if "shadow" in t], tables  # none left under the shadow tables' names


# SQLite's LIKE ends its pattern at a NUL ('' LIKE '\x00%' is true), so for a prefix holding one LIKE keeps names
# that do not start with it and the search's range (exact, the test above) rightly drops them: no NUL in a prefix here.
LIKE_PREFIX_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=5)


@given(prefix=LIKE_PREFIX_TEXT, names=st.lists(NAME_TEXT, max_size=12))
def test_a_common_name_prefixs_range_on_its_folded_form_keeps_every_name_its_like_keeps(prefix, names):
    """A common-name prefix is LIKE (ASCII letters in either case) plus a range on lower(common_name) from the
    prefix folded: the range, which lets SQLite seek, must keep every name the LIKE keeps."""
    values = names + [prefix + n for n in names] + [prefix.swapcase() + n for n in names]
    like, pattern = certificate_queries._text_match("v", prefix + "*")
    ranged = certificate_queries._prefix_range("lower(v)", certificate_queries._fold(prefix))
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        conn.execute("CREATE TABLE t (v TEXT)")
        conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values])
        liked = sorted(v for (v,) in conn.execute(f"SELECT v FROM t WHERE {like}", [pattern]))
        both = sorted(v for (v,) in conn.execute(
            f"SELECT v FROM t WHERE {like} AND {' AND '.join(c for c, _ in ranged)}",
            [pattern, *(bound for _, bound in ranged)]))
    assert both == liked
