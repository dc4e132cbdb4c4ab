"""The job runtime: the broker settings choose, and dramatiq's retries with exponential backoff, in-process."""

from __future__ import annotations

import threading
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from infra.config import Settings
from infra.jobs import Jobs, make_broker


def test_settings_choose_the_broker(tmp_path: Path):
    assert isinstance(make_broker(Settings(data_dir=tmp_path)), StubBroker)
    with pytest.raises(ValueError, match="CSM_REDIS_URL"):
        make_broker(Settings(data_dir=tmp_path, jobs="redis"))
    with pytest.raises(ValueError, match="CSM_JOBS"):
        make_broker(Settings(data_dir=tmp_path, jobs="rabbit"))
    jobs = Jobs.from_settings(Settings(data_dir=tmp_path, job_worker_threads=3))
    assert not jobs.durable and jobs.worker_threads == 3
    jobs.close()


def test_a_failing_job_is_retried_with_backoff_until_it_succeeds(tmp_path: Path):
    jobs = Jobs.from_settings(Settings(data_dir=tmp_path))
    attempts: list[str] = []
    done = threading.Event()

    def flaky(name: str) -> None:
        attempts.append(name)
        if len(attempts) < 3:
            raise dramatiq.Retry(f"attempt {len(attempts)} failed")
        done.set()

    jobs.actor(flaky, name="test.flaky", queue="test", max_retries=5, min_backoff=10, max_backoff=50)
    jobs.start()
    try:
        jobs.send("test.flaky", "x")
        assert done.wait(30), f"attempts so far: {attempts}"
    finally:
        jobs.close()
    assert attempts == ["x", "x", "x"]
    assert not jobs.running


def test_retries_are_bounded(tmp_path: Path):
    jobs = Jobs(StubBroker(), worker_threads=1)
    attempts: list[int] = []

    def always_fails() -> None:
        attempts.append(1)
        raise dramatiq.Retry("no")

    jobs.actor(always_fails, name="test.never", queue="never", max_retries=2, min_backoff=1, max_backoff=5)
    jobs.start()
    try:
        jobs.send("test.never")
        jobs.broker.join("never", fail_fast=False)  # the queue and its delay queue drained: retries included
        jobs._worker.join()
    finally:
        jobs.close()
    assert len(attempts) == 3, "the first attempt and max_retries retries"
    assert len(jobs.broker.dead_letters) == 1, "then the message is failed (dead-lettered)"
