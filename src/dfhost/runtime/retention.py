"""Retention: finished instances purged in the background.

Retention purges finished instances once they are older than a per-status period, in the
  background and in bounded batches: each batch is one short transaction, so episodes commit
  in between and a purge of 100,000 instances neither blocks the engine nor times out.

host.json (`extensions.durableTask.dfhost`, read by `dfhost.config`; durations are .NET
TimeSpans `[d.]hh:mm[:ss]`, measured from the time an instance finished)::

    "retention": {"completed": "7.00:00:00", "failed": "30.00:00:00",
                  "terminated": "7.00:00:00", "canceled": "7.00:00:00", "batchSize": 500},
    "ensure": {"monitor": {"orchestrator": "monitor_loop", "input": {"every": 60}},
               "cleanup": "cleanup_loop"}

Statuses without a period are kept forever; unfinished instances are never purged by retention.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from dfhost.config import RetentionPolicy
from dfhost.history import utcnow
from dfhost.store import Store

if TYPE_CHECKING:
    pass

__all__ = ["Retention", "RetentionPolicy", "Sweep"]

log = logging.getLogger("dfhost")

# --- retention -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sweep:
    purged: int
    seconds: float
    batches: int


class Retention:
    """Purges expired instances now and whenever the next one expires."""

    def __init__(
        self, store: Store, policy: RetentionPolicy, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.sweeps: list[Sweep] = []
        self.swept = asyncio.Event()
        """Set after every sweep (tests and the CLI wait on it)."""

    async def sweep(self) -> Sweep:
        """Purge everything expired at this moment, one bounded transaction at a time."""
        began = time.monotonic()
        now = self.clock()
        batch = max(1, self.policy.batch_size)
        purged = batches = 0
        for status, period in self.policy.periods.items():
            while True:
                count = await self.store.purge_finished(status, now - period, batch)
                purged += count
                batches += 1
                if count < batch:
                    break
                await asyncio.sleep(0)  # let the engine's episodes in between batches
        sweep = Sweep(purged, time.monotonic() - began, batches)
        if purged:
            log.info(
                "dfhost: retention purged %d finished instance(s) in %.1f s", purged, sweep.seconds
            )
        self.sweeps.append(sweep)
        self.swept.set()
        return sweep

    async def seconds_until_next(self) -> float:
        """Until the oldest kept instance expires (or, with none, one that finishes now)."""
        now = self.clock()
        due = []
        for status, period in self.policy.periods.items():
            oldest = await self.store.oldest_finished(status)
            due.append((oldest if oldest is not None and oldest < now else now) + period)
        # At least a second: an instance still leased by an episode is skipped, and stays due.
        return max(1.0, (min(due) - now).total_seconds())

    async def run(self) -> None:
        """Sweep, sleep until the next expiry, repeat; store errors are logged and retried."""
        while True:
            try:
                await self.sweep()
                delay = await self.seconds_until_next()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dfhost: retention could not purge; retrying in 60 s")
                delay = 60.0
            await asyncio.sleep(delay)
