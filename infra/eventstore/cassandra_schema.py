"""The Cassandra event store's schema, migrations and statements, and its pure helpers (no driver, no I/O).

Tables (Epic A3), in one keyspace whose replication is configurable:

- ``log_head``: one row, the commit point. Every append is a lightweight transaction on it
  (``IF position = ?``) that advances the global position and records the append's rows
  (``pending``) until they are written out ("materialised"); the next writer, or any reader
  that finds them missing, writes them out again (idempotently) before going on.
- ``events``: partition ``(tenant_id, stream_id)``, clustered by ``version``: a stream, read in
  order. Rows are inserted ``IF NOT EXISTS`` (one conditional batch per stream), so two
  different events can never hold the same version, whatever happens above.
- ``log_by_position``: partition ``bucket = position // POSITION_BUCKET``, clustered by
  ``position``: the global log for ``read_all``, the projections and the outbox relay.
- ``audit_by_day``: partition ``date_bucket`` (UTC day), clustered by ``(occurred_at,
  event_id)``: the time-series index for audit queries.
- ``idempotency``, ``relay_checkpoints``, ``schema_migrations``.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import NamedTuple

import msgspec

from commands.ports import AppendResult
from domain.events import EventEnvelope

POSITION_BUCKET = 10_000  # events per log_by_position partition: ~20 MB at 2 KB an event
HEAD_ID = "log"

MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "event log, stream tables, audit time series, idempotency, relay checkpoints", (
        """CREATE TABLE IF NOT EXISTS {ks}.log_head (
            id text PRIMARY KEY, position bigint, append_id text, pending blob)""",
        """CREATE TABLE IF NOT EXISTS {ks}.events (
            tenant_id text, stream_id text, version bigint, position bigint, stream_type text, type text,
            occurred_at text, body blob, hash text,
            PRIMARY KEY ((tenant_id, stream_id), version)) WITH CLUSTERING ORDER BY (version ASC)""",
        """CREATE TABLE IF NOT EXISTS {ks}.log_by_position (
            bucket bigint, position bigint, tenant_id text, stream_id text, version bigint, body blob, hash text,
            PRIMARY KEY (bucket, position)) WITH CLUSTERING ORDER BY (position ASC)""",
        """CREATE TABLE IF NOT EXISTS {ks}.audit_by_day (
            date_bucket date, occurred_at timestamp, event_id text, position bigint, tenant_id text,
            stream_id text, version bigint, type text,
            PRIMARY KEY (date_bucket, occurred_at, event_id)) WITH CLUSTERING ORDER BY (occurred_at ASC, event_id ASC)""",
        """CREATE TABLE IF NOT EXISTS {ks}.idempotency (
            scope text, key text, fingerprint text, result blob, created_at text, PRIMARY KEY ((scope, key)))""",
        """CREATE TABLE IF NOT EXISTS {ks}.relay_checkpoints (
            name text PRIMARY KEY, position bigint, updated_at timestamp)""",
    )),
)
MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS {ks}.schema_migrations (
    id int PRIMARY KEY, description text, applied_at timestamp)"""


class Statements:
    """Every CQL statement of the store, for one keyspace (prepared once per session by the adapter)."""

    def __init__(self, keyspace: str) -> None:
        ks = keyspace
        self.read_head = f"SELECT position, append_id FROM {ks}.log_head WHERE id = '{HEAD_ID}'"
        self.read_pending = f"SELECT position, append_id, pending FROM {ks}.log_head WHERE id = '{HEAD_ID}'"
        self.claim_first = (f"INSERT INTO {ks}.log_head (id, position, append_id, pending)"
                            f" VALUES ('{HEAD_ID}', ?, ?, ?) IF NOT EXISTS")
        self.claim_next = (f"UPDATE {ks}.log_head SET position = ?, append_id = ?, pending = ?"
                           f" WHERE id = '{HEAD_ID}' IF position = ?")
        self.insert_event = (f"INSERT INTO {ks}.events (tenant_id, stream_id, version, position, stream_type, type,"
                             " occurred_at, body, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS")
        self.insert_log = (f"INSERT INTO {ks}.log_by_position (bucket, position, tenant_id, stream_id, version,"
                           " body, hash) VALUES (?, ?, ?, ?, ?, ?, ?)")
        self.insert_audit = (f"INSERT INTO {ks}.audit_by_day (date_bucket, occurred_at, event_id, position,"
                             " tenant_id, stream_id, version, type) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        self.insert_idempotency = (f"INSERT INTO {ks}.idempotency (scope, key, fingerprint, result, created_at)"
                                   " VALUES (?, ?, ?, ?, ?)")
        self.read_idempotency = f"SELECT fingerprint, result FROM {ks}.idempotency WHERE scope = ? AND key = ?"
        self.stream_head = (f"SELECT version, hash FROM {ks}.events WHERE tenant_id = ? AND stream_id = ?"
                            " ORDER BY version DESC LIMIT 1")
        self.read_stream = (f"SELECT body, hash FROM {ks}.events WHERE tenant_id = ? AND stream_id = ?"
                            " AND version >= ?")
        self.read_log = (f"SELECT position, tenant_id, stream_id, version, body, hash FROM {ks}.log_by_position"
                         " WHERE bucket = ? AND position > ? LIMIT ?")
        self.read_position = (f"SELECT position, tenant_id, stream_id, version, body, hash FROM {ks}.log_by_position"
                              " WHERE bucket = ? AND position = ?")
        self.read_relay = f"SELECT position FROM {ks}.relay_checkpoints WHERE name = ?"
        self.write_relay = f"INSERT INTO {ks}.relay_checkpoints (name, position, updated_at) VALUES (?, ?, ?)"
        self.applied_migrations = f"SELECT id FROM {ks}.schema_migrations"
        self.record_migration = (f"INSERT INTO {ks}.schema_migrations (id, description, applied_at)"
                                 " VALUES (?, ?, ?)")


