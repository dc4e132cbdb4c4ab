"""The listening socket a multi-worker ``csm serve`` shares (api/workers.bind), as the workers' event loop uses it."""

from __future__ import annotations

import asyncio
import socket

from api.workers import bind


async def _accepted_socket_options() -> tuple[int, int]:
    """(TCP_NODELAY, protocol number) of a connection accepted on a socket from ``bind``."""
    listening = bind("127.0.0.1", 0)
    port = listening.getsockname()[1]
    accepted: asyncio.Future = asyncio.get_running_loop().create_future()

    class Capture(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            accepted.set_result((sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), sock.proto))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Capture, sock=listening)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await asyncio.wait_for(accepted, 10)
        finally:
            writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_connections_accepted_by_a_worker_send_without_nagle_delay():
    """asyncio turns Nagle off only for sockets that say they are TCP; a socket made with protocol 0 left it on,
    and a response written in two parts waited for the client's delayed ACK (40 ms)."""
    nodelay, proto = await _accepted_socket_options()
    assert proto == socket.IPPROTO_TCP
    assert nodelay != 0


def test_the_socket_is_inherited_by_the_workers_and_listens():
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.get_inheritable()
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    finally:
        sock.close()
