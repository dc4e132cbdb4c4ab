"""One benchmark phase per process: ``python -m bench.phases NAME --dir DATA --events N``.

Each phase prints one JSON object on stdout. ``python -m bench`` runs every phase as a
subprocess under ``/usr/bin/time -v`` so that its peak RSS is measured alone.

Phases and what they measure (all through the store's public API, durably: WAL,
``synchronous=FULL``, an append is counted when its future resolved, after its group commit):

``append-single``   W asyncio tasks, each owning one stream, each appending one event at a
                    time (expected version = the version it last got back). With ``--dataset``
                    it writes into an initialised data directory and pauses every 50k events
                    while the checkpointer seals them (untimed; the seal is reported apart).
``append-batch``    the same with 10-event appends.
``append-contended``  W tasks on ONE stream: read the version, append, retry on
                    WrongExpectedVersion (optimistic concurrency under contention).
``certificate-dataset``  a second dataset, in an initialised data directory sealed every 50k
                    events: ``--tenants`` tenants, each with a root and an intermediate CA, then
                    W writers issuing certificates, revoking about 10 % and renewing about 10 %
                    of them, event for event as the commands record them
                    (``CertificateHistory``, bench/certificate_history.py).
``replay``          read_all over the whole log (decoding every envelope).
``verify``          infra.audit.verify.verify_store (every chain, every checkpoint and signature).
``rebuild``         ProjectionRunner.rebuild(NAME) into a fresh views database; the certificates
                    and cas read models are then checked against the log's event counts, and the
                    phase fails if they disagree.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
from array import array
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import REGISTRY

from commands.ids import uuid7
from commands.ports import AppendRequest, NewEvent
from commands.runtime import rfc3339
from domain.errors import WrongExpectedVersion
from domain.events import Actor, Payload, to_payload_dict
from domain.tenant import Quotas, TenantCreated, TenantRenamed
from infra.config import Settings

ACTOR = Actor(principal="bench:writer", auth_method="internal")


def tenant_stream(i: int) -> tuple[str, str]:
    tenant_id = f"bench-{i:07d}"
    return tenant_id, f"tenant-{tenant_id}"


def new_event(payload: Payload, correlation_id: str, *, actor: Actor = ACTOR,
              occurred_at: datetime | None = None) -> NewEvent:
    """The envelope a handler appends (commands/runtime.py run): ``payload`` as the store keeps it."""
    return NewEvent(event_id=uuid7(), type=payload.event_type, schema_version=payload.schema_version,
                    occurred_at=rfc3339(occurred_at or datetime.now(UTC)), actor=actor, correlation_id=correlation_id,
                    causation_id=None, payload=to_payload_dict(payload))


def tenant_event(tenant_id: str, version: int, correlation_id: str) -> NewEvent:
    """A realistic event: the tenant's creation, then renames (as the tenants projector expects)."""
    if version == 0:
        payload = TenantCreated(tenant_id=tenant_id, name=f"Tenant {tenant_id}", quotas=Quotas(max_cas=10))
    else:
        payload = TenantRenamed(old_name=f"Tenant {tenant_id} r{version - 1}", new_name=f"Tenant {tenant_id} r{version}")
    return new_event(payload, correlation_id)


