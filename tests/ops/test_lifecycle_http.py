"""Suspend/resume, rewind, restart and purge through the management API, with the engine
running the ops app."""

from __future__ import annotations

import json

import httpx
import pytest

from dfhost.history import EventType, OrchestrationStatus, utcnow
from tests.waiting import eventually

from .conftest import BASE, SDK_ADVICE, Hub, wait_status

pytestmark = pytest.mark.filterwarnings(SDK_ADVICE)
Status = OrchestrationStatus


async def start(http: httpx.AsyncClient, name: str, instance_id: str, body: object = None) -> None:
    content = b"" if body is None else json.dumps(body).encode()
    response = await http.post(f"{BASE}/orchestrators/{name}/{instance_id}", content=content)
    assert response.status_code == 202, response.text


async def history_types(http: httpx.AsyncClient, instance_id: str) -> list[str]:
    response = await http.get(f"{BASE}/instances/{instance_id}?showHistory=true")
    return [e["EventType"] for e in response.json()["historyEvents"]]


async def test_suspend_keeps_events_and_due_timers_until_resume(
    http: httpx.AsyncClient, hub: Hub
) -> None:
    await start(http, "nap_then_wait", "napper", 1)

    async def timer_created() -> bool:
        events = await hub.client.get_history("napper")
        return any(e.type is EventType.TIMER_CREATED for e in events)

    await eventually(timer_created, timeout=15)
    assert (
        await http.post(f"{BASE}/instances/napper/suspend?reason=maintenance")
    ).status_code == 202
    await wait_status(hub.client, "napper", Status.SUSPENDED)
    raised = await http.post(
        f"{BASE}/instances/napper/raiseEvent/Go",
        json={"while": "suspended"},
    )
    assert raised.status_code == 202

    # The timer falls due while suspended; an unrelated orchestration that starts after that
    # completes (so the engine is awake and working) while the suspended one stays put.
    await eventually(lambda: hub.store.overdue_timers(utcnow(), 10), timeout=15)
    await start(http, "echo", "meanwhile", "x")
    await wait_status(hub.client, "meanwhile", Status.COMPLETED)
    status = await http.get(f"{BASE}/instances/napper")
    assert status.status_code == 202
    assert status.json()["runtimeStatus"] == "Suspended"
    types = await history_types(http, "napper")
    assert "TimerFired" not in types and "EventRaised" not in types

    assert (await http.post(f"{BASE}/instances/napper/resume?reason=done")).status_code == 202
    finished = await wait_status(hub.client, "napper")
    assert finished.status is Status.COMPLETED
    assert json.loads(finished.output or "") == {"timer": "fired", "event": {"while": "suspended"}}
    types = await history_types(http, "napper")
    assert types.index("ExecutionSuspended") < types.index("ExecutionResumed")
    assert types.index("ExecutionResumed") < types.index("TimerFired") < types.index("EventRaised")

    for operation in ("suspend", "resume"):
        gone = await http.post(f"{BASE}/instances/napper/{operation}")
        assert gone.status_code == 410
        assert (await http.post(f"{BASE}/instances/nope/{operation}")).status_code == 404


async def test_rewind_reruns_only_the_failed_activity(http: httpx.AsyncClient, hub: Hub) -> None:
    (hub.state / "broken-step").touch()
    await start(http, "steps", "stepper", "step")
    failed = await wait_status(hub.client, "stepper")
    assert failed.status is Status.FAILED
    assert "step is broken" in (failed.output or "")

    (hub.state / "broken-step").unlink()  # "deploy the fix"
    response = await http.post(f"{BASE}/instances/stepper/rewind?reason=fixed")
    assert response.status_code == 202
    assert response.content == b""
    done = await wait_status(hub.client, "stepper", Status.COMPLETED)
    assert done.status is Status.COMPLETED
    assert json.loads(done.output or "") == [2, "step ok", 4]
    assert hub.calls("step") == 2

    history = await hub.client.get_history("stepper")
    kinds = [e.type for e in history]
    assert EventType.TASK_FAILED not in kinds
    assert kinds.count(EventType.EXECUTION_REWOUND) == 1
    assert [e.reason for e in history if e.type is EventType.EXECUTION_REWOUND] == ["fixed"]
    scheduled = [e.name for e in history if e.type is EventType.TASK_SCHEDULED]
    assert scheduled == ["double", "fragile", "double"]  # double(1) did not run again

    gone = await http.post(f"{BASE}/instances/stepper/rewind?reason=again")
    assert gone.status_code == 410
    assert "only Failed instances can be rewound" in gone.json()["Message"]
    assert (await http.post(f"{BASE}/instances/nope/rewind")).status_code == 404


async def test_rewind_of_a_running_instance_is_refused(http: httpx.AsyncClient, hub: Hub) -> None:
    await start(http, "waiter", "busy")
    await wait_status(hub.client, "busy", Status.RUNNING)
    response = await http.post(f"{BASE}/instances/busy/rewind")
    assert response.status_code == 410
    assert "is Running" in response.json()["Message"]


