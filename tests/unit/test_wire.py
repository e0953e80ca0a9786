"""`dfhost.wire`: the SDK's history shapes and the management API's bodies."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from azure.durable_functions.models.DurableOrchestrationContext import (
    DurableOrchestrationContext,
)
from azure.durable_functions.models.history.HistoryEventType import HistoryEventType
from azure.durable_functions.models.ReplaySchema import ReplaySchema

from dfhost.history import EventType, HistoryEvent, Instance, OrchestrationStatus
from dfhost.wire import (
    OUT_OF_PROC_LABEL,
    api_history,
    api_status,
    dtfx_event,
    orchestration_context,
    split_orchestrator_error,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
T0_TEXT = "2024-01-01T00:00:00.000000Z"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --- dtfx_event ---------------------------------------------------------------------------------


def test_every_event_has_the_four_required_keys() -> None:
    event = HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=T0)
    assert dtfx_event(event, played=False) == {
        "EventType": 12,
        "EventId": -1,
        "IsPlayed": False,
        "Timestamp": T0_TEXT,
    }


def test_execution_started_has_version_and_orchestration_instance() -> None:
    event = HistoryEvent(
        type=EventType.EXECUTION_STARTED,
        timestamp=T0,
        name="orch",
        input='{"a": 1}',
        instance_id="inst",
        execution_id="ex",
    )
    assert dtfx_event(event, played=True) == {
        "EventType": 0,
        "EventId": -1,
        "IsPlayed": True,
        "Timestamp": T0_TEXT,
        "Name": "orch",
        "Input": '{"a": 1}',
        "Version": None,
        "OrchestrationInstance": {"InstanceId": "inst", "ExecutionId": "ex"},
    }


def test_execution_started_of_a_sub_orchestration_names_its_parent() -> None:
    event = HistoryEvent(
        type=EventType.EXECUTION_STARTED,
        timestamp=T0,
        name="child",
        version="2",
        instance_id="kid",
        execution_id="ex2",
        parent_instance_id="dad",
        parent_execution_id="ex1",
        parent_task_id=3,
    )
    out = dtfx_event(event, played=False)
    assert out["Version"] == "2"
    assert out["ParentInstance"] == {
        "OrchestrationInstance": {"InstanceId": "dad", "ExecutionId": "ex1"},
        "TaskScheduleId": 3,
    }
    assert "InstanceId" not in out


@pytest.mark.parametrize(
    ("event", "fields"),
    [
        (
            HistoryEvent(
                type=EventType.TASK_SCHEDULED, timestamp=T0, event_id=0, name="A", input="1"
            ),
            {"EventId": 0, "Name": "A", "Input": "1"},
        ),
        (
            HistoryEvent(
                type=EventType.TASK_COMPLETED, timestamp=T0, task_scheduled_id=0, result="2"
            ),
            {"TaskScheduledId": 0, "Result": "2"},
        ),
        (
            HistoryEvent(
                type=EventType.TASK_FAILED,
                timestamp=T0,
                task_scheduled_id=1,
                reason="boom",
                details="tb",
            ),
            {"TaskScheduledId": 1, "Reason": "boom", "Details": "tb"},
        ),
        (
            HistoryEvent(type=EventType.TIMER_CREATED, timestamp=T0, event_id=2, fire_at=at(30)),
            {"EventId": 2, "FireAt": "2024-01-01T00:00:30.000000Z"},
        ),
        (
            HistoryEvent(type=EventType.TIMER_FIRED, timestamp=at(30), timer_id=2, fire_at=at(30)),
            {"TimerId": 2, "FireAt": "2024-01-01T00:00:30.000000Z"},
        ),
        (
            HistoryEvent(
                type=EventType.SUB_ORCHESTRATION_CREATED,
                timestamp=T0,
                event_id=3,
                name="Child",
                version="v",
                input="null",
                instance_id="kid",
            ),
            {"EventId": 3, "Name": "Child", "Version": "v", "Input": "null", "InstanceId": "kid"},
        ),
        (
            HistoryEvent(
                type=EventType.SUB_ORCHESTRATION_COMPLETED,
                timestamp=T0,
                task_scheduled_id=3,
                result='"ok"',
            ),
            {"TaskScheduledId": 3, "Result": '"ok"'},
        ),
        (
            HistoryEvent(type=EventType.EVENT_RAISED, timestamp=T0, name="Approval", input="true"),
            {"Name": "Approval", "Input": "true"},
        ),
        (
            HistoryEvent(
                type=EventType.EXECUTION_COMPLETED,
                timestamp=T0,
                result="3",
                status=OrchestrationStatus.COMPLETED,
            ),
            {"Result": "3", "OrchestrationStatus": "Completed"},
        ),
    ],
    ids=lambda v: v.type.name if isinstance(v, HistoryEvent) else "",
)
def test_dtfx_field_names(event: HistoryEvent, fields: dict[str, object]) -> None:
    out = dtfx_event(event, played=True)
    assert out == {
        "EventType": int(event.type),
        "EventId": -1,
        "IsPlayed": True,
        "Timestamp": T0_TEXT if event.type is not EventType.TIMER_FIRED else fields["FireAt"],
        **fields,
    }


def test_the_sdk_reads_our_events() -> None:
    """The SDK's HistoryEvent gets its type, ids and payloads from our dicts."""
    from azure.durable_functions.models.history.HistoryEvent import (
        HistoryEvent as SdkHistoryEvent,
    )

    completed = HistoryEvent(
        type=EventType.TASK_COMPLETED, timestamp=at(1.5), task_scheduled_id=4, result='"x"'
    )
    sdk = SdkHistoryEvent(**dtfx_event(completed, played=True))
    assert sdk.event_type == HistoryEventType.TASK_COMPLETED
    assert sdk.TaskScheduledId == 4
    assert sdk.Result == '"x"'
    assert sdk.is_played is True
    assert sdk.timestamp == at(1.5)


