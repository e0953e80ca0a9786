"""A worker process: loads the app from its folder and runs what the host sends it.

Started by `WorkerPool` as `python -m dfhost.runtime.workers --fd N APP_DIR`, with one end of
a socket pair as fd N. The main thread runs an asyncio loop (async activities run there, sync
ones on `PYTHON_THREADPOOL_THREAD_COUNT` threads: a `LocalCode`, as in an in-process host),
which reads requests from the socket and writes results and log records to it; a record
logged on another thread is written by the loop too, queued before the result of its
function, so it reaches the host first. When the host closes the socket the worker exits at
once; when the host dies, the kernel kills it (`PR_SET_PDEATHSIG`), even while user code
blocks its loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import threading
import traceback
from collections.abc import Callable
from typing import Any

from dfhost import telemetry
from dfhost.config import AppLoadError
from dfhost.history import utcnow
from dfhost.logs import configure_forwarding
from dfhost.runtime.user_code import LocalCode
from dfhost.runtime.workers.protocol import FrameBuffer, encode

__all__ = ["main"]

log = logging.getLogger("dfhost.worker")


class _Channel:
    """The socket to the host, written from any thread: directly while the app loads, then
    through the event loop's transport (`attach`)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()
        self._transport: asyncio.WriteTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    def attach(self, loop: asyncio.AbstractEventLoop, transport: asyncio.WriteTransport) -> None:
        with self._lock:
            self._loop, self._transport = loop, transport
            self._loop_thread = threading.get_ident()

    def send(self, message: tuple[Any, ...]) -> None:
        frame = encode(message)
        if self._transport is None:
            with self._lock:
                if self._transport is None:
                    self.sock.sendall(frame)
                    return
        assert self._loop is not None and self._transport is not None
        if threading.get_ident() == self._loop_thread:
            self._transport.write(frame)
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the worker exits
                self._loop.call_soon_threadsafe(self._transport.write, frame)


class _Requests(asyncio.Protocol):
    def __init__(self, received: Callable[[list[tuple[Any, ...]]], None]) -> None:
        self._received = received
        self._frames = FrameBuffer()

    def data_received(self, data: bytes) -> None:
        if messages := self._frames.feed(data):
            self._received(messages)

    def connection_lost(self, exc: Exception | None) -> None:
        # The host closed the socket (or is gone): nobody can take results any more.
        logging.shutdown()
        os._exit(0)


def _die_with_the_host() -> None:
    """Have the kernel kill this process when the host exits (Linux), so that no worker
    outlives it, whatever its user code is doing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the closed socket ends the worker
        return
    host = os.environ.get("DFHOST_HOST_PID")
    if host is not None and os.getppid() != int(host):
        os._exit(0)  # the host died before the line above


_PR_SET_PDEATHSIG = 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dfhost.runtime.workers")
    parser.add_argument("app_dir")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--log-format", default="console")
    parser.add_argument("--log-level", type=int, default=logging.INFO)
    args = parser.parse_args(argv)
    # Only the host stops a worker (it closes the socket): a Ctrl-C in the terminal reaches
    # the whole process group, and the host drains its work before it lets the workers go.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_the_host()
    channel = _Channel(socket.socket(fileno=args.fd))
    configure_forwarding(
        lambda record: channel.send(("log", record)), args.log_format, args.log_level
    )
    try:
        asyncio.run(_serve(channel, args.app_dir, args.threads))
    finally:
        # Threads may still run user code that will never be answered: don't wait for them.
        logging.shutdown()
        os._exit(0)


async def _serve(channel: _Channel, app_dir: str, threads: int) -> None:
    from dfhost.app.loader import load_app

    try:
        app = load_app(app_dir)
    except AppLoadError as exc:
        channel.send(("ready", os.getpid(), [str(exc)], {}))
        return
    errors = [
        f"{e.source}: {e.message}" + (f"\n{e.detail}" if e.detail else "") for e in app.errors
    ]
    kinds = {name: function.kind for name, function in app.functions.items()}
    code = LocalCode(
        app,
        utcnow,
        activity_threads=threads,
        episode_threads=min(4, threads),
        sessions=None,  # orchestrator episodes run in the host
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    running: set[asyncio.Task[None]] = set()

    async def answer(kind: str, request: int, arguments: list[Any]) -> None:
        try:
            *arguments, traceparent = arguments
            with telemetry.continue_trace(traceparent):
                if kind == "activity":
                    value: Any = await code.run_activity(arguments[0])
                elif kind == "entity":
                    entity, work, now = arguments
                    value = await code.run_entity_batch(entity, work, now)
                else:
                    raise ValueError(f"unknown request {kind!r}")
            message: tuple[Any, ...] = ("done", request, True, value)
            channel.send(message)
        except Exception:  # a dfhost bug, or a result that cannot travel: the host says so
            channel.send(("done", request, False, traceback.format_exc()))

    def received(messages: list[tuple[Any, ...]]) -> None:
        for message in messages:
            if message[0] == "stop":
                stop.set()
                continue
            kind, request, *arguments = message
            task = loop.create_task(answer(kind, request, arguments))
            running.add(task)
            task.add_done_callback(running.discard)

    channel.send(("ready", os.getpid(), errors, kinds))
    transport, _ = await loop.create_unix_connection(lambda: _Requests(received), sock=channel.sock)
    channel.attach(loop, transport)
    await stop.wait()
    # "stop": the host sends no more; finish what it sent before it.
    while running:
        await asyncio.wait(set(running))
    await code.close()
