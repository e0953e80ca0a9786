"""The Durable Functions 1.x JSON shapes: what the SDK reads and writes, and what the extension's
HTTP API returns. This is the only module that knows the wire's PascalCase and camelCase names.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from dfhost.history import EventType, HistoryEvent, Instance, format_time

__all__ = [
    "OUT_OF_PROC_LABEL",
    "api_history",
    "api_status",
    "client_binding",
    "dtfx_event",
    "orchestration_context",
    "split_orchestrator_error",
]

OUT_OF_PROC_LABEL = "\n\n$OutOfProcData$:"

# DTFx [DataMember] names of the optional HistoryEvent fields, by our field name.
_DTFX_FIELDS = (
    ("name", "Name"),
    ("version", "Version"),
    ("input", "Input"),
    ("result", "Result"),
    ("task_scheduled_id", "TaskScheduledId"),
    ("timer_id", "TimerId"),
    ("fire_at", "FireAt"),
    ("reason", "Reason"),
    ("details", "Details"),
)

_EVENT_NAMES = {
    EventType.EXECUTION_STARTED: "ExecutionStarted",
    EventType.EXECUTION_COMPLETED: "ExecutionCompleted",
    EventType.EXECUTION_FAILED: "ExecutionFailed",
    EventType.EXECUTION_TERMINATED: "ExecutionTerminated",
    EventType.TASK_SCHEDULED: "TaskScheduled",
    EventType.TASK_COMPLETED: "TaskCompleted",
    EventType.TASK_FAILED: "TaskFailed",
    EventType.SUB_ORCHESTRATION_CREATED: "SubOrchestrationInstanceCreated",
    EventType.SUB_ORCHESTRATION_COMPLETED: "SubOrchestrationInstanceCompleted",
    EventType.SUB_ORCHESTRATION_FAILED: "SubOrchestrationInstanceFailed",
    EventType.TIMER_CREATED: "TimerCreated",
    EventType.TIMER_FIRED: "TimerFired",
    EventType.ORCHESTRATOR_STARTED: "OrchestratorStarted",
    EventType.ORCHESTRATOR_COMPLETED: "OrchestratorCompleted",
    EventType.EVENT_SENT: "EventSent",
    EventType.EVENT_RAISED: "EventRaised",
    EventType.CONTINUE_AS_NEW: "ContinueAsNew",
    EventType.GENERIC_EVENT: "GenericEvent",
    EventType.HISTORY_STATE: "HistoryState",
    EventType.EXECUTION_SUSPENDED: "ExecutionSuspended",
    EventType.EXECUTION_RESUMED: "ExecutionResumed",
    EventType.EXECUTION_REWOUND: "ExecutionRewound",
}


def event_type_name(kind: EventType) -> str:
    """The DTFx name of an event type, e.g. "TaskCompleted"."""
    return _EVENT_NAMES[kind]


def dtfx_event(event: HistoryEvent, *, played: bool) -> dict[str, Any]:
    """One history event as the SDK's `HistoryEvent(**he)` expects it."""
    out: dict[str, Any] = {
        "EventType": int(event.type),
        "EventId": event.event_id,
        "IsPlayed": played,
        "Timestamp": format_time(event.timestamp),
    }
    for ours, theirs in _DTFX_FIELDS:
        value = getattr(event, ours)
        if value is not None:
            out[theirs] = format_time(value) if isinstance(value, datetime) else value
    if event.type is EventType.EXECUTION_STARTED:
        out["Version"] = event.version  # the SDK reads it unconditionally
        out["OrchestrationInstance"] = {
            "InstanceId": event.instance_id,
            "ExecutionId": event.execution_id,
        }
        if event.parent_instance_id is not None:
            out["ParentInstance"] = {
                "OrchestrationInstance": {
                    "InstanceId": event.parent_instance_id,
                    "ExecutionId": event.parent_execution_id,
                },
                "TaskScheduleId": event.parent_task_id,
            }
    elif event.instance_id is not None:
        out["InstanceId"] = event.instance_id
    if event.status is not None:
        out["OrchestrationStatus"] = event.status.value
    return out