def percentile(sorted_values, q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def commit_stats() -> tuple[float, float]:
    """(commits, events committed) from the store's Prometheus histogram, this process only."""
    commits = REGISTRY.get_sample_value("csm_eventstore_commit_batch_events_count") or 0.0
    events = REGISTRY.get_sample_value("csm_eventstore_commit_batch_events_sum") or 0.0
    return commits, events


def latency_summary(latencies: array) -> dict:
    values = sorted(latencies)
    return {"latency_ms_p50": percentile(values, 0.50) * 1000, "latency_ms_p99": percentile(values, 0.99) * 1000,
            "latency_ms_max": (values[-1] if values else 0.0) * 1000}


def open_dataset(data_dir: Path):
    from infra.bootstrap import initialise
    return initialise(Settings(data_dir=data_dir))


# appends ----------------------------------------------------------------------------------

async def timed_append(store, latencies: array, tenant_id: str, stream_id: str, stream_type: str,
                       expected_version: int, events: list[NewEvent]) -> int:
    """One append, its latency recorded; returns the stream's new version."""
    request = AppendRequest(tenant_id=tenant_id, stream_id=stream_id, stream_type=stream_type,
                            expected_version=expected_version, events=events)
    started = time.perf_counter()
    result = await store.append(request)
    latencies.append(time.perf_counter() - started)
    return result.version


class TenantRenames:
    """The tenant dataset's writes: writer i owns tenant i's stream (creation, then renames), ``per_append`` a time."""

    def __init__(self, writers: int, per_append: int) -> None:
        self.unit = per_append  # a writer's share of events is a multiple of this
        self.versions = [0] * writers
        self.correlations = [uuid7() for _ in range(writers)]

    async def write(self, store, index: int, events: int, latencies: array) -> None:
        tenant_id, stream_id = tenant_stream(index)
        version, correlation = self.versions[index], self.correlations[index]
        for _ in range(events // self.unit):
            batch = [tenant_event(tenant_id, version + k, correlation) for k in range(self.unit)]
            version = await timed_append(store, latencies, tenant_id, stream_id, "tenant", version, batch)
        self.versions[index] = version


async def _appenders(store, workload, writers: int, events: int, *, seal_every: int = 0, seal=None) -> dict:
    """``writers`` tasks append ``events`` in all, each ``workload.write``-ing its share (``TenantRenames``,
    ``CertificateHistory`` in bench/certificate_history.py).

    With ``seal_every``, the writers pause after every that many events while ``seal()`` writes the
    checkpoints (untimed): the dataset then has a checkpoint every ``seal_every`` events.
    """
    unit = workload.unit
    units_total = events // unit
    latencies = array("d")
    commits0, committed0 = commit_stats()
    seconds = seal_seconds = 0.0
    sealed = checkpoints = 0
    chunk = max(1, seal_every // unit) if seal_every else units_total
    remaining = units_total
    while remaining:
        units = min(chunk, remaining)
        share, extra = divmod(units, writers)
        started = time.perf_counter()
        await asyncio.gather(*(workload.write(store, i, (share + (1 if i < extra else 0)) * unit, latencies)
                               for i in range(writers)))
        seconds += time.perf_counter() - started
        remaining -= units
        if seal is not None:
            started = time.perf_counter()
            written, covered = seal()
            seal_seconds += time.perf_counter() - started
            checkpoints += written
            sealed += covered
    commits1, committed1 = commit_stats()
    commits, committed = commits1 - commits0, committed1 - committed0
    done, appends = units_total * unit, len(latencies)
    per_append = done / appends if appends else 0.0
    result = {"events": done, "appends": appends, "writers": writers, "events_per_append": per_append,
              "seconds": seconds, "events_per_second": done / seconds if seconds else 0.0, "commits": int(commits),
              "mean_events_per_commit": committed / commits if commits else 0.0,
              "mean_appends_per_commit": committed / commits / per_append if commits else 0.0,
              **latency_summary(latencies)}
    if seal is not None:
        result["seal"] = {"events": sealed, "checkpoints": checkpoints, "seconds": seal_seconds,
                          "events_per_second": sealed / seal_seconds if seal_seconds else 0.0}
    return result


async def _contended(store, writers: int, events: int) -> dict:
    tenant_id, stream_id = "bench-contended", "tenant-bench-contended"
    latencies = array("d")
    state = {"claimed": 0, "done": 0, "conflicts": 0}
    commits0, committed0 = commit_stats()

    async def writer() -> None:
        correlation = uuid7()
        while state["claimed"] < events:
            state["claimed"] += 1
            started = time.perf_counter()
            while True:
                version = store.stream_version_sync(tenant_id, stream_id)
                request = AppendRequest(tenant_id=tenant_id, stream_id=stream_id, stream_type="tenant",
                                        expected_version=version,
                                        events=[tenant_event(tenant_id, version, correlation)])
                try:
                    await store.append(request)
                    break
                except WrongExpectedVersion:
                    state["conflicts"] += 1
            latencies.append(time.perf_counter() - started)
            state["done"] += 1

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    seconds = time.perf_counter() - started
    commits1, committed1 = commit_stats()
    commits, committed = commits1 - commits0, committed1 - committed0
    return {"events": state["done"], "writers": writers, "conflicts": state["conflicts"], "seconds": seconds,
            "events_per_second": state["done"] / seconds, "commits": int(commits),
            "mean_events_per_commit": committed / commits if commits else 0.0, **latency_summary(latencies)}


def phase_append(args) -> dict:
    from infra.eventstore.sqlite import SQLiteEventStore
    if args.dataset:
        runtime = open_dataset(args.dir)
        store = runtime.store
    else:
        args.dir.mkdir(parents=True, exist_ok=True)
        runtime, store = None, SQLiteEventStore(args.dir / "events.db").open()
    try:
        if args.name == "append-contended":
            result = asyncio.run(_contended(store, args.writers, args.events))
        else:
            workload = TenantRenames(args.writers, 10 if args.name == "append-batch" else 1)
            result = asyncio.run(_appenders(store, workload, args.writers, args.events,
                                            seal_every=args.seal_every if runtime else 0,
                                            seal=_sealer(runtime) if runtime else None))
    finally:
        runtime.close() if runtime else store.close()
    return result


def _sealer(runtime):
    """Seal the dataset's checkpoints now: (checkpoints written, events they cover)."""
    def seal() -> tuple[int, int]:
        before = _sealed_to(runtime.store)
        written = runtime.checkpointer.seal_all()
        return written, _sealed_to(runtime.store) - before
    return seal


# the certificate dataset (bench/certificate_history.py) ------------------------------------

async def _write_history(store, history, writers: int, seal_every: int, seal) -> dict:
    setup = await history.prepare(store)
    result = await _appenders(store, history, writers, history.events - setup, seal_every=seal_every, seal=seal)
    return {**result, "setup_events": setup, "certificates": history.tally}


def phase_certificate_dataset(args) -> dict:
    if args.events <= 3 * args.tenants:
        raise SystemExit(f"--events must exceed the {3 * args.tenants} events that create the tenants and their CAs")
    runtime = open_dataset(args.dir)
    try:
        started = time.perf_counter()
        from bench.certificate_history import CertificateHistory
        history = CertificateHistory(args.tenants, args.events, args.pem_pool, args.seed)
        signed = time.perf_counter() - started
        result = asyncio.run(_write_history(runtime.store, history, args.writers, args.seal_every, _sealer(runtime)))
    finally:
        runtime.close()
    return {**result, "pem_pool": sum(len(a.pems) for a in history.authorities), "pem_pool_seconds": signed}


# reads, verification, projections ---------------------------------------------------------

def _sealed_to(store) -> int:
    """Where the ledger's last checkpoint ends (0 before the first). Read from the ledger's end: a checkpoint lists
    every stream head it sealed, so in a dataset of a stream per certificate each one is megabytes."""
    from domain.audit import LEDGER_STREAM, LEDGER_TENANT
    from domain.events import decode_payload
    version = store.stream_version_sync(LEDGER_TENANT, LEDGER_STREAM)
    for start in (max(1, version - 3), 1):  # the checkpointer appends little else, so the last few hold it
        checkpoints = [e for e in store.read_stream_sync(LEDGER_TENANT, LEDGER_STREAM, start)
                       if e.type == "audit.checkpoint"]
        if checkpoints:
            return decode_payload(checkpoints[-1]).to_position
    return 0




def phase_replay(args) -> dict:
    from infra.eventstore.sqlite import SQLiteEventStore

    async def replay(store) -> int:
        position, count = 0, 0
        while events := await store.read_all(position, args.page):
            count += len(events)
            position = events[-1].global_position
        return count

    with SQLiteEventStore(args.dir / "events.db") as store:
        started = time.perf_counter()
        count = asyncio.run(replay(store))
        seconds = time.perf_counter() - started
    return {"events": count, "page": args.page, "seconds": seconds, "events_per_second": count / seconds}


def phase_verify(args) -> dict:
    from infra.audit.verify import verify_store
    from infra.eventstore.sqlite import SQLiteEventStore
    settings = Settings(data_dir=args.dir)
    with SQLiteEventStore(settings.events_db) as store:
        started = time.perf_counter()
        report = verify_store(settings, store)
        seconds = time.perf_counter() - started
    if not report.ok:
        raise SystemExit(f"verification failed: {report.first_problem}")
    return {"events": report.events, "streams": report.streams, "checkpoints": report.checkpoints,
            "ok": report.ok, "seconds": seconds, "events_per_second": report.events / seconds}


def _event_counts(events_db: Path) -> dict[str, int]:
    """How many events of each type the log holds: what a rebuilt read model is checked against."""
    conn = sqlite3.connect(f"file:{events_db}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT type, count(*) FROM events GROUP BY type").fetchall())
    finally:
        conn.close()


def _check_certificates(views: sqlite3.Connection, counts: dict[str, int]) -> tuple[dict, dict]:
    """(found, expected): a row per issued certificate; revoked and renewed ones as their events say; the
    per-day counts summing to the certificates issued (certificate_counts) and to those still live (by day of expiry
    and CA, certificate_expiry_counts)."""
    rows, revoked, renewed, live = views.execute(
        "SELECT count(*), coalesce(sum(status = 'revoked' AND revoked_ca_id IS NULL), 0), "
        "coalesce(sum(superseded_by IS NOT NULL), 0), coalesce(sum(status = 'issued' AND superseded_by IS NULL), 0) "
        "FROM certificates").fetchone()
    counted = dict(views.execute("SELECT kind, sum(n) FROM certificate_counts GROUP BY kind").fetchall())
    live_counted, expiry_rows = views.execute(
        "SELECT coalesce(sum(n), 0), count(*) FROM certificate_expiry_counts").fetchone()
    found = {"certificates": rows, "revoked": revoked, "renewed": renewed, "live": live,
             "issued_counted": counted.get("issued", 0), "live_counted": live_counted,
             "count_rows": views.execute("SELECT count(*) FROM certificate_counts").fetchone()[0],
             "expiry_count_rows": expiry_rows}
    issued = counts.get("certificate.issued", 0)
    expected = {"certificates": issued, "revoked": counts.get("certificate.revoked", 0),
                "renewed": counts.get("certificate.renewed", 0), "issued_counted": issued, "live_counted": live}
    return found, expected


def _check_cas(views: sqlite3.Connection, counts: dict[str, int]) -> tuple[dict, dict]:
    found = {"cas": views.execute("SELECT count(*) FROM cas").fetchone()[0],
             "ca_certificates": views.execute("SELECT count(*) FROM ca_certificates").fetchone()[0]}
    created = counts.get("ca.created", 0)
    expected = {"cas": created + counts.get("ca.intermediate_requested", 0)}
    if not counts.get("ca.intermediate_requested"):
        expected["ca_certificates"] = (created + counts.get("ca.cross_certified", 0)
                                       + counts.get("ca.key_rolled_over", 0))
    return found, expected


REBUILD_CHECKS = {"certificates": _check_certificates, "cas": _check_cas}


def phase_rebuild(args) -> dict:
    from infra.eventstore.sqlite import SQLiteEventStore
    from projections.registry import all_projectors
    from projections.runner import ProjectionRunner
    from projections.views_db import rebuild_lock_path
    views = args.dir / f"bench-views-{args.projection}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{views}{suffix}").unlink(missing_ok=True)
    with SQLiteEventStore(args.dir / "events.db") as store:
        runner = ProjectionRunner(store, views, all_projectors()).open()
        try:
            result = runner.rebuild(args.projection)
        finally:
            runner.close()
    checked = None
    if check := REBUILD_CHECKS.get(args.projection):
        conn = sqlite3.connect(views)
        try:
            checked, expected = check(conn, _event_counts(args.dir / "events.db"))
        finally:
            conn.close()
        wrong = {k: f"{checked[k]:,} rows, the log says {v:,}" for k, v in expected.items() if checked[k] != v}
        if wrong:
            raise SystemExit(f"the rebuilt {args.projection} read model disagrees with the log: {wrong}")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{views}{suffix}").unlink(missing_ok=True)
    rebuild_lock_path(views).unlink(missing_ok=True)
    return {"projection": args.projection, "events": result["events"], "seconds": result["seconds"],
            "events_per_second": result["events_per_second"], **({"checked": checked} if checked else {})}


PHASES = {
    "append-single": phase_append, "append-batch": phase_append, "append-contended": phase_append,
    "certificate-dataset": phase_certificate_dataset, "replay": phase_replay, "verify": phase_verify,
    "rebuild": phase_rebuild,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.phases")
    parser.add_argument("name", choices=sorted(PHASES))
    parser.add_argument("--dir", type=Path, required=True, help="data directory")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--writers", type=int, default=256)
    parser.add_argument("--dataset", action="store_true",
                        help="append into an initialised data directory, sealing checkpoints as it goes")
    parser.add_argument("--seal-every", type=int, default=50_000, help="events between checkpoints (--dataset)")
    parser.add_argument("--page", type=int, default=1000, help="read_all page size (replay)")
    parser.add_argument("--projection", default="audit_log")
    parser.add_argument("--tenants", type=int, default=8, help="tenants, each a root and an intermediate CA "
                        "(certificate-dataset)")
    parser.add_argument("--pem-pool", type=int, default=200,
                        help="real certificates signed once, whose PEM text the events reuse (certificate-dataset)")
    parser.add_argument("--seed", type=int, default=1, help="of the certificate history's choices")
    args = parser.parse_args(argv)
    result = {"phase": args.name, **PHASES[args.name](args)}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
