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

import pickle
import struct
from typing import Any

__all__ = ["HEADER", "FrameBuffer", "decode", "encode"]

HEADER = struct.Struct("!I")


def encode(message: tuple[Any, ...]) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> tuple[Any, ...]:
    message = pickle.loads(body)
    assert isinstance(message, tuple)
    return message


class FrameBuffer:
    """Splits a byte stream into messages, however it arrives in pieces."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[Any, ...]]:
        """The messages `data` completes, in order."""
        buffer = self._buffer
        buffer += data
        messages = []
        start, size = 0, len(buffer)
        while size - start >= HEADER.size:
            (length,) = HEADER.unpack_from(buffer, start)
            end = start + HEADER.size + length
            if end > size:
                break
            messages.append(decode(bytes(buffer[start + HEADER.size : end])))
            start = end
        del buffer[:start]
        return messages
