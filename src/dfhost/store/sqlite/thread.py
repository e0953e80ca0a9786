"""The SQLite task hub's database thread: every statement runs on it, and transactions queued
while it was busy commit together (group commit).

Why: with `synchronous=FULL` a commit waits for the disk (0.1 ms on a quiet SSD, over 1 ms on
a busy one), and one connection commits one transaction at a time. When many episodes finish
at once, waiting for the disk once per batch instead of once per transaction multiplies
throughput. Nothing is acknowledged before its batch's COMMIT returns: every caller's future
resolves after it, so "durable before visible" holds for each of them.

Each job in a batch runs inside its own savepoint: one that raises is rolled back alone and
changes nothing, and the others still commit, exactly as if each had been its own transaction.

Only jobs marked `durable` need the disk to have them before they are acknowledged. Leases
(claims, renewals) and activity results are not: losing them to a power cut only means work
is claimed or run again, which a lease expiry or an at-least-once activity allows anyway. A
batch of such jobs commits with `synchronous=NORMAL`; the next durable commit syncs the WAL,
and with it everything before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["DatabaseThread"]

T = TypeVar("T")

_MAX_BATCH = 256
"""Jobs per transaction: bounds how long the write lock is held and one batch's latency."""


@dataclass(slots=True, eq=False)
class _Job(Generic[T]):
    run: Callable[[sqlite3.Connection], T]
    future: asyncio.Future[T]
    transaction: bool
    """False: run alone, outside any transaction (opening, closing, migrations)."""
    write: bool = False
    durable: bool = False
    outcome: tuple[bool, Any] = field(default=(False, None))


class DatabaseThread:
    """One thread owning one connection; `run` a transaction body on it from the event loop."""

    def __init__(self, name: str, synchronous: str) -> None:
        self._synchronous = synchronous
        """The most the disk is waited for ("FULL" or "NORMAL"), from the store URL."""
        self._mode = ""
        self._conn: sqlite3.Connection | None = None
        self._jobs: deque[_Job[Any] | None] = deque()
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False

    async def start(self, connect: Callable[[], sqlite3.Connection]) -> None:
        """Start the thread and open its connection with `connect` (on the thread)."""
        self._loop = asyncio.get_running_loop()
        self._thread.start()
        try:
            self._conn = await self.call(lambda _: connect())
        except BaseException:
            await self.stop(lambda conn: None)
            raise

    async def stop(self, close: Callable[[sqlite3.Connection | None], None]) -> None:
        """Run `close` on the thread after every queued job, then end the thread."""
        try:
            await self._submit(_Job(lambda _: close(self._conn), self._future(), False))
        finally:
            with self._ready:
                self._stopped = True
                self._jobs.append(None)
                self._ready.notify()
            await asyncio.to_thread(self._thread.join)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` alone on the thread, outside any transaction."""
        future: asyncio.Future[T] = self._future()
        return await self._submit(_Job(fn, future, False))

    async def run(
        self, body: Callable[[sqlite3.Connection], T], *, write: bool, durable: bool
    ) -> T:
        """Run `body` in a transaction (perhaps shared with others, each in its own savepoint);
        returns once that transaction committed, with the disk's confirmation if `durable`."""
        future: asyncio.Future[T] = self._future()
        return await self._submit(_Job(body, future, True, write, durable))

    def _future(self) -> asyncio.Future[Any]:
        assert self._loop is not None, "DatabaseThread.start was not called"
        return self._loop.create_future()

    async def _submit(self, job: _Job[T]) -> T:
        with self._ready:
            if self._stopped:
                raise sqlite3.ProgrammingError("the task hub's connection is closed")
            self._jobs.append(job)
            self._ready.notify()
        return await job.future

    # --- on the thread -----------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._jobs:
                    self._ready.wait()
                first = self._jobs.popleft()
                if first is None:
                    return
                batch: list[_Job[Any]] = [first]
                while first.transaction and self._jobs and len(batch) < _MAX_BATCH:
                    nxt = self._jobs[0]
                    if nxt is None or not nxt.transaction:
                        break
                    batch.append(nxt)
                    self._jobs.popleft()
            if first.transaction:
                self._commit(batch)
            else:
                self._call(first)
            self._settle(batch)

    def _call(self, job: _Job[Any]) -> None:
        try:
            job.outcome = (True, job.run(self._conn))  # type: ignore[arg-type]
        except BaseException as exc:
            job.outcome = (False, exc)

    def _commit(self, batch: list[_Job[Any]]) -> None:
        conn = self._conn
        if conn is None:
            error = sqlite3.ProgrammingError("the task hub's connection is closed")
            for job in batch:
                job.outcome = (False, error)
            return
        durable = any(job.durable for job in batch)
        mode = self._synchronous if durable else "NORMAL"
        try:
            if mode != self._mode:
                conn.execute(f"PRAGMA synchronous = {mode}")
                self._mode = mode
            conn.execute("BEGIN IMMEDIATE" if any(job.write for job in batch) else "BEGIN")
        except sqlite3.Error as exc:
            for job in batch:
                job.outcome = (False, exc)
            return
        alone = len(batch) == 1
        try:
            for job in batch:
                if alone:
                    self._call(job)
                    continue
                conn.execute("SAVEPOINT job")
                self._call(job)
                if not job.outcome[0]:
                    conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
            if alone and not batch[0].outcome[0]:
                conn.execute("ROLLBACK")
            else:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:  # the transaction as a whole failed: nothing was written
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for job in batch:
                job.outcome = (False, exc)

    def _settle(self, batch: list[_Job[Any]]) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self._loop.call_soon_threadsafe(_resolve, batch)


def _resolve(batch: list[_Job[Any]]) -> None:
    for job in batch:
        if job.future.cancelled():
            continue
        ok, value = job.outcome
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)
