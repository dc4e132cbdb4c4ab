"""infra/metrics_server.py against clients that misbehave: a connection that sends nothing, or too many at once,
must not hold the projector's or worker's /metrics threads for good."""

from __future__ import annotations

import socket
import urllib.request

from infra.metrics_server import MetricsServer


def _idle(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=60)
    sock.sendall(b"GET /metrics HTTP/1.1\r\n")  # a request that never ends its headers
    return sock


def test_a_connection_that_never_finishes_its_request_is_closed():
    server = MetricsServer("127.0.0.1", 0, token=None, request_timeout=1).start()
    try:
        sock = _idle(server.address)
        try:
            assert sock.recv(1024) == b""  # closed by the server (a hang raises TimeoutError after 60 s)
        finally:
            sock.close()
    finally:
        server.stop()


def test_connections_beyond_the_limit_are_closed_at_once_and_the_server_still_answers_later():
    server = MetricsServer("127.0.0.1", 0, token=None, request_timeout=60, max_connections=2).start()
    try:
        held = [_idle(server.address) for _ in range(2)]
        extra = _idle(server.address)
        assert extra.recv(1024) == b""  # refused while two are held (a hang raises TimeoutError)
        extra.close()
        for sock in held:
            sock.close()
        host, port = server.address
        for _ in range(50):  # the held ones' threads end once their peers closed
            try:
                with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=60) as answer:
                    assert answer.status == 200
                    break
            except (ConnectionError, urllib.error.URLError):
                continue
        else:
            raise AssertionError("no scrape answered after the idle connections closed")
    finally:
        server.stop()
