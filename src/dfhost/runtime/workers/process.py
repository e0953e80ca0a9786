"""A worker process: loads the app from its folder and runs what the host sends it.

Started by `WorkerPool` as `python -m dfhost.runtime.workers --fd N APP_DIR`, with one end of
a socket pair as fd N. The main thread runs an asyncio loop (async activities run there, sync
ones on `PYTHON_THREADPOOL_THREAD_COUNT` threads: a `LocalCode`, as in an in-process host);
a reader thread turns incoming frames into tasks on it. Every write to the socket (results and
log records, from any thread) takes one lock, so what a function logs reaches the host before
its result. When the host goes away the socket closes and the worker exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import threading
import traceback
from typing import Any

from dfhost.config import AppLoadError
from dfhost.history import utcnow
from dfhost.logs import configure_forwarding
from dfhost.runtime.user_code import LocalCode
from dfhost.runtime.workers.protocol import FrameBuffer, encode

__all__ = ["main"]

log = logging.getLogger("dfhost.worker")


class _Channel:
    """The socket to the host, written from any thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> None:
        frame = encode(message)
        with self._lock:
            self.sock.sendall(frame)


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

    def read() -> None:
        frames = FrameBuffer()
        # One wake-up of the loop for all the messages one read brings.
        while data := channel.sock.recv(1 << 16):
            if messages := frames.feed(data):
                loop.call_soon_threadsafe(received, messages)
        # The host is gone (or closed us): nobody can take results any more.
        os._exit(0)

    threading.Thread(target=read, name="dfhost-worker-reader", daemon=True).start()
    channel.send(("ready", os.getpid(), errors, kinds))
    await stop.wait()
    # "stop": the host sends no more; finish what it sent before it.
    while running:
        await asyncio.wait(set(running))
    await code.close()