# --- orchestration_context ----------------------------------------------------------------------


def episode_events() -> tuple[list[HistoryEvent], list[HistoryEvent]]:
    past = [
        HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=T0),
        HistoryEvent(
            type=EventType.EXECUTION_STARTED,
            timestamp=T0,
            name="orch",
            version="1.0",
            instance_id="inst",
            execution_id="ex",
        ),
        HistoryEvent(type=EventType.TASK_SCHEDULED, timestamp=T0, event_id=0, name="A"),
        HistoryEvent(type=EventType.ORCHESTRATOR_COMPLETED, timestamp=T0),
    ]
    new = [
        HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=at(5)),
        HistoryEvent(type=EventType.TASK_COMPLETED, timestamp=at(5), task_scheduled_id=0),
    ]
    return past, new


def test_orchestration_context_marks_only_past_events_played() -> None:
    past, new = episode_events()
    ctx = orchestration_context(
        instance_id="inst", past=past, new=new, input_text='"in"', parent_instance_id="dad"
    )
    assert [e["IsPlayed"] for e in ctx["history"]] == [True] * 4 + [False] * 2
    assert [e["EventType"] for e in ctx["history"]] == [12, 0, 4, 13, 12, 5]
    assert {k: v for k, v in ctx.items() if k != "history"} == {
        "input": '"in"',
        "instanceId": "inst",
        "isReplaying": True,
        "parentInstanceId": "dad",
        "upperSchemaVersion": 1,
        "upperSchemaVersionNew": 2,
    }
    # no long-timer durations: the SDK must never split timers
    assert "maximumShortTimerDuration" not in ctx


def test_the_first_episode_is_not_replaying() -> None:
    _, new = episode_events()
    ctx = orchestration_context(
        instance_id="i", past=[], new=new, input_text=None, parent_instance_id=None
    )
    assert ctx["isReplaying"] is False
    assert all(e["IsPlayed"] is False for e in ctx["history"])


def test_the_sdk_builds_its_context_from_ours() -> None:
    past, new = episode_events()
    ctx = DurableOrchestrationContext(
        **orchestration_context(
            instance_id="inst", past=past, new=new, input_text='{"k": 1}', parent_instance_id=None
        )
    )
    assert ctx._replay_schema is ReplaySchema.V3
    assert ctx.instance_id == "inst"
    assert ctx.version == "1.0"
    assert ctx.current_utc_datetime == T0  # the first OrchestratorStarted; replay moves it on
    assert len(ctx.histories) == 6


# --- split_orchestrator_error -------------------------------------------------------------------


def test_split_orchestrator_error_with_the_label() -> None:
    state = {"isDone": False, "actions": [[]], "error": "bad things", "customStatus": "s"}
    text = f"bad things{OUT_OF_PROC_LABEL}{json.dumps(state)}"
    assert OUT_OF_PROC_LABEL == "\n\n$OutOfProcData$:"
    assert split_orchestrator_error(text) == ("bad things", state)


def test_split_orchestrator_error_prefers_the_states_error() -> None:
    text = f"outer{OUT_OF_PROC_LABEL}" + json.dumps({"error": "inner"})
    assert split_orchestrator_error(text) == ("inner", {"error": "inner"})