def orchestration_context(
    *,
    instance_id: str,
    past: Sequence[HistoryEvent],
    new: Sequence[HistoryEvent],
    input_text: str | None,
    parent_instance_id: str | None,
) -> dict[str, Any]:
    """The context object the SDK's orchestrator handle parses (sdk-protocol.md §2.1).

    Events of earlier episodes are marked played; the SDK treats everything after the last
    OrchestratorStarted as new. No long-timer durations are sent: dfhost has no maximum timer
    length, so the SDK never splits timers (and they stay cancellable).
    """
    history = [dtfx_event(e, played=True) for e in past]
    history.extend(dtfx_event(e, played=False) for e in new)
    return {
        "history": history,
        "input": input_text,
        "instanceId": instance_id,
        "isReplaying": bool(past),
        "parentInstanceId": parent_instance_id,
        "upperSchemaVersion": 1,
        "upperSchemaVersionNew": 2,
    }


def split_orchestrator_error(text: str) -> tuple[str, dict[str, Any] | None]:
    """Split the SDK's failure text into the error message and its state JSON, if present."""
    message, label, state_text = text.partition(OUT_OF_PROC_LABEL)
    if not label:
        return text, None
    try:
        state = json.loads(state_text)
    except json.JSONDecodeError:
        return message, None
    if not isinstance(state, dict):
        return message, None
    error = state.get("error")
    return (error if isinstance(error, str) else message), state


def _json_value(text: str | None) -> Any:
    """Stored JSON text as a value for API bodies; text that doesn't parse is returned raw."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return text


def _api_time(value: datetime) -> str:
    # The extension formats with ToString("s") + "Z": seconds, no fraction.
    return format_time(value)[:19] + "Z"


def api_status(
    instance: Instance,
    *,
    show_input: bool = True,
    history: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The status body of `GET instances/{id}` and of list entries."""
    body: dict[str, Any] = {
        "name": instance.name,
        "instanceId": instance.instance_id,
        "runtimeStatus": instance.status.value,
        "input": _json_value(instance.input) if show_input else None,
        "customStatus": _json_value(instance.custom_status),
        "output": _json_value(instance.output),
        "createdTime": _api_time(instance.created_at),
        "lastUpdatedTime": _api_time(instance.last_updated_at),
    }
    if history is not None:
        body["historyEvents"] = history
    return body