async def test_rewind_reruns_a_failed_fan_out_and_its_unfinished_sibling(
    http: httpx.AsyncClient, hub: Hub
) -> None:
    (hub.state / "broken-fan").touch()
    await start(http, "fan", "fanner")
    assert (await wait_status(hub.client, "fanner")).status is Status.FAILED
    # The gate was still running when the fan-out failed; its late result is dropped.
    (hub.state / "open-fan-gate").touch()
    await eventually(lambda: hub.calls("fan-gate") == 1, timeout=15)

    (hub.state / "broken-fan").unlink()
    assert (await http.post(f"{BASE}/instances/fanner/rewind")).status_code == 202
    done = await wait_status(hub.client, "fanner", Status.COMPLETED)
    assert done.status is Status.COMPLETED, done.output
    assert json.loads(done.output or "") == ["fan ok", "fan-gate passed", 6]
    assert (hub.calls("fan"), hub.calls("fan-gate")) == (2, 2)


async def test_rewind_after_exhausted_retries_runs_the_activity_again(
    http: httpx.AsyncClient, hub: Hub
) -> None:
    (hub.state / "broken-retry").touch()
    await start(http, "retrying", "retrier")
    assert (await wait_status(hub.client, "retrier")).status is Status.FAILED
    assert hub.calls("retry") == 2

    (hub.state / "broken-retry").unlink()
    assert (await http.post(f"{BASE}/instances/retrier/rewind")).status_code == 202
    done = await wait_status(hub.client, "retrier", Status.COMPLETED)
    assert (done.status, done.output) == (Status.COMPLETED, '"retry ok"')
    assert hub.calls("retry") == 3


async def test_rewind_of_a_parent_rewinds_its_failed_child(
    http: httpx.AsyncClient, hub: Hub
) -> None:
    (hub.state / "broken-child").touch()
    await start(http, "parent", "dad")
    assert (await wait_status(hub.client, "dad")).status is Status.FAILED
    child = await wait_status(hub.client, "dad-child")
    assert child.status is Status.FAILED

    (hub.state / "broken-child").unlink()
    assert (await http.post(f"{BASE}/instances/dad/rewind?reason=child fixed")).status_code == 202
    done = await wait_status(hub.client, "dad", Status.COMPLETED)
    assert done.status is Status.COMPLETED, done.output
    assert json.loads(done.output or "") == {"child": [2, "child ok", 4], "doubled": 10}
    child = await wait_status(hub.client, "dad-child", Status.COMPLETED)
    assert hub.calls("child") == 2


async def test_rewind_after_a_fix_to_the_orchestrator_code(
    http: httpx.AsyncClient, hub: Hub
) -> None:
    (hub.state / "bug").touch()
    await start(http, "buggy", "bugged")
    failed = await wait_status(hub.client, "bugged")
    assert failed.status is Status.FAILED
    assert "a bug in the orchestrator" in (failed.output or "")

    (hub.state / "bug").unlink()
    assert (await http.post(f"{BASE}/instances/bugged/rewind")).status_code == 202
    done = await wait_status(hub.client, "bugged", Status.COMPLETED)
    assert (done.status, done.output) == (Status.COMPLETED, "8")
    history = await hub.client.get_history("bugged")
    assert [e.type for e in history].count(EventType.TASK_COMPLETED) == 1


async def test_restart_with_the_same_or_a_new_id(http: httpx.AsyncClient, hub: Hub) -> None:
    await start(http, "echo", "again", {"a": 1})
    first = await wait_status(hub.client, "again")

    same = await http.post(f"{BASE}/instances/again/restart?restartWithNewInstanceId=false")
    assert same.status_code == 202
    assert same.json()["id"] == "again"
    assert same.headers["Location"] == same.json()["statusQueryGetUri"]
    second = await wait_status(hub.client, "again")
    assert second.execution_id != first.execution_id
    assert (second.status, second.output) == (Status.COMPLETED, '{"a": 1}')

    fresh = await http.post(f"{BASE}/instances/again/restart")
    assert fresh.status_code == 202
    new_id = fresh.json()["id"]
    assert new_id != "again"
    restarted = await wait_status(hub.client, new_id)
    assert (restarted.name, restarted.input, restarted.output) == ("echo", '{"a": 1}', '{"a": 1}')

    await start(http, "waiter", "forever")
    await wait_status(hub.client, "forever", Status.RUNNING)
    running = await http.post(f"{BASE}/instances/forever/restart?restartWithNewInstanceId=false")
    assert running.status_code == 409
    assert "Terminate it first" in running.json()["Message"]
    assert (await http.post(f"{BASE}/instances/forever/restart")).status_code == 202
    missing = await http.post(f"{BASE}/instances/nope/restart")
    assert missing.status_code == 404
    assert missing.json()["Message"] == "No instance with ID 'nope' found."


async def test_list_and_purge_by_orchestrator_name(http: httpx.AsyncClient, hub: Hub) -> None:
    for index in range(3):
        await start(http, "echo", f"e{index}", index)
    await start(http, "waiter", "w0")
    for index in range(3):
        await wait_status(hub.client, f"e{index}")

    listed = await http.get(f"{BASE}/instances?name=echo")
    assert sorted(i["instanceId"] for i in listed.json()) == ["e0", "e1", "e2"]
    since = "createdTimeFrom=2000-01-01T00:00:00Z"
    purged = await http.delete(f"{BASE}/instances?{since}&name=echo&runtimeStatus=Completed")
    assert purged.json() == {"instancesDeleted": 3}
    assert [i["instanceId"] for i in (await http.get(f"{BASE}/instances")).json()] == ["w0"]
    assert (await http.delete(f"{BASE}/instances?{since}&name=echo")).status_code == 404
