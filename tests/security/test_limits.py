"""Limits from host.json (tests/apps/security_v2): payloads over `payloadBytes` are refused
with nothing written, executions over `maxOrchestrationActions` or histories over
`historyEvents` fail their orchestration, and a function over `functionTimeout` fails
without taking the host down."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from dfhost.config import Limits, SettingsError
from dfhost.testing import TestHost
from tests.security.conftest import APP_DIR, BASE

BIG = "z" * 1200  # over the app's payloadBytes of 1000


async def test_oversized_start_and_event_are_refused_with_nothing_written() -> None:
    async with TestHost(APP_DIR) as host, httpx.AsyncClient(base_url=host.origin) as http:
        refused = await http.post(f"{BASE}/orchestrators/hello/big-one", json=BIG)
        assert refused.status_code == 413, refused.text
        assert "payloadBytes" in refused.json()["Message"]
        assert (await http.get(f"{BASE}/instances/big-one")).status_code == 404
        assert (await http.get(f"{BASE}/instances")).json() == []
        # Through the app's own client (the SDK's HTTP call to the management API) too.
        with pytest.raises(Exception, match="payloadBytes"):
            await host.client.start_new("hello", None, BIG)
        assert (await http.get(f"{BASE}/instances")).json() == []

        waiting = await host.client.start_new("waiter")
        await host.advance()
        event = await http.post(f"{BASE}/instances/{waiting}/raiseEvent/go", json=BIG)
        assert event.status_code == 413
        await host.advance()
        history = await host.history(waiting)
        assert not any(e.type.name == "EVENT_RAISED" for e in history)
        signal = await http.post(f"{BASE}/entities/nope/k", params={"op": "x"}, json=BIG)
        assert signal.status_code in (400, 413)  # unknown entity or too large: never a 500
        await host.client.raise_event(waiting, "go", "small")
        status = await host.wait(waiting, timeout=10)
        assert status.output == '"small"' or status.output == "small"


async def test_too_many_actions_or_events_or_bytes_fail_the_orchestration() -> None:
    async with TestHost(APP_DIR) as host:
        ok = await host.client.start_new("fan", None, 5)
        too_many = await host.client.start_new("fan", None, 6)
        short = await host.client.start_new("chain", None, 3)
        # Actions count over the whole execution, as on Azure.
        chained = await host.client.start_new("chain", None, 6)
        long = await host.client.start_new("ticks", None, 30)
        small = await host.client.start_new("inflate", None, 10)
        large = await host.client.start_new("inflate", None, 2000)
        big_input = await host.client.start_new("send_big", None, 2000)
        assert (await host.wait(ok)).output == 5
        failed = await host.wait(too_many)
        assert failed.runtime_status.value == "Failed"
        assert "Maximum amount of orchestration actions (5) has been reached" in failed.output
        assert (await host.wait(short)).output == "done"
        failed = await host.wait(chained)
        assert "Maximum amount of orchestration actions (5) has been reached" in failed.output
        await host.advance()
        for _ in range(30):  # one episode each, until the history is over the limit
            await host.client.raise_event(long, "tick")
            await host.advance()
            if (await host.client.get_status(long)).runtime_status.value == "Failed":
                break
        failed = await host.wait(long)
        assert failed.runtime_status.value == "Failed"
        assert "historyEvents" in str(failed.output) and "continue_as_new" in str(failed.output)
        assert (await host.wait(small)).output == "y" * 10
        failed = await host.wait(large)
        assert failed.runtime_status.value == "Failed" and "payloadBytes" in str(failed.output)
        # An activity input over the limit.
        failed = await host.wait(big_input)
        assert failed.runtime_status.value == "Failed"
        assert "input of activity 'echo'" in str(failed.output)


async def test_activity_results_over_the_limit_fail_the_task() -> None:
    async with TestHost(APP_DIR) as host:
        iid = await host.client.start_new("call_and_report", None, ["big", 2000])
        status = await host.wait(iid)
        assert status.runtime_status.value == "Completed"
        assert "failed:" in status.output and "payloadBytes" in status.output


async def test_a_hanging_function_times_out_and_the_host_goes_on() -> None:
    async with TestHost(APP_DIR) as host:
        began = time.monotonic()
        hung = await host.client.start_new("call_and_report", None, ["hang", 3])
        fine = await host.client.start_new("hello", None, "still here")
        assert (await host.wait(fine, timeout=10)).output == "still here"
        status = await host.wait(hung, timeout=10)
        # The Functions host's message for it.
        assert "Timeout value of 00:00:01 was exceeded by function: Functions.hang" in status.output
        assert time.monotonic() - began < 2.9  # failed at the timeout, not when it returned
        async with httpx.AsyncClient(base_url=host.origin) as http:
            slow = await http.get("/api/slow")
            assert slow.status_code == 500
            assert (await http.get("/api/open")).text == "open"


def test_limits_from_host_json_and_their_errors() -> None:
    limits = Limits.from_host_json(json.loads((APP_DIR / "host.json").read_text()))
    assert limits == Limits(
        payload_bytes=1000, max_actions=5, history_events=60, function_timeout=1.0
    )
    assert Limits.from_host_json({}) == Limits()
    assert Limits.from_host_json({"functionTimeout": "-1"}).function_timeout is None
    assert Limits.from_host_json({"functionTimeout": "1.00:00:30.5"}).function_timeout == 86430.5
    env_style = {"extensions": {"durableTask": {"maxOrchestrationActions": "7"}}}
    assert Limits.from_host_json(env_style).max_actions == 7
    bad: dict[str, Any]
    for bad in (
        {"functionTimeout": "ten minutes"},
        {"functionTimeout": "00:00:00"},
        {"functionTimeout": "00:61:00"},
        {"extensions": {"durableTask": {"maxOrchestrationActions": 0}}},
        {"extensions": {"durableTask": {"maxOrchestrationActions": True}}},
        {"extensions": {"durableTask": {"dfhost": {"limits": {"payloadBytes": "x"}}}}},
        {"extensions": {"durableTask": {"dfhost": {"limits": []}}}},
        {"extensions": "none"},
    ):
        with pytest.raises(SettingsError):
            Limits.from_host_json(bad)
