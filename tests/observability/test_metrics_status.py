"""`/admin/metrics` after a workload, `dfhost status`, and JSON log lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dfhost.cli.main import main
from dfhost.logs import Invocation, configure_console, invocation, set_host_id
from dfhost.testing import TestHost
from tests.observability.conftest import APP
from tests.waiting import eventually


async def scrape(host: TestHost) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{host.origin}/admin/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_metrics_move_with_a_workload() -> None:
    async with TestHost(APP) as host:
        before = await scrape(host)  # counters are per process: compare differences
        for name in ("chain", "fanout", "retry"):
            await host.client.start_new(name, f"m-{name}")
        for name in ("chain", "fanout", "retry"):
            await host.wait(f"m-{name}", timeout=10)
        after = await scrape(host)

    assert delta(before, after, "dfhost_episodes_total", orchestrator="chain", result="Completed")
    assert (
        delta(before, after, "dfhost_episodes_total", orchestrator="chain", result="Running") == 3
    )
    assert delta(before, after, "dfhost_episode_duration_seconds_count", orchestrator="chain") == 4
    assert (
        delta(
            before, after, "dfhost_activity_executions_total", activity="double", result="succeeded"
        )
        == 7
    )
    assert (
        delta(before, after, "dfhost_activity_executions_total", activity="flaky", result="failed")
        == 1
    )
    assert delta(before, after, "dfhost_activity_duration_seconds_count", activity="flaky") == 2
    assert delta(before, after, "dfhost_timer_lateness_seconds_count") == 1  # the retry's
    assert delta(before, after, "dfhost_replayed_events_count") >= 10
    assert delta(before, after, "dfhost_replayed_events_sum") > 0
    assert delta(before, after, "dfhost_store_commit_duration_seconds_count") >= 10
    # The hub's gauges, read from the store at the scrape.
    for name in ("chain", "fanout", "retry"):
        assert after["dfhost_instances", (("orchestrator", name), ("status", "Completed"))] == 1
    assert ("dfhost_queue_messages", ()) in after
    assert after["dfhost_oldest_pending_work_age_seconds", ()] >= 0


async def test_status_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    async with TestHost(APP, store_url=url, auto_advance=False) as host:
        await host.client.start_new("chain", "s-chain")
        await host.wait("s-chain", timeout=10)
        await host.client.start_new("sleeper", "s-sleeper", 3600)
        await eventually(
            lambda: host.client.get_status("s-sleeper"),
            lambda status: status.runtime_status.value == "Running",
            timeout=10,
        )

    async def status(*args: str) -> int:  # the command runs its own event loop
        return await asyncio.to_thread(main, ["status", *args])

    assert await status("--store", url) == 0
    text = capsys.readouterr().out
    assert "Instances  2" in text
    assert "Next timer in" in text
    assert await status("--store", url, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["instances"] == {"chain": {"Completed": 1}, "sleeper": {"Running": 1}}
    assert data["nextTimer"] is not None and data["liveHosts"] == 0
    assert await status("--store", f"sqlite:///{tmp_path / 'none.db'}") == 1
    assert "no task hub at" in capsys.readouterr().err


def test_json_log_lines() -> None:
    stream = io.StringIO()
    configure_console(stream=stream, log_format="json")
    set_host_id("host-1")
    logger = logging.getLogger("function")
    replaying = True
    inv = Invocation(
        "orch", instance_id="i1", replaying=lambda: replaying, execution_id="e1", episode=4
    )
    try:
        with invocation(inv):
            logger.info("during a replay")
            replaying = False
            logger.warning("live")
        logging.getLogger("dfhost").info("host line")
    finally:
        root = logging.getLogger()
        root.handlers[:] = [h for h in root.handlers if not getattr(h, "_dfhost", False)]
    replayed, live, host = (json.loads(line) for line in stream.getvalue().splitlines())
    assert replayed["replay"] is True and live["replay"] is False
    assert live["level"] == "WARNING" and live["message"] == "live"
    assert (live["hostId"], live["function"], live["instanceId"]) == ("host-1", "orch", "i1")
    assert (live["executionId"], live["episode"]) == ("e1", 4)
    assert "timestamp" in live and "function" not in host
    with pytest.raises(ValueError, match="log format"):
        configure_console(log_format="xml")
