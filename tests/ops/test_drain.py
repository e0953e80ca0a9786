"""Stopping a busy host (SIGTERM, as systemd and Kubernetes stop it): it stops taking work,
lets the activities in flight finish within the grace period (host.json shutdownTimeout,
`--drain`), records their results and exits 0; what outlasts the grace runs after a restart;
a second signal stops it at once.

The app (tests/apps/drain_v2) fans out to activities that append to RUNS_DIR/started and
RUNS_DIR/finished, and hold until RUNS_DIR/release exists: the test decides when they end."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import APPS, HostProcess
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

APP = APPS / "drain_v2"
API = "/runtime/webhooks/durabletask"
COUNT = 20


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def host(runs: Path, store_url: str, *extra: str, env: dict[str, str] | None = None) -> HostProcess:
    return HostProcess(APP, store_url, {"RUNS_DIR": str(runs), **(env or {})}, extra)


async def start_fan_out(origin: str, runs: Path, count: int = COUNT) -> None:
    """Start `count` activities and wait until every one of them runs."""
    async with httpx.AsyncClient(base_url=origin) as http:
        started = await http.post(f"{API}/orchestrators/fan_out/fan", json={"count": count})
    assert started.status_code == 202, started.text
    await eventually(
        lambda: len(lines(runs / "started")), lambda n: n == count, timeout=30, what="all started"
    )


async def completed_output(origin: str) -> object:
    async with httpx.AsyncClient(base_url=origin) as http:

        async def status() -> dict[str, object]:
            body: dict[str, object] = (await http.get(f"{API}/instances/fan")).json()
            return body

        done = await eventually(
            status, lambda s: s["runtimeStatus"] == "Completed", timeout=30, what="completed"
        )
    return done["output"]


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    folder = tmp_path / "runs"
    folder.mkdir()
    return folder


async def test_sigterm_lets_running_activities_finish_and_none_runs_again(
    runs: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    first = host(runs, url).start()
    try:
        await start_fan_out(first.origin, runs)
        assert first.proc is not None
        first.proc.send_signal(signal.SIGTERM)
        waiting = "dfhost: waiting up to 30 s for 20 running activities: work (20), Ctrl-C again"
        await eventually(lambda: first.output, lambda out: waiting in out, what="the wait line")
        async with httpx.AsyncClient(base_url=first.origin) as http:
            # Draining: HTTP functions refuse new requests (a load balancer goes elsewhere),
            # health checks say so, and the management API still answers.
            ping = await http.get("/api/ping")
            assert (ping.status_code, ping.text) == (503, "Function host is shutting down.")
            health = await http.get("/admin/host/status")
            assert (health.status_code, health.json()["state"]) == (503, "Stopping")
            status = await http.get(f"{API}/instances/fan")
            assert (status.status_code, status.json()["runtimeStatus"]) == (202, "Running")
        (runs / "release").touch()
        assert first.proc.wait(30) == 0
    finally:
        first.stop()
    assert sorted(lines(runs / "finished"), key=int) == [str(i) for i in range(COUNT)]
    assert "handing over" not in first.output
    assert "Traceback" not in first.output
    again = host(runs, url).start()
    try:
        # The results were recorded: the restarted host only runs the orchestrator's next
        # episode, and no activity runs twice.
        assert await completed_output(again.origin) == COUNT
    finally:
        again.stop()
    assert len(lines(runs / "started")) == COUNT


async def test_work_that_outlasts_the_grace_is_handed_over_and_runs_after_a_restart(
    runs: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    first = host(runs, url, "--drain", "0.5").start()
    try:
        await start_fan_out(first.origin, runs, count=3)
        assert first.proc is not None
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(30) == 0  # the activities never end: the grace does
    finally:
        first.stop()
    assert "dfhost: waiting up to 0.5 s for 3 running activities" in first.output
    handed = "dfhost: still running after 0.5 s: 3 running activities: work (3); handing over"
    assert handed in first.output
    assert lines(runs / "finished") == []
    (runs / "release").touch()
    again = host(runs, url).start()
    try:
        assert await completed_output(again.origin) == 3
    finally:
        again.stop()
    assert len(lines(runs / "started")) == 6
    assert len(lines(runs / "finished")) == 3


async def test_host_json_sets_the_grace(runs: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    setting = "AzureFunctionsJobHost__extensions__durableTask__dfhost__shutdownTimeout"
    first = host(runs, url, env={setting: "00:00:00.2"}).start()
    try:
        await start_fan_out(first.origin, runs, count=1)
        assert first.proc is not None
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(30) == 0
    finally:
        first.stop()
    assert "dfhost: still running after 0.2 s: 1 running activity: work; handing over" in (
        first.output
    )


async def test_a_second_sigterm_stops_at_once(runs: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    first = host(runs, url).start()
    try:
        await start_fan_out(first.origin, runs, count=2)
        assert first.proc is not None
        first.proc.send_signal(signal.SIGTERM)
        await eventually(lambda: first.output, lambda out: "Ctrl-C again to stop now" in out)
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(10) == 128 + signal.SIGTERM
    finally:
        first.stop()
    assert "Traceback" not in first.output
    assert lines(runs / "finished") == []


def test_a_bad_drain_flag_stops_start_with_one_line(runs: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    refused = host(runs, url, "--drain", "soon").launch()
    assert refused.proc is not None
    assert refused.proc.wait(30) == 2
    refused.stop()
    assert "dfhost: --drain 'soon': expected a number of seconds, 0 or more" in refused.output
    assert "Traceback" not in refused.output
