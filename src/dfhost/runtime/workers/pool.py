"""The host's side of its worker processes: start them, send them work, take their results
and logs, restart one that dies.

A request is sent to the live worker with the fewest requests in flight. A worker that exits
(os._exit, a segfault, the OOM killer) is noticed by its socket closing; its requests go to the
other workers (or its replacement) at once, as a host's work runs again after a crash, at least
once. A request whose worker died `MAX_ATTEMPTS` times fails instead of crashing workers in a
loop: an activity with a TaskFailed naming the exit code, anything else with
`WorkerCrashedError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from dfhost import telemetry
from dfhost.history import HistoryEvent, utcnow
from dfhost.logs import reemit
from dfhost.orchestration import entities
from dfhost.runtime.workers.protocol import FrameBuffer, encode
from dfhost.work import ActivityTask, EpisodeOutcome, EpisodeWork

__all__ = ["MAX_ATTEMPTS", "WorkerCrashedError", "WorkerError", "WorkerPool", "WorkerStartError"]

log = logging.getLogger("dfhost.workers")

MAX_ATTEMPTS = 3
"""Workers that may die running one request before it fails."""


class WorkerError(Exception):
    """A worker could not run or answer a request (a dfhost bug): its traceback."""


class WorkerCrashedError(WorkerError):
    """The workers running a request exited `MAX_ATTEMPTS` times."""


class WorkerStartError(Exception):
    """A worker process could not load the app."""


@dataclass(slots=True)
class _Request:
    message: tuple[Any, ...]
    """(kind, *arguments): sent with a request id after the kind."""
    what: str
    future: asyncio.Future[Any]
    exits: list[int | None] = field(default_factory=list)
    """The exit codes of the workers that died running it."""


@dataclass(slots=True, eq=False)
class _Worker:
    slot: int
    process: subprocess.Popen[bytes]
    writer: asyncio.WriteTransport
    ready: asyncio.Future[tuple[list[str], dict[str, str]]]
    pending: dict[int, _Request] = field(default_factory=dict)
    live: bool = False
    outbox: list[bytes] = field(default_factory=list)
    """Frames not written yet (`_flush`)."""
    retiring: bool = False
    """Replaced by a reload: finishes what it was sent, then exits."""
    reader_task: asyncio.Task[None] | None = None


class WorkerPool:
    """`count` worker processes running the app in `app_dir`, each with `threads` threads for
    sync functions. Implements `dfhost.runtime.user_code.UserCode` for the engine."""

    def __init__(
        self,
        app_dir: Path,
        count: int,
        threads: int,
        *,
        log_format: str = "console",
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.app_dir = app_dir
        self.count = max(1, count)
        self.threads = max(1, threads)
        self.log_format = log_format
        self.clock = clock
        self.restarts = 0
        """Workers started again after one exited."""
        self._workers: list[_Worker | None] = [None] * self.count
        self._waiting: deque[_Request] = deque()
        """Requests sent while no worker was live (all restarting)."""
        self._ids = itertools.count()
        self._closing = False
        self.errors: list[str] = []
        """The problems the workers' app had at the last start or reload (broken functions
        that were left out, as in the host)."""
        self._retired: list[_Worker] = []
        self._restarting: set[asyncio.Task[None]] = set()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker and wait until each has loaded the app; raises
        `WorkerStartError` if one could not."""
        workers = [await self._spawn(slot) for slot in range(self.count)]
        for worker in workers:
            self._workers[worker.slot] = worker
        try:
            for worker in workers:
                errors, _ = await worker.ready
                if not worker.live:
                    raise WorkerStartError("\n".join(errors) or "a worker process exited")
                self.errors = errors
        except BaseException:
            await self.close()
            raise

    async def reload(self) -> list[str]:
        """Start new workers (the app's code as it is now) and, once they have all loaded it
        with no problem the current ones did not have, send them everything from now on;
        the current workers finish what they were sent, then exit. Returns the new problems
        (then nothing changed)."""
        if self._closing:
            return []
        generation = [await self._spawn(slot) for slot in range(self.count)]
        problems: list[str] = []
        for worker in generation:
            errors, _ = await worker.ready
            if not worker.live:
                problems = errors or ["a worker process exited while loading the app"]
                break
            problems = [e for e in errors if e not in self.errors]
            if problems:
                break
        if problems or self._closing:
            for worker in generation:
                worker.retiring = True
                worker.writer.close()
            for worker in generation:
                await _reap(worker.process)
            return problems
        old = self._workers
        self._workers = list[_Worker | None](generation)
        self._retired += [w for w in old if w is not None]
        self.errors = errors
        for previous in old:
            if previous is not None:
                previous.retiring = True
                _post(previous, encode(("stop",)))  # after what it was sent
        self._flush_waiting()
        return []

    async def close(self) -> None:
        """Stop the workers now. What they were running is abandoned: its awaiters see
        CancelledError, and the engine's leases make it run again later."""
        self._closing = True
        for task in list(self._restarting):
            task.cancel()
        workers = [w for w in self._workers if w is not None] + self._retired
        for worker in workers:
            worker.writer.close()  # the worker exits when its socket closes
        for worker in workers:
            if worker.reader_task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await worker.reader_task
            for request in worker.pending.values():
                request.future.cancel()
            worker.pending.clear()
        for request in self._waiting:
            request.future.cancel()
        self._waiting.clear()
        for worker in workers:
            # Its socket closed, a worker exits at once unless user code holds its event loop;
            # whatever that code does is abandoned anyway.
            await _reap(worker.process, patience=1.0)

    # --- requests -------------------------------------------------------------------------

    async def run_activity(self, task: ActivityTask) -> HistoryEvent:
        try:
            # The activity's span goes along, so that spans the user's code starts in the
            # worker are its children, as they are in the host.
            message = ("activity", task, telemetry.current_trace_context())
            result: HistoryEvent = await self._call(message, f"activity '{task.name}'")
        except WorkerCrashedError as exc:
            reason = f"Activity function '{task.name}' failed: {exc}"
            return task.failed_event(self.clock(), reason, None)
        except WorkerError as exc:  # a dfhost bug in the worker: say so rather than run again
            log.error("dfhost: a worker process failed activity '%s':\n%s", task.name, exc)
            reason = f"Activity function '{task.name}' failed: dfhost internal error in a worker"
            return task.failed_event(self.clock(), reason, str(exc))
        return result

    async def run_entity_batch(
        self, entity: entities.EntityId, work: EpisodeWork, now: datetime
    ) -> EpisodeOutcome:
        outcome: EpisodeOutcome = await self._call(
            ("entity", entity, work, now, telemetry.current_trace_context()),
            f"entity '{work.instance.instance_id}'",
        )
        return outcome

    async def _call(self, message: tuple[Any, ...], what: str) -> Any:
        if self._closing:
            raise RuntimeError("the worker processes are stopped")
        request = _Request(message, what, asyncio.get_running_loop().create_future())
        self._send(request)
        return await request.future

    def _send(self, request: _Request) -> None:
        live = [w for w in self._workers if w is not None and w.live]
        if not live:
            self._waiting.append(request)
            return
        worker = min(live, key=lambda w: len(w.pending))
        request_id = next(self._ids)
        worker.pending[request_id] = request
        kind, *arguments = request.message
        _post(worker, encode((kind, request_id, *arguments)))

    # --- workers --------------------------------------------------------------------------

    async def _spawn(self, slot: int) -> _Worker:
        parent, child = socket.socketpair()
        command = [
            sys.executable,
            "-P",  # not the host's working directory on sys.path: only the app's folder
            "-m",
            "dfhost.runtime.workers",
            str(self.app_dir),
            "--fd",
            str(child.fileno()),
            "--threads",
            str(self.threads),
            "--log-format",
            self.log_format,
            # What the host would drop need not travel.
            "--log-level",
            str(logging.getLogger().getEffectiveLevel()),
        ]
        try:
            process = _start_process(command, child.fileno())
        finally:
            child.close()
        loop = asyncio.get_running_loop()
        frames = _Frames(loop.create_future())
        transport, _ = await loop.create_unix_connection(lambda: frames, sock=parent)
        worker = _Worker(slot, process, transport, loop.create_future())
        frames.received = partial(self._received, worker)
        worker.reader_task = asyncio.create_task(
            self._after_exit(worker, frames.gone), name=f"dfhost-worker-{slot}"
        )
        return worker

    def _received(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "done":
            _, request_id, ok, value = message
            request = worker.pending.pop(request_id, None)
            if request is None or request.future.done():
                return
            if ok:
                request.future.set_result(value)
            else:
                request.future.set_exception(WorkerError(value))
        elif kind == "log":
            reemit(message[1])
        elif kind == "ready":
            _, _pid, errors, kinds = message
            worker.live = not any(errors) or bool(kinds)
            if not worker.ready.done():
                worker.ready.set_result((errors, kinds))
            if worker.live:
                self._flush_waiting()

    async def _after_exit(self, worker: _Worker, gone: asyncio.Future[None]) -> None:
        await gone
        served = worker.live
        worker.live = False
        if not worker.ready.done():
            worker.ready.set_result(([], {}))
        if worker.retiring:
            await _reap(worker.process)
            # Exited before finishing what it was sent (it crashed): run that again.
            for request in worker.pending.values():
                self._send(request)
            worker.pending.clear()
            if worker in self._retired:
                self._retired.remove(worker)
        elif not self._closing:
            task = asyncio.create_task(self._replace(worker, served))
            self._restarting.add(task)
            task.add_done_callback(self._restarting.discard)

    def _flush_waiting(self) -> None:
        while self._waiting:
            self._send(self._waiting.popleft())

    async def _replace(self, worker: _Worker, served: bool) -> None:
        """A worker exited on its own: send its requests elsewhere and start another."""
        code = await asyncio.to_thread(worker.process.wait)
        running = list(worker.pending.values())
        worker.pending.clear()
        what = ""
        if running:
            listed = ", ".join(sorted({r.what for r in running}))
            what = f" while running {listed}; they run again"
        log.error(
            "dfhost: worker process %d (pid %d) %s%s; starting another",
            worker.slot,
            worker.process.pid,
            _exit_description(code),
            what,
        )
        for request in running:
            request.exits.append(code)
            if len(request.exits) >= MAX_ATTEMPTS:
                codes = ", ".join(_exit_description(c) for c in request.exits)
                request.future.set_exception(
                    WorkerCrashedError(f"the worker processes running it exited ({codes})")
                )
            else:
                self._send(request)
        if self._workers[worker.slot] is not worker:
            return  # a reload replaced it meanwhile
        # One that died before it could serve would die again at once: not in a tight loop.
        await asyncio.sleep(0.0 if served else 1.0)
        self.restarts += 1
        replacement = await self._spawn(worker.slot)
        if self._closing or self._workers[worker.slot] is not worker:
            replacement.writer.close()
            await _reap(replacement.process)
            return
        self._workers[worker.slot] = replacement
        await replacement.ready


def _post(worker: _Worker, frame: bytes) -> None:
    if not worker.outbox:
        # One write for everything sent in this turn of the loop (a claim starts many
        # activities at once): a system call each cost the loop more.
        asyncio.get_running_loop().call_soon(_flush, worker)
    worker.outbox.append(frame)


def _flush(worker: _Worker) -> None:
    frames, worker.outbox = worker.outbox, []
    if not worker.writer.is_closing():
        worker.writer.write(b"".join(frames))


class _Frames(asyncio.Protocol):
    """Splits what a worker sends into messages, handing each to `received` as it is
    complete: a protocol rather than a stream reader, whose two awaits per message cost the
    event loop more than the message itself."""

    def __init__(self, gone: asyncio.Future[None]) -> None:
        self.gone = gone
        self.received: Callable[[tuple[Any, ...]], None] = _drop
        self._frames = FrameBuffer()

    def data_received(self, data: bytes) -> None:
        for message in self._frames.feed(data):
            self.received(message)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.gone.done():
            self.gone.set_result(None)


def _drop(message: tuple[Any, ...]) -> None:
    pass


def _start_process(command: list[str], fd: int) -> subprocess.Popen[bytes]:
    # Its output goes where the host's does: a crash's own message (a segfault's traceback,
    # faulthandler's dump) appears on the host's console.
    # DFHOST_HOST_PID tells the app's code which host it works for (a test app records it).
    env = {**os.environ, "DFHOST_HOST_PID": str(os.getpid())}
    return subprocess.Popen(command, pass_fds=[fd], env=env)


def _exit_description(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


async def _reap(process: subprocess.Popen[bytes], patience: float = 5.0) -> None:
    """Wait for `process` to exit, killing it after `patience` seconds."""
    try:
        await asyncio.to_thread(process.wait, patience)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        await asyncio.to_thread(process.wait)
