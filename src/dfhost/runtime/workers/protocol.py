"""The frames between the host and a worker process: a 4-byte length, then a pickle.

Pickle because both ends are this package in the same interpreter and what travels is the
host's own dataclasses (activity tasks, history events, episode inputs and results); it is
never read from anywhere but the socket pair the host created for its own child.

Host to worker: `(kind, request id, *arguments)`, kind one of the `Request` names, or
`("stop",)`. Worker to host: `("ready", pid, [load error lines], {function: kind})`,
`("done", request id, ok, value)` (value: the result, or with ok False an error text) and
`("log", record dict)`.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
from typing import Any

__all__ = ["HEADER", "decode", "encode", "read_frame", "recv_frame"]

HEADER = struct.Struct("!I")


def encode(message: tuple[Any, ...]) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> tuple[Any, ...]:
    message = pickle.loads(body)
    assert isinstance(message, tuple)
    return message


async def read_frame(reader: asyncio.StreamReader) -> tuple[Any, ...]:
    """The next message; raises `asyncio.IncompleteReadError` once the peer is gone."""
    (length,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    return decode(await reader.readexactly(length))


def recv_frame(sock: socket.socket) -> tuple[Any, ...] | None:
    """The next message from a blocking socket; None once the peer is gone."""
    header = _recv_exactly(sock, HEADER.size)
    if header is None:
        return None
    body = _recv_exactly(sock, HEADER.unpack(header)[0])
    return None if body is None else decode(body)


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(min(size - len(chunks), 1 << 20))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)
