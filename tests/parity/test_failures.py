"""Failed tasks read as on Azure (`dfhost.orchestration.failures`): activities run by the
`ActivityRunner` of the parity app, their TaskFailed events handed to orchestrators by the
SDK's own replay, and the texts parsed the way apps on Azure parse them
(azure-functions-durable-extension#2990, azure-functions-durable-python#496)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Generator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import pytest

import dfhost
from dfhost.app.functions import FunctionApp
from dfhost.config import Limits
from dfhost.history import EventType, HistoryEvent
from dfhost.orchestration import failures
from dfhost.orchestration.episode import Completed
from dfhost.runtime.activities import ActivityRunner
from dfhost.runtime.worker_threads import WorkerThreads
from dfhost.work import ActivityTask
from tests.builders import HistoryBuilder

from .conftest import pytestmark  # noqa: F401 - the module's warning filter

DFHOST_DIR = str(Path(dfhost.__file__).parent)
RPC_EXCEPTION = (
    "Microsoft.Azure.WebJobs.Script.Workers.Rpc.RpcException, Microsoft.Azure.WebJobs.Script"
)


@pytest.fixture
async def runner(parity_app: FunctionApp) -> AsyncIterator[ActivityRunner]:
    threads = WorkerThreads(2, "parity")
    try:
        yield ActivityRunner(
            parity_app, Limits(function_timeout=0.3), threads, lambda: datetime.now(UTC)
        )
    finally:
        threads.shutdown()


async def run(runner: ActivityRunner, name: str, value: Any) -> HistoryEvent:
    task = ActivityTask(
        instance_id="i",
        execution_id="e",
        task_scheduled_id=0,
        name=name,
        input=json.dumps(value),
        scheduled_at=datetime.now(UTC),
    )
    event = await runner.run(task)
    assert event.type is EventType.TASK_FAILED
    return event


def caught_by_orchestrator(failed: HistoryEvent) -> dict[str, Any]:
    """What an orchestrator that catches the failure and parses it as in #2990 returns: the
    SDK turns the TaskFailed into the exception it raises in the orchestrator."""

    def orchestrator(ctx: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        try:
            yield ctx.call_activity("any")
        except Exception as e:
            escaped_json = e.args[0].split("\n")[1]
            message = json.loads(escaped_json)["Message"]
            return {
                "str": str(e),
                "message": message,
                "bare": message.split(":", 1)[1].lstrip(),
            }
        return None

    b = HistoryBuilder(orchestrator)
    b.start()
    outcome = b.deliver(replace(failed, timestamp=b.now)).outcome
    assert isinstance(outcome, Completed) and outcome.output is not None
    parsed: dict[str, Any] = json.loads(outcome.output)
    return parsed


async def test_a_failed_activity_reads_as_on_azure(runner: ActivityRunner) -> None:
    event = await run(runner, "fail_sync", "boom")
    # The extension's reason: the text between "\nException:" and "\nStack:" of the
    # Functions host's RpcException, leading space included.
    assert event.reason == "Activity function 'fail_sync' failed:  ValueError: boom"
    assert event.details is not None and "\n" not in event.details  # one line of JSON
    details = json.loads(event.details)
    assert details["$type"] == "System.Exception, System.Private.CoreLib"
    assert details["Message"] == " ValueError: boom"
    inner = details["InnerException"]
    assert inner["$type"] == RPC_EXCEPTION
    assert inner["RemoteMessage"] == "ValueError: boom"
    stack = inner["RemoteStackTrace"]
    assert inner["Message"] == f"Result: Failure\nException: ValueError: boom\nStack: {stack}"
    # The user's frames, in the Python worker's format; none of dfhost's.
    assert stack.count('  File "') == 2
    assert ", in fail_sync\n" in stack and ", in nested_raise\n" in stack
    assert stack.endswith("    raise ValueError(message)\n")
    assert DFHOST_DIR not in event.details
    assert list(details) == [
        "$type",
        "Message",
        "Data",
        "InnerException",
        "HelpLink",
        "Source",
        "HResult",
        "StackTrace",
    ]

    caught = caught_by_orchestrator(event)
    assert caught["str"] == f"{event.reason} \n {event.details}"
    assert caught["message"] == " ValueError: boom"
    assert caught["bare"] == "boom"


async def test_an_async_activity_s_failure_has_the_same_shape(runner: ActivityRunner) -> None:
    event = await run(runner, "fail_async", "k")
    assert event.reason == "Activity function 'fail_async' failed:  KeyError: 'k'"
    assert DFHOST_DIR not in (event.details or "")
    inner = json.loads(event.details or "")["InnerException"]
    assert inner["RemoteStackTrace"].count('  File "') == 1
    assert caught_by_orchestrator(event)["bare"] == "'k'"


async def test_a_message_holding_the_stack_label_is_cut_there_as_on_azure(
    runner: ActivityRunner,
) -> None:
    event = await run(runner, "fail_sync", "first\nStack: second")
    assert event.reason == "Activity function 'fail_sync' failed:  ValueError: first"
    details = json.loads(event.details or "")
    assert details["InnerException"]["RemoteMessage"] == "ValueError: first\nStack: second"


async def test_a_missing_activity_and_a_timeout_read_as_on_azure(
    runner: ActivityRunner,
) -> None:
    missing = await run(runner, "gone", None)
    assert (
        missing.reason
        == "Activity function 'gone' failed: Activity function 'gone' does not exist."
    )
    details = json.loads(missing.details or "")
    assert details["$type"].startswith("Microsoft.Azure.WebJobs.FunctionFailedException, ")
    assert details["Message"] == "Activity function 'gone' does not exist."

    slow = await run(runner, "sleep_async", 5)
    message = "Timeout value of 00:00:00.3000000 was exceeded by function: Functions.sleep_async"
    assert slow.reason == f"Activity function 'sleep_async' failed: {message}"
    assert json.loads(slow.details or "")["Message"] == message


async def test_a_result_the_worker_cannot_encode_fails_like_an_exception(
    runner: ActivityRunner,
) -> None:
    event = await run(runner, "returns_set", None)
    assert (event.reason or "").startswith("Activity function 'returns_set' failed:  TypeError: ")
    assert "does not expose a `to_json` function" in (event.reason or "")
    assert DFHOST_DIR not in (event.details or "")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (1800, "00:30:00"),
        (0.3, "00:00:00.3000000"),
        (86430.5, "1.00:00:30.5000000"),
        (59.999, "00:00:59.9990000"),
    ],
)
def test_timespans_are_written_as_dotnet_writes_them(seconds: float, text: str) -> None:
    assert failures.timespan(seconds) == text


def test_an_orchestrator_failure_reads_as_the_extension_writes_it() -> None:
    def nested() -> None:
        raise RuntimeError("bad")

    try:
        nested()
    except RuntimeError as exc:
        failed = failures.orchestrator_failed("orch", exc)
    assert failed.message == "Orchestrator function 'orch' failed: bad"
    assert failed.details is not None
    assert failed.details.startswith("Message: bad, StackTrace:   File ")
    assert failed.details.endswith(', in nested\n    raise RuntimeError("bad")\n')
    empty = failures.orchestrator_failed("orch", ValueError())
    assert empty.message == "Orchestrator function 'orch' failed: <class 'ValueError'>"
