"""The parity app (tests/apps/parity_v2) under `dfhost start`, driven through the SDK's own
client and the management API: what an app on Azure can observe, observed the same way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

import dfhost
from tests.e2e.harness import HostProcess, finished
from tests.waiting import eventually

from .conftest import HUB, pytestmark  # noqa: F401 - the module's warning filter

DFHOST_DIR = str(Path(dfhost.__file__).parent)


async def status_body(host: HostProcess, instance_id: str) -> dict[str, Any]:
    """The management API's status of `instance_id`, with its history."""
    url = f"{host.origin}/runtime/webhooks/durabletask/instances/{instance_id}"
    async with httpx.AsyncClient() as http:
        answer = await http.get(url, params={"showHistory": "true", "showHistoryOutput": "true"})
    answer.raise_for_status()
    body: dict[str, Any] = answer.json()
    return body


async def test_a_caught_activity_failure_parses_as_on_azure(parity_host: HostProcess) -> None:
    client = parity_host.client(HUB)
    for activity, raised, bare in [
        ("fail_sync", "ValueError: boom", "boom"),
        ("fail_async", "KeyError: 'boom'", "'boom'"),
    ]:
        iid = await client.start_new("catch_activity", None, [activity, "boom"])
        status = await finished(client, iid)
        assert status.runtime_status.value == "Completed"
        caught = status.output
        # #2990's parsing: the JSON on the second line, its "Message", the text after the type.
        assert caught["message"] == f" {raised}"
        assert caught["bare"] == bare
        assert caught["reason"] == f"Activity function '{activity}' failed:  {raised} "
        details = json.loads(caught["text"].split("\n")[1])
        stack = details["InnerException"]["RemoteStackTrace"]
        assert f", in {activity}\n" in stack
        assert DFHOST_DIR not in caught["text"]


async def test_a_failed_instance_shows_the_failure_as_on_azure(parity_host: HostProcess) -> None:
    client = parity_host.client(HUB)
    iid = await client.start_new("uncaught", None, "kaboom")
    status = await finished(client, iid)
    assert status.runtime_status.value == "Failed"
    reason = "Activity function 'fail_sync' failed:  ValueError: kaboom"
    # The orchestrator's error is the exception the SDK raised in it: the activity's reason
    # and details; the extension prefixes the orchestrator's name.
    output = status.output
    assert output.startswith(f"Orchestrator function 'uncaught' failed: {reason} \n {{")
    assert json.loads(output.split("\n")[1])["Message"] == " ValueError: kaboom"

    body = await status_body(parity_host, iid)
    assert body["runtimeStatus"] == "Failed"
    assert body["output"] == output
    failed_task = next(e for e in body["historyEvents"] if e["EventType"] == "TaskFailed")
    assert failed_task["Reason"] == reason
    assert json.loads(failed_task["Details"])["Message"] == " ValueError: kaboom"
    completed = next(e for e in body["historyEvents"] if e["EventType"] == "ExecutionCompleted")
    assert completed["FailureDetails"].startswith(
        f"Message: {reason} \n {{"
    )  # "Message: {error}, StackTrace: {stack}"
    assert ", StackTrace:   File " in completed["FailureDetails"]
    assert ", in uncaught\n" in completed["FailureDetails"]
    assert DFHOST_DIR not in json.dumps(body)


async def test_a_sub_orchestration_failure_reads_as_on_azure(parity_host: HostProcess) -> None:
    client = parity_host.client(HUB)
    iid = await client.start_new("catch_sub_orchestration", None, "child broke")
    status = await finished(client, iid)
    assert status.runtime_status.value == "Completed"
    first, second = status.output.split("\n", 1)
    assert first == "Orchestrator function 'child_raises' failed: child broke "
    assert second.startswith(" Message: child broke, StackTrace:   File ")
    assert second.endswith(", in child_raises\n    raise RuntimeError(context.get_input())\n")
    assert DFHOST_DIR not in status.output


async def test_extension_refusals_fail_the_orchestration(parity_host: HostProcess) -> None:
    client = parity_host.client(HUB)
    small = await client.start_new("custom_status", None, 100)
    large = await client.start_new("custom_status", None, 9000)
    missing = await client.start_new("calls_missing")
    assert (await finished(client, small)).output == "done"
    status = await finished(client, large)
    assert status.runtime_status.value == "Failed"
    assert status.output == (
        "Orchestrator function 'custom_status' failed: The UTF-16 size of the JSON-serialized "
        "payload must not exceed 16 KB. The current payload size is 17 KB."
    )
    status = await finished(client, missing)
    assert status.runtime_status.value == "Failed"
    assert status.output.startswith(
        "Orchestrator function 'calls_missing' failed: The function 'no_such_activity' doesn't "
        "exist, is disabled, or is not an activity function. Additional info: The following "
        "are the known activity functions: 'fail_sync', "
    )


async def test_events_unconsumed_at_continue_as_new_are_dropped_with_a_warning(
    parity_host: HostProcess,
) -> None:
    client = parity_host.client(HUB)
    iid = await client.start_new("generations")
    await client.raise_event(iid, "stray", "lost")
    await client.raise_event(iid, "go", 1)
    await eventually(lambda: "dropped its event 'stray'" in parity_host.output, timeout=20)
    await eventually(
        lambda: client.get_status(iid),
        lambda s: bool(s) and s.input_ == 1,  # the next generation runs
        timeout=20,
    )
    await client.raise_event(iid, "go", 2)
    status = await finished(client, iid)
    # The SDK's raise_event encodes its data twice, on Azure too: the event is the text "2".
    assert status.output == {"generation": 1, "value": "2"}
    [line] = [line for line in parity_host.lines if "dropped its event" in line]
    assert f"instance '{iid}' dropped its event 'stray'" in line
    assert "continue_as_new" in line
