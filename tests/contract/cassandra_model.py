"""An in-memory model of the CQL the Cassandra store issues, for running its commit protocol without a cluster.

Cassandra cannot be installed here, so this models each statement's semantics (lightweight
transactions included: ``IF NOT EXISTS``, ``IF position = ?``, conditional batches) over
dicts, behind the three methods through which ``CassandraEventStore`` and its commit protocol
(``LogHeadCommitter``) reach the driver (``_run``, ``_run_many``, ``_insert_streams``). It checks the store's own logic (positions,
chains, idempotency, retries, write-out after a crash), not the driver or the cluster:
``test_cassandra_store.py`` holds the real thing to the contract when ``CSM_TEST_CASSANDRA`` is set.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

from infra.eventstore import cassandra_schema as schema
from infra.eventstore.cassandra import CassandraEventStore


class Result:
    def __init__(self, rows=(), applied: bool | None = None) -> None:
        self.rows, self.was_applied = list(rows), applied

    def one(self):
        return self.rows[0] if self.rows else None

    def __iter__(self):
        return iter(self.rows)


class Tables:
    """One keyspace's contents; several store instances may share it (several processes)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.head: dict | None = None
        self.events: dict[tuple[str, str], dict[int, SimpleNamespace]] = {}
        self.log: dict[int, SimpleNamespace] = {}
        self.audit: list[tuple] = []
        self.idempotency: dict[tuple[str, str], SimpleNamespace] = {}
        self.relay: dict[str, int] = {}
        self.claims = 0  # lightweight transactions on the head, applied or not

    def execute(self, name: str, params: tuple) -> Result:  # noqa: C901 - one branch per statement
        with self.lock:
            if name in ("read_head", "read_pending"):
                return Result([SimpleNamespace(**self.head)] if self.head else [])
            if name == "claim_first":
                self.claims += 1
                if self.head is not None:
                    return Result(applied=False)
                self.head = dict(zip(("position", "append_id", "pending"), params))
                return Result(applied=True)
            if name == "claim_next":
                self.claims += 1
                if self.head is None or self.head["position"] != params[3]:
                    return Result(applied=False)
                self.head = dict(zip(("position", "append_id", "pending"), params[:3]))
                return Result(applied=True)
            if name == "stream_head":
                stream = self.events.get(params, {})
                return Result([stream[max(stream)]] if stream else [])
            if name == "read_stream":
                stream = self.events.get(params[:2], {})
                return Result(stream[v] for v in sorted(stream) if v >= params[2])
            if name == "read_log":
                bucket, start, limit = params
                found = [self.log[p] for p in sorted(self.log) if p > start and schema.bucket_of(p) == bucket]
                return Result(found[:limit])
            if name == "read_position":
                row = self.log.get(params[1])
                return Result([row] if row and schema.bucket_of(row.position) == params[0] else [])
            if name == "read_idempotency":
                row = self.idempotency.get(params)
                return Result([row] if row else [])
            if name == "insert_log":
                bucket, position, tenant_id, stream_id, version, body, hash_ = params
                assert bucket == schema.bucket_of(position)
                self.log[position] = SimpleNamespace(position=position, tenant_id=tenant_id, stream_id=stream_id,
                                                     version=version, body=body, hash=hash_)
                return Result()
            if name == "insert_audit":
                self.audit.append(params)
                return Result()
            if name == "insert_idempotency":
                self.idempotency[params[:2]] = SimpleNamespace(fingerprint=params[2], result=params[3])
                return Result()
            if name == "read_relay":
                return Result([SimpleNamespace(position=self.relay[params[0]])] if params[0] in self.relay else [])
            if name == "write_relay":
                self.relay[params[0]] = params[1]
                return Result()
        raise AssertionError(f"statement {name} is not modelled")

    def insert_stream(self, rows) -> bool:
        """A conditional batch of ``INSERT … IF NOT EXISTS`` on one partition: all or nothing."""
        with self.lock:
            stream = self.events.setdefault((rows[0].tenant_id, rows[0].stream_id), {})
            if any(r.version in stream for r in rows):
                return False
            for r in rows:
                stream[r.version] = SimpleNamespace(version=r.version, hash=r.hash, body=r.body, position=r.position)
            return True


class ModelledCassandraStore(CassandraEventStore):
    """The real store's code, its driver calls answered by :class:`Tables`."""

    def __init__(self, tables: Tables | None = None, **options) -> None:
        super().__init__(keyspace="modelled", **options)
        self.tables = tables or Tables()
        self.crash_after_commit = 0  # appends whose write-out "crashes" right after their commit
        write_out = self._committer.write_out

        def crashing_write_out(rows, idempotency) -> None:
            if self.crash_after_commit and any(r.position == self.tables.head["position"] for r in rows):
                self.crash_after_commit -= 1
                raise ConnectionError("the writer died after its commit")
            write_out(rows, idempotency)

        self._committer.write_out = crashing_write_out

    def connect(self) -> ModelledCassandraStore:
        return self._start_writer()

    async def drop_keyspace(self) -> None:
        self.tables.__init__()

    def _run(self, name: str, params: tuple = (), *, serial: bool = False):
        return self.tables.execute(name, tuple(params))

    def _run_many(self, name: str, params: list[tuple]) -> list:
        return [self.tables.execute(name, tuple(p)) for p in params]

    def _insert_streams(self, groups) -> list[bool]:
        return [self.tables.insert_stream(rows) for rows in groups]
