"""`dfhost.testing.TestHost`: an app in-process on a virtual clock, driven through the SDK's
own client. Durable timers of minutes or hours fire in milliseconds of wall time."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from dfhost.history import EventType
from dfhost.testing import TestHost

Runtime = OrchestrationRuntimeStatus
APPS = Path(__file__).resolve().parents[1] / "apps"
E2E_APP = APPS / "e2e_v2"
T0 = datetime(2030, 1, 1, tzinfo=UTC)


async def test_an_hour_long_timer_fires_at_once_in_virtual_time() -> None:
    started = time.monotonic()
    async with TestHost(E2E_APP, start=T0) as host:
        iid = await host.client.start_new("sleeper", None, 3600)
        status = await host.wait(iid, timeout=10)
        assert status.runtime_status is Runtime.Completed
        assert status.output == "woke"
        assert host.now == T0 + timedelta(hours=1)
        fired = [e for e in await host.history(iid) if e.type is EventType.TIMER_FIRED]
        assert [e.fire_at for e in fired] == [T0 + timedelta(hours=1)]
    assert time.monotonic() - started < 5


async def test_human_interaction_times_out_after_a_virtual_day() -> None:
    async with TestHost(E2E_APP, start=T0) as host:
        iid = await host.client.start_new("approval", None, {"timeout": 86400})
        status = await host.wait(iid, timeout=10)
        assert status.output == "timeout"
        assert host.now == T0 + timedelta(days=1)


async def test_an_event_beats_the_timeout_when_time_stands_still() -> None:
    async with TestHost(E2E_APP, start=T0, auto_advance=False) as host:
        iid = await host.client.start_new("approval", None, {"timeout": 60})
        await host.advance(timedelta(seconds=59))  # runs everything due by then: nothing fires
        assert (await host.client.get_status(iid)).runtime_status is Runtime.Running
        await host.client.raise_event(iid, "Approval", {"by": "alice"})
        status = await host.wait(iid, timeout=10)
        # The SDK's client double-encodes event data, as with the real extension.
        assert status.output == {"approved": '{"by": "alice"}'}
        assert host.now == T0 + timedelta(seconds=59)


async def test_advance_fires_due_timers_in_order_and_stops_at_the_target() -> None:
    async with TestHost(E2E_APP, start=T0, auto_advance=False) as host:
        iid = await host.client.start_new("approval", None, {"timeout": 3600})
        await host.advance(timedelta(minutes=30))
        assert host.now == T0 + timedelta(minutes=30)
        assert (await host.client.get_status(iid)).runtime_status is Runtime.Running
        await host.advance(timedelta(minutes=30))
        status = await host.client.get_status(iid)
        assert (status.runtime_status, status.output) == (Runtime.Completed, "timeout")
        assert host.now == T0 + timedelta(hours=1)
        with pytest.raises(ValueError, match="only moves forward"):
            await host.advance(timedelta(seconds=-1))


async def test_continue_as_new_generations_keep_one_history() -> None:
    async with TestHost(E2E_APP) as host:
        iid = await host.client.start_new("counter", None, {"n": 0, "until": 20})
        status = await host.wait(iid, timeout=20)
        assert status.output == 20
        history = await host.history(iid)
        assert [e.type for e in history].count(EventType.EXECUTION_STARTED) == 1


async def test_activities_can_be_faked_sync_or_async_and_their_logs_are_kept() -> None:
    async with TestHost(E2E_APP) as host:
        real = await host.client.start_new("chain")
        assert (await host.wait(real)).output[0] == "Hello Tokyo!"
        [tokyo, *_] = host.logs(real)
        assert (tokyo.getMessage(), tokyo.levelno) == ("saying hello to Tokyo", logging.INFO)

        host.mock_activity("say_hello", lambda city: f"Hi {city}")

        async def double(value: int) -> int:
            await asyncio.sleep(0)
            return value * 100

        host.mock_activity("double", double)
        chain = await host.client.start_new("chain")
        fanout = await host.client.start_new("fanout", None, 3)
        assert (await host.wait(chain)).output == ["Hi Tokyo", "Hi Seattle", "Hi London"]
        assert (await host.wait(fanout)).output == 300
        assert host.logs(chain) == []
        with pytest.raises(
            ValueError, match=r"'nope' is not an activity of this app \(activities: "
        ):
            host.mock_activity("nope", lambda _: None)

        chatty = await host.client.start_new("chatty")
        await host.wait(chatty)
        # Orchestrator lines appear once, not once per replay; dfhost's own lines are not there.
        assert [r.getMessage() for r in host.logs(chatty)] == [
            "chatty starts",
            "chatty after first",
            "chatty done",
        ]


async def test_wait_says_why_an_instance_does_not_finish() -> None:
    async with TestHost(E2E_APP) as host:
        iid = await host.client.start_new("waiter")
        with pytest.raises(
            TimeoutError, match=r"still Running after 0\.3 s: nothing is left to run"
        ):
            await host.wait(iid, timeout=0.3)
        with pytest.raises(LookupError, match="no instance 'nope'"):
            await host.wait("nope")


async def test_advance_says_when_work_never_settles() -> None:
    async with TestHost(E2E_APP, auto_advance=False) as host:
        release = asyncio.Event()

        async def stuck(value: int) -> int:
            await release.wait()
            return value

        host.mock_activity("double", stuck)
        iid = await host.client.start_new("fanout", None, 2)
        with pytest.raises(TimeoutError, match=r"still had work to run at .* after 0\.2 s"):
            await host.advance(timedelta(minutes=1), timeout=0.2)
        release.set()
        assert (await host.wait(iid)).output == 1


async def test_an_app_with_errors_is_refused() -> None:
    with pytest.raises(ValueError, match="has errors: "):
        async with TestHost(APPS / "v1_broken"):
            pass


async def test_the_pytest_fixture_starts_and_stops_hosts(dfhost_host) -> None:  # type: ignore[no-untyped-def]
    host = await dfhost_host(E2E_APP, start=T0)
    iid = await host.client.start_new("sleeper", None, 600)
    assert (await host.wait(iid)).output == "woke"
    assert host.now == T0 + timedelta(minutes=10)
