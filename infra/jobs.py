"""The background-job runtime: one dramatiq broker made from settings, the actors declared on it, its worker.

``jobs = "in-process"`` (the embedded default) uses dramatiq's in-memory ``StubBroker`` and a
``Worker`` running threads in this process, started and stopped with the app. ``jobs = "redis"``
uses a ``RedisBroker`` at ``redis_url``: messages survive a restart, and any number of
``csm worker`` processes may consume them. Each ``Jobs`` owns its broker (never dramatiq's global
one), so several runtimes can live in one process. Retries are dramatiq's ``Retries``
middleware: an actor that raises is retried with exponential backoff, bounded by ``max_retries``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import q_name
from dramatiq.middleware import (AgeLimit, Callbacks, Middleware, Pipelines, Retries, ShutdownNotifications,
                                 TimeLimit)

from infra import telemetry
from infra.config import Settings

log = logging.getLogger(__name__)
KINDS = ("in-process", "redis")
REDIS_NAMESPACE = "csm-jobs"
# How often (ms) an idle worker looks at its queues and at delayed (backing-off) messages.
WORKER_POLL_MS = 100


class JobMetrics(Middleware):
    """Counts each attempt in ``csm_jobs_total`` (and its time in ``csm_job_seconds``) in the process that runs it.

    After ``Retries`` in the chain: by then a failed attempt is marked failed for good, or left to be retried."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()

    def before_process_message(self, broker, message) -> None:
        with self._lock:
            self._started[message.message_id] = time.monotonic()

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        with self._lock:
            started = self._started.pop(message.message_id, None)
        if started is not None:
            telemetry.JOB_SECONDS.labels(q_name(message.queue_name)).observe(time.monotonic() - started)
        outcome = "ok" if exception is None else "failed" if message.failed else "retried"
        telemetry.JOBS.labels(q_name(message.queue_name), message.actor_name, outcome).inc()

    def after_skip_message(self, broker, message) -> None:  # too old to run (AgeLimit): it will not be done
        telemetry.JOBS.labels(q_name(message.queue_name), message.actor_name, "skipped").inc()


def _middleware() -> list:
    # dramatiq's defaults, built here so no Prometheus exporter or other global state comes along; our own counts.
    return [AgeLimit(), TimeLimit(), ShutdownNotifications(), Callbacks(), Pipelines(), Retries(), JobMetrics()]


def make_broker(settings: Settings) -> dramatiq.Broker:
    """The broker ``settings.jobs`` names; "redis" needs ``redis_url``."""
    if settings.jobs == "in-process":
        return StubBroker(middleware=_middleware())
    if settings.jobs == "redis":
        if not settings.redis_url:
            raise ValueError("CSM_JOBS=redis needs CSM_REDIS_URL")
        from dramatiq.brokers.redis import RedisBroker  # imports redis: only when configured

        return RedisBroker(url=settings.redis_url, namespace=REDIS_NAMESPACE, middleware=_middleware())
    raise ValueError(f"CSM_JOBS must be one of {', '.join(KINDS)}, not {settings.jobs!r}")


class Jobs:
    """A broker, the actors declared on it, and (once started) a worker consuming its queues."""

    def __init__(self, broker: dramatiq.Broker, *, worker_threads: int = 2, durable: bool = False) -> None:
        self.broker = broker
        self.worker_threads = worker_threads
        self.durable = durable  # messages outlive this process (Redis); the in-memory broker's do not
        self._worker: dramatiq.Worker | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Jobs:
        return cls(make_broker(settings), worker_threads=max(settings.job_worker_threads, 0),
                   durable=settings.jobs == "redis")

    def actor(self, fn: Callable[..., Any], *, name: str, queue: str = "default", **options: Any) -> dramatiq.Actor:
        """Declare ``fn`` as actor ``name`` on this broker (options: max_retries, min_backoff, max_backoff, …)."""
        return dramatiq.Actor(fn, broker=self.broker, actor_name=name, queue_name=queue, priority=0,
                              options=options)

    def send(self, actor_name: str, *args: Any, **kwargs: Any) -> None:
        """Enqueue a message for a declared actor."""
        self.broker.get_actor(actor_name).send(*args, **kwargs)

    @property
    def running(self) -> bool:
        return self._worker is not None

    def start(self, threads: int | None = None) -> None:
        """Start consuming every declared queue with ``threads`` worker threads (default: the configured count)."""
        threads = self.worker_threads if threads is None else threads
        with self._lock:
            if self._worker is not None or threads <= 0:
                return
            worker = dramatiq.Worker(self.broker, worker_threads=threads, worker_timeout=WORKER_POLL_MS)
            worker.start()
            self._worker = worker

    def stop(self, timeout_ms: int = 10_000) -> None:
        """Stop the worker (waiting up to ``timeout_ms`` for messages in progress); safe to call twice."""
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop(timeout=timeout_ms)

    def close(self) -> None:
        self.stop()
        self.broker.close()


def run_worker(jobs: Jobs, threads: int, stop: threading.Event) -> None:
    """Consume until ``stop`` is set (``csm worker``: set by SIGINT/SIGTERM)."""
    jobs.start(threads)
    log.info("job worker started", extra={"threads": threads, "queues": sorted(jobs.broker.get_declared_queues())})
    try:
        stop.wait()
    finally:
        jobs.stop()
