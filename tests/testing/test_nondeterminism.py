"""Changed orchestrator code against recorded histories, through TestHost: instances started
on tests/apps/replay_v1 continue on replay_v2, where each orchestrator changed in one way."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from dfhost.testing import TestHost
from tests.testing.conftest import AFTER_CONTINUE, V1, V2, WAITING

Runtime = OrchestrationRuntimeStatus
CHANGES = {  # orchestrator: (what the history has, what version 2 does instead)
    "renamed": ("call_activity('B')", "now schedules call_activity('B2')"),
    "timer_instead": ("call_activity('B')", "now schedules create_timer()"),
    "input_kind": ("call_activity('B', <string>)", "call_activity('B', <object>)"),
    "fewer_tasks": ("call_activity('B')", "no longer schedules it"),
    "timer_then_wait": ("create_timer()", "now schedules call_activity('B')"),
}


async def test_version_2_fails_each_changed_instance_and_replays_the_rest(
    hub: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with TestHost(V2, store_url=hub) as host:
        for name in WAITING:
            await host.client.raise_event(name, "go")
        statuses = {name: await host.wait(name, timeout=10) for name in WAITING}

    for name, (expected, actual) in CHANGES.items():
        status = statuses[name]
        assert status.runtime_status is Runtime.Failed, name
        message = status.output
        assert message.startswith(
            f"NonDeterministicOrchestrationError: instance '{name}', task 1: "
            f"the history has {expected} but the orchestrator "
        ), message
        assert actual in message, message

    steady, changed = statuses["steady"], statuses["input_value"]
    assert (steady.runtime_status, steady.output) == (Runtime.Completed, ["A(x)", "B(y)"])
    # The same calls with another input of the same kind replay (as in Azure); the recorded
    # result stands, and one warning says what changed.
    assert (changed.runtime_status, changed.output) == (Runtime.Completed, ["A(x)", "B(y)"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    [warning] = [w for w in warnings if "input_value" in w]
    assert "task 1) replays call_activity('B') with input \"z\"" in warning
    assert 'where its history has "y"' in warning


async def test_datetime_now_in_an_orchestrator_is_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with TestHost(V1) as host:
        first = await host.client.start_new("wall_clock")
        second = await host.client.start_new("wall_clock")
        assert (await host.wait(first)).output == "done"
        assert (await host.wait(second)).output == "done"
    warnings = [
        r.getMessage() for r in caplog.records if "replays call_activity('A')" in r.getMessage()
    ]
    assert len(warnings) == 1, warnings  # once per orchestrator, however many instances
    assert "orchestrator 'wall_clock'" in warnings[0]
    assert "use context.current_utc_datetime, not datetime.now()" in warnings[0]


async def test_a_timer_after_continue_as_new_is_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with TestHost(AFTER_CONTINUE, auto_advance=False) as host:
        await host.client.start_new("loop-orchestrator")
        await host.advance(timedelta(minutes=5))
    lines = [r.getMessage() for r in caplog.records if "after continue_as_new" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("dfhost: orchestrator 'loop-orchestrator' (instance '")
    assert "creates a timer after continue_as_new: it never fires" in lines[0]
