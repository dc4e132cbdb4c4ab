"""The distributed event store on Apache Cassandra 4.1+ (cassandra-driver): the SQLite store's port, chained alike.

A total order through one ``log_head`` row, committed by Paxos: the protocol is ``cassandra_commit``'s
(LogHeadCommitter); here, the connection, the schema migrations, the statements and the reads.

Lifecycle: ``await store.open()`` / ``await store.close()`` (or ``connect()`` /
``close_sync()`` from synchronous code); ``open`` creates the keyspace and applies pending
schema migrations unless ``auto_migrate`` is off (``csm db migrate`` does it explicitly).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from cassandra import ConsistencyLevel, InvalidRequest
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import BatchStatement

from commands.ports import AppendRequest, AppendResult
from commands.waits import wait_set
from domain.errors import IdempotencyKeyReused
from domain.events import EventEnvelope
from infra.audit.witness import release_witness
from infra.service_settings import CassandraSettings
from infra.eventstore import cassandra_schema as schema
from infra.eventstore.cassandra_commit import Conflict, LogHeadCommitter
from infra.eventstore.cassandra_schema import Row
from infra.eventstore.group_commit import GroupCommitWriter, RawRecord
from infra.eventstore.wakeups import AppendWakeups


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
        self._cluster: Cluster | None = None
        self._session = None
        self._prepared: dict[str, object] = {}
        self._wakeups = AppendWakeups()
        self._committer = LogHeadCommitter(self._run, self._run_many, self._insert_streams,
                                           witness_path=self.witness_path, notify=self._notify)
        self._writer = GroupCommitWriter(self._committer.commit_batch, max_batch_events=max_batch_events,
                                         name="csm-cassandra-writer")
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

    @property
    def last_commit_error(self) -> str | None:
        """Why the last commit failed (None once one succeeds)."""
        return self._committer.last_commit_error

    @last_commit_error.setter
    def last_commit_error(self, value: str | None) -> None:
        self._committer.last_commit_error = value

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
        return self._committer.stored_head(tenant_id, stream_id)[0]

    def read_raw(self, after_position: int, limit: int = 10000) -> list[RawRecord]:
        """The log after ``after_position``, contiguous: a committed append not yet written out is written first."""
        last = min(self.head_position_sync(), after_position + limit)
        rows = self._read_log(after_position, last)
        if len(rows) < last - after_position:  # a gap below the head: the last commit's rows, still in pending
            head_row = self._run("read_head", serial=True).one()
            if head_row is not None:
                try:
                    self._committer.write_out_head(head_row.append_id)
                except Conflict:  # the head moved on: its writer wrote the rows out
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
        prior = await asyncio.to_thread(self._committer.stored_idempotency, scope, key)
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
