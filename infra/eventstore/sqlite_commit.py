"""The SQLite store's group commit: each batch of appends checked against the stream heads and written in one
transaction, by one statement when the cached heads allow it; the heads cache that makes that possible."""

from __future__ import annotations

import functools
import itertools
import logging
import sqlite3
import time
from pathlib import Path

import msgspec
from opentelemetry import trace

from commands.ports import AppendResult
from domain.chain import genesis_hash
from domain.errors import WrongExpectedVersion
from infra import telemetry
from infra.audit.witness import write_witness
from infra.eventstore.group_commit import (EVENT_COLUMNS, Head, Key, Pending, Prepared, StoreUnavailable, answer,
                                           prepare)

log = logging.getLogger(__name__)

_result_decoder = msgspec.json.Decoder(AppendResult)
_encoder = msgspec.json.Encoder(order="sorted")
_tracer = trace.get_tracer("csm.eventstore")
_json_decode = msgspec.json.Decoder(list[tuple[str, str, int, str]]).decode


class SQLiteCommitter:
    """Commits batches of appends on the writer thread's connection ``conn``, then answers them and calls
    ``committed`` (the store's wake-up). Only the writer thread calls ``commit_batch``."""

    HEADS_CACHE_SIZE = 16_384  # stream heads the writer keeps between batches (about 0.4 KiB each)
    WAL_AUTOCHECKPOINT = 4096  # pages (16 MiB at SQLite's default 4 KiB page size)

    def __init__(self, conn: sqlite3.Connection, *, witness_path: Path | None, notify) -> None:
        # Checkpoint the WAL into the database every WAL_AUTOCHECKPOINT pages instead of 1000: a
        # group commit dirties about one index page per stream it touches, so at 1000 nearly every
        # other commit paid for a checkpoint that rewrote the same hot pages. Durability does not
        # depend on it: every commit's WAL frames are fsynced (synchronous=FULL) before it returns.
        conn.execute(f"PRAGMA wal_autocheckpoint = {self.WAL_AUTOCHECKPOINT}")
        self.conn, self.witness_path, self._notify = conn, witness_path, notify
        self.last_commit_error: str | None = None
        self.last_position = 0  # the last position this committer wrote
        self._heads: dict[Key, Head] = {}
        self._heads_mark: tuple[int, str] | None = None  # (position, hash) of the last row when valid

    def commit_batch(self, batch: list[Pending]) -> None:
        started = time.perf_counter()
        conn = self.conn
        outcomes, rows = self._commit_fast(conn, batch) or self._commit_locked(conn, batch)
        if rows:
            self.last_position = rows[-1][0]
            if self.witness_path is not None:
                # after the commit, so it never runs ahead of the store; the verifier uses it to detect a truncated
                # tail. Best effort: failing to write it loses no data.
                write_witness(self.witness_path, rows)
            seconds = time.perf_counter() - started
            telemetry.record_commit(len(rows), seconds)
            if telemetry.tracing_configured():
                _commit_span(len(batch), len(rows), rows[-1][0], seconds)
        answer(batch, outcomes)
        if rows:
            self._notify()

    def _prepare(self, conn: sqlite3.Connection, request, position: int, heads: dict, claimed: dict):
        cache = self._heads
        return prepare(request, position, heads, claimed,
                       lambda key: cache.get(key) or stored_head(conn, *key),
                       lambda scope, key: stored_idempotency(conn, scope, key))

    def _commit_fast(self, conn: sqlite3.Connection, batch: list[Pending]) -> tuple[list, list] | None:
        """The common case in one statement: every stream's head is cached, every append is valid.

        The batch is prepared against the cached heads, then written by a single INSERT in
        autocommit mode (synchronous=FULL: it returns after the WAL is fsynced) whose WHERE
        clause checks, under the write lock it takes, that the log still ends at the row the
        cache was valid for. If anyone else wrote, it inserts nothing and the batch goes the
        locked way, as does any batch with an idempotency key. Heads the cache lacks are read
        first, or presumed new for appends that expect version 0. Appends refused against
        these heads (a wrong expected version) are answered only once that check has passed.

        One statement instead of BEGIN, SELECT, INSERT and COMMIT matters because the writer
        re-takes the GIL after each, and waits for the busy event loop thread every time.
        """
        mark, cache = self._heads_mark, self._heads
        if mark is None:
            return None
        position = mark[0]
        heads: dict[tuple[str, str], tuple[int, str]] = {}
        presumed: set[tuple[str, str]] = set()  # streams taken to be new, on no evidence but the request
        outcomes: list[AppendResult] = []
        rows: list[tuple] = []
        wanted = set()  # uncached streams that should exist: their heads are read (no lock needed, see below)
        events = 0
        for pending in batch:
            request = pending.request
            if request.idempotency_key is not None:
                return None
            if request.expected_version != 0:
                wanted.add((request.tenant_id, request.stream_id))
            events += len(request.events)
        if events > _INSERT_MAX_ROWS:  # more than one INSERT statement: not atomic without BEGIN … COMMIT
            return None
        wanted = {key for key in wanted if key not in cache}  # not ``-= cache.keys()``: that walks the whole cache
        if wanted:
            # Read outside the write lock, then check the log still ends at the mark: if it does,
            # nothing was committed since the cache was last right, so these reads were right too.
            try:
                heads.update(self._stored_heads(conn, wanted))
                last = conn.execute("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1").fetchone()
            except Exception:
                last = None
            if (tuple(last) if last else (0, "")) != mark:
                cache.clear()
                return None
        for pending in batch:
            request = pending.request
            key = (request.tenant_id, request.stream_id)
            if key not in cache and key not in heads:
                # expected version 0 and unknown: a new stream, presumably. UNIQUE (tenant_id,
                # stream_id, version) refuses version 1 of a stream that exists after all, and
                # the INSERT then writes nothing.
                heads[key] = (0, genesis_hash(*key))
                presumed.add(key)
            outcome = self._prepare(conn, request, position, heads, {})
            if not isinstance(outcome, Prepared):  # refused against the cached heads: true if the cache is
                if isinstance(outcome, WrongExpectedVersion) and key in presumed:
                    return None  # ... but a presumed-new stream's head is no evidence to refuse on
                outcomes.append(outcome)  # (the cache is checked below, with the INSERT or on its own)
                continue
            result = outcome.result
            rows.extend(outcome.rows)
            outcomes.append(result)
            position = result.global_position
        if not rows:  # every append was refused: the refusals stand if the log still ends at the mark
            try:
                last = conn.execute("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1").fetchone()
            except Exception:  # the locked way decides (and reports a broken store)
                last = None
                mark = None
            if (tuple(last) if last else (0, "")) != mark:
                cache.clear()
                self._heads_mark = None
                return None
            return outcomes, rows
        self._heads_mark = None  # valid again only once this batch has committed
        try:
            size, params = _padded(rows, len(EVENT_COLUMNS))
            params += (mark[0], mark[0], mark[1])
            inserted = conn.execute(_insert_sql("events", EVENT_COLUMNS, size, True), params).rowcount
        except sqlite3.IntegrityError:  # a "new" stream existed: nothing was written, the locked way decides
            cache.clear()
            return None
        except Exception as exc:  # nothing was written (the statement is atomic): the locked way decides
            log.warning("event store fast commit failed; retrying under the lock", extra={"error": repr(exc)})
            cache.clear()
            return None
        if inserted != len(rows):  # the log moved on under us: another writer committed
            cache.clear()
            return None
        self.last_commit_error = None
        for key in presumed:  # keep what was cached, read or written; a presumed-new stream that no
            if not heads[key][0]:  # append wrote stays unknown
                del heads[key]
        self._remember_heads(heads, (rows[-1][0], rows[-1][8]))
        return outcomes, rows

    def _commit_locked(self, conn: sqlite3.Connection, batch: list[Pending]) -> tuple[list, list]:
        """Validate every append against the stored rows inside BEGIN IMMEDIATE, write, COMMIT."""
        outcomes: list[AppendResult | BaseException] = []
        rows: list[tuple] = []
        idempotency_rows: list[tuple] = []
        cache = self._heads
        try:
            conn.execute("BEGIN IMMEDIATE")
            last = conn.execute("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1").fetchone()
            position, mark = (last[0], last[1]) if last else (0, "")
            if self._heads_mark != (position, mark):  # another writer committed since our last batch
                cache.clear()
            self._heads_mark = None  # valid again only once this batch has committed
            # this batch's view of the heads: the cache, then one query for every stream it lacks
            heads: dict[tuple[str, str], tuple[int, str]] = {}
            missing = {key for p in batch if (key := (p.request.tenant_id, p.request.stream_id)) not in cache}
            if missing:
                heads.update(self._stored_heads(conn, missing))
            claimed: dict[tuple[str, str], tuple[str, AppendResult]] = {}
            for pending in batch:
                outcome = self._prepare(conn, pending.request, position, heads, claimed)
                if isinstance(outcome, Prepared):
                    result = outcome.result
                    rows.extend(outcome.rows)
                    position = result.global_position
                    if outcome.claim:
                        idempotency_rows.append((*outcome.claim, _encoder.encode(result), outcome.rows[0][6]))
                    outcomes.append(result)
                else:
                    outcomes.append(outcome)
            if rows:
                _insert_many(conn, "events", EVENT_COLUMNS, rows)
            if idempotency_rows:
                _insert_many(conn, "idempotency", _IDEMPOTENCY_COLUMNS, idempotency_rows)
            conn.execute("COMMIT")
            self.last_commit_error = None
            self._remember_heads(heads, (rows[-1][0], rows[-1][8]) if rows else (position, mark))
        except Exception as exc:  # the whole batch failed: nothing was written
            log.error("event store commit failed", extra={"error": repr(exc)})
            self.last_commit_error = repr(exc)
            cache.clear()
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = StoreUnavailable(f"commit failed: {exc}")
            outcomes = [failure] * len(batch)
            rows = []
        return outcomes, rows

    def _remember_heads(self, heads: dict, mark: tuple[int, str]) -> None:
        """Keep the heads this commit read or wrote, valid while the log ends at ``mark``.

        Only the writer thread touches the cache. It is checked against the last stored
        row (position and hash) inside the write lock of every batch, so an append by
        another process empties it and heads are read from the table again.
        """
        cache = self._heads
        cache.update(heads)
        if len(cache) > self.HEADS_CACHE_SIZE:  # forget the half that was first cached
            for key in list(itertools.islice(cache, len(cache) - self.HEADS_CACHE_SIZE // 2)):
                del cache[key]
        self._heads_mark = mark

    @staticmethod
    def _stored_heads(conn, keys: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, str]]:
        """The heads of many streams, 512 per query (an index lookup each); genesis if absent.

        The query returns one JSON array rather than a row per stream: sqlite3 releases and
        re-takes the GIL for every row it steps to, and the writer waits for it each time.
        """
        found: dict[tuple[str, str], tuple[int, str]] = {}
        keys_list = list(keys)
        for start in range(0, len(keys_list), 512):
            size, params = _padded(keys_list[start:start + 512], 2)  # NULL keys match nothing
            found.update(((t, s), (v, h)) for t, s, v, h in
                         _json_decode(conn.execute(_heads_sql(size), params).fetchone()[0]))
        for key in keys_list:
            if key not in found:
                found[key] = (0, genesis_hash(*key))
        return found


_INSERT_MAX_ROWS = 2048  # rows per INSERT statement: 2048 x 9 parameters, under SQLite's limit of 32766
_IDEMPOTENCY_COLUMNS = ("scope", "key", "fingerprint", "result", "created_at")
_LOG_ENDS_AT = (" AND (SELECT coalesce(max(position), 0) FROM events) = ?"
                " AND coalesce((SELECT hash FROM events WHERE position = ?), '') = ?")


@functools.lru_cache(maxsize=None)
def _insert_sql(table: str, columns: tuple[str, ...], rows: int, validated: bool) -> str:
    """``INSERT … SELECT * FROM (VALUES …) WHERE column1 IS NOT NULL``, for ``rows`` rows.

    Row counts are rounded up to a power of two and the rest padded with NULL rows, which the
    WHERE clause drops, so the writer uses a dozen statements that stay compiled in sqlite3's
    statement cache instead of compiling (and caching, at up to megabytes each) one per batch
    size. ``validated`` adds the check that the log still ends at a given (position, hash).
    """
    values = ",".join(["(" + ",".join("?" * len(columns)) + ")"] * rows)
    return (f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM (VALUES {values}) WHERE column1 IS NOT NULL"
            + (_LOG_ENDS_AT if validated else ""))


@functools.lru_cache(maxsize=None)
def _heads_sql(keys: int) -> str:
    """The last (version, hash) of each of ``keys`` (tenant_id, stream_id) pairs, as one JSON array."""
    return ("SELECT json_group_array(json_array(w.column1, w.column2, e.version, e.hash)) FROM (VALUES "
            + ",".join(["(?,?)"] * keys) + ") AS w"
            " JOIN events AS e ON e.position = (SELECT position FROM events WHERE tenant_id = w.column1"
            " AND stream_id = w.column2 ORDER BY version DESC LIMIT 1)")


def _padded(rows: list[tuple], width: int) -> tuple[int, list]:
    """The statement size for ``rows`` (the next power of two) and its parameters, NULL-padded."""
    size = 1 << (len(rows) - 1).bit_length()
    params = [value for row in rows for value in row]
    params.extend([None] * (width * (size - len(rows))))
    return size, params


def _insert_many(conn: sqlite3.Connection, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Insert rows with multi-row ``VALUES`` statements (2048 rows each at most), not ``executemany``.

    ``executemany`` releases and re-takes the GIL around every row's ``sqlite3_step``; while
    the event loop thread is busy each re-take waits for it to yield, which made inserting a
    batch far slower than SQLite's own work. One statement re-takes it once.
    """
    for start in range(0, len(rows), _INSERT_MAX_ROWS):
        size, params = _padded(rows[start:start + _INSERT_MAX_ROWS], len(columns))
        conn.execute(_insert_sql(table, columns, size, False), params)



def stored_head(conn: sqlite3.Connection, tenant_id: str, stream_id: str) -> Head:
    """A stream's (version, hash) as stored; version 0 and its genesis value if it has no event."""
    row = conn.execute(
        "SELECT version, hash FROM events WHERE tenant_id = ? AND stream_id = ? ORDER BY version DESC LIMIT 1",
        (tenant_id, stream_id)).fetchone()
    return (row[0], row[1]) if row else (0, genesis_hash(tenant_id, stream_id))


def stored_idempotency(conn: sqlite3.Connection, scope: str, key: str) -> tuple[str, AppendResult] | None:
    """The (fingerprint, result) stored for an idempotency key, or None."""
    row = conn.execute("SELECT fingerprint, result FROM idempotency WHERE scope = ? AND key = ?",
                       (scope, key)).fetchone()
    return (row[0], _result_decoder.decode(row[1])) if row else None


def _commit_span(appends: int, events: int, last_position: int, seconds: float) -> None:
    """One span per group commit, from the writer thread (no parent: a commit serves many requests)."""
    end = time.time_ns()
    span = _tracer.start_span("eventstore.commit", start_time=end - int(seconds * 1e9), attributes={
        "csm.appends": appends, "csm.events": events, "csm.last_position": last_position})
    span.end(end_time=end)
