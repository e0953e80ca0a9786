"""Durable Task protobuf messages <-> dfhost's history, one event kind to one event kind.

The proto's history events are DTFx's, as `dfhost.history` numbers them, so most fields map
by name. Two things have no field of their own in dfhost's history and are kept where the
dashboard still reads them: a worker's `TaskFailureDetails` (type, message, stack, inner
failure) become the event's `reason` (the message) and its `details` (the whole failure as
protobuf JSON, so it comes back to the worker as it was sent); a failure dfhost itself
records (a limit, a terminate, a missing orchestrator) goes out with its reason as the
message and its details as the stack.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from durabletask.internal import orchestrator_service_pb2 as pb
from google.protobuf import json_format, timestamp_pb2, wrappers_pb2

from dfhost.history import EventType, HistoryEvent, Instance, OrchestrationStatus

__all__ = [
    "STATUS_FROM_PROTO",
    "STATUS_TO_PROTO",
    "event_from_proto",
    "event_to_proto",
    "failure_from_proto",
    "failure_to_proto",
    "state_to_proto",
    "text",
    "time_from_proto",
    "time_to_proto",
    "wrapped",
]

STATUS_TO_PROTO: dict[OrchestrationStatus, pb.OrchestrationStatus] = {
    OrchestrationStatus.RUNNING: pb.ORCHESTRATION_STATUS_RUNNING,
    OrchestrationStatus.COMPLETED: pb.ORCHESTRATION_STATUS_COMPLETED,
    OrchestrationStatus.CONTINUED_AS_NEW: pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW,
    OrchestrationStatus.FAILED: pb.ORCHESTRATION_STATUS_FAILED,
    OrchestrationStatus.CANCELED: pb.ORCHESTRATION_STATUS_CANCELED,
    OrchestrationStatus.TERMINATED: pb.ORCHESTRATION_STATUS_TERMINATED,
    OrchestrationStatus.PENDING: pb.ORCHESTRATION_STATUS_PENDING,
    OrchestrationStatus.SUSPENDED: pb.ORCHESTRATION_STATUS_SUSPENDED,
}
STATUS_FROM_PROTO = {proto: status for status, proto in STATUS_TO_PROTO.items()}

_DFHOST_FAILURE = "dfhost.Failure"
"""The error type of failures dfhost records itself (no worker exception behind them)."""


def wrapped(value: str | None) -> wrappers_pb2.StringValue | None:
    return None if value is None else wrappers_pb2.StringValue(value=value)


def text(message: object, name: str) -> str | None:
    """A StringValue field of `message`: None when unset (an empty string stays empty)."""
    if not message.HasField(name):  # type: ignore[attr-defined]
        return None
    value: str = getattr(message, name).value
    return value


def time_to_proto(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def time_from_proto(stamp: timestamp_pb2.Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


# --- failures ----------------------------------------------------------------------------


def failure_from_proto(details: pb.TaskFailureDetails) -> tuple[str, str]:
    """(reason, details) of a worker's failure."""
    kept = json_format.MessageToDict(details)
    return details.errorMessage, json.dumps(kept, separators=(",", ":"))


def failure_to_proto(reason: str | None, details: str | None) -> pb.TaskFailureDetails:
    """The worker's own failure back, or one of dfhost's with its reason and details."""
    if details and details.startswith("{"):
        try:
            kept = json.loads(details)
        except ValueError:
            kept = None
        if isinstance(kept, dict) and "errorType" in kept:
            try:
                return json_format.ParseDict(kept, pb.TaskFailureDetails())
            except json_format.ParseError:
                pass
    return pb.TaskFailureDetails(
        errorType=_DFHOST_FAILURE, errorMessage=reason or "", stackTrace=wrapped(details)
    )


def _instance(instance_id: str | None, execution_id: str | None) -> pb.OrchestrationInstance:
    return pb.OrchestrationInstance(instanceId=instance_id or "", executionId=wrapped(execution_id))


# --- history events ----------------------------------------------------------------------


