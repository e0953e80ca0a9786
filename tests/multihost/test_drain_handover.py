"""A host stopped on PostgreSQL hands what outlasts its grace period over at once: its leases
are released as it exits, and another host runs the work without waiting for them to expire
or for the host to count as dead (both set to 5 minutes here)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.e2e.harness import APPS, HostProcess
from tests.ops.test_drain import completed_output, lines, start_fan_out

pytestmark = pytest.mark.e2e

TAKEOVER = "AzureFunctionsJobHost__extensions__durableTask__storageProvider__taskEventLockTimeout"


async def test_a_second_host_takes_over_unfinished_work_at_once(
    hub_url: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    env = {"RUNS_DIR": str(runs), TAKEOVER: "00:05:00"}
    stopping = HostProcess(APPS / "drain_v2", hub_url, env, ("--drain", "0.5")).start()
    taking_over = HostProcess(APPS / "drain_v2", hub_url, {**env, "WORK_NOW": "1"})
    try:
        # Every activity is leased to the first host (its capacity is 20) before the second
        # one starts, so the second runs them only if they are handed over.
        await start_fan_out(stopping.origin, runs)
        await asyncio.to_thread(taking_over.start)
        assert stopping.proc is not None
        stopping.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(stopping.proc.wait, 30) == 0
        assert "still running after 0.5 s: 20 running activities: work (20)" in stopping.output
        # Well within the 5 minutes after which the leases would have been taken over anyway.
        assert await completed_output(taking_over.origin) == 20
    finally:
        await asyncio.gather(asyncio.to_thread(stopping.stop), asyncio.to_thread(taking_over.stop))
    assert len(lines(runs / "started")) == 40
    assert len(lines(runs / "finished")) == 20
    assert taking_over.output.count("Executed 'Functions.work' (Succeeded") == 20
