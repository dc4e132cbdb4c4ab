"""Helpers of the Kafka bus tests: a projector that records every application, and a projector process.

``AppliedProjector`` inserts one row per (stream, version) with no ``OR IGNORE``: applying an
event twice fails the batch, so "exactly once in effect" is checked by the database itself.
Run as a script, this module is a projector process (killed and restarted by the tests).
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

from domain.events import EventEnvelope
from projections.base import Projector


class AppliedProjector(Projector):
    name = "applied"
    version = 1
    tables = ("applied",)
    ddl = ("""CREATE TABLE IF NOT EXISTS {applied} (position INTEGER PRIMARY KEY, stream_id TEXT NOT NULL,
              version INTEGER NOT NULL, UNIQUE (stream_id, version))""",)

    def apply(self, conn: sqlite3.Connection, event: EventEnvelope) -> None:
        conn.execute(f"INSERT INTO {self.t('applied')} VALUES (?, ?, ?)",
                     (event.global_position, event.stream_id, event.version))


def applied_positions(views: Path) -> list[int]:
    if not views.exists():
        return []
    conn = sqlite3.connect(views, timeout=30)
    try:
        return [row[0] for row in conn.execute("SELECT position FROM applied ORDER BY position")]
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        conn.close()


async def run_projector(events_db: str, views_db: str, servers: str, topic: str, group: str) -> None:
    from infra.bus.kafka import KafkaFeed
    from infra.service_settings import KafkaSettings
    from infra.eventstore.sqlite import SQLiteEventStore
    from projections.runner import ProjectionRunner

    settings = KafkaSettings(bootstrap_servers=servers, topic=topic, group_id=group, idempotent_producer=False)
    with SQLiteEventStore(events_db) as store:
        runner = ProjectionRunner(store, views_db, [AppliedProjector()]).open()
        feed = await KafkaFeed(settings, max_records=7).start()
        print("ready", flush=True)
        try:
            await runner.run_delivered(feed)
        finally:
            await feed.stop()
            runner.close()


if __name__ == "__main__":
    asyncio.run(run_projector(*sys.argv[1:6]))
