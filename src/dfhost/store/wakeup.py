"""The in-process wake-ups of every store: `notify`, `wait_for_work` and `watch_finish`."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from functools import partial

from dfhost.history import TERMINAL_STATUSES, Instance, utcnow

__all__ = ["FinishWatchers", "Wakeup", "Wakeups"]


class Wakeup:
    """A latch: `set` from the event loop's thread; `wait` returns at once if it was set since
    the last `wait` returned (consuming it), else when it is set or `until` passes.

    A wake-up that arrives while nobody waits is kept, so work enqueued during a claim is never
    missed; several arriving together wake one wait.
    """

    def __init__(self, longest: timedelta | None = None) -> None:
        self._event: asyncio.Event | None = None
        self._longest = longest
        """The longest one wait may last, whatever `until` says (a store's polling fallback)."""

    def set(self) -> None:
        self._latch().set()

    async def wait(self, until: datetime | None) -> None:
        event = self._latch()
        if not event.is_set():
            timeout = None if self._longest is None else self._longest.total_seconds()
            if until is not None:
                until = until if until.tzinfo is not None else until.replace(tzinfo=UTC)
                left = (until - utcnow()).total_seconds()
                timeout = left if timeout is None else min(timeout, left)
            if timeout is None or timeout > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await event.wait()
        event.clear()

    def _latch(self) -> asyncio.Event:
        # Created on first use, inside the loop that uses it.
        if self._event is None:
            self._event = asyncio.Event()
        return self._event


class FinishWatchers:
    """`Store.watch_finish`'s futures, resolved by the store when it commits an instance's
    end in this process. Use from the event loop's thread."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}

    def watch(self, instance_id: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(instance_id, set()).add(future)
        future.add_done_callback(partial(self._forget, instance_id))
        return future

    def finished(self, instance_id: str) -> None:
        for future in self._waiting.pop(instance_id, ()):
            if not future.done():
                future.set_result(None)

    def _forget(self, instance_id: str, future: asyncio.Future[None]) -> None:
        waiting = self._waiting.get(instance_id)
        if waiting is not None:
            waiting.discard(future)
            if not waiting:
                del self._waiting[instance_id]


class Wakeups:
    """The `Store` methods that wake this process, as every backend has them: `notify` and
    `wait_for_work` over one `Wakeup`, `watch_finish` over `FinishWatchers`. A backend
    inherits them, extends `notify` when others must hear it too, and calls `committed` after
    each episode it commits."""

    def __init__(self, longest: timedelta | None = None) -> None:
        self._wake = Wakeup(longest)
        self._finishes = FinishWatchers()

    async def wait_for_work(self, until: datetime | None) -> None:
        await self._wake.wait(until)

    def notify(self) -> None:
        self._wake.set()

    def watch_finish(self, instance_id: str) -> asyncio.Future[None]:
        return self._finishes.watch(instance_id)

    def committed(self, instance: Instance) -> None:
        """An episode left `instance` so: resolve its watchers if that is its end."""
        if instance.status in TERMINAL_STATUSES:
            self._finishes.finished(instance.instance_id)
