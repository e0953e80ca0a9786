"""The startup report: what a host finds in its task hub before it dispatches.

One line per unfinished instance whose orchestrator is no longer in the app (renamed or
removed: "orphans", which only an administrative terminate or purge can end) and one line per
instance whose timers fell due while no host ran (they fire at once).
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from dfhost.history import TERMINAL_STATUSES, Instance, OrchestrationStatus
from dfhost.store import InstanceQuery, Store
from dfhost.work import Message

if TYPE_CHECKING:
    from dfhost.app.functions import FunctionApp

__all__ = ["StartupReport", "report_startup"]

log = logging.getLogger("dfhost")

REPORT_LIMIT = 100
"""Lines per kind in the startup report; the rest is summed up in one line."""

_UNFINISHED = tuple(s for s in OrchestrationStatus if s not in TERMINAL_STATUSES)


@dataclass(frozen=True, slots=True)
class StartupReport:
    orphans: list[Instance]
    """Unfinished instances whose orchestrator is not in the app (up to the report limit)."""
    overdue: dict[str, list[Message]]
    """Timers that fell due while no host ran, by instance id."""


async def report_startup(
    app: FunctionApp,
    store: Store,
    now: datetime,
    limit: int = REPORT_LIMIT,
    *,
    orphans: bool = True,
) -> StartupReport:
    """Log orphaned instances and overdue timers, one line per instance, before dispatching.
    `orphans` False: orchestrators the app does not have are not orphans (connected workers
    run them, `dfhost.grpc`)."""
    found: list[Instance] = []
    more_orphans = 0
    query = InstanceQuery(statuses=_UNFINISHED, top=1000)
    while orphans:
        page = await store.query_instances(query)
        for instance in page.instances:
            # Entities (`@name@key`) are instances too, but run entity functions.
            if instance.instance_id.startswith("@") or app.orchestrator(instance.name) is not None:
                continue
            if len(found) < limit:
                found.append(instance)
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
    return StartupReport(found, overdue)


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
