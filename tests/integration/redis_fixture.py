"""A real redis-server on a random loopback port, with its own data dir, for the tests that need Redis."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

SKIP_REASON = "redis-server is not installed (Debian package redis-server; `make sysdeps` installs it)"


def redis_server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    return "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(workdir) -> tuple[subprocess.Popen, str]:
    """Start redis-server (no persistence, loopback only); (process, url). Skips when it is not installed."""
    binary = redis_server_binary()
    if binary is None:
        pytest.skip(SKIP_REASON)
    for _ in range(3):  # the free port may be taken between probing and binding: try another
        port = _free_port()
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir), "--logfile", str(workdir / "redis.log"), "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            if _answers(port):
                return process, f"redis://127.0.0.1:{port}/0"
            time.sleep(0.05)
        stop(process)
    raise RuntimeError(f"redis-server did not start; see {workdir / 'redis.log'}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def redis_url(tmp_path):
    """The URL of a fresh redis-server, stopped afterwards."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    process, url = start_redis(workdir)
    try:
        yield url
    finally:
        stop(process)
