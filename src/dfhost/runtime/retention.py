"""Host housekeeping: the startup report and the retention policy.

- The startup report logs one line per unfinished instance whose orchestrator is no longer in
  the app (renamed or removed: "orphans", which only an administrative terminate or purge can
  end) and one line per instance whose timers fell due while no host ran.
- Retention purges finished instances once they are older than a per-status period, in the
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
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from dfhost.config import RetentionPolicy, SettingsError
from dfhost.history import TERMINAL_STATUSES, Instance, OrchestrationStatus, utcnow
from dfhost.store import InstanceQuery, Store
from dfhost.work import Message

if TYPE_CHECKING:
    from dfhost.app.functions import FunctionApp

__all__ = [
    "OpsConfigError",
    "Retention",
    "RetentionPolicy",
    "StartupReport",
    "Sweep",
    "report_startup",
]

log = logging.getLogger("dfhost")

REPORT_LIMIT = 100
"""Lines per kind in the startup report; the rest is summed up in one line."""

_UNFINISHED = tuple(s for s in OrchestrationStatus if s not in TERMINAL_STATUSES)

OpsConfigError = SettingsError
"""A retention or ensure setting is malformed (the name `dfhost.config` reads them under)."""


# --- the startup report ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartupReport:
    orphans: list[Instance]
    """Unfinished instances whose orchestrator is not in the app (up to the report limit)."""
    overdue: dict[str, list[Message]]
    """Timers that fell due while no host ran, by instance id."""


async def report_startup(
    app: FunctionApp, store: Store, now: datetime, limit: int = REPORT_LIMIT
) -> StartupReport:
    """Log orphaned instances and overdue timers, one line per instance, before dispatching."""
    orphans: list[Instance] = []
    more_orphans = 0
    query = InstanceQuery(statuses=_UNFINISHED, top=1000)
    while True:
        page = await store.query_instances(query)
        for instance in page.instances:
            # Entities (`@name@key`) are instances too, but run entity functions.
            if instance.instance_id.startswith("@") or app.orchestrator(instance.name) is not None:
                continue
            if len(orphans) < limit:
                orphans.append(instance)
                _log_orphan(instance)
            else:
                more_orphans += 1
        if page.continuation is None:
            break
        query = replace(query, continuation=page.continuation)
    if more_orphans:
        log.warning("dfhost: ... and %d more orphaned instances", more_orphans)

    overdue: dict[str, list[Message]] = {}
    timers = await store.overdue_timers(now, 10 * limit)
    for message in timers:
        overdue.setdefault(message.instance_id, []).append(message)
    for index, (instance_id, due) in enumerate(overdue.items()):
        if index == limit:
            log.info("dfhost: ... and more instances with overdue timers")
            break
        first = min(m.visible_at or now for m in due)
        log.info(
            "dfhost: instance '%s' has %d timer(s) that fell due while no host ran, the "
            "first at %s (%s late); they fire now",
            instance_id,
            len(due),
            first.isoformat(timespec="seconds"),
            _duration(now - first),
        )
    return StartupReport(orphans, overdue)


def _log_orphan(instance: Instance) -> None:
    quoted = shlex.quote(instance.instance_id)
    log.warning(
        "dfhost: orphaned instance '%s' (%s): its orchestrator '%s' is not in this app "
        "(renamed or removed?); end it with `dfhost instances terminate %s`, then "
        "`dfhost instances purge %s`",
        instance.instance_id,
        instance.status.value,
        instance.name,
        quoted,
        quoted,
    )


def _duration(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s" if minutes else f"{seconds}s"


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
