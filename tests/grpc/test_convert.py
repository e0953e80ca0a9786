"""`dfhost.grpc.convert` and `episodes`: proto history and actions <-> dfhost's, with no
server (each history event kind maps to its own kind, failures keep what the worker sent)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from durabletask.internal import orchestrator_service_pb2 as pb
from google.protobuf import wrappers_pb2

from dfhost.grpc.convert import event_to_proto, failure_from_proto, failure_to_proto, state_to_proto
from dfhost.grpc.episodes import episode_request, remote_episode
from dfhost.history import EventType, HistoryEvent, Instance, OrchestrationStatus
from dfhost.orchestration.episode import (
    ActivityCall,
    Completed,
    ContinuedAsNew,
    EpisodeInput,
    Failed,
    Running,
    SubOrchestrationCall,
    TimerRequest,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)

# The proto's oneof field for each of dfhost's event kinds.
_FIELDS = {
    EventType.EXECUTION_STARTED: "executionStarted",
    EventType.EXECUTION_COMPLETED: "executionCompleted",
    EventType.EXECUTION_FAILED: "executionCompleted",
    EventType.EXECUTION_TERMINATED: "executionTerminated",
    EventType.TASK_SCHEDULED: "taskScheduled",
    EventType.TASK_COMPLETED: "taskCompleted",
    EventType.TASK_FAILED: "taskFailed",
    EventType.SUB_ORCHESTRATION_CREATED: "subOrchestrationInstanceCreated",
    EventType.SUB_ORCHESTRATION_COMPLETED: "subOrchestrationInstanceCompleted",
    EventType.SUB_ORCHESTRATION_FAILED: "subOrchestrationInstanceFailed",
    EventType.TIMER_CREATED: "timerCreated",
    EventType.TIMER_FIRED: "timerFired",
    EventType.ORCHESTRATOR_STARTED: "orchestratorStarted",
    EventType.ORCHESTRATOR_COMPLETED: "orchestratorCompleted",
    EventType.EVENT_SENT: "eventSent",
    EventType.EVENT_RAISED: "eventRaised",
    EventType.GENERIC_EVENT: "genericEvent",
    EventType.HISTORY_STATE: "historyState",
    EventType.CONTINUE_AS_NEW: "continueAsNew",
    EventType.EXECUTION_SUSPENDED: "executionSuspended",
    EventType.EXECUTION_RESUMED: "executionResumed",
    EventType.EXECUTION_REWOUND: "executionRewound",
}


def test_every_event_kind_maps_to_its_own() -> None:
    assert set(_FIELDS) == set(EventType)
    for kind, field in _FIELDS.items():
        proto = event_to_proto(HistoryEvent(type=kind, timestamp=T0, event_id=3))
        assert proto.WhichOneof("eventType") == field
        assert proto.eventId == 3
        assert proto.timestamp.ToDatetime(tzinfo=UTC) == T0


def test_fields_map_by_name() -> None:
    started = event_to_proto(
        HistoryEvent(
            type=EventType.EXECUTION_STARTED,
            timestamp=T0,
            name="orch",
            version="2",
            input='"in"',
            instance_id="i",
            execution_id="x",
            parent_instance_id="p",
            parent_execution_id="px",
            parent_task_id=4,
        )
    ).executionStarted
    assert (started.name, started.version.value, started.input.value) == ("orch", "2", '"in"')
    assert started.orchestrationInstance.instanceId == "i"
    assert started.orchestrationInstance.executionId.value == "x"
    assert started.parentInstance.taskScheduledId == 4
    assert started.parentInstance.orchestrationInstance.instanceId == "p"
    fired = event_to_proto(
        HistoryEvent(type=EventType.TIMER_FIRED, timestamp=T0, timer_id=2, fire_at=T0)
    ).timerFired
    assert fired.timerId == 2
    completed = event_to_proto(
        HistoryEvent(type=EventType.TASK_COMPLETED, timestamp=T0, task_scheduled_id=5)
    ).taskCompleted
    assert completed.taskScheduledId == 5
    assert not completed.HasField("result")  # None stays unset, not ""


def test_a_workers_failure_comes_back_as_it_was_sent() -> None:
    sent = pb.TaskFailureDetails(
        errorType="builtins.ValueError",
        errorMessage="bad",
        stackTrace=wrappers_pb2.StringValue(value="  File x"),
        innerFailure=pb.TaskFailureDetails(errorType="KeyError", errorMessage="k"),
        isNonRetriable=True,
    )
    reason, details = failure_from_proto(sent)
    assert reason == "bad"
    assert failure_to_proto(reason, details) == sent
    # One of dfhost's own: its reason as the message, its details as the stack.
    own = failure_to_proto("too large", "the details")
    assert (own.errorMessage, own.stackTrace.value) == ("too large", "the details")


def test_a_failed_instance_has_failure_details_and_no_output() -> None:
    failed = Instance(
        instance_id="i",
        name="orch",
        execution_id="x",
        status=OrchestrationStatus.FAILED,
        created_at=T0,
        last_updated_at=T0,
        output=json.dumps("bad"),
        failure_details=failure_from_proto(
            pb.TaskFailureDetails(errorType="E", errorMessage="bad")
        )[1],
    )
    state = state_to_proto(failed, with_payloads=True)
    assert state.orchestrationStatus == pb.ORCHESTRATION_STATUS_FAILED
    assert (state.failureDetails.errorType, state.failureDetails.errorMessage) == ("E", "bad")
    assert not state.HasField("output")
    assert state.HasField("completedTimestamp")


def _episode() -> EpisodeInput:
    return EpisodeInput(
        instance_id="i",
        execution_id="x",
        name="orch",
        input=None,
        parent_instance_id=None,
        past=[HistoryEvent(type=EventType.EXECUTION_STARTED, timestamp=T0, name="orch")],
        new=[HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=T0)],
    )


def _action(action_id: int, **kind: object) -> pb.OrchestratorAction:
    return pb.OrchestratorAction(id=action_id, **kind)  # type: ignore[arg-type]


def test_a_work_item_has_past_and_new_events() -> None:
    request = episode_request(_episode())
    assert [e.WhichOneof("eventType") for e in request.pastEvents] == ["executionStarted"]
    assert [e.WhichOneof("eventType") for e in request.newEvents] == ["orchestratorStarted"]
    assert request.executionId.value == "x"


def test_actions_become_scheduling_events_and_work() -> None:
    fire_at = T0 + timedelta(minutes=1)
    timer = pb.CreateTimerAction()
    timer.fireAt.FromDatetime(fire_at)
    response = pb.OrchestratorResponse(
        actions=[
            _action(1, scheduleTask=pb.ScheduleTaskAction(name="a", input=_text("1"))),
            _action(
                2,
                createSubOrchestration=pb.CreateSubOrchestrationAction(
                    instanceId="child", name="sub", input=_text("2")
                ),
            ),
            _action(3, createTimer=timer),
            _action(
                4,
                sendEvent=pb.SendEventAction(
                    instance=pb.OrchestrationInstance(instanceId="other"),
                    name="ping",
                    data=_text('"hi"'),
                ),
            ),
        ],
        customStatus=_text('"busy"'),
    )
    decided = remote_episode(_episode(), response, payload_bytes=1024)
    result = decided.result
    assert result.outcome == Running()
    assert result.work == [
        ActivityCall(1, "a", "1"),
        SubOrchestrationCall(2, "sub", "child", "2", None),
        TimerRequest(3, fire_at),
    ]
    assert [(e.type, e.event_id) for e in result.events] == [
        (EventType.TASK_SCHEDULED, 1),
        (EventType.SUB_ORCHESTRATION_CREATED, 2),
        (EventType.TIMER_CREATED, 3),
        (EventType.EVENT_SENT, 4),
    ]
    assert result.custom_status == '"busy"'
    [sent] = decided.messages
    assert (sent.instance_id, sent.event.type, sent.event.input) == (
        "other",
        EventType.EVENT_RAISED,
        '"hi"',
    )


def test_completions() -> None:
    def complete(**fields: object) -> pb.OrchestratorResponse:
        done = pb.CompleteOrchestrationAction(**fields)  # type: ignore[arg-type]
        return pb.OrchestratorResponse(actions=[_action(1, completeOrchestration=done)])

    ok = remote_episode(
        _episode(), complete(orchestrationStatus=pb.ORCHESTRATION_STATUS_COMPLETED), 1024
    )
    assert ok.result.outcome == Completed(None)
    failed = remote_episode(
        _episode(),
        complete(
            orchestrationStatus=pb.ORCHESTRATION_STATUS_FAILED,
            failureDetails=pb.TaskFailureDetails(errorType="E", errorMessage="m"),
        ),
        1024,
    )
    assert isinstance(failed.result.outcome, Failed)
    assert failed.result.outcome.message == "m"
    carried = pb.HistoryEvent(eventRaised=pb.EventRaisedEvent(name="e", input=_text("1")))
    again = remote_episode(
        _episode(),
        complete(
            orchestrationStatus=pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW,
            result=_text("5"),
            carryoverEvents=[carried],
        ),
        1024,
    )
    outcome = again.result.outcome
    assert isinstance(outcome, ContinuedAsNew)
    assert outcome.input == "5"
    [event] = outcome.carried_events
    assert (event.type, event.name, event.timestamp) == (EventType.EVENT_RAISED, "e", T0)


def test_a_payload_over_the_limit_fails_the_orchestration() -> None:
    big = _action(1, scheduleTask=pb.ScheduleTaskAction(name="a", input=_text("x" * 2000)))
    decided = remote_episode(_episode(), pb.OrchestratorResponse(actions=[big]), 1024)
    assert isinstance(decided.result.outcome, Failed)
    assert "input of activity 'a'" in decided.result.outcome.message
    assert decided.result.work == []


def _text(value: str) -> wrappers_pb2.StringValue:
    return wrappers_pb2.StringValue(value=value)
