"""The Cassandra store's commit protocol: a total order through one ``log_head`` row, committed by Paxos.

The global position is part of every hashed body, so positions must be
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

The committer reaches the cluster only through the three statement runners the store gives it
(``run``, ``run_many``, ``insert_streams``).
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
from cassandra import OperationTimedOut, WriteTimeout

from commands.ids import uuid7
from commands.ports import AppendResult
from domain.chain import genesis_hash
from infra.audit.witness import write_witness
from infra.eventstore import cassandra_schema as schema
from infra.eventstore.cassandra_schema import IdempotencyRow, Row
from infra.eventstore.group_commit import Pending, Prepared, StoreUnavailable, answer, prepare

log = logging.getLogger(__name__)


class _EventId(msgspec.Struct):
    event_id: str


_event_id = msgspec.json.Decoder(_EventId).decode  # reads one field of a body, skipping the rest


class StoreCorrupted(Exception):
    """Two different events claim one (stream, version): never expected; the append is refused."""


class Conflict(Exception):
    """Another writer committed first: re-read the head and try again."""


class _TooLarge(Exception):
    """A group commit too large for one mutation: commit it in halves."""


class LogHeadCommitter:
    """Commits batches of appends through the ``log_head`` row and writes their rows out; see the module docstring."""

    MAX_ATTEMPTS = 50  # commits lost to other writers before an append gives up (StoreUnavailable)
    # Bodies per group commit: the head's pending carries them all in one Paxos proposal, and Cassandra
    # refuses a mutation above half a commit-log segment (16 MiB by default).
    MAX_COMMIT_BYTES = 4 << 20

    def __init__(self, run: Callable, run_many: Callable[[str, list[tuple]], list],
                 insert_streams: Callable[[list[list[Row]]], list[bool]], *, witness_path: Path | None,
                 notify: Callable[[], None]) -> None:
        self.run, self.run_many, self.insert_streams = run, run_many, insert_streams
        self.witness_path, self.notify = witness_path, notify
        self.last_commit_error: str | None = None
        self._materialised: str | None = None  # the append id whose rows this process wrote out last

    def commit_batch(self, batch: list[Pending]) -> None:
        outcomes: list = [StoreUnavailable("too many concurrent writers: the append was not committed")] * len(batch)
        rows: list[Row] = []
        for attempt in range(self.MAX_ATTEMPTS):
            try:
                outcomes, rows = self._try_commit(batch)
                self.last_commit_error = None
                break
            except Conflict:  # another process committed first: back off a little, at random, and retry
                time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
                continue
            except _TooLarge:
                half = len(batch) // 2
                self.commit_batch(batch[:half])
                self.commit_batch(batch[half:])
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
            self.notify()

    def _try_commit(self, batch: list[Pending]) -> tuple[list, list[Row]]:
        head = self.run("read_head", serial=True).one()
        position = head.position if head else 0
        if head and head.append_id != self._materialised:
            self.write_out_head(head.append_id)
        heads = self._stored_heads({(p.request.tenant_id, p.request.stream_id) for p in batch})
        claimed: dict[tuple[str, str], tuple[str, AppendResult]] = {}
        outcomes: list = []
        rows: list[Row] = []
        idempotency: list[IdempotencyRow] = []
        for pending in batch:
            outcome = prepare(pending.request, position, heads, claimed, lambda key: self.stored_head(*key),
                              self.stored_idempotency)
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
                applied = self.run("claim_first", (position, append_id, blob)).was_applied
            else:
                applied = self.run("claim_next", (position, append_id, blob, read_at)).was_applied
        except (WriteTimeout, OperationTimedOut):  # unknown outcome: a serial read settles it
            settled = self.run("read_head", serial=True).one()
            applied = settled is not None and settled.append_id == append_id
        if not applied:
            raise Conflict()
        # Committed: the rows are durable in the head's pending from here on. Writing them out can
        # fail without losing them: the next commit, or the next reader to find them missing, does it.
        try:
            self.write_out(rows, idempotency)
            self._materialised = append_id
        except Exception as exc:
            log.warning("cassandra: committed rows not yet written out; the next commit will",
                        extra={"error": repr(exc)})
        return outcomes, rows

    def write_out_head(self, append_id: str) -> None:
        """Write out the last committed append's rows (idempotent), e.g. after its writer crashed."""
        row = self.run("read_pending", serial=True).one()
        if row is None or row.pending is None or row.append_id != append_id:
            raise Conflict()  # the head moved on meanwhile
        _, rows, idempotency = schema.decode_pending(row.pending)
        self.write_out(rows, idempotency)
        self._materialised = append_id

    def write_out(self, rows: list[Row], idempotency: list[IdempotencyRow]) -> None:
        """Streams first (one conditional batch each), then the global log, the audit series, the keys."""
        groups = [list(stream_rows) for _, stream_rows in itertools.groupby(
            sorted(rows, key=lambda r: (r.tenant_id, r.stream_id, r.version)), key=lambda r: (r.tenant_id, r.stream_id))]
        for stream_rows, applied in zip(groups, self.insert_streams(groups)):
            if not applied:
                self._check_identical(stream_rows)
        self.run_many("insert_log", [(schema.bucket_of(r.position), r.position, r.tenant_id, r.stream_id, r.version,
                                       r.body, r.hash) for r in rows])
        self.run_many("insert_audit", [(*schema.day_bucket(r.occurred_at), _event_id(r.body).event_id, r.position,
                                         r.tenant_id, r.stream_id, r.version, r.type) for r in rows])
        if idempotency:
            self.run_many("insert_idempotency", [tuple(i) for i in idempotency])

    def _check_identical(self, stream_rows: list[Row]) -> None:
        """The rows were there already (written out before): they must be these very rows."""
        first = stream_rows[0]
        stored = {row.hash for row in self.run("read_stream", (first.tenant_id, first.stream_id, first.version),
                                                 serial=True)}
        if not {r.hash for r in stream_rows} <= stored:
            raise StoreCorrupted(f"{first.tenant_id}/{first.stream_id} v{first.version}: another event holds "
                                 "this version")

    def _stored_heads(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, str]]:
        """The heads of every stream a batch touches, read concurrently (genesis for new streams)."""
        keys_list = sorted(keys)
        heads = {}
        for key, rows in zip(keys_list, self.run_many("stream_head", keys_list)):
            row = rows.one()
            heads[key] = (row.version, row.hash) if row else (0, genesis_hash(*key))
        return heads

    def stored_head(self, tenant_id: str, stream_id: str) -> tuple[int, str]:
        row = self.run("stream_head", (tenant_id, stream_id)).one()
        return (row.version, row.hash) if row else (0, genesis_hash(tenant_id, stream_id))

    def stored_idempotency(self, scope: str, key: str) -> tuple[str, AppendResult] | None:
        row = self.run("read_idempotency", (scope, key)).one()
        return (row.fingerprint, schema.decode_result(row.result)) if row else None