def test_split_orchestrator_error_without_the_label() -> None:
    assert split_orchestrator_error("plain failure\n\nmore") == ("plain failure\n\nmore", None)


@pytest.mark.parametrize("tail", ["{not json", "[1, 2]", '"text"'])
def test_split_orchestrator_error_with_an_unreadable_state(tail: str) -> None:
    assert split_orchestrator_error(f"msg{OUT_OF_PROC_LABEL}{tail}") == ("msg", None)


def test_split_orchestrator_error_with_a_state_without_error() -> None:
    assert split_orchestrator_error(f"msg{OUT_OF_PROC_LABEL}{{}}") == ("msg", {})


# --- api_status ---------------------------------------------------------------------------------


def instance(**kw: object) -> Instance:
    fields: dict[str, object] = {
        "instance_id": "inst",
        "name": "orch",
        "execution_id": "ex",
        "status": OrchestrationStatus.COMPLETED,
        "created_at": datetime(2024, 1, 1, 0, 0, 5, 123456, tzinfo=UTC),
        "last_updated_at": datetime(2024, 1, 1, 0, 1, 0, 999999, tzinfo=UTC),
        "input": '{"city": "Tokyo"}',
        "output": '"Hello Tokyo!"',
        "custom_status": '{"stage": 2}',
    }
    fields.update(kw)
    return Instance(**fields)  # type: ignore[arg-type]


def test_api_status_body() -> None:
    assert api_status(instance()) == {
        "name": "orch",
        "instanceId": "inst",
        "runtimeStatus": "Completed",
        "input": {"city": "Tokyo"},
        "customStatus": {"stage": 2},
        "output": "Hello Tokyo!",
        "createdTime": "2024-01-01T00:00:05Z",
        "lastUpdatedTime": "2024-01-01T00:01:00Z",
    }


def test_api_status_times_are_utc_without_fraction() -> None:
    from datetime import timezone

    plus_two = timezone(timedelta(hours=2))
    body = api_status(instance(created_at=datetime(2024, 1, 1, 2, 0, 0, 500000, tzinfo=plus_two)))
    assert body["createdTime"] == "2024-01-01T00:00:00Z"


def test_api_status_returns_text_that_is_not_json_raw() -> None:
    body = api_status(
        instance(input="not json", output="Orchestrator function failed", custom_status=None)
    )
    assert body["input"] == "not json"
    assert body["output"] == "Orchestrator function failed"
    assert body["customStatus"] is None


def test_api_status_json_null_and_scalars() -> None:
    body = api_status(instance(input="null", output="0", custom_status="false"))
    assert body["input"] is None
    assert body["output"] == 0
    assert body["customStatus"] is False


def test_api_status_can_hide_the_input_and_add_history() -> None:
    body = api_status(instance(), show_input=False, history=[{"EventType": "ExecutionStarted"}])
    assert body["input"] is None
    assert body["historyEvents"] == [{"EventType": "ExecutionStarted"}]
    assert "historyEvents" not in api_status(instance())


# --- api_history --------------------------------------------------------------------------------


def full_history() -> list[HistoryEvent]:
    return [
        HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=T0),
        HistoryEvent(
            type=EventType.EXECUTION_STARTED,
            timestamp=T0,
            name="orch",
            version="1.0",
            input='"Tokyo"',
            instance_id="inst",
            execution_id="ex",
        ),
        HistoryEvent(
            type=EventType.TASK_SCHEDULED, timestamp=at(0.25), event_id=0, name="A", input='"Tokyo"'
        ),
        HistoryEvent(
            type=EventType.TASK_SCHEDULED, timestamp=at(0.25), event_id=1, name="B", input="2"
        ),
        HistoryEvent(type=EventType.ORCHESTRATOR_COMPLETED, timestamp=at(0.25)),
        HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=at(3)),
        HistoryEvent(
            type=EventType.TASK_COMPLETED, timestamp=at(2), task_scheduled_id=0, result='"Hi"'
        ),
        HistoryEvent(
            type=EventType.TASK_FAILED,
            timestamp=at(2.5),
            task_scheduled_id=1,
            reason="boom",
            details="tb",
        ),
        HistoryEvent(type=EventType.TIMER_CREATED, timestamp=at(3), event_id=2, fire_at=at(63)),
        HistoryEvent(
            type=EventType.TASK_SCHEDULED, timestamp=at(3), event_id=3, name="Pending", input="null"
        ),
        HistoryEvent(type=EventType.ORCHESTRATOR_COMPLETED, timestamp=at(3)),
        HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=at(63)),
        HistoryEvent(type=EventType.TIMER_FIRED, timestamp=at(63), timer_id=2, fire_at=at(63)),
        HistoryEvent(type=EventType.EVENT_RAISED, timestamp=at(63), name="Go", input='{"ok": 1}'),
        HistoryEvent(
            type=EventType.EXECUTION_COMPLETED,
            timestamp=at(63),
            result='"done"',
            status=OrchestrationStatus.COMPLETED,
        ),
        HistoryEvent(type=EventType.ORCHESTRATOR_COMPLETED, timestamp=at(63)),
    ]


