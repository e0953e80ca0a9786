"""What the Durable extension refuses, refused the same way (`dfhost.orchestration.limits`):
a custom status over 16 KB of UTF-16, more actions in an execution than
`maxOrchestrationActions`, calls of functions the app does not have, and a sub-orchestration
given its parent's instance id. Each fails the orchestration with the extension's message."""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

import azure.durable_functions as df
import pytest

from dfhost.app.functions import FunctionApp
from dfhost.config import Limits
from dfhost.orchestration.episode import (
    ActivityCall,
    ContinuedAsNew,
    EntityMessage,
    EpisodeResult,
    Failed,
    Running,
    SubOrchestrationCall,
    Work,
)
from dfhost.orchestration.limits import episode_problem
from tests.builders import HistoryBuilder

from .conftest import pytestmark  # noqa: F401 - the module's warning filter

Orchestrator = Generator[Any, Any, Any]
SIZE_MESSAGE = "The UTF-16 size of the JSON-serialized payload must not exceed 16 KB."


def problem(app: FunctionApp, result: EpisodeResult, limits: Limits | None = None) -> Failed | None:
    return episode_problem(limits or Limits(), "orch", 10, result, app)


def status_of(value: Any) -> EpisodeResult:
    return EpisodeResult(Running(), custom_status=json.dumps(value))


@pytest.mark.parametrize(
    ("value", "size_kb"),
    [
        ("s" * 8701, None),  # 17,406 bytes of UTF-16 with its quotes: 16 KB, rounded down
        ("s" * 8702, 17),
        ("é" * 8701, None),  # measured unescaped, as the extension re-serializes it
        ("😀" * 4350, None),  # two UTF-16 units each: 17,404 bytes
        ("😀" * 4351, 17),
        ({"items": ["x" * 100] * 200}, 40),
    ],
)
def test_a_custom_status_over_16_kb_of_utf16_fails_the_orchestration(
    parity_app: FunctionApp, value: Any, size_kb: int | None
) -> None:
    failed = problem(parity_app, status_of(value))
    if size_kb is None:
        assert failed is None
        return
    assert failed is not None
    assert failed.message == (
        f"Orchestrator function 'orch' failed: {SIZE_MESSAGE} "
        f"The current payload size is {size_kb} KB."
    )
    details = json.loads(failed.details or "")
    assert details["$type"] == "System.ArgumentException, System.Private.CoreLib"
    assert details["Message"] == f"{SIZE_MESSAGE} The current payload size is {size_kb} KB."


def test_actions_are_counted_over_the_whole_execution(parity_app: FunctionApp) -> None:
    limits = Limits(max_actions=3)
    assert problem(parity_app, EpisodeResult(Running(), actions=3), limits) is None
    failed = problem(parity_app, EpisodeResult(Running(), actions=4), limits)
    assert failed is not None
    assert failed.message == (
        "Orchestrator function 'orch' failed: Maximum amount of orchestration actions (3) has "
        "been reached. This value can be configured in host.json file as MaxOrchestrationActions."
    )
    assert json.loads(failed.details or "")["$type"].startswith("System.InvalidOperationException")


def test_the_replay_counts_the_execution_s_scheduling_events() -> None:
    def chain(ctx: df.DurableOrchestrationContext) -> Orchestrator:
        for i in range(3):
            yield ctx.call_activity("echo", i)

    b = HistoryBuilder(chain)
    assert b.start().actions == 1
    assert b.complete(0).actions == 2
    assert b.complete(1).actions == 3


@pytest.mark.parametrize(
    ("work", "message"),
    [
        (
            ActivityCall(0, "no_such", None),
            "The function 'no_such' doesn't exist, is disabled, or is not an activity function. "
            "Additional info: The following are the known activity functions: 'fail_sync', "
            "'fail_async', 'echo', 'sleep_async', 'returns_set'.",
        ),
        (
            SubOrchestrationCall(0, "no_such", "kid", None, None),
            "The function 'no_such' doesn't exist, is disabled, or is not an orchestrator "
            "function. Additional info: The following are the known orchestrator functions: "
            "'catch_activity', 'uncaught', 'child_raises', 'catch_sub_orchestration', "
            "'custom_status', 'generations', 'calls_missing'.",
        ),
        (
            # The extension lists the known entities when the app has orchestrators (sic).
            EntityMessage(0, "@counter@k", "add", None, "r", signal=True),
            "The function 'counter' doesn't exist, is disabled, or is not an entity function. "
            "Additional info: The following are the known entity functions: ''.",
        ),
    ],
)
def test_calling_a_function_the_app_lacks_fails_the_orchestration(
    parity_app: FunctionApp, work: Work, message: str
) -> None:
    failed = problem(parity_app, EpisodeResult(Running(), work=[work]))
    assert failed is not None
    assert failed.message == f"Orchestrator function 'orch' failed: {message}"


def test_function_names_are_case_insensitive_and_durable_http_is_known(
    parity_app: FunctionApp,
) -> None:
    work: list[Work] = [
        ActivityCall(0, "ECHO", None),
        ActivityCall(1, "BuiltIn::HttpActivity", None),
        SubOrchestrationCall(2, "Child_Raises", "kid", None, None),
    ]
    assert problem(parity_app, EpisodeResult(Running(), work=work)) is None
    assert parity_app.activity("ECHO") is parity_app.activity("echo") is not None


@pytest.mark.parametrize("target", ["inst-1", "INST-1", "parent-1"])
def test_a_sub_orchestration_with_its_parent_s_instance_id_fails(target: str) -> None:
    def orchestrator(ctx: df.DurableOrchestrationContext) -> Orchestrator:
        yield ctx.call_sub_orchestrator("child", None, target)

    result = HistoryBuilder(orchestrator, parent_instance_id="parent-1").start()
    assert result.outcome == Failed(
        "Orchestrator function 'orch' failed: The instance ID of a sub-orchestration must be "
        "different than the instance ID of a parent orchestration.",
        result.outcome.details if isinstance(result.outcome, Failed) else None,
    )
    assert result.work == []


def test_a_sub_orchestration_id_in_the_entity_namespace_fails_as_on_azure() -> None:
    def orchestrator(ctx: df.DurableOrchestrationContext) -> Orchestrator:
        yield ctx.call_sub_orchestrator("child", None, "@counter@k")

    outcome = HistoryBuilder(orchestrator).start().outcome
    assert isinstance(outcome, Failed)
    assert outcome.message == (
        "Orchestrator function 'orch' failed: instanceId (Parameter 'Orchestration instance "
        "ids must not start with @')"
    )


def test_a_refused_call_after_continue_as_new_is_only_noted() -> None:
    """The SDK drops what an orchestrator does after continue_as_new: the extension never sees
    it, so it cannot refuse it."""

    def orchestrator(ctx: df.DurableOrchestrationContext) -> Orchestrator:
        ctx.continue_as_new(None)
        yield ctx.call_sub_orchestrator("child", None, "inst-1")

    result = HistoryBuilder(orchestrator).start()
    assert isinstance(result.outcome, ContinuedAsNew)
    assert [p.kind for p in result.pitfalls] == ["work after continue_as_new"]
