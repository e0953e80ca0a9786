"""The example app of the article's scenario (an eternal loop: activity, 1-minute timer,
continue_as_new) for a virtual day, with its 5-second activity faked."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta

from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from dfhost.history import EventType
from dfhost.testing import TestHost
from tests.testing.conftest import EXAMPLE_APP

T0 = datetime(2030, 1, 1, tzinfo=UTC)


async def test_a_virtual_day_of_the_example_loop_runs_one_activity_per_minute() -> None:
    async with TestHost(EXAMPLE_APP, start=T0, auto_advance=False) as host:
        runs: list[datetime] = []

        def fake_activity(name: str) -> str:
            runs.append(host.now)
            return f"{name} done"

        host.mock_activity("durable-activity", fake_activity)
        started = time.monotonic()
        iid = await host.client.start_new("durable-orchestrator")
        await host.advance(timedelta(hours=24), timeout=100)
        elapsed = time.monotonic() - started
        status = await host.client.get_status(iid)
        history = await host.history(iid)
    # One activity per cycle: at the start, then after each 1-minute timer (the activity is
    # instant in virtual time), the last one exactly 24 h later.
    assert len(runs) == 24 * 60 + 1
    assert runs[0] == T0 and runs[-1] == T0 + timedelta(hours=24)
    assert {b - a for a, b in itertools.pairwise(runs)} == {timedelta(minutes=1)}
    assert status.runtime_status is OrchestrationRuntimeStatus.Running
    # Only the current generation is kept: started at 24 h, its activity done, timer set.
    assert [e.type for e in history].count(EventType.EXECUTION_STARTED) == 1
    assert [e.fire_at for e in history if e.type is EventType.TIMER_CREATED] == [
        T0 + timedelta(hours=24, minutes=1)
    ]
    print(f"24 virtual hours ({len(runs)} cycles) in {elapsed:.1f} s")