def test_api_history_with_input_and_output() -> None:
    assert api_history(full_history(), show_input=True, show_output=True) == [
        {
            "EventType": "ExecutionStarted",
            "FunctionName": "orch",
            "Version": "1.0",
            "Input": "Tokyo",
            "Timestamp": "2024-01-01T00:00:00Z",
        },
        {
            "EventType": "TaskCompleted",
            "FunctionName": "A",
            "ScheduledTime": "2024-01-01T00:00:00Z",
            "Input": "Tokyo",
            "Result": "Hi",
            "Timestamp": "2024-01-01T00:00:02Z",
        },
        {
            "EventType": "TaskFailed",
            "FunctionName": "B",
            "ScheduledTime": "2024-01-01T00:00:00Z",
            "Input": 2,
            "Reason": "boom",
            "Details": "tb",
            "Timestamp": "2024-01-01T00:00:02Z",
        },
        {
            "EventType": "TimerCreated",
            "FireAt": "2024-01-01T00:01:03Z",
            "Timestamp": "2024-01-01T00:00:03Z",
        },
        {
            "EventType": "TaskScheduled",
            "Name": "Pending",
            "FunctionName": "Pending",
            "Input": None,
            "Timestamp": "2024-01-01T00:00:03Z",
        },
        {
            "EventType": "TimerFired",
            "FireAt": "2024-01-01T00:01:03Z",
            "TimerId": 2,
            "Timestamp": "2024-01-01T00:01:03Z",
        },
        {
            "EventType": "EventRaised",
            "Name": "Go",
            "Input": {"ok": 1},
            "Timestamp": "2024-01-01T00:01:03Z",
        },
        {
            "EventType": "ExecutionCompleted",
            "OrchestrationStatus": "Completed",
            "Result": "done",
            "Timestamp": "2024-01-01T00:01:03Z",
        },
    ]


def test_api_history_hides_inputs_and_outputs_unless_asked() -> None:
    items = api_history(full_history(), show_input=False, show_output=False)
    assert [i["EventType"] for i in items] == [
        "ExecutionStarted",
        "TaskCompleted",
        "TaskFailed",
        "TimerCreated",
        "TaskScheduled",
        "TimerFired",
        "EventRaised",
        "ExecutionCompleted",
    ]
    for item in items:
        assert "Input" not in item
        assert "Result" not in item
    completed = items[1]
    assert completed == {
        "EventType": "TaskCompleted",
        "FunctionName": "A",
        "ScheduledTime": "2024-01-01T00:00:00Z",
        "Timestamp": "2024-01-01T00:00:02Z",
    }
    assert items[2]["Reason"] == "boom"  # failures stay visible


def test_api_history_of_a_failed_execution_has_failure_details() -> None:
    failed = HistoryEvent(
        type=EventType.EXECUTION_COMPLETED,
        timestamp=T0,
        result="\"Orchestrator function 'orch' failed: x\"",
        details="Traceback ...",
        status=OrchestrationStatus.FAILED,
    )
    assert api_history([failed], show_input=True, show_output=True) == [
        {
            "EventType": "ExecutionCompleted",
            "OrchestrationStatus": "Failed",
            "Result": "Orchestrator function 'orch' failed: x",
            "FailureDetails": "Traceback ...",
            "Timestamp": "2024-01-01T00:00:00Z",
        }
    ]


def test_api_history_of_a_sub_orchestration() -> None:
    events = [
        HistoryEvent(
            type=EventType.SUB_ORCHESTRATION_CREATED,
            timestamp=T0,
            event_id=0,
            name="Child",
            input="1",
            instance_id="kid",
        ),
        HistoryEvent(
            type=EventType.SUB_ORCHESTRATION_COMPLETED,
            timestamp=at(1),
            task_scheduled_id=0,
            result="2",
        ),
    ]
    assert api_history(events, show_input=False, show_output=True) == [
        {
            "EventType": "SubOrchestrationInstanceCompleted",
            "FunctionName": "Child",
            "ScheduledTime": "2024-01-01T00:00:00Z",
            "Result": 2,
            "Timestamp": "2024-01-01T00:00:01Z",
        }
    ]
