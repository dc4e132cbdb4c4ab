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
``replay``          read_all over the whole log (decoding every envelope).
``verify``          infra.bootstrap.verify_store (every chain, every checkpoint and signature).
``rebuild``         ProjectionRunner.rebuild(NAME) into a fresh views database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from domain.events import Actor, to_payload_dict
from domain.tenant import Quotas, TenantCreated, TenantRenamed
from infra.config import Settings

ACTOR = Actor(principal="bench:writer", auth_method="internal")


def tenant_stream(i: int) -> tuple[str, str]:
    tenant_id = f"bench-{i:07d}"
    return tenant_id, f"tenant-{tenant_id}"


def tenant_event(tenant_id: str, version: int, correlation_id: str) -> NewEvent:
    """A realistic event: the tenant's creation, then renames (as the tenants projector expects)."""
    if version == 0:
        payload = TenantCreated(tenant_id=tenant_id, name=f"Tenant {tenant_id}", quotas=Quotas(max_cas=10))
    else:
        payload = TenantRenamed(old_name=f"Tenant {tenant_id} r{version - 1}", new_name=f"Tenant {tenant_id} r{version}")
    return NewEvent(event_id=uuid7(), type=payload.event_type, schema_version=payload.schema_version,
                    occurred_at=rfc3339(datetime.now(UTC)), actor=ACTOR, correlation_id=correlation_id,
                    causation_id=None, payload=to_payload_dict(payload))


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

async def _appenders(store, writers: int, events: int, per_append: int, *, seal_every: int = 0,
                     seal=None) -> dict:
    """``writers`` tasks, one stream each, append ``events`` in all, ``per_append`` at a time.

    With ``seal_every``, the writers pause after every that many events while ``seal()`` writes the
    checkpoints (untimed): the dataset then has a checkpoint every ``seal_every`` events.
    """
    appends_total = events // per_append
    latencies = array("d")
    versions = [0] * writers
    correlations = [uuid7() for _ in range(writers)]
    commits0, committed0 = commit_stats()

    async def writer(index: int, appends: int) -> None:
        tenant_id, stream_id = tenant_stream(index)
        version, correlation = versions[index], correlations[index]
        for _ in range(appends):
            batch = [tenant_event(tenant_id, version + k, correlation) for k in range(per_append)]
            request = AppendRequest(tenant_id=tenant_id, stream_id=stream_id, stream_type="tenant",
                                    expected_version=version, events=batch)
            started = time.perf_counter()
            result = await store.append(request)
            latencies.append(time.perf_counter() - started)
            version = result.version
        versions[index] = version

    seconds = seal_seconds = 0.0
    sealed = checkpoints = 0
    chunk = max(1, seal_every // per_append) if seal_every else appends_total
    remaining = appends_total
    while remaining:
        appends = min(chunk, remaining)
        share, extra = divmod(appends, writers)
        started = time.perf_counter()
        await asyncio.gather(*(writer(i, share + (1 if i < extra else 0)) for i in range(writers)))
        seconds += time.perf_counter() - started
        remaining -= appends
        if seal is not None:
            started = time.perf_counter()
            written, covered = seal()
            seal_seconds += time.perf_counter() - started
            checkpoints += written
            sealed += covered
    commits1, committed1 = commit_stats()
    commits, committed = commits1 - commits0, committed1 - committed0
    done = appends_total * per_append
    result = {"events": done, "appends": appends_total, "writers": writers, "events_per_append": per_append,
              "seconds": seconds, "events_per_second": done / seconds, "commits": int(commits),
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
            def seal() -> tuple[int, int]:
                before = _sealed_to(store)
                written = runtime.checkpointer.seal_all()
                return written, _sealed_to(store) - before

            result = asyncio.run(_appenders(store, args.writers, args.events,
                                            10 if args.name == "append-batch" else 1,
                                            seal_every=args.seal_every if runtime else 0,
                                            seal=seal if runtime else None))
    finally:
        runtime.close() if runtime else store.close()
    return result


# reads, verification, projections ---------------------------------------------------------

def _sealed_to(store) -> int:
    from domain.events import decode_payload
    checkpoints = [e for e in store.read_stream_sync("_system", "audit-ledger") if e.type == "audit.checkpoint"]
    return decode_payload(checkpoints[-1]).to_position if checkpoints else 0




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
    from infra.bootstrap import verify_store
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


def phase_rebuild(args) -> dict:
    from infra.eventstore.sqlite import SQLiteEventStore
    from projections.registry import all_projectors
    from projections.runner import ProjectionRunner
    views = args.dir / f"bench-views-{args.projection}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{views}{suffix}").unlink(missing_ok=True)
    with SQLiteEventStore(args.dir / "events.db") as store:
        runner = ProjectionRunner(store, views, all_projectors()).open()
        try:
            result = runner.rebuild(args.projection)
        finally:
            runner.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{views}{suffix}").unlink(missing_ok=True)
    return {"projection": args.projection, "events": result["events"], "seconds": result["seconds"],
            "events_per_second": result["events_per_second"]}


PHASES = {
    "append-single": phase_append, "append-batch": phase_append, "append-contended": phase_append,
    "replay": phase_replay, "verify": phase_verify, "rebuild": phase_rebuild,
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
    args = parser.parse_args(argv)
    result = {"phase": args.name, **PHASES[args.name](args)}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
