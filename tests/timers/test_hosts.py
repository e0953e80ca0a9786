"""`dfhost start` with timer triggers: several hosts on one SQLite file, v1 apps, run now."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import APPS, HostProcess, finished
from tests.timers.conftest import disabled_except, read_runs
from tests.waiting import eventually

pytestmark = pytest.mark.e2e


@pytest.mark.slow
async def test_two_hosts_on_one_sqlite_file_run_each_occurrence_once(tmp_path: Path) -> None:
    runs_file = tmp_path / "runs.jsonl"
    env = {
        "DFHOST_TIMERS_LOG": str(runs_file),
        "TICK_SCHEDULE": "* * * * * *",
        **disabled_except(["tick"]),
    }
    store = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    hosts = [HostProcess(APPS / "timers_v2", store, env) for _ in range(2)]
    try:
        await asyncio.gather(*(asyncio.to_thread(host.start) for host in hosts))
        # Both are up: from now on each second is an occurrence both hosts try to claim.
        both_up = len(read_runs(runs_file))
        await eventually(
            lambda: read_runs(runs_file), lambda runs: len(runs) >= both_up + 5, timeout=20
        )
    finally:
        for host in hosts:
            host.stop()

    runs = read_runs(runs_file)[both_up:]
    occurrences = [math.floor(run["start"]) for run in runs]
    assert all(run["start"] - second < 0.9 for run, second in zip(runs, occurrences, strict=True))
    duplicates = [second for second, n in Counter(occurrences).items() if n > 1]
    assert duplicates == [], runs
    # None lost either, while both hosts ran.
    assert sorted(occurrences) == list(range(min(occurrences), max(occurrences) + 1)), runs
    assert {run["pid"] for run in runs} <= {host.proc.pid for host in hosts if host.proc}


async def test_a_v1_timer_runs_on_startup_and_on_demand_and_bad_schedules_are_reported(
    tmp_path: Path,
) -> None:
    runs_file = tmp_path / "runs.jsonl"
    store = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    host = HostProcess(APPS / "timers_v1", store, {"DFHOST_TIMERS_LOG": str(runs_file)})
    host.start()
    try:
        [startup] = await eventually(
            lambda: read_runs(runs_file), lambda runs: len(runs) == 1, timeout=15
        )
        async with httpx.AsyncClient(base_url=host.origin) as http:
            response = await http.post("/admin/functions/Tick", json={"input": ""})
            assert response.status_code == 202
            runs = await eventually(
                lambda: read_runs(runs_file), lambda runs: len(runs) == 2, timeout=15
            )
            bad = await http.post("/admin/functions/BadSchedule", json={"input": ""})
            assert bad.status_code == 404
    finally:
        host.stop()
    assert startup == {
        "fn": "Tick",
        "past_due": False,
        "status": {},
        "invocation_id": startup["invocation_id"],
    }
    assert runs[1]["invocation_id"] != startup["invocation_id"]
    problem = (
        "dfhost: timer 'BadSchedule': schedule '0 0 25 * * *': hour field: 25 is out of range "
        "0-23; the function is not scheduled"
    )
    assert sum(problem in line for line in host.lines) == 1, host.output
    assert "Traceback" not in host.output
    assert "Reason='Timer fired at " in host.output
    assert "Reason='This function was programmatically called via the host APIs.'" in host.output


async def test_a_timer_starts_an_orchestration_through_its_client_binding(
    tmp_path: Path, sdk_session: None
) -> None:
    runs_file = tmp_path / "runs.jsonl"
    env = {"DFHOST_TIMERS_LOG": str(runs_file), **disabled_except(["starter"])}
    host = HostProcess(APPS / "timers_v2", f"sqlite:///{tmp_path / 'hub.sqlite3'}", env)
    host.start()
    try:
        [run] = await eventually(
            lambda: read_runs(runs_file), lambda runs: len(runs) == 1, timeout=15
        )
        assert run["instance_id"] == "from-timer"
        assert run["status"]["Last"] == "0001-01-01T00:00:00"  # monitored, never ran before
        status = await finished(host.client("TimersHub"), "from-timer")
        assert status.runtime_status.value == "Completed"
        assert status.output == "hello timer"
    finally:
        host.stop()
