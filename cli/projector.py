"""`csm projector`: a process that keeps the read models current (and, on the Kafka bus, runs the outbox relay)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import time
from pathlib import Path

import click

from cli.common import CliError
from cli.metrics_endpoint import metrics_endpoint_options, start_metrics
from infra.bootstrap import initialise
from infra.config import Settings
from infra.data_lock import DataDirUnavailable, hold_while_running
from infra.distributed import projection_tasks
from infra.metrics_server import ProjectorMetrics

HEARTBEAT_FILE = "projector.alive"  # touched every poll interval: the container's health check reads its age


@click.command()
@click.option("--heartbeat-max-age", type=float, default=None, metavar="SECONDS",
              help="Do not run: exit 0 if a running projector's heartbeat is younger than SECONDS, else 1.")
@metrics_endpoint_options
@click.pass_obj
def projector(settings: Settings, heartbeat_max_age: float | None, metrics_host: str,
              metrics_port: int | None) -> None:
    """Run the projections until SIGINT or SIGTERM: from the store's log (CSM_BUS=local) or from Kafka
    (CSM_BUS=kafka: this process also publishes the store's log to the topic through the outbox relay).

    API processes started with CSM_PROJECTOR=external then only follow its checkpoints. With --metrics-port it
    serves /metrics: position and lag per projection, batches and events applied, failures and restarts.
    """
    heartbeat = settings.data_dir / HEARTBEAT_FILE
    if heartbeat_max_age is not None:
        try:
            fresh = time.time() - heartbeat.stat().st_mtime <= heartbeat_max_age
        except OSError:
            fresh = False
        raise SystemExit(0 if fresh else 1)
    settings = dataclasses.replace(settings, projector="inline")
    try:
        hold_while_running(settings.data_dir)  # until this process ends: `csm restore` refuses meanwhile
        runtime = initialise(settings, rebuild="background")
    except (ValueError, DataDirUnavailable) as exc:
        raise CliError(str(exc)) from None
    click.echo(f"projector: store {settings.store}, bus {settings.bus} (data {settings.data_dir})", err=True)
    try:
        metrics = start_metrics(settings, metrics_host, metrics_port, [ProjectorMetrics(runtime.runner)])
    except CliError:
        runtime.close()
        raise
    try:
        asyncio.run(_run(runtime, heartbeat))
    finally:
        if metrics is not None:
            metrics.stop()
        runtime.close()
    click.echo("stopped", err=True)


async def _run(runtime, heartbeat: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    tasks = [asyncio.create_task(work, name=name)
             for name, work in projection_tasks(runtime.settings, runtime.store, runtime.runner)]
    try:
        while not stop.is_set():
            for task in tasks:  # a tail runs for ever: one that ended failed, so surface its error and stop
                if task.done() and task.exception():  # (rebuild_pending ends, without one, when it has rebuilt)
                    raise task.exception()
            heartbeat.touch()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(runtime.settings.poll_interval * 4):
                    await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
