"""`csm worker`: a background-job worker process for the Redis broker (webhook deliveries, ACME validations)."""

from __future__ import annotations

import signal
import threading

import click

from cli.common import CliError
from cli.metrics_endpoint import metrics_endpoint_options, start_metrics
from infra.bootstrap import open_job_worker
from infra.config import Settings
from infra.data_lock import DataDirUnavailable, hold_while_running
from infra.jobs import run_worker


@click.command()
@click.option("--threads", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Worker threads (each runs one job at a time).")
@metrics_endpoint_options
@click.pass_obj
def worker(settings: Settings, threads: int, metrics_host: str, metrics_port: int | None) -> None:
    """Consume the job queues on Redis (CSM_JOBS=redis, CSM_REDIS_URL) until SIGINT or SIGTERM.

    Run it on a machine that sees the data directory (the delivery log, the read models and the
    key vault); the API process enqueues, any number of workers deliver. With --metrics-port it serves
    /metrics: job attempts per queue, actor and outcome, and their duration.
    """
    if not settings.events_db.exists():
        raise CliError(f"{settings.data_dir} is not initialised: run `csm init` (or `csm serve`) first")
    try:
        hold_while_running(settings.data_dir)  # it writes webhooks.db: `csm restore` refuses while it runs
        job_worker = open_job_worker(settings)
    except (ValueError, DataDirUnavailable) as exc:
        raise CliError(str(exc)) from None
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    click.echo(f"job worker: {threads} threads on {settings.jobs} (data {settings.data_dir})", err=True)
    try:
        metrics = start_metrics(settings, metrics_host, metrics_port)
    except CliError:
        job_worker.close()
        raise
    try:
        run_worker(job_worker.jobs, threads, stop)
    finally:
        if metrics is not None:
            metrics.stop()
        job_worker.close()
    click.echo("stopped", err=True)
