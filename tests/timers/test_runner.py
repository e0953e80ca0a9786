"""The timer runner in-process, against a SQLite task hub: no overlap, catch-up, run now."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import httpx
import pytest

from dfhost.client import DurableClient
from dfhost.history import utcnow
from dfhost.runtime.timer_triggers import TimerRunner
from dfhost.store import Claim, Store, TimerStatus, open_store
from dfhost.web import build_app
from tests.timers.conftest import load_timers_app, read_runs
from tests.waiting import eventually

RPC = "http://127.0.0.1:1/runtime/webhooks/durabletask/"


def shifted(offset: timedelta) -> Callable[[], datetime]:
    return lambda: utcnow() + offset


@pytest.mark.slow
async def test_a_timer_every_2s_whose_runs_take_3s_never_overlaps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dfhost.timers")
    runs_file = tmp_path / "runs.jsonl"
    app = load_timers_app(monkeypatch, runs_file, ["slow"], DFHOST_SLOW_SECONDS="3")
    await hub.open_host("host", utcnow())
    runner = TimerRunner(app, hub, owner="host", rpc_base_url=RPC)
    assert runner.problems == []
    await runner.start()
    try:
        await eventually(lambda: read_runs(runs_file), lambda runs: len(runs) >= 2, timeout=15)
    finally:
        await runner.stop()

    runs = sorted(read_runs(runs_file), key=lambda run: run["start"])
    for earlier, later in pairwise(runs):
        assert later["start"] >= earlier["end"], runs
        # The occurrence 2 s after a start fell due mid-run and was skipped: the next run is
        # the one 4 s after (had it run late instead, right after the 3 s run, 3 s after).
        # Each start is taken inside the function, up to a few hundred ms late under load.
        assert later["start"] - earlier["start"] >= 3.5, runs
    for run in runs:
        assert run["start"] % 2 < 0.5, run  # at an even second: */2
        assert run["past_due"] is False and run["status"] == {}  # sub-minute: not monitored
        assert run["schedule"] == {"AdjustForDST": True}
    skipped = [r.getMessage() for r in caplog.records if "skipped its" in r.getMessage()]
    assert skipped, caplog.text
    assert all("the run started at" in line and "is still going" in line for line in skipped)


async def test_a_monitored_timer_catches_up_once_after_downtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub_url: str
) -> None:
    runs_file = tmp_path / "runs.jsonl"
    app = load_timers_app(monkeypatch, runs_file, ["every_minute"])
    stores = [open_store(hub_url) for _ in range(3)]
    for store in stores:
        await store.start()
    try:
        await stores[0].open_host("first", utcnow())
        # A clock 1.5 s before a minute, so that the every-minute timer fires soon; set just
        # before the start (set before the stores opened, a loaded machine once passed the
        # minute before the timer was scheduled, and the run was a minute away).
        now = utcnow()
        offset = now.replace(second=58, microsecond=500_000) - now
        first = TimerRunner(app, stores[0], owner="first", rpc_base_url=RPC, clock=shifted(offset))
        assert first.timers["every_minute"].use_monitor  # the default at once a minute
        await first.start()
        try:
            [ran] = await eventually(
                lambda: read_runs(runs_file), lambda runs: len(runs) == 1, timeout=15
            )
        finally:
            await first.stop()
        await stores[0].close()
        assert ran["past_due"] is False

        # The host was down 10 minutes; two hosts start at once: ONE catch-up run.
        later = shifted(offset + timedelta(minutes=10))
        hosts = []
        for name, store in (("second", stores[1]), ("third", stores[2])):
            await store.open_host(name, later())
            hosts.append(TimerRunner(app, store, owner=name, rpc_base_url=RPC, clock=later))
        for host in hosts:
            await host.start()
        try:
            await eventually(lambda: read_runs(runs_file), lambda runs: len(runs) >= 2, timeout=15)
            await asyncio.sleep(1.0)  # long enough for a burst of catch-up runs to show
        finally:
            for host in hosts:
                await host.stop()
        runs = read_runs(runs_file)
        assert len(runs) == 2, runs
        catch_up = runs[1]
        assert catch_up["past_due"] is True
        status = catch_up["status"]
        assert set(status) == {"Last", "Next", "LastUpdated"}
        # Next is the first occurrence missed: one minute after the run before the downtime.
        last = datetime.fromisoformat(status["Last"])
        assert datetime.fromisoformat(status["Next"]) == last.replace(
            second=0, microsecond=0
        ) + timedelta(minutes=1)

        recorded = await stores[1].get_timer_status("every_minute")
        assert recorded is not None and recorded.next > later() - timedelta(seconds=2)
    finally:
        for store in stores:
            await store.close()


async def test_a_run_cut_short_by_a_crash_still_gets_its_catch_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: Store
) -> None:
    runs_file = tmp_path / "runs.jsonl"
    app = load_timers_app(monkeypatch, runs_file, ["every_minute"])
    # A host claimed the 12:01 occurrence and died mid-run, before recording its status.
    occurrence = datetime.fromisoformat("2024-05-01T12:01:00+00:00")
    before = TimerStatus(
        last=occurrence - timedelta(minutes=1), next=occurrence, last_updated=occurrence
    )
    await hub.set_timer_status("every_minute", before)
    crashed = Claim(owner="dead", now=occurrence, lease_until=occurrence + timedelta(minutes=5))
    assert await hub.claim_timer_run("every_minute", occurrence, crashed)

    later = shifted(occurrence + timedelta(minutes=30, seconds=20) - utcnow())
    await hub.open_host("host", later())  # frees the dead host's run
    runner = TimerRunner(app, hub, owner="host", rpc_base_url=RPC, clock=later)
    await runner.start()
    try:
        [run] = await eventually(
            lambda: read_runs(runs_file), lambda runs: len(runs) == 1, timeout=15
        )
    finally:
        await runner.stop()
    assert run["past_due"] is True
    assert datetime.fromisoformat(run["status"]["Next"]) == occurrence


async def test_run_now_over_http_never_overlaps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: Store
) -> None:
    runs_file = tmp_path / "runs.jsonl"
    app = load_timers_app(monkeypatch, runs_file, ["slow"], DFHOST_SLOW_SECONDS="0.5")
    await hub.open_host("host", utcnow())
    runner = TimerRunner(app, hub, owner="host", rpc_base_url=RPC)  # not started: no schedule
    web_app = build_app(DurableClient(hub, app), app, rpc_base_url=RPC, run_function=runner.run_now)
    transport = httpx.ASGITransport(app=web_app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            body = {"input": ""}
            assert (await http.post("/admin/functions/slow", json=body)).status_code == 202
            busy = await http.post("/admin/functions/slow", json=body)
            assert busy.status_code == 409
            assert "already running" in busy.text
            missing = await http.post("/admin/functions/nope", json=body)
            assert missing.status_code == 404
            assert missing.text == "no timer-triggered function named 'nope'"
            await eventually(lambda: read_runs(runs_file), lambda runs: len(runs) == 1, timeout=15)
            # Once the run has ended (a moment after its record), it runs again; function
            # names are case-insensitive, as in Azure.
            again = await eventually(
                lambda: http.post("/admin/functions/SLOW"),
                lambda response: response.status_code != 409,
                timeout=10,
                interval=0.02,
            )
            assert again.status_code == 202
            await eventually(lambda: read_runs(runs_file), lambda runs: len(runs) == 2, timeout=15)
    finally:
        await runner.stop()
    assert all(run["past_due"] is False for run in read_runs(runs_file))


async def test_use_app_schedules_the_new_timers_and_lets_a_run_in_progress_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: Store
) -> None:
    runs_file = tmp_path / "runs.jsonl"
    app = load_timers_app(monkeypatch, runs_file, ["slow"], DFHOST_SLOW_SECONDS="1.5")
    await hub.open_host("host", utcnow())
    runner = TimerRunner(app, hub, owner="host", rpc_base_url=RPC)
    await runner.start()
    try:
        # Running now (started here, or by its schedule a moment before).
        assert await runner.run_now("slow") in ("started", "busy")
        monkeypatch.delenv("AzureWebJobs.tick.Disabled")
        reloaded = load_timers_app(monkeypatch, runs_file, ["tick"], TICK_SCHEDULE="* * * * * *")
        switched = time.time()
        await runner.use_app(reloaded)
        assert list(runner.timers) == ["tick"]
        assert await runner.run_now("slow") == "not_found"
        runs = await eventually(
            lambda: read_runs(runs_file),
            lambda runs: [r["fn"] for r in runs].count("tick") >= 2 and "slow" in str(runs),
            timeout=15,
        )
    finally:
        await runner.stop()
    [slow] = [run for run in runs if run["fn"] == "slow"]
    assert slow["end"] - switched > 1  # the run in progress was not cut short


async def test_a_claim_that_commits_while_the_runner_switches_apps_still_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: Store
) -> None:
    """A reload cancels the schedule loops; one that was claiming a run must not drop a claim
    the store then commits (the function would not run again for a whole lease)."""
    runs_file = tmp_path / "runs.jsonl"
    app = load_timers_app(monkeypatch, runs_file, ["slow"], DFHOST_SLOW_SECONDS="0")
    await hub.open_host("host", utcnow())
    runner = TimerRunner(app, hub, owner="host", rpc_base_url=RPC)  # not started: no schedule
    claim_timer_run = hub.claim_timer_run
    committed, answer = asyncio.Event(), asyncio.Event()

    async def slow_to_answer(name: str, due_at: datetime | None, claim: Claim) -> int | None:
        token = await claim_timer_run(name, due_at, claim)
        committed.set()
        await answer.wait()  # committed; the answer is on its way when the cancel comes
        return token

    monkeypatch.setattr(hub, "claim_timer_run", slow_to_answer)
    firing = asyncio.create_task(runner.run_now("slow"))
    await committed.wait()
    firing.cancel()
    answer.set()
    with pytest.raises(asyncio.CancelledError):
        await firing
    monkeypatch.setattr(hub, "claim_timer_run", claim_timer_run)
    await eventually(lambda: read_runs(runs_file), lambda runs: len(runs) == 1, timeout=10)
    # The run ended and gave its claim back: the function runs again at once.
    result = await eventually(lambda: runner.run_now("slow"), lambda r: r == "started", timeout=10)
    assert result == "started"
    await runner.stop()
    assert len(read_runs(runs_file)) == 2


def test_unusable_schedules_are_one_line_each_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: Store
) -> None:
    monkeypatch.delenv("TICK_SCHEDULE", raising=False)
    app = load_timers_app(monkeypatch, tmp_path / "runs.jsonl", ["tick", "every_minute"])
    runner = TimerRunner(app, hub, owner="host", rpc_base_url=RPC)
    assert runner.problems == [
        "timer 'tick': schedule '%TICK_SCHEDULE%' uses app setting 'TICK_SCHEDULE', which "
        "is not set; the function is not scheduled"
    ]
    assert list(runner.timers) == ["every_minute"]

    runner = TimerRunner(
        app, hub, owner="host", rpc_base_url=RPC, env={"TICK_SCHEDULE": "0 0 */0 * * *"}
    )
    assert runner.problems == [
        "timer 'tick': schedule '0 0 */0 * * *': hour field: '*/0': the step after / must be "
        "a whole number from 1; the function is not scheduled"
    ]

    env = {"TICK_SCHEDULE": "* * * * *", "WEBSITE_TIME_ZONE": "Pacific Standard Time"}
    runner = TimerRunner(app, hub, owner="host", rpc_base_url=RPC, env=env)
    assert runner.problems == [
        "WEBSITE_TIME_ZONE 'Pacific Standard Time' is a Windows time zone name; use the IANA "
        "name (e.g. America/New_York); timer functions 'every_minute', 'tick' are not scheduled"
    ]
    assert runner.timers == {}


def test_time_zone_and_explicit_monitor_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: Store
) -> None:
    app = load_timers_app(monkeypatch, tmp_path / "runs.jsonl", ["tick", "every_minute"])
    env = {"TICK_SCHEDULE": "0 0 9 * * *", "WEBSITE_TIME_ZONE": "Europe/Paris"}
    runner = TimerRunner(app, hub, owner="host", rpc_base_url=RPC, env=env)
    assert runner.problems == []
    tick = runner.timers["tick"]
    assert not tick.use_monitor  # use_monitor=False wins over the once-a-day default
    assert str(tick.time_zone) == "Europe/Paris"
    assert tick.schedule.next_occurrence(datetime.fromisoformat("2024-07-01T00:00:00+00:00")) == (
        datetime.fromisoformat("2024-07-01T07:00:00+00:00")
    )
