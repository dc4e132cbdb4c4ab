"""The deployment's moving parts chosen by settings: which event store, and what feeds the projections.

``CSM_STORE`` picks SQLite or Cassandra, ``CSM_BUS`` the local tail of the store's log or
Kafka (an outbox relay publishes the log; projectors consume the topic in a consumer group),
``CSM_PROJECTOR`` whether this process runs the projections (and, on Kafka, the relay) or
only follows the checkpoints a ``csm projector`` process writes.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Coroutine
from typing import Any

from infra import telemetry
from infra.config import Settings, validate_distributed
from infra.eventstore.sqlite import SQLiteEventStore, check_immutable
from projections.runner import ProjectionRunner

log = logging.getLogger(__name__)
RETRY_SECONDS = 2.0  # between attempts to reach a broker that is down


def open_store(settings: Settings) -> Any:
    """The configured event store, open (SQLite or Cassandra: the same port, commands/ports.py)."""
    validate_distributed(settings)
    if settings.store == "cassandra":
        from infra.eventstore.cassandra import CassandraEventStore  # cassandra-driver: only when configured

        return CassandraEventStore.from_settings(settings.cassandra, poll_interval=settings.poll_interval,
                                                 witness_path=settings.witness_file).connect()
    return SQLiteEventStore(settings.events_db, poll_interval=settings.poll_interval,
                            witness_path=settings.witness_file).open()


def read_only_store(settings: Settings, *, immutable: bool = False) -> Any:
    """A store to read from (verify, export, status) without appending: SQLite unopened and read with ``mode=ro``
    (the file is never changed, not even its journal mode), Cassandra connected. ``immutable``: a file nothing
    writes, in a directory this process cannot write (a backup on read-only media); ImmutableUnsafe if a journal
    beside it has content."""
    validate_distributed(settings)
    if settings.store == "cassandra":
        return open_store(settings)
    if immutable:
        check_immutable(settings.events_db)
    return SQLiteEventStore(settings.events_db, witness_path=settings.witness_file, read_only=True,
                            immutable=immutable)


def close_store(store: Any) -> None:
    """Close either store from synchronous code (the Cassandra store's ``close`` is a coroutine)."""
    getattr(store, "close_sync", store.close)()


def relay_checkpoint(settings: Settings, store: Any):
    """Where the relay records its published position: the store's own table, else ``outbox.db``."""
    from infra.bus.kafka import SQLiteRelayCheckpoint

    own = getattr(store, "relay_checkpoint", None)
    return own("outbox") if own is not None else SQLiteRelayCheckpoint(settings.outbox_db, "outbox")


def projection_tasks(settings: Settings, store: Any, runner: ProjectionRunner) -> list[tuple[str, Coroutine]]:
    """The coroutines, named, that keep this process's read models current, per ``CSM_PROJECTOR`` and ``CSM_BUS``:
    the tail ("projections"), the outbox relay, and the rebuild of any read model whose projector changed."""
    if settings.projector == "external":
        return [("projections", runner.follow_checkpoints())]
    if settings.bus == "kafka":
        return [("projections", run_kafka_projections(settings, runner)), ("outbox", run_outbox_relay(settings, store)),
                ("rebuild", runner.rebuild_pending())]
    return [("projections", runner.run()), ("rebuild", runner.rebuild_pending())]


async def run_outbox_relay(settings: Settings, store: Any) -> None:
    """Publish the store's log to Kafka for ever, reconnecting while the broker is down."""
    from aiokafka.errors import KafkaError

    from infra.bus.kafka import OutboxRelay

    while True:
        relay = OutboxRelay(store, settings.kafka, relay_checkpoint(settings, store),
                            poll_interval=settings.poll_interval)
        try:
            await relay.start()
            await relay.run()
        except (KafkaError, OSError, sqlite3.Error) as exc:
            telemetry.PROJECTOR_RESTARTS.labels("outbox").inc()
            log.warning("outbox relay stopped; restarting", extra={"error": repr(exc)})
        finally:
            await relay.stop()
        await asyncio.sleep(RETRY_SECONDS)


async def run_kafka_projections(settings: Settings, runner: ProjectionRunner) -> None:
    """Apply the topic to the read models in the configured consumer group, reconnecting on failure."""
    from aiokafka.errors import KafkaError

    from infra.bus.kafka import KafkaFeed

    while True:
        feed = KafkaFeed(settings.kafka)
        try:
            await feed.start()
            await runner.run_delivered(feed)
        except (KafkaError, OSError) as exc:
            telemetry.PROJECTOR_RESTARTS.labels("projections").inc()
            log.warning("kafka projection feed stopped; restarting", extra={"error": repr(exc)})
        finally:
            await feed.stop()
        await asyncio.sleep(RETRY_SECONDS)
