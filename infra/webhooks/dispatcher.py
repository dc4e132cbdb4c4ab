"""The webhook dispatcher: a checkpointed consumer of the event log that turns lifecycle events into delivery jobs.

For every notifiable event (``domain.webhook.NOTIFIABLE``) it finds the tenant's enabled
subscriptions to that type (only those subscribed before the event), writes one delivery row
each and its checkpoint in one transaction, then hands the rows to the job broker. It reads
only as far as the projections have applied, so the subscriptions read model is never behind
the event being dispatched. A restart resumes from the checkpoint: nothing already dispatched
is dispatched again. Final failures become ``webhook.delivery_failed`` events (appended here,
in the process that owns the event store, not by the workers).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time

import msgspec

from commands import webhooks as commands
from commands.ids import uuid7
from commands.runtime import Services
from domain import webhook
from domain.events import EventEnvelope
from infra import telemetry
from infra.jobs import Jobs
from infra.webhooks.delivery import ACTOR
from infra.webhooks.log import DeliveryLog
from projections import webhooks as read_model
from projections.runner import ProjectionRunner
from projections.views_db import ProjectionRebuilding

log = logging.getLogger(__name__)
BATCH = 500
PASSED_OVER_SAVED_EVERY = 1.0  # seconds a checkpoint that notified nobody may stay in memory (see ``_pass_over``)


class WebhookDispatcher:
    def __init__(self, services: Services, runner: ProjectionRunner, deliveries: DeliveryLog, jobs: Jobs, *,
                 source: str, poll_interval: float = 0.5) -> None:
        self.services = services
        self.runner = runner
        self.deliveries = deliveries
        self.jobs = jobs
        self.source = source
        self.poll_interval = poll_interval
        self._views: sqlite3.Connection | None = None
        self._passed_over: int | None = None  # a checkpoint past events that notified nobody, not yet saved
        self._saved_at = time.monotonic()
        self._lock = threading.Lock()  # one pass at a time: a pass on a thread, or the final save

    @property
    def position(self) -> int:
        return self._passed_over if self._passed_over is not None else self.deliveries.checkpoint()

    def _views_conn(self) -> sqlite3.Connection:
        if self._views is None:
            self._views = self.runner.connection()
        return self._views

    def close(self) -> None:
        if self._views is not None:
            self._views.close()
            self._views = None

    # one pass ------------------------------------------------------------------------------
    def dispatch_once(self) -> int:
        """Dispatch the next batch of events the projections have applied. Returns events consumed."""
        with self._lock:
            start, limit = self.position, self.runner.position
            if limit <= start:
                if time.monotonic() - self._saved_at >= PASSED_OVER_SAVED_EVERY:
                    self._save_passed_over()  # idle: what was passed over is saved a second later all the same
                return 0
            if not read_model.any_subscription_before(self._views_conn(), limit):
                self._pass_over(limit)  # nothing to deliver up to the projections' position
                return limit - start
            events = [e for e in self.runner.source.read_all_sync(start, BATCH) if e.global_position <= limit]
            if not events:
                return 0
            rows = [row for event in events if event.type in webhook.NOTIFIABLE for row in self._rows(event)]
            if not rows:
                self._pass_over(events[-1].global_position)
                return len(events)
            self.deliveries.record_dispatch(rows, events[-1].global_position)
            self._passed_over, self._saved_at = None, time.monotonic()
            log.info("webhook notifications dispatched", extra={"deliveries": len(rows)})
            return len(events)

    def _pass_over(self, position: int) -> None:
        """Move past events that notified nobody, saving the checkpoint at most once a second (and at stop).

        Saving it is a synchronous commit, which after every group commit of the log was most of this
        consumer's cost. Losing a checkpoint that was not saved loses nothing: a restart passes over
        the same events again and finds nobody to notify again (a subscription only ever gets events
        after it), so no delivery is missed or doubled.
        """
        self._passed_over = position
        if time.monotonic() - self._saved_at >= PASSED_OVER_SAVED_EVERY:
            self._save_passed_over()

    def _save_passed_over(self) -> None:
        if self._passed_over is not None:
            self.deliveries.record_dispatch([], self._passed_over)
            self._passed_over = None
        self._saved_at = time.monotonic()

    def save(self) -> None:
        """Save the checkpoint now (at stop), once any pass still running on a thread has finished."""
        with self._lock:
            self._save_passed_over()

    def _rows(self, event: EventEnvelope) -> list[tuple]:
        hooks = read_model.subscribers(self._views_conn(), event.tenant_id, event.type, event.global_position)
        if not hooks:
            return []
        body = msgspec.json.encode(webhook.notification(
            event_id=event.event_id, event_type=event.type, source=self.source, occurred_at=event.occurred_at,
            tenant_id=event.tenant_id, stream_id_=event.stream_id, payload=event.payload))
        return [(uuid7(), event.tenant_id, hook, event.event_id, event.type, event.global_position, body)
                for hook in hooks]

    def enqueue_pending(self) -> int:
        """Hand every pending, not yet enqueued delivery to the broker (new ones, and any a failed send left)."""
        sent = 0
        while ids := self.deliveries.to_enqueue():
            for delivery_id in ids:
                self.jobs.send(ACTOR, delivery_id)
            self.deliveries.mark_enqueued(ids)
            sent += len(ids)
        return sent

    async def report_failures(self) -> int:
        """Append ``webhook.delivery_failed`` for each delivery whose last attempt failed (once per delivery)."""
        failures = await asyncio.to_thread(self.deliveries.unreported_failures)
        for row in failures:
            failure = webhook.WebhookDeliveryFailed(
                delivery_id=row["delivery_id"], event_id=row["event_id"], event_type=row["event_type"],
                attempts=row["attempts"], status_code=row["last_status_code"], error=row["last_error"] or "")
            await commands.record_delivery_failure(commands.RecordDeliveryFailure(
                tenant_id=row["tenant_id"], webhook_id=row["webhook_id"], failure=failure), self.services)
            await asyncio.to_thread(self.deliveries.mark_reported, row["delivery_id"])
            telemetry.WEBHOOK_FAILURES.inc()
        return len(failures)

    # the loop ------------------------------------------------------------------------------
    def resume(self) -> None:
        """At start: an in-memory broker lost its queued messages with the last process; queue them again."""
        if not self.jobs.durable:
            self.deliveries.forget_enqueued()

    def step(self) -> int:
        consumed = self.dispatch_once()
        self.enqueue_pending()
        return consumed

    async def run(self) -> None:
        """Follow the log for ever; cancel the task to stop."""
        await asyncio.to_thread(self.resume)
        while True:
            try:
                consumed = await asyncio.to_thread(self.step)
                await self.report_failures()
            except asyncio.CancelledError:
                raise
            except ProjectionRebuilding:  # the subscriptions are being rebuilt: nothing is passed over meanwhile
                consumed = 0
                await asyncio.sleep(1.0)
            except Exception:
                log.exception("webhook dispatch failed; will retry")
                consumed = 0
                await asyncio.sleep(1.0)
            if not consumed or self._passed_over is not None:  # caught up, or it notified nobody: no hurry
                await asyncio.sleep(self.poll_interval)
