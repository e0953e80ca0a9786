"""The Durable Functions 1.x JSON shapes: what the SDK reads and writes, and what the extension's
HTTP API returns. This is the only module that knows the wire's PascalCase and camelCase names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from itertools import accumulate
from typing import Any

from dfhost.history import EventType, HistoryEvent, Instance, format_time

__all__ = [
    "MAX_JSON_DEPTH",
    "OUT_OF_PROC_LABEL",
    "UnsafeJsonError",
    "api_history",
    "api_status",
    "check_json_text",
    "client_binding",
    "dtfx_event",
    "json_too_deep",
    "orchestration_context",
    "parse_json_input",
    "split_orchestrator_error",
    "stored_json_value",
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


MAX_JSON_DEPTH = 256
"""Nesting accepted in a JSON payload. Python's `json` recurses once per level, so a value
nested about 1,000 deep cannot be decoded, and one a little less deep decodes but cannot be
encoded again inside a request handler's deeper stack: every list holding it would fail.
256 is far from both and far deeper than any real payload."""

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_SQUARE = str.maketrans("{}", "[]")
_STEP = {ord("["): 1, ord("]"): -1}
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class UnsafeJsonError(ValueError):
    """JSON text that is malformed, nested too deep, or that could not be encoded back."""


def json_too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests arrays and objects more than `limit` levels deep. Without
    recursion and in C: strings are cut out, the brackets kept, and the running depth is a
    running sum of +1 and -1. Malformed text may count as deep or not (the parser says what
    is wrong with it)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    shape = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)).translate(_SQUARE)
    return max(accumulate(map(_STEP.__getitem__, shape.encode("ascii"))), default=0) > limit


def _depth_problem(what: str) -> str:
    return f"{what} is nested more than {MAX_JSON_DEPTH} levels deep."


def check_json_text(text: str | None, what: str) -> None:
    """Raise `UnsafeJsonError` for JSON text that could be stored but not shown again: nested
    too deep, or holding an unpaired surrogate (which has no UTF-8 encoding). Syntax is the
    caller's affair."""
    if text is None:
        return
    if json_too_deep(text):
        raise UnsafeJsonError(_depth_problem(what))
    if _SURROGATE_ESCAPE.search(text) is not None:
        try:
            json.dumps(json.loads(text), ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise UnsafeJsonError(
                f"{what} holds an unpaired UTF-16 surrogate (\\ud800-\\udfff), which has no "
                "UTF-8 encoding."
            ) from None
        except ValueError:
            return


def parse_json_input(text: str, what: str) -> Any:
    """Decode JSON text a caller sent (NaN and Infinity included, as the SDK's `json.loads`
    reads them); `UnsafeJsonError` with a one-line reason for text that is malformed or
    that `check_json_text` refuses."""
    check_json_text(text, what)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UnsafeJsonError(f"{what} is not valid JSON: {exc}") from None


def stored_json_value(text: str | None) -> Any:
    """Stored JSON text as a value for API bodies. Text that doesn't parse, or that is nested
    too deep to be encoded again (stored before the limit, or produced by user code), is
    returned as the text itself: one odd field, never a list that cannot be shown."""
    if text is None:
        return None
    if json_too_deep(text):
        return text
    try:
        return json.loads(text)
    except (ValueError, TypeError, RecursionError):
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
        "input": stored_json_value(instance.input) if show_input else None,
        "customStatus": stored_json_value(instance.custom_status),
        "output": stored_json_value(instance.output),
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
                item["Input"] = stored_json_value(e.input)
        elif e.type is EventType.EXECUTION_COMPLETED:
            item["OrchestrationStatus"] = e.status.value if e.status else None
            if show_output:
                item["Result"] = stored_json_value(e.result)
            if e.details:
                item["FailureDetails"] = e.details
        elif e.task_scheduled_id is not None:
            origin = scheduled.get(e.task_scheduled_id)
            if origin is not None:
                item["FunctionName"] = origin.name
                item["ScheduledTime"] = _api_time(origin.timestamp)
                if show_input:
                    item["Input"] = stored_json_value(origin.input)
            if e.result is not None and show_output:
                item["Result"] = stored_json_value(e.result)
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
                item["Input"] = stored_json_value(e.input)
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
