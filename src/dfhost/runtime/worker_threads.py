"""Threads that run blocking user code (sync activities, orchestrator episodes) for the
event loop.

Why not `loop.run_in_executor(ThreadPoolExecutor)`: each call there builds a
`concurrent.futures.Future`, chains it to an asyncio future with callbacks on both sides and
takes a `threading.Semaphore` (a Python-level condition variable) to decide whether to start a
thread. With one call per activity and per episode, that machinery cost more of the event
loop's time than the work it ran (py-spy, bench/run.py W2). Here a call is one put on a
C-implemented queue and one `call_soon_threadsafe` back.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["WorkerThreads"]

T = TypeVar("T")

_Job = tuple[Callable[[], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


class WorkerThreads:
    """Up to `max_workers` daemon threads, started as calls need them and kept."""

    def __init__(self, max_workers: int, name: str) -> None:
        self.max_workers = max(1, max_workers)
        self.name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._in_flight = 0
        """Calls submitted and not yet returned by their thread; only touched on the event
        loop's thread, so comparing it with the thread count is exact: no call waits while a
        thread could start."""
        self._closed = False

    async def run(self, call: Callable[[], T]) -> T:
        """`call()` on a worker thread; its result or exception, here."""
        if self._closed:
            raise RuntimeError(f"{self.name} threads are shut down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._in_flight += 1
        if self._in_flight > len(self._threads) < self.max_workers:
            thread = threading.Thread(
                target=self._work, name=f"{self.name}_{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        self._jobs.put((call, future, loop))
        return await future

    def shutdown(self) -> None:
        """Drop calls not started yet (their awaiters see CancelledError) and let the threads
        end once their current call returns. Call on the event loop's thread."""
        self._closed = True
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[1].cancel()
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            call, future, loop = job
            try:
                outcome: tuple[bool, Any] = (True, call())
            except BaseException as exc:  # handed to the awaiter, like run_in_executor
                outcome = (False, exc)
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
                loop.call_soon_threadsafe(self._settle, future, outcome)
            del job, call, future, outcome  # don't keep the last result alive while idle

    def _settle(self, future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
        self._in_flight -= 1
        if future.cancelled():
            return
        ok, value = outcome
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
