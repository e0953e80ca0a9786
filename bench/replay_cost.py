"""CPU cost of driving an n-step activity chain through dfhost's replay, episode by episode.

    .venv/bin/python bench/replay_cost.py [--steps 100 300 1000]

Compares full replays (the whole history every episode, as the Durable extension does) with
continued sessions (only the new events), and shows the SDK's own cost with its dateutil
timestamp parsing for reference. No storage, no threads: replay alone.
"""

from __future__ import annotations

import argparse
import importlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from dfhost.history import EventType, HistoryEvent
from dfhost.orchestration.episode import EpisodeInput
from dfhost.orchestration.replay import run_episode
from dfhost.orchestration.session import SessionCache


def chain(n: int) -> Any:
    def orchestrator(ctx: Any) -> Any:
        for i in range(n):
            yield ctx.call_activity("A", i)
        return n

    return orchestrator


def drive(n: int, sessions: SessionCache | None) -> float:
    orchestrator = chain(n)
    now = datetime(2024, 1, 1, tzinfo=UTC)
    history: list[HistoryEvent] = []
    inbound = [HistoryEvent(type=EventType.EXECUTION_STARTED, timestamp=now, name="chain")]
    started = time.process_time()
    for step in range(n + 1):
        new = [HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=now), *inbound]
        episode = EpisodeInput(
            instance_id="bench",
            execution_id="e",
            name="chain",
            input=None,
            parent_instance_id=None,
            past=history,
            new=new,
        )
        result = run_episode(orchestrator, episode, None, sessions)
        history = [*history, *new, *result.events]
        history.append(HistoryEvent(type=EventType.ORCHESTRATOR_COMPLETED, timestamp=now))
        now += timedelta(milliseconds=5)
        inbound = [
            HistoryEvent(
                type=EventType.TASK_COMPLETED, timestamp=now, task_scheduled_id=step, result="1"
            )
        ]
    assert result.outcome.__class__.__name__ == "Completed", result.outcome
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 300, 1000])
    args = parser.parse_args()
    sdk_history = importlib.import_module("azure.durable_functions.models.history.HistoryEvent")
    fast_parse = sdk_history.dt_parse
    from dateutil.parser import parse as dateutil_parse

    print(
        f"{'steps':>6} {'SDK as shipped':>15} {'full replay':>12} {'incremental':>12} {'ratio':>7}"
    )
    for n in args.steps:
        sdk_history.dt_parse = dateutil_parse
        shipped = drive(n, None) if n <= 300 else float("nan")
        sdk_history.dt_parse = fast_parse
        full = drive(n, None)
        incremental = drive(n, SessionCache())
        print(
            f"{n:>6} {shipped:>14.2f}s {full:>11.2f}s {incremental:>11.2f}s "
            f"{full / incremental:>6.1f}x"
        )


if __name__ == "__main__":
    main()
