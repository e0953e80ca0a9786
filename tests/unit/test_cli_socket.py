"""The socket `dfhost start` serves on: its connections send each write at once."""

from __future__ import annotations

import asyncio
import socket

from dfhost.cli.main import _bind
from tests.waiting import eventually


async def test_the_hosts_connections_do_not_wait_for_delayed_acks() -> None:
    # Without TCP_NODELAY, Nagle's algorithm held a response's second write (its body) until
    # the client's delayed ACK of the first: 40 ms per request on a keep-alive connection.
    nodelay: list[int] = []

    def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = writer.get_extra_info("socket")
        nodelay.append(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    sock = _bind("127.0.0.1", 0)
    server = await asyncio.start_server(accepted, sock=sock)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        await eventually(lambda: nodelay, what="the connection accepted")
        writer.close()
        assert nodelay[0] != 0
    finally:
        server.close()
        await server.wait_closed()
