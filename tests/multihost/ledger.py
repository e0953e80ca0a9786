"""What the multi-host tests check after a run: outputs, histories and activity runs."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dfhost.client import DurableClient
from dfhost.history import EventType, OrchestrationStatus
from dfhost.store import InstanceQuery, Store
from tests.waiting import eventually


@dataclass(frozen=True)
class Run:
    kind: str  # "start" or "end"
    key: str  # "INSTANCE/STEP"
    pid: int
    at: float  # time.time()


def runs(state: Path) -> list[Run]:
    path = state / "runs.log"
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        kind, key, pid, at = line.split()
        found.append(Run(kind, key, int(pid), float(at)))
    return found


def chain_output(start: int, steps: int) -> int:
    return start << steps  # start * 2**steps


def fanout_output(width: int) -> int:
    return sum(2 * i for i in range(width))


Spec = tuple[str, str, Mapping[str, float]]
"""(orchestrator, instance id, input): an orchestration to start."""


async def start_many(client: DurableClient, specs: Sequence[Spec]) -> None:
    """Start (orchestrator, instance id, input) triples, a few dozen at a time."""
    for begin in range(0, len(specs), 50):
        await asyncio.gather(
            *(
                client.start_new(name, instance_id, json.dumps(spec))
                for name, instance_id, spec in specs[begin : begin + 50]
            )
        )


async def wait_all_finished(store: Store, count: int, timeout: float) -> float:
    """Poll until `count` instances are Completed; fail at once if any Failed. Returns the
    seconds it took."""
    began = time.monotonic()

    async def completed() -> int:
        failed = await store.count_instances(InstanceQuery(statuses=[OrchestrationStatus.FAILED]))
        assert failed == 0, f"{failed} instances failed"
        return await store.count_instances(InstanceQuery(statuses=[OrchestrationStatus.COMPLETED]))

    await eventually(
        completed,
        lambda done: done == count,
        timeout=timeout,
        interval=0.2,
        what=f"{count} instances completed",
    )
    return time.monotonic() - began


async def assert_recorded_once(store: Store, instance_ids: list[str]) -> None:
    """Each instance's history holds one start, one end, and exactly one result per scheduled
    activity: no episode was committed twice and no result delivered twice."""
    for instance_id in instance_ids:
        history = await store.get_history(instance_id)
        types = Counter(e.type for e in history)
        assert types[EventType.EXECUTION_STARTED] == 1, instance_id
        assert types[EventType.EXECUTION_COMPLETED] == 1, instance_id
        scheduled = [e.event_id for e in history if e.type is EventType.TASK_SCHEDULED]
        results = [
            e.task_scheduled_id
            for e in history
            if e.type in (EventType.TASK_COMPLETED, EventType.TASK_FAILED)
        ]
        assert len(set(scheduled)) == len(scheduled), (instance_id, scheduled)
        assert sorted(-1 if r is None else r for r in results) == sorted(scheduled), (
            instance_id,
            results,
        )
