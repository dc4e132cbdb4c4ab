"""A multi-worker ``csm serve``: a supervisor, one primary process, and N HTTP worker processes.

SQLite takes one writer at a time, and one Python process uses about one core. So with
``CSM_WORKERS`` > 1 the work is split:

- the **supervisor** (the ``csm serve`` process) binds the listening socket, starts the others,
  restarts any that dies, and on SIGTERM/SIGINT stops the workers (graceful), then the primary;
- the **primary** owns every write to ``events.db`` (the writer thread: group commit, hash chain,
  witness), runs the projection runner, the audit checkpointer, the CRL and renewal schedulers,
  the webhook dispatcher and its jobs, and the in-memory rate-limit buckets; it serves the
  workers over ``infra/primary_link_server.py`` and no HTTP;
- each **worker** runs the Litestar app under uvicorn on the shared socket (the kernel spreads
  connections): it parses, authenticates, authorises, checks policy, signs, and reads
  ``events.db`` and ``views.db`` itself; its appends go to the primary, which answers once they
  are durable, and pushes every commit and projection step back, for read-your-writes and SSE.

Prometheus metrics are collected across the processes (``PROMETHEUS_MULTIPROC_DIR`` under
``data_dir/run``), so ``/metrics`` from any worker covers all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import time
from pathlib import Path

from infra.config import Settings
from infra.data_lock import PRIMARY_SOCKET, RUN_DIR, hold_while_running

log = logging.getLogger(__name__)

STARTUP_SECONDS = 300.0  # opening the store and read models (a changed read model is rebuilt after, while serving)
STOP_SECONDS = 30.0  # after SIGTERM, before a process that has not stopped is killed
RESTART_BACKOFF_MAX = 10.0


def run_dir(settings: Settings) -> Path:
    return settings.data_dir / RUN_DIR


def link_path(settings: Settings) -> Path:
    return run_dir(settings) / PRIMARY_SOCKET


def bind(host: str, port: int) -> socket.socket:
    """The listening socket every worker accepts on (as uvicorn binds it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose protocol says TCP; without it
    # Nagle's algorithm held a response's second write for the client's delayed ACK, 40 ms (p99 of paced reads)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.set_inheritable(True)
    return sock


# the processes ---------------------------------------------------------------------------
def _die_with_parent(parent: int) -> None:
    """Ask Linux for SIGTERM when the supervisor dies (even by SIGKILL): no orphan keeps the port or the log."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def primary_main(settings: Settings, path: Path, parent: int) -> None:
    """The primary process: the runtime's writer and background work, and the link server."""
    from infra.telemetry import configure_logging

    _die_with_parent(parent)
    hold_while_running(settings.data_dir)  # its own hold: it may outlive a supervisor killed by SIGKILL
    configure_logging(settings.log_level)
    try:  # uvloop here only: the primary serves its few long-lived worker links, not clients (api/server.py)
        import uvloop

        uvloop.run(_primary(settings, path))
    except ImportError:
        asyncio.run(_primary(settings, path))


async def _primary(settings: Settings, path: Path) -> None:
    from api.ratelimit import MemoryBackend, Rate
    from infra.bootstrap import freeze_startup_heap, initialise
    from infra.primary_link_server import LinkServer

    limiter = MemoryBackend()

    async def rate_hit(key: str, limit: int, period: float) -> tuple:
        decision = await limiter.hit(key, Rate(limit, period))
        return decision.allowed, decision.remaining, decision.reset_after, decision.retry_after

    runtime = await asyncio.to_thread(initialise, settings, rebuild="background")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # Ctrl+C reaches every process of the group at once: the primary must outlive the workers' last requests,
    # so it stops only when the supervisor sends SIGTERM, after the workers have stopped.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    runtime.start_background()
    server = LinkServer(path, runtime.store, runtime.runner, rate_hit=rate_hit, quotas=runtime.services.quota_ledger)
    await server.start()
    freeze_startup_heap()
    pid_file = path.with_name("primary.pid")
    pid_file.write_text(f"{os.getpid()}\n")
    log.info("primary process ready", extra={"link": str(path)})
    try:
        await stop.wait()
        # Stopped by the supervisor, the workers are gone already; stopped because the supervisor died, they
        # got SIGTERM too: their last requests still need the writer, so wait for them to hang up first.
        await server.wait_idle(STOP_SECONDS - 5)
    finally:
        await server.stop()
        await runtime.stop()  # a final checkpoint, then the store closes
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()


def worker_main(settings: Settings, sock: socket.socket, path: Path, parent: int) -> None:
    """An HTTP worker: the app under uvicorn on the shared socket, linked to the primary."""
    from api.app import create_app
    from api.server import build_server
    from infra.bootstrap import freeze_startup_heap
    from infra.primary_link_client import LinkClient
    from infra.telemetry import configure_logging

    _die_with_parent(parent)
    hold_while_running(settings.data_dir)  # it writes keys.db and artifacts.db itself, until its last request ends
    configure_logging(settings.log_level)
    link = LinkClient(path, on_progress=lambda progress: None)
    server = build_server(settings, create_app(settings, link))
    freeze_startup_heap()  # the modules and the app; the runtime opens in the app's lifespan
    server.run(sockets=[sock])


# the supervisor --------------------------------------------------------------------------
class Supervisor:
    """Starts the primary and the workers, restarts what dies, and stops them in order."""

    def __init__(self, settings: Settings, sock: socket.socket | None = None) -> None:
        self.settings = settings
        self.context = multiprocessing.get_context("spawn")  # a fresh interpreter: no state shared by fork
        self.stopping = False
        self.primary: multiprocessing.process.BaseProcess | None = None
        self.workers: list[multiprocessing.process.BaseProcess | None] = []
        self._restarts: dict[str, list[float]] = {}
        self.sock = sock

    def _start_primary(self) -> None:
        self.primary = self.context.Process(target=primary_main, name="csm-primary", daemon=False,
                                            args=(self.settings, link_path(self.settings), os.getpid()))
        self.primary.start()

    def _start_worker(self, index: int) -> None:
        process = self.context.Process(target=worker_main,
                                       args=(self.settings, self.sock, link_path(self.settings), os.getpid()),
                                       name=f"csm-worker-{index}", daemon=False)
        process.start()
        self.workers[index] = process

    def _wait_for_primary(self) -> bool:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline and not self.stopping:
            if self.primary is None or not self.primary.is_alive():
                return False
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(link_path(self.settings)))
                return True
            time.sleep(0.05)
        return False

    def _backoff(self, name: str) -> float:
        """Seconds to wait before restarting ``name``: none at first, growing if it keeps dying."""
        now = time.monotonic()
        recent = [t for t in self._restarts.get(name, []) if now - t < 60] + [now]
        self._restarts[name] = recent
        return min(RESTART_BACKOFF_MAX, 0.5 * (2 ** (len(recent) - 2))) if len(recent) > 1 else 0.0

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True

    def run(self) -> int:
        settings = self.settings
        directory = run_dir(settings)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        metrics = directory / "metrics"
        shutil.rmtree(metrics, ignore_errors=True)
        metrics.mkdir(mode=0o700)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)  # inherited; read when a child imports the client
        if self.sock is None:
            self.sock = bind(settings.host, settings.port)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._start_primary()
            if not self._wait_for_primary():
                if self.stopping:
                    return self._stop()
                log.error("the primary process did not start", extra={"exitcode": self.primary.exitcode})
                self._stop()
                return 1
            self.workers = [None] * settings.workers
            for index in range(settings.workers):
                self._start_worker(index)
            log.info("serving", extra={"workers": settings.workers, "primary_pid": self.primary.pid,
                                       "worker_pids": [w.pid for w in self.workers]})
            while not self.stopping:
                time.sleep(0.2)
                self._replace_the_dead()
            return self._stop()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if self.sock is not None:
                self.sock.close()

    def _replace_the_dead(self) -> None:
        if self.primary is not None and not self.primary.is_alive():
            log.error("the primary process exited; restarting it", extra={"exitcode": self.primary.exitcode})
            time.sleep(self._backoff("primary"))
            self._start_primary()
            self._wait_for_primary()
        for index, worker in enumerate(self.workers):
            if worker is not None and not worker.is_alive() and not self.stopping:
                log.error("a worker process exited; restarting it", extra={"worker": index,
                                                                            "exitcode": worker.exitcode})
                _mark_dead(worker.pid)
                time.sleep(self._backoff(f"worker-{index}"))
                self._start_worker(index)

    def _stop(self) -> int:
        """Workers first (they finish their requests), then the primary (it seals a final checkpoint)."""
        self.stopping = True
        live = [w for w in self.workers if w is not None and w.is_alive()]
        _terminate(live)
        if self.primary is not None and self.primary.is_alive():
            _terminate([self.primary])
        clean = self.primary is None or self.primary.exitcode in (0, -signal.SIGTERM)
        return 0 if clean else 1


def _terminate(processes: list) -> None:
    for process in processes:
        with contextlib.suppress(Exception):
            process.terminate()
    deadline = time.monotonic() + STOP_SECONDS
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            log.error("a process did not stop in time; killing it", extra={"pid": process.pid})
            process.kill()
            process.join(5)


def _mark_dead(pid: int | None) -> None:
    """Drop a dead worker's live gauges from the shared metrics."""
    if pid is None:
        return
    with contextlib.suppress(Exception):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def supervise(settings: Settings, sock: socket.socket | None = None) -> int:
    """Run a multi-worker server until SIGTERM or SIGINT; the exit status is 0 after a clean stop.

    ``sock``: the listening socket, already bound (api.server.listen); else bound from the settings."""
    return Supervisor(settings, sock).run()
