"""The distributed event store on Apache Cassandra 4.1+ (cassandra-driver): the SQLite store's port, chained alike.

Total order. The global position is part of every hashed body, so positions must be
assigned before hashing, contiguously, and never twice. One row, ``log_head``, is the commit
point: an append reads it with SERIAL consistency, writes out the previous append's rows if
they are not yet written (``pending``), checks expected versions and idempotency keys
against the now complete tables, builds its rows after the head's position (hashes chained
by ``group_commit.chained_rows``, as the SQLite store does), and commits with one lightweight transaction
``UPDATE log_head … IF position = <read>``. Then it writes its rows out: each stream's rows in
one conditional batch ``INSERT … IF NOT EXISTS`` (a second guard: two different events can
never hold one version), then the global log and the audit time series. A writer that
loses the race re-reads and retries; one that crashes after its commit leaves its rows in
``pending`` for the next writer (or a reader) to write out. The cost: appends are
serialised cluster-wide through one Paxos partition, about 4 round trips per commit, so
throughput is bounded by commit latency (≈ 200-500 commits/s in one data centre); group
commit (every append queued in this process shares one commit) recovers much of it.

Lifecycle: ``await store.open()`` / ``await store.close()`` (or ``connect()`` /
``close_sync()`` from synchronous code); ``open`` creates the keyspace and applies pending
schema migrations unless ``auto_migrate`` is off (``csm db migrate`` does it explicitly).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from cassandra import ConsistencyLevel, InvalidRequest, OperationTimedOut, WriteTimeout
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import BatchStatement

from commands.ids import uuid7
from commands.ports import AppendRequest, AppendResult
from commands.waits import wait_set
from domain.chain import genesis_hash
from domain.errors import IdempotencyKeyReused
from domain.events import EventEnvelope
from infra.audit.witness import release_witness, write_witness
from infra.service_settings import CassandraSettings
from infra.eventstore import cassandra_schema as schema
from infra.eventstore.cassandra_schema import IdempotencyRow, Row
from infra.eventstore.group_commit import (GroupCommitWriter, Pending, Prepared, RawRecord, StoreUnavailable, answer,
                                           prepare)
from infra.eventstore.wakeups import AppendWakeups

log = logging.getLogger(__name__)


class _EventId(msgspec.Struct):
    event_id: str


_event_id = msgspec.json.Decoder(_EventId).decode  # reads one field of a body, skipping the rest


class StoreCorrupted(Exception):
    """Two different events claim one (stream, version): never expected; the append is refused."""


class _Conflict(Exception):
    """Another writer committed first: re-read the head and try again."""


class _TooLarge(Exception):
    """A group commit too large for one mutation: commit it in halves."""


def ssl_context_for(settings: CassandraSettings) -> ssl.SSLContext | None:
    """TLS to the cluster: the node certificates checked against the CA file, a client certificate if set."""
    if settings.ssl_ca_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(settings.ssl_ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = settings.ssl_check_hostname  # the driver passes each node's address as the name
    if settings.ssl_cert_file is not None:
        context.load_cert_chain(str(settings.ssl_cert_file), str(settings.ssl_key_file))
    return context


class CassandraEventStore:
    """The event store port on Cassandra; see the module docstring for the commit protocol."""

    MAX_ATTEMPTS = 50  # commits lost to other writers before an append gives up (StoreUnavailable)
    # Bodies per group commit: the head's pending carries them all in one Paxos proposal, and Cassandra
    # refuses a mutation above half a commit-log segment (16 MiB by default).
    MAX_COMMIT_BYTES = 4 << 20

    def __init__(self, contact_points=("127.0.0.1",), port: int = 9042, keyspace: str = "csm", *,
                 replication: str | dict = '{"class": "SimpleStrategy", "replication_factor": 1}',
                 local_dc: str | None = None, username: str | None = None, password: str | None = None,
                 ssl_context: ssl.SSLContext | None = None, consistency: str = "LOCAL_QUORUM",
                 serial_consistency: str = "LOCAL_SERIAL", request_timeout: float = 12.0,
                 poll_interval: float = 0.5, witness_path: Path | str | None = None, auto_migrate: bool = True,
                 max_batch_events: int = 1000) -> None:
        self.contact_points, self.port, self.keyspace = list(contact_points), port, keyspace
        self.replication, self.local_dc = replication, local_dc
        self._auth = PlainTextAuthProvider(username=username, password=password) if username else None
        self._ssl_context = ssl_context
        self.consistency = ConsistencyLevel.name_to_value[consistency]
        self.serial = ConsistencyLevel.name_to_value[serial_consistency]
        self.request_timeout, self.poll_interval = request_timeout, poll_interval
        self.witness_path = Path(witness_path) if witness_path else None
        self.auto_migrate, self.max_batch_events = auto_migrate, max_batch_events
        self.cql = schema.Statements(keyspace)
        self.last_commit_error: str | None = None
        self._cluster: Cluster | None = None
        self._session = None
        self._prepared: dict[str, object] = {}
        self._writer = GroupCommitWriter(self._commit_batch, max_batch_events=max_batch_events,
                                         name="csm-cassandra-writer")
        self._wakeups = AppendWakeups()
        self._materialised: str | None = None  # the append id whose rows this process wrote out last
        self._closed = False

    @classmethod
    def from_settings(cls, settings: CassandraSettings, *, poll_interval: float = 0.5,
                      witness_path: Path | None = None) -> CassandraEventStore:
        password = settings.password_file.read_text().strip() if settings.password_file else None
        return cls(settings.contact_points, settings.port, settings.keyspace, replication=settings.replication,
                   local_dc=settings.local_dc, username=settings.username, password=password,
                   ssl_context=ssl_context_for(settings), consistency=settings.consistency,
                   serial_consistency=settings.serial_consistency, request_timeout=settings.request_timeout,
                   poll_interval=poll_interval, witness_path=witness_path, auto_migrate=settings.auto_migrate)

    # lifecycle ----------------------------------------------------------------------
    def _open_session(self) -> None:
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=self.local_dc)),
            consistency_level=self.consistency, serial_consistency_level=self.serial,
            request_timeout=self.request_timeout)
        self._cluster = Cluster(self.contact_points, port=self.port, auth_provider=self._auth,
                                ssl_context=self._ssl_context, execution_profiles={EXEC_PROFILE_DEFAULT: profile})
        self._session = self._cluster.connect()

    def migrate_and_close(self) -> list[int]:
        """``csm db migrate``: connect, apply pending migrations, disconnect; the numbers applied."""
        self._open_session()
        try:
            return self.migrate()
        finally:
            self._cluster.shutdown()

    def connect(self) -> CassandraEventStore:
        self._open_session()
        if self.auto_migrate:
            self.migrate()
        try:
            self._prepared = {name: self._session.prepare(text) for name, text in vars(self.cql).items()}
        except InvalidRequest as exc:
            self._cluster.shutdown()
            raise RuntimeError(f"keyspace {self.keyspace} has no (or an old) schema: run `csm db migrate` "
                               f"({exc})") from None
        return self._start_writer()

    def _start_writer(self) -> CassandraEventStore:
        self._writer.start()
        return self

    def migrate(self) -> list[int]:
        """Create the keyspace if missing and apply pending migrations, in order; the numbers applied."""
        run = self._session.execute
        run(schema.create_keyspace(self.keyspace, self.replication))
        run(schema.MIGRATIONS_TABLE.format(ks=self.keyspace))
        applied = {row.id for row in run(self.cql.applied_migrations)}
        done = []
        for number, description, statements in schema.pending_migrations(applied):
            for statement in statements:
                run(statement.format(ks=self.keyspace))
            self._cluster.control_connection.wait_for_schema_agreement()
            run(self._session.prepare(self.cql.record_migration), (number, description, datetime.now(UTC)))
            done.append(number)
        return done

    async def open(self) -> CassandraEventStore:
        return await asyncio.to_thread(self.connect)

    def close_sync(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.stop()
        if self._cluster is not None:
            self._cluster.shutdown()
        if self.witness_path is not None:
            release_witness(self.witness_path)

    async def close(self) -> None:
        await asyncio.to_thread(self.close_sync)

    async def drop_keyspace(self) -> None:
        await asyncio.to_thread(self._session.execute, f"DROP KEYSPACE IF EXISTS {self.keyspace}")

    # statements ---------------------------------------------------------------------
    def _run(self, name: str, params: tuple = (), *, serial: bool = False):
        bound = self._prepared[name].bind(params)
        if serial:  # a linearisable read: completes any commit in flight on that partition
            bound.consistency_level = self.serial
        return self._session.execute(bound)

    def _run_many(self, name: str, params: list[tuple]) -> list:
        """One statement with many parameter sets, 64 in flight; the result sets, in order."""
        return [rows for _, rows in execute_concurrent_with_args(self._session, self._prepared[name], params,
                                                                  concurrency=64)]

    def _insert_streams(self, groups: list[list[Row]]) -> list[bool]:
        """Each stream's rows in one conditional batch (``IF NOT EXISTS``), concurrently: applied or not, per batch."""
        futures = []
        for stream_rows in groups:
            batch = BatchStatement(consistency_level=self.consistency, serial_consistency_level=self.serial)
            for r in stream_rows:
                batch.add(self._prepared["insert_event"], (r.tenant_id, r.stream_id, r.version, r.position,
                                                           r.stream_type, r.type, r.occurred_at, r.body, r.hash))
            futures.append(self._session.execute_async(batch))
        return [future.result().was_applied for future in futures]

    # writes -------------------------------------------------------------------------
    async def append(self, request: AppendRequest) -> AppendResult:
        return await self._writer.submit(request, asyncio.get_running_loop()).future

    def append_blocking(self, request: AppendRequest) -> AppendResult:
        return self._writer.submit(request, None).future.result()

    def _commit_batch(self, batch: list[Pending]) -> None:
        outcomes: list = [StoreUnavailable("too many concurrent writers: the append was not committed")] * len(batch)
        rows: list[Row] = []
        for attempt in range(self.MAX_ATTEMPTS):
            try:
                outcomes, rows = self._try_commit(batch)
                self.last_commit_error = None
                break
            except _Conflict:  # another process committed first: back off a little, at random, and retry
                time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
                continue
            except _TooLarge:
                half = len(batch) // 2
                self._commit_batch(batch[:half])
                self._commit_batch(batch[half:])
                return
            except Exception as exc:  # unreachable cluster, timeouts: nothing of this batch is acknowledged
                log.error("cassandra commit failed", extra={"error": repr(exc)})
                self.last_commit_error = repr(exc)
                outcomes, rows = [StoreUnavailable(f"commit failed: {exc}")] * len(batch), []
                break
        if rows and self.witness_path is not None:
            write_witness(self.witness_path, rows)
        answer(batch, outcomes)
        if rows:
            self._notify()

    def _try_commit(self, batch: list[Pending]) -> tuple[list, list[Row]]:
        head = self._run("read_head", serial=True).one()
        position = head.position if head else 0
        if head and head.append_id != self._materialised:
            self._write_out_head(head.append_id)
        heads = self._stored_heads({(p.request.tenant_id, p.request.stream_id) for p in batch})
        claimed: dict[tuple[str, str], tuple[str, AppendResult]] = {}
        outcomes: list = []
        rows: list[Row] = []
        idempotency: list[IdempotencyRow] = []
        for pending in batch:
            outcome = prepare(pending.request, position, heads, claimed, lambda key: self._stored_head(*key),
                              self._stored_idempotency)
            if isinstance(outcome, Prepared):
                new_rows = [Row(*row) for row in outcome.rows]
                rows.extend(new_rows)
                if outcome.claim:
                    idempotency.append(IdempotencyRow(*outcome.claim, schema.encode_result(outcome.result),
                                                      new_rows[0].occurred_at))
                position = outcome.result.global_position
                outcome = outcome.result
            outcomes.append(outcome)
        if not rows:  # every append refused or replayed, against a complete log at the head read
            return outcomes, rows
        if len(batch) > 1 and sum(len(r.body) for r in rows) > self.MAX_COMMIT_BYTES:
            raise _TooLarge()
        append_id = uuid7()
        blob = schema.encode_pending(append_id, rows, idempotency)
        read_at = head.position if head else 0
        try:
            if head is None:
                applied = self._run("claim_first", (position, append_id, blob)).was_applied
            else:
                applied = self._run("claim_next", (position, append_id, blob, read_at)).was_applied
        except (WriteTimeout, OperationTimedOut):  # unknown outcome: a serial read settles it
            settled = self._run("read_head", serial=True).one()
            applied = settled is not None and settled.append_id == append_id
        if not applied:
            raise _Conflict()
        # Committed: the rows are durable in the head's pending from here on. Writing them out can
        # fail without losing them: the next commit, or the next reader to find them missing, does it.
        try:
            self._write_out(rows, idempotency)
            self._materialised = append_id
        except Exception as exc:
            log.warning("cassandra: committed rows not yet written out; the next commit will",
                        extra={"error": repr(exc)})
        return outcomes, rows

    def _write_out_head(self, append_id: str) -> None:
        """Write out the last committed append's rows (idempotent), e.g. after its writer crashed."""
        row = self._run("read_pending", serial=True).one()
        if row is None or row.pending is None or row.append_id != append_id:
            raise _Conflict()  # the head moved on meanwhile
        _, rows, idempotency = schema.decode_pending(row.pending)
        self._write_out(rows, idempotency)
        self._materialised = append_id

    def _write_out(self, rows: list[Row], idempotency: list[IdempotencyRow]) -> None:
        """Streams first (one conditional batch each), then the global log, the audit series, the keys."""
        groups = [list(stream_rows) for _, stream_rows in itertools.groupby(
            sorted(rows, key=lambda r: (r.tenant_id, r.stream_id, r.version)), key=lambda r: (r.tenant_id, r.stream_id))]
        for stream_rows, applied in zip(groups, self._insert_streams(groups)):
            if not applied:
                self._check_identical(stream_rows)
        self._run_many("insert_log", [(schema.bucket_of(r.position), r.position, r.tenant_id, r.stream_id, r.version,
                                       r.body, r.hash) for r in rows])
        self._run_many("insert_audit", [(*schema.day_bucket(r.occurred_at), _event_id(r.body).event_id, r.position,
                                         r.tenant_id, r.stream_id, r.version, r.type) for r in rows])
        if idempotency:
            self._run_many("insert_idempotency", [tuple(i) for i in idempotency])

    def _check_identical(self, stream_rows: list[Row]) -> None:
        """The rows were there already (written out before): they must be these very rows."""
        first = stream_rows[0]
        stored = {row.hash for row in self._run("read_stream", (first.tenant_id, first.stream_id, first.version),
                                                 serial=True)}
        if not {r.hash for r in stream_rows} <= stored:
            raise StoreCorrupted(f"{first.tenant_id}/{first.stream_id} v{first.version}: another event holds "
                                 "this version")

    def _stored_heads(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, str]]:
        """The heads of every stream a batch touches, read concurrently (genesis for new streams)."""
        keys_list = sorted(keys)
        heads = {}
        for key, rows in zip(keys_list, self._run_many("stream_head", keys_list)):
            row = rows.one()
            heads[key] = (row.version, row.hash) if row else (0, genesis_hash(*key))
        return heads

    def _stored_head(self, tenant_id: str, stream_id: str) -> tuple[int, str]:
        row = self._run("stream_head", (tenant_id, stream_id)).one()
        return (row.version, row.hash) if row else (0, genesis_hash(tenant_id, stream_id))

    def _stored_idempotency(self, scope: str, key: str) -> tuple[str, AppendResult] | None:
        row = self._run("read_idempotency", (scope, key)).one()
        return (row.fingerprint, schema.decode_result(row.result)) if row else None

    # notifications ------------------------------------------------------------------
    def _notify(self) -> None:
        self._wakeups.notify()

    async def wait_for_append(self, timeout: float) -> None:
        """Return when this process appends, or after ``timeout`` (other processes' appends are polled)."""
        await self._wakeups.wait(timeout)

    def listening(self, event: asyncio.Event | None = None):
        """``event`` (or a new one), set at every append by this process while the block runs."""
        return self._wakeups.listening(event)

    # reads --------------------------------------------------------------------------
    def read_stream_sync(self, tenant_id: str, stream_id: str, from_version: int = 1) -> list[EventEnvelope]:
        return [schema.envelope_of(row.body, row.hash)
                for row in self._run("read_stream", (tenant_id, stream_id, from_version))]

    async def read_stream(self, tenant_id: str, stream_id: str, from_version: int = 1) -> list[EventEnvelope]:
        return await asyncio.to_thread(self.read_stream_sync, tenant_id, stream_id, from_version)

    def head_position_sync(self) -> int:
        row = self._run("read_head").one()
        return row.position if row else 0

    async def head_position(self) -> int:
        return await asyncio.to_thread(self.head_position_sync)

    def stream_version_sync(self, tenant_id: str, stream_id: str) -> int:
        return self._stored_head(tenant_id, stream_id)[0]

    def read_raw(self, after_position: int, limit: int = 10000) -> list[RawRecord]:
        """The log after ``after_position``, contiguous: a committed append not yet written out is written first."""
        last = min(self.head_position_sync(), after_position + limit)
        rows = self._read_log(after_position, last)
        if len(rows) < last - after_position:  # a gap below the head: the last commit's rows, still in pending
            head_row = self._run("read_head", serial=True).one()
            if head_row is not None:
                try:
                    self._write_out_head(head_row.append_id)
                except _Conflict:  # the head moved on: its writer wrote the rows out
                    pass
            rows = self._read_log(after_position, last)
        return rows

    def _read_log(self, after_position: int, last: int) -> list[RawRecord]:
        found: list[RawRecord] = []
        for bucket in schema.buckets_after(after_position, last):
            start = max(after_position, bucket * schema.POSITION_BUCKET - 1)
            found.extend(RawRecord(row.position, row.tenant_id, row.stream_id, row.version, row.body, row.hash)
                         for row in self._run("read_log", (bucket, start, last - start))
                         if row.position <= last)
        return found[:schema.contiguous_prefix(after_position, [r.position for r in found])]

    def read_all_sync(self, after_position: int, limit: int = 1000) -> list[EventEnvelope]:
        return [schema.envelope_of(r.body, r.hash) for r in self.read_raw(after_position, limit)]

    async def read_all(self, after_position: int, limit: int = 1000) -> list[EventEnvelope]:
        return await asyncio.to_thread(self.read_all_sync, after_position, limit)

    def read_positions_sync(self, positions: list[int]) -> list[EventEnvelope]:
        rows = [self._run("read_position", (schema.bucket_of(p), p)).one() for p in sorted(set(positions))]
        return [schema.envelope_of(row.body, row.hash) for row in rows if row is not None]

    async def idempotent_result(self, scope: str, key: str, fingerprint: str) -> AppendResult | None:
        prior = await asyncio.to_thread(self._stored_idempotency, scope, key)
        if prior is None:
            return None
        if prior[0] != fingerprint:
            raise IdempotencyKeyReused(key)
        return msgspec.structs.replace(prior[1], replayed=True)

    async def subscribe(self, after_position: int, batch: int = 500) -> AsyncIterator[EventEnvelope]:
        """Every event after ``after_position``, then live ones (this process's at once, others' when polled)."""
        position = after_position
        with self._wakeups.listening() as appended:
            while True:
                appended.clear()
                events = await self.read_all(position, batch)
                if events:
                    for envelope in events:
                        yield envelope
                    position = events[-1].global_position
                    continue
                await wait_set(appended, self.poll_interval)

    def writable(self) -> bool:
        return self._writer.alive() and self.last_commit_error is None

    def relay_checkpoint(self, name: str) -> CassandraRelayCheckpoint:
        return CassandraRelayCheckpoint(self, name)


class CassandraRelayCheckpoint:
    """The outbox relay's published position, in the store's keyspace (so any relay instance resumes it)."""

    def __init__(self, store: CassandraEventStore, name: str) -> None:
        self.store, self.name = store, name

    def load(self) -> int:
        row = self.store._run("read_relay", (self.name,)).one()
        return row.position if row else 0

    def save(self, position: int) -> None:
        self.store._run("write_relay", (self.name, position, datetime.now(UTC)))
