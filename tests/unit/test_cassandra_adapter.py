"""The Cassandra store's pure parts, without a cluster: statements, buckets, migrations, rows and settings.

The adapter itself is held to the shared event-store contract by tests/contract/test_cassandra_store.py
whenever ``CSM_TEST_CASSANDRA`` names a node.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

pytest.importorskip("cassandra", reason="cassandra-driver is not installed (the 'distributed' extra)")

from commands.ids import uuid7  # noqa: E402
from commands.ports import AppendRequest, AppendResult, NewEvent  # noqa: E402
from domain.chain import chain_hash, envelope_body, genesis_hash  # noqa: E402
from domain.events import Actor  # noqa: E402
from infra.config import Settings, validate_distributed  # noqa: E402
from infra.service_settings import CassandraSettings, KafkaSettings  # noqa: E402
from infra.eventstore import cassandra_schema as schema  # noqa: E402
from infra.eventstore.cassandra import CassandraEventStore, ssl_context_for  # noqa: E402
from infra.eventstore.group_commit import chained_rows  # noqa: E402


def request(events: int = 3) -> AppendRequest:
    return AppendRequest(tenant_id="acme", stream_id="thing-1", stream_type="thing", expected_version=0, events=[
        NewEvent(event_id=uuid7(), type="test.happened", schema_version=1, occurred_at="2026-03-01T23:59:59.123456Z",
                 actor=Actor(principal="p", auth_method="test"), correlation_id=None, causation_id=None,
                 payload={"n": n, "text": "\u00e9\U0001f510"}) for n in range(events)])


@pytest.mark.parametrize("position, bucket", [(1, 0), (9_999, 0), (10_000, 1), (10_001, 1), (123_456, 12)])
def test_positions_fall_in_fixed_buckets(position, bucket):
    assert schema.bucket_of(position) == bucket


@pytest.mark.parametrize("after, last, buckets", [
    (0, 0, []), (5, 5, []), (0, 10, [0]), (9_998, 10_002, [0, 1]), (9_999, 10_002, [1]), (0, 25_000, [0, 1, 2]),
    (19_999, 20_000, [2])])
def test_a_log_range_spans_the_buckets_that_hold_it(after, last, buckets):
    assert list(schema.buckets_after(after, last)) == buckets


@pytest.mark.parametrize("occurred_at, day", [
    ("2026-03-01T23:59:59.123456Z", date(2026, 3, 1)), ("2026-03-02T00:00:00.000000Z", date(2026, 3, 2)),
    ("2026-03-02T01:30:00+02:00", date(2026, 3, 1))])
def test_audit_rows_are_bucketed_by_utc_day(occurred_at, day):
    bucket, moment = schema.day_bucket(occurred_at)
    assert bucket == day and moment.tzinfo is not None and moment.astimezone(UTC).date() == day


@pytest.mark.parametrize("after, positions, count", [
    (0, [], 0), (0, [1, 2, 3], 3), (0, [2, 3], 0), (4, [5, 6, 8, 9], 2), (10, [11], 1)])
def test_reads_stop_at_the_first_gap(after, positions, count):
    assert schema.contiguous_prefix(after, positions) == count


def test_the_keyspace_statement_carries_the_configured_replication():
    statement = schema.create_keyspace("csm_prod", '{"class": "NetworkTopologyStrategy", "dc1": 3, "dc2": 3}')
    assert statement == ("CREATE KEYSPACE IF NOT EXISTS csm_prod WITH replication = {'class': "
                         "'NetworkTopologyStrategy', 'dc1': '3', 'dc2': '3'} AND durable_writes = true")
    assert "''" in schema.create_keyspace("k", {"class": "SimpleStrategy", "x'y": 1})  # quotes escaped
    with pytest.raises(ValueError, match="keyspace"):
        schema.create_keyspace("csm; DROP", '{"class": "SimpleStrategy"}')
    with pytest.raises(ValueError, match="class"):
        schema.create_keyspace("csm", '{"replication_factor": 3}')


def test_statements_name_the_keyspace_and_use_lwt_where_order_matters():
    cql = schema.Statements("ks1")
    texts = vars(cql)
    assert all(" ks1." in text for text in texts.values())
    assert cql.claim_first.endswith("IF NOT EXISTS") and cql.claim_next.endswith("IF position = ?")
    assert cql.insert_event.endswith("IF NOT EXISTS")  # no two events can hold one version
    assert cql.stream_head.endswith("ORDER BY version DESC LIMIT 1")
    for name in ("insert_log", "insert_audit", "insert_idempotency"):  # idempotent rewrites, no Paxos
        assert " IF " not in texts[name]
    migration = " ".join(s.format(ks="ks1") for _, _, statements in schema.MIGRATIONS for s in statements)
    assert "PRIMARY KEY ((tenant_id, stream_id), version)" in migration
    assert "PRIMARY KEY (date_bucket, occurred_at, event_id)" in migration
    assert "PRIMARY KEY (bucket, position)" in migration


def test_migrations_apply_in_order_and_refuse_a_newer_keyspace():
    assert [m[0] for m in schema.pending_migrations(set())] == [m[0] for m in schema.MIGRATIONS]
    assert schema.pending_migrations({m[0] for m in schema.MIGRATIONS}) == []
    with pytest.raises(RuntimeError, match="upgrade csm"):
        schema.pending_migrations({999})


def test_rows_chain_like_the_sqlite_store_and_map_back_to_envelopes():
    rows = [schema.Row(*row) for row in chained_rows(request(), 41, 0, genesis_hash("acme", "thing-1"))]
    assert [(r.position, r.version) for r in rows] == [(42, 1), (43, 2), (44, 3)]
    prev = genesis_hash("acme", "thing-1")
    for row in rows:
        envelope = schema.envelope_of(row.body, row.hash)
        assert (envelope.global_position, envelope.version, envelope.prev_hash) == (row.position, row.version, prev)
        assert envelope.hash == row.hash == chain_hash(prev, envelope_body(envelope))
        assert envelope_body(envelope) == row.body  # the stored bytes are the canonical body
        prev = row.hash


def test_pending_appends_round_trip_byte_exactly():
    rows = [schema.Row(*row) for row in chained_rows(request(2), 0, 0, genesis_hash("acme", "thing-1"))]
    result = AppendResult(stream_id="thing-1", version=2, first_position=1, global_position=2)
    idem = [schema.IdempotencyRow("p|acme", "k", "fp", schema.encode_result(result), rows[0].occurred_at)]
    append_id, decoded, decoded_idem = schema.decode_pending(schema.encode_pending("a-1", rows, idem))
    assert (append_id, decoded, decoded_idem) == ("a-1", rows, idem)
    assert schema.decode_result(decoded_idem[0].result) == result


def test_the_store_builds_without_connecting():
    store = CassandraEventStore(["10.0.0.1", "10.0.0.2"], 9142, "csm_test", consistency="QUORUM",
                                serial_consistency="SERIAL")
    assert store.consistency == 4 and store.serial == 8  # ConsistencyLevel.QUORUM, SERIAL
    assert not store.writable()
    with pytest.raises(Exception, match="not open"):
        store.append_blocking(request())


def test_tls_context_from_settings(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test ca")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now.replace(year=now.year + 1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (tmp_path / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    assert ssl_context_for(CassandraSettings()) is None
    context = ssl_context_for(CassandraSettings(ssl_ca_file=tmp_path / "ca.pem"))
    assert context.check_hostname and context.verify_mode.name == "CERT_REQUIRED"


@pytest.mark.parametrize("changes, message", [
    ({"store": "postgres"}, "CSM_STORE"), ({"bus": "rabbit"}, "CSM_BUS"), ({"projector": "x"}, "CSM_PROJECTOR"),
    ({"bus": "kafka"}, "CSM_KAFKA_BOOTSTRAP_SERVERS"),
    ({"bus": "kafka", "kafka": KafkaSettings(partitions=0)}, "CSM_KAFKA_PARTITIONS"),
    ({"bus": "kafka", "kafka": KafkaSettings(ssl_cert_file="c.pem")}, "CSM_KAFKA_SSL_CERT_FILE"),
    ({"store": "cassandra"}, "CSM_CASSANDRA_CONTACT_POINTS"),
    ({"store": "cassandra", "cassandra": CassandraSettings(consistency="ONE")}, "CSM_CASSANDRA_CONSISTENCY"),
    ({"store": "cassandra", "cassandra": CassandraSettings(serial_consistency="QUORUM")},
     "CSM_CASSANDRA_SERIAL_CONSISTENCY"),
    ({"store": "cassandra", "cassandra": CassandraSettings(keyspace="1bad")}, "CSM_CASSANDRA_KEYSPACE"),
    ({"store": "cassandra", "cassandra": CassandraSettings(replication="{}")}, "CSM_CASSANDRA_REPLICATION"),
    ({"store": "cassandra", "cassandra": CassandraSettings(username="csm")}, "CSM_CASSANDRA_PASSWORD_FILE"),
])
def test_invalid_distributed_settings_name_the_setting(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        validate_distributed(Settings(data_dir=tmp_path, **changes))


def test_distributed_settings_from_the_environment(monkeypatch, tmp_path):
    for name, value in {"STORE": "cassandra", "BUS": "kafka", "CASSANDRA_CONTACT_POINTS": "n1, n2,n3",
                        "CASSANDRA_REPLICATION": json.dumps({"class": "NetworkTopologyStrategy", "dc1": 3}),
                        "CASSANDRA_CONSISTENCY": "local_quorum", "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
                        "KAFKA_PARTITIONS": "3"}.items():
        monkeypatch.setenv(f"CSM_{name}", value)
    settings = Settings.from_env(tmp_path)
    validate_distributed(settings)
    assert settings.cassandra.contact_points == ("n1", "n2", "n3")
    assert settings.cassandra.consistency == "LOCAL_QUORUM" and settings.cassandra.serial_consistency == "LOCAL_SERIAL"
    assert (settings.kafka.bootstrap_servers, settings.kafka.partitions) == ("k1:9092,k2:9092", 3)
