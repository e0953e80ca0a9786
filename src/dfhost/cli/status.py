"""`dfhost status`: a task hub on one screen, read from the store (no host needs to run).

dfhost status [--app APP_DIR] [--store URL] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from dfhost.cli.common import STORE_HELP, CommandError, command_store_url, require_existing_hub
from dfhost.history import OrchestrationStatus, format_time, utcnow
from dfhost.store import HubSummary, StoreError, open_store, redact_url

__all__ = ["add_status_command", "render", "run_status_command", "summary_json"]


def add_status_command(commands: Any) -> None:
    """Add `status` to the `dfhost` argument parser's subparsers."""
    status = commands.add_parser("status", help="summarize a task hub: instances, queues, hosts")
    status.add_argument(
        "--app", default=".", metavar="APP_DIR", help="the function app folder (default: .)"
    )
    status.add_argument("--store", metavar="URL", help=STORE_HELP)
    status.add_argument("--json", action="store_true", help="print the summary as JSON")


def run_status_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run a parsed `dfhost status`; returns the exit status (1 with one line on errors)."""
    try:
        url = command_store_url(Path(args.app), args.store)
        require_existing_hub(url, explicit=args.store is not None)
        summary, now = asyncio.run(_load(url))
    except (StoreError, ValueError, CommandError) as exc:
        print(f"dfhost: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    text = (
        json.dumps(summary_json(summary, now), indent=2) if args.json else render(summary, now, url)
    )
    print(text, file=out or sys.stdout)
    return 0


async def _load(url: str) -> tuple[HubSummary, datetime]:
    store = open_store(url)
    await store.start()
    try:
        now = utcnow()
        return await store.hub_summary(now), now
    finally:
        await store.close()


# The order statuses are listed in: what needs attention first.
_ORDER = [
    OrchestrationStatus.RUNNING,
    OrchestrationStatus.PENDING,
    OrchestrationStatus.SUSPENDED,
    OrchestrationStatus.FAILED,
    OrchestrationStatus.TERMINATED,
    OrchestrationStatus.COMPLETED,
    OrchestrationStatus.CONTINUED_AS_NEW,
    OrchestrationStatus.CANCELED,
]
_MAX_NAMES = 10


def render(summary: HubSummary, now: datetime, url: str) -> str:
    """The summary as a screenful of aligned text."""
    totals = {s: 0 for s in _ORDER}
    by_name: dict[str, dict[OrchestrationStatus, int]] = {}
    for (name, status), count in summary.instances.items():
        totals[status] += count
        by_name.setdefault(name, {})[status] = count
    lines = [f"Task hub   {redact_url(url)}", ""]
    shown = [s for s in _ORDER if totals[s]]
    lines.append(f"Instances  {sum(totals.values())}")
    if shown:
        width = max(len(n) for n in by_name)
        header = "  ".join(f"{s.value:>10}" for s in shown)
        lines.append(f"  {'':{width}}  {header}")
        busiest = sorted(by_name.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
        for name, counts in busiest[:_MAX_NAMES]:
            row = "  ".join(f"{counts.get(s, 0):>10}" for s in shown)
            lines.append(f"  {name:{width}}  {row}")
        if len(busiest) > _MAX_NAMES:
            lines.append(f"  ... and {len(busiest) - _MAX_NAMES} more names")
        totals_row = "  ".join(f"{totals[s]:>10}" for s in shown)
        lines.append(f"  {'total':{width}}  {totals_row}")
    running = summary.running_activities
    lines += [
        "",
        f"Queue      {summary.ready_messages} messages ready, "
        f"{summary.ready_activities} activities waiting"
        + ("" if running is None else f", {running} running"),
        f"Oldest     {_ago(summary.oldest_ready, now)}",
        f"Next timer {_until(summary.next_timer, now)}",
        f"Hosts      {'unknown' if summary.live_hosts is None else summary.live_hosts} live",
    ]
    return "\n".join(lines)


def summary_json(summary: HubSummary, now: datetime) -> dict[str, Any]:
    """The summary as JSON-ready data."""
    instances: dict[str, dict[str, int]] = {}
    for (name, status), count in sorted(summary.instances.items()):
        instances.setdefault(name, {})[status.value] = count
    return {
        "time": format_time(now),
        "instances": instances,
        "readyMessages": summary.ready_messages,
        "readyActivities": summary.ready_activities,
        "runningActivities": summary.running_activities,
        "oldestReady": None if summary.oldest_ready is None else format_time(summary.oldest_ready),
        "nextTimer": None if summary.next_timer is None else format_time(summary.next_timer),
        "liveHosts": summary.live_hosts,
    }


def _ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "nothing waiting"
    return f"waiting for {_span(now - when)} (since {format_time(when)})"


def _until(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "none"
    return f"in {_span(when - now)} ({format_time(when)})"


def _span(delta: timedelta) -> str:
    seconds = max(0.0, delta.total_seconds())
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
