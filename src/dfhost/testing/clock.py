"""The virtual clock of a `TestHost`: the engine's time, moved only when nothing can run."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from dfhost.store import Store

if TYPE_CHECKING:
    pass


# --- the virtual clock --------------------------------------------------------------------------


class VirtualClock:
    """A TestHost's time: it stands still while work runs and moves only when the engine is
    idle, to the next due timer (never past `horizon`).

    The engine calls `wait(due, idle)` between claims (`Engine(wait=...)`). `auto_advance`
    leaves the horizon open, so timers fire as soon as nothing else can run; otherwise time
    moves only inside `advance`.
    """

    def __init__(self, start: datetime, *, auto_advance: bool) -> None:
        self._now = start
        self.auto_advance = auto_advance
        self.horizon: datetime | None = None if auto_advance else start
        self.store: Store | None = None
        self._moved = asyncio.Event()
        self.settled = asyncio.Event()
        """Set while the engine waits with nothing to run up to the horizon."""
        self.progress = asyncio.Event()
        """Set whenever the engine finished a round of claims (instances may have changed)."""

    def __call__(self) -> datetime:
        return self._now

    async def wait(self, due: datetime | None, idle: bool) -> None:
        store = self.store
        assert store is not None, "VirtualClock.store is set before the engine starts"
        self._moved.clear()
        self.progress.set()
        if idle:
            if await _notified(store):
                return  # work arrived since the claim: it runs before time moves
            if due is not None and (self.horizon is None or due <= self.horizon):
                self._now = max(self._now, due)
                return
            self.settled.set()
        waits = [
            asyncio.ensure_future(store.wait_for_work(None)),
            asyncio.ensure_future(self._moved.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.settled.clear()
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def advance(self, delta: timedelta, timeout: float) -> None:  # noqa: ASYNC109
        """Run everything due up to now + `delta`, in due order; then the clock reads exactly
        that time. Raises TimeoutError if the work doesn't settle within `timeout` seconds."""
        if delta < timedelta(0):
            raise ValueError(f"time only moves forward (delta {delta})")
        target = self._now + delta
        self.horizon = target
        await self._settle(timeout)
        self._now = max(self._now, target)
        self.horizon = None if self.auto_advance else self._now
        self._moved.set()

    async def _settle(self, timeout: float) -> None:  # noqa: ASYNC109
        self.settled.clear()
        self._moved.set()
        try:
            async with asyncio.timeout(timeout):
                await self.settled.wait()
        except TimeoutError:
            raise TimeoutError(
                f"the app still had work to run at {self._now.isoformat()} after {timeout} s "
                "(an activity that never returns, or an orchestration that never waits?)"
            ) from None


async def _notified(store: Store) -> bool:
    """Whether the store has a wake-up pending (consuming it), without waiting for one."""
    waiter = asyncio.ensure_future(store.wait_for_work(None))
    await asyncio.sleep(0)  # the waiter's first step runs now; a pending wake-up ends it
    if waiter.done():
        return True
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    return False


# --- TestHost -----------------------------------------------------------------------------------