def event_to_proto(e: HistoryEvent) -> pb.HistoryEvent:
    """The proto form of a stored event."""
    out = pb.HistoryEvent(eventId=e.event_id, timestamp=time_to_proto(e.timestamp))
    # The kind is the oneof field that is set, also when none of its own fields is.
    getattr(out, _FIELD_OF[e.type]).SetInParent()
    match e.type:
        case EventType.EXECUTION_STARTED:
            started = out.executionStarted
            started.name = e.name or ""
            _set(started, "version", e.version)
            _set(started, "input", e.input)
            started.orchestrationInstance.CopyFrom(_instance(e.instance_id, e.execution_id))
            if e.parent_instance_id is not None:
                started.parentInstance.taskScheduledId = e.parent_task_id or 0
                started.parentInstance.orchestrationInstance.CopyFrom(
                    _instance(e.parent_instance_id, e.parent_execution_id)
                )
            if e.trace_context:
                started.parentTraceContext.traceParent = e.trace_context
        case EventType.EXECUTION_COMPLETED | EventType.EXECUTION_FAILED:
            # DTFx's ExecutionFailed (which dfhost does not write) is a failed completion.
            status = e.status or (
                OrchestrationStatus.FAILED
                if e.type is EventType.EXECUTION_FAILED
                else OrchestrationStatus.COMPLETED
            )
            completed = out.executionCompleted
            completed.orchestrationStatus = STATUS_TO_PROTO[status]
            if status in (OrchestrationStatus.FAILED, OrchestrationStatus.CANCELED):
                completed.failureDetails.CopyFrom(failure_to_proto(_message(e.result), e.details))
            else:
                _set(completed, "result", e.result)
        case EventType.EXECUTION_TERMINATED:
            _set(out.executionTerminated, "input", e.input)
        case EventType.TASK_SCHEDULED:
            _set(out.taskScheduled, "version", e.version)
            _set(out.taskScheduled, "input", e.input)
            out.taskScheduled.name = e.name or ""
        case EventType.TASK_COMPLETED:
            out.taskCompleted.taskScheduledId = e.task_scheduled_id or 0
            _set(out.taskCompleted, "result", e.result)
        case EventType.TASK_FAILED:
            out.taskFailed.taskScheduledId = e.task_scheduled_id or 0
            out.taskFailed.failureDetails.CopyFrom(failure_to_proto(e.reason, e.details))
        case EventType.SUB_ORCHESTRATION_CREATED:
            created = out.subOrchestrationInstanceCreated
            created.instanceId = e.instance_id or ""
            created.name = e.name or ""
            _set(created, "version", e.version)
            _set(created, "input", e.input)
        case EventType.SUB_ORCHESTRATION_COMPLETED:
            out.subOrchestrationInstanceCompleted.taskScheduledId = e.task_scheduled_id or 0
            _set(out.subOrchestrationInstanceCompleted, "result", e.result)
        case EventType.SUB_ORCHESTRATION_FAILED:
            failed = out.subOrchestrationInstanceFailed
            failed.taskScheduledId = e.task_scheduled_id or 0
            failed.failureDetails.CopyFrom(failure_to_proto(e.reason, e.details))
        case EventType.TIMER_CREATED:
            out.timerCreated.fireAt.CopyFrom(time_to_proto(e.fire_at or e.timestamp))
        case EventType.TIMER_FIRED:
            out.timerFired.timerId = e.timer_id or 0
            out.timerFired.fireAt.CopyFrom(time_to_proto(e.fire_at or e.timestamp))
        case EventType.EVENT_SENT:
            out.eventSent.instanceId = e.instance_id or ""
            out.eventSent.name = e.name or ""
            _set(out.eventSent, "input", e.input)
        case EventType.EVENT_RAISED:
            out.eventRaised.name = e.name or ""
            _set(out.eventRaised, "input", e.input)
        case EventType.GENERIC_EVENT:
            _set(out.genericEvent, "data", e.input)
        case EventType.CONTINUE_AS_NEW:
            _set(out.continueAsNew, "input", e.input)
        case EventType.EXECUTION_SUSPENDED:
            _set(out.executionSuspended, "input", e.reason)
        case EventType.EXECUTION_RESUMED:
            _set(out.executionResumed, "input", e.reason)
        case EventType.EXECUTION_REWOUND:
            _set(out.executionRewound, "reason", e.reason)
    return out


_FIELD_OF = {
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


def event_from_proto(p: pb.HistoryEvent, now: datetime) -> HistoryEvent:
    """The stored form of a worker's event (carried-over events of continue-as-new), stamped
    `now` unless it has a time; raises ValueError for a kind it cannot be."""
    if p.timestamp.seconds or p.timestamp.nanos:  # the SDK carries events over unstamped
        now = time_from_proto(p.timestamp)
    kind = p.WhichOneof("eventType")
    if kind == "eventRaised":
        raised = p.eventRaised
        return HistoryEvent(
            type=EventType.EVENT_RAISED,
            timestamp=now,
            name=raised.name,
            input=text(raised, "input"),
        )
    if kind == "genericEvent":
        return HistoryEvent(
            type=EventType.GENERIC_EVENT, timestamp=now, input=text(p.genericEvent, "data")
        )
    raise ValueError(f"a history event of kind {kind!r} cannot be carried over")


def _set(message: object, name: str, value: str | None) -> None:
    if value is not None:
        getattr(message, name).value = value


def _message(output: str | None) -> str | None:
    """A failed instance's message, which dfhost stores as its output, a JSON string."""
    if output is None:
        return None
    try:
        value = json.loads(output)
    except ValueError:
        return output
    return value if isinstance(value, str) else output


# --- instances ---------------------------------------------------------------------------


def state_to_proto(instance: Instance, with_payloads: bool) -> pb.OrchestrationState:
    state = pb.OrchestrationState(
        instanceId=instance.instance_id,
        name=instance.name,
        version=wrapped(instance.version),
        orchestrationStatus=STATUS_TO_PROTO[instance.status],
        createdTimestamp=time_to_proto(instance.created_at),
        lastUpdatedTimestamp=time_to_proto(instance.last_updated_at),
        executionId=wrapped(instance.execution_id),
        parentInstanceId=wrapped(instance.parent_instance_id),
    )
    if instance.tags:
        state.tags.update(instance.tags)
    failed = instance.status is OrchestrationStatus.FAILED
    if failed:
        state.failureDetails.CopyFrom(
            failure_to_proto(_message(instance.output), instance.failure_details)
        )
    if instance.status in (
        OrchestrationStatus.COMPLETED,
        OrchestrationStatus.FAILED,
        OrchestrationStatus.TERMINATED,
        OrchestrationStatus.CANCELED,
    ):
        state.completedTimestamp.CopyFrom(time_to_proto(instance.last_updated_at))
    if with_payloads:
        _set(state, "input", instance.input)
        if not failed:
            _set(state, "output", instance.output)
        _set(state, "customStatus", instance.custom_status)
    return state