def api_history(
    events: Iterable[HistoryEvent], *, show_input: bool, show_output: bool
) -> list[dict[str, Any]]:
    """History as the management API shows it (`historyEvents`).

    Episode markers and TaskScheduled events that have a completion are dropped; completions
    gain the function name and scheduled time of what they complete, as the extension does.
    """
    events = list(events)
    scheduled: dict[int, HistoryEvent] = {}
    for e in events:
        if e.type in (
            EventType.TASK_SCHEDULED,
            EventType.SUB_ORCHESTRATION_CREATED,
            EventType.TIMER_CREATED,
        ):
            scheduled[e.event_id] = e
    completed_ids = {
        e.task_scheduled_id
        for e in events
        if e.type
        in (
            EventType.TASK_COMPLETED,
            EventType.TASK_FAILED,
            EventType.SUB_ORCHESTRATION_COMPLETED,
            EventType.SUB_ORCHESTRATION_FAILED,
        )
    }
    out: list[dict[str, Any]] = []
    for e in events:
        if e.type in (EventType.ORCHESTRATOR_STARTED, EventType.ORCHESTRATOR_COMPLETED):
            continue
        if (
            e.type in (EventType.TASK_SCHEDULED, EventType.SUB_ORCHESTRATION_CREATED)
            and e.event_id in completed_ids
        ):
            continue
        item: dict[str, Any] = {"EventType": event_type_name(e.type)}
        if e.type is EventType.EXECUTION_STARTED:
            item["FunctionName"] = e.name
            if e.version:
                item["Version"] = e.version
            if show_input:
                item["Input"] = _json_value(e.input)
        elif e.type is EventType.EXECUTION_COMPLETED:
            item["OrchestrationStatus"] = e.status.value if e.status else None
            if show_output:
                item["Result"] = _json_value(e.result)
            if e.details:
                item["FailureDetails"] = e.details
        elif e.task_scheduled_id is not None:
            origin = scheduled.get(e.task_scheduled_id)
            if origin is not None:
                item["FunctionName"] = origin.name
                item["ScheduledTime"] = _api_time(origin.timestamp)
                if show_input:
                    item["Input"] = _json_value(origin.input)
            if e.result is not None and show_output:
                item["Result"] = _json_value(e.result)
            if e.reason is not None:
                item["Reason"] = e.reason
                item["Details"] = e.details
        else:
            if e.name is not None:
                item["Name"] = e.name
            if e.fire_at is not None:
                item["FireAt"] = _api_time(e.fire_at)
            if e.timer_id is not None:
                item["TimerId"] = e.timer_id
            if e.instance_id is not None:
                item["InstanceId"] = e.instance_id
            if e.type in (EventType.TASK_SCHEDULED, EventType.SUB_ORCHESTRATION_CREATED):
                item["FunctionName"] = e.name
            if show_input and e.input is not None:
                item["Input"] = _json_value(e.input)
            if e.reason is not None:
                item["Reason"] = e.reason
        item["Timestamp"] = _api_time(e.timestamp)
        out.append(item)
    return out


def client_binding(*, origin: str, hub_name: str, rpc_base_url: str) -> dict[str, Any]:
    """The `durableClient` binding value the SDK's `DurableOrchestrationClient` is built from.

    `origin` is the scheme://host:port clients should use for the management URLs; the SDK
    swaps it for the request's own origin in `create_check_status_response`.
    """
    base = f"{origin}/runtime/webhooks/durabletask"
    query = f"taskHub={hub_name}&connection=Storage"
    instance = f"{base}/instances/INSTANCEID"
    return {
        "taskHubName": hub_name,
        "creationUrls": {
            "createNewInstancePostUri": f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]",
            "createAndWaitOnNewInstancePostUri": (
                f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]"
                "?timeout={timeoutInSeconds}&pollingInterval={intervalInSeconds}"
            ),
        },
        "managementUrls": {
            "id": "INSTANCEID",
            "statusQueryGetUri": f"{instance}?{query}",
            "sendEventPostUri": f"{instance}/raiseEvent/{{eventName}}?{query}",
            "terminatePostUri": f"{instance}/terminate?reason={{text}}&{query}",
            "rewindPostUri": f"{instance}/rewind?reason={{text}}&{query}",
            "purgeHistoryDeleteUri": f"{instance}?{query}",
            "restartPostUri": f"{instance}/restart?{query}",
            "suspendPostUri": f"{instance}/suspend?reason={{text}}&{query}",
            "resumePostUri": f"{instance}/resume?reason={{text}}&{query}",
        },
        "baseUrl": base,
        "requiredQueryStringParameters": "",
        "rpcBaseUrl": rpc_base_url,
    }


def check_status_payload(*, origin: str, hub_name: str, instance_id: str) -> dict[str, Any]:
    """The 202 body of a start request on the management API (no rewind URL, as the extension)."""
    urls = client_binding(origin=origin, hub_name=hub_name, rpc_base_url="")["managementUrls"]
    body = {"id": instance_id}
    for key in (
        "statusQueryGetUri",
        "sendEventPostUri",
        "terminatePostUri",
        "purgeHistoryDeleteUri",
        "restartPostUri",
        "suspendPostUri",
        "resumePostUri",
    ):
        body[key] = urls[key].replace("INSTANCEID", instance_id)
    return body