def create_keyspace(keyspace: str, replication: str | dict) -> str:
    """``CREATE KEYSPACE IF NOT EXISTS`` with the configured replication map (JSON text or a dict)."""
    if not keyspace.replace("_", "").isalnum() or not keyspace[:1].isalpha():
        raise ValueError(f"keyspace: {keyspace!r} is not a CQL identifier")
    options = json.loads(replication) if isinstance(replication, str) else dict(replication)
    if "class" not in options:
        raise ValueError('replication: a map with "class" expected')
    cql_map = ", ".join(f"'{_cql_text(k)}': '{_cql_text(str(v))}'" for k, v in options.items())
    return f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {{{cql_map}}} AND durable_writes = true"


def _cql_text(value: str) -> str:
    return value.replace("'", "''")


def pending_migrations(applied: set[int]) -> list[tuple[int, str, tuple[str, ...]]]:
    """The migrations not yet applied, in order; refuses a keyspace newer than this code."""
    known = {number for number, _, _ in MIGRATIONS}
    if applied - known:
        raise RuntimeError(f"the keyspace has schema migrations {sorted(applied - known)} this version does not "
                           "know: upgrade csm before using it")
    return [migration for migration in MIGRATIONS if migration[0] not in applied]


def bucket_of(position: int) -> int:
    return position // POSITION_BUCKET


def buckets_after(after_position: int, last_position: int) -> range:
    """The log partitions holding positions ``after_position + 1 .. last_position``."""
    if last_position <= after_position:
        return range(0)
    return range(bucket_of(after_position + 1), bucket_of(last_position) + 1)


def day_bucket(occurred_at: str) -> tuple[date, datetime]:
    """(UTC day, timestamp) of an RFC 3339 ``occurred_at``: the audit table's partition and clustering key."""
    moment = datetime.fromisoformat(occurred_at.replace("Z", "+00:00")).astimezone(UTC)
    return moment.date(), moment


class Row(NamedTuple):
    """One event as the writer prepared it: the columns of SQLite's ``events`` table, in the same order."""

    position: int
    tenant_id: str
    stream_id: str
    version: int
    stream_type: str
    type: str
    occurred_at: str
    body: bytes
    hash: str


class IdempotencyRow(NamedTuple):
    scope: str
    key: str
    fingerprint: str
    result: bytes
    created_at: str


class Pending(msgspec.Struct, frozen=True, array_like=True):
    """What ``log_head.pending`` holds: the last committed append's rows, until they are written out."""

    append_id: str
    rows: list[tuple[int, str, str, int, str, str, str, bytes, str]]
    idempotency: list[tuple[str, str, str, bytes, str]]


_pending_encoder = msgspec.msgpack.Encoder()
_pending_decoder = msgspec.msgpack.Decoder(Pending)
_envelope_decoder = msgspec.json.Decoder(EventEnvelope)
_result_encoder = msgspec.json.Encoder(order="sorted")
_result_decoder = msgspec.json.Decoder(AppendResult)


def encode_pending(append_id: str, rows: list[Row], idempotency: list[IdempotencyRow]) -> bytes:
    return _pending_encoder.encode(Pending(append_id, [tuple(r) for r in rows], [tuple(i) for i in idempotency]))


def decode_pending(blob: bytes) -> tuple[str, list[Row], list[IdempotencyRow]]:
    pending = _pending_decoder.decode(blob)
    return (pending.append_id, [Row(*r) for r in pending.rows],
            [IdempotencyRow(*i) for i in pending.idempotency])


def envelope_of(body: bytes, hash_: str) -> EventEnvelope:
    """A stored row's envelope: the body as written, with the hash stored beside it."""
    return msgspec.structs.replace(_envelope_decoder.decode(body), hash=hash_)


def contiguous_prefix(after_position: int, positions: list[int]) -> int:
    """How many of ``positions`` (ascending) continue ``after_position`` without a gap."""
    count = 0
    for expected, position in enumerate(positions, start=after_position + 1):
        if position != expected:
            break
        count += 1
    return count


def encode_result(result: AppendResult) -> bytes:
    return _result_encoder.encode(result)


def decode_result(blob: bytes) -> AppendResult:
    return _result_decoder.decode(blob)
