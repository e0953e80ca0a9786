"""The event-sourced record of an orchestration: event kinds, events, statuses and instances.

Everything here is plain data with a compact JSON form for storage. The Durable Task wire shapes
(PascalCase, `IsPlayed`, ...) are produced from these records by `dfhost.wire`, never stored.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "TERMINAL_STATUSES",
    "EventType",
    "HistoryEvent",
    "Instance",
    "OrchestrationStatus",
    "format_time",
    "parse_statuses",
    "parse_time",
    "utcnow",
]

_COMPACT = json.JSONEncoder(separators=(",", ":"))
"""`json.dumps(separators=...)` builds an encoder per call; this one is built once."""


class EventType(enum.IntEnum):
    """Durable Task history event kinds, numbered as DTFx and the SDK number them."""

    EXECUTION_STARTED = 0
    EXECUTION_COMPLETED = 1
    EXECUTION_FAILED = 2
    EXECUTION_TERMINATED = 3
    TASK_SCHEDULED = 4
    TASK_COMPLETED = 5
    TASK_FAILED = 6
    SUB_ORCHESTRATION_CREATED = 7
    SUB_ORCHESTRATION_COMPLETED = 8
    SUB_ORCHESTRATION_FAILED = 9
    TIMER_CREATED = 10
    TIMER_FIRED = 11
    ORCHESTRATOR_STARTED = 12
    ORCHESTRATOR_COMPLETED = 13
    EVENT_SENT = 14
    EVENT_RAISED = 15
    CONTINUE_AS_NEW = 16
    GENERIC_EVENT = 17
    HISTORY_STATE = 18
    EXECUTION_SUSPENDED = 19
    EXECUTION_RESUMED = 20
    EXECUTION_REWOUND = 21


class OrchestrationStatus(enum.StrEnum):
    """Runtime statuses, spelled as the management API and the SDK spell them."""

    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETED = "Completed"
    CONTINUED_AS_NEW = "ContinuedAsNew"
    FAILED = "Failed"
    CANCELED = "Canceled"
    TERMINATED = "Terminated"
    SUSPENDED = "Suspended"


TERMINAL_STATUSES = frozenset(
    {
        OrchestrationStatus.COMPLETED,
        OrchestrationStatus.FAILED,
        OrchestrationStatus.CANCELED,
        OrchestrationStatus.TERMINATED,
    }
)


def parse_statuses(texts: Iterable[str], field: str) -> tuple[OrchestrationStatus, ...]:
    """Status filters as the management API's `runtimeStatus`, the dashboard's `status` and the
    CLI's `--status` take them: comma-separated names in any case, blanks skipped, repeats kept
    once, in order. An unknown name is a ValueError naming `field` and the known statuses, so
    that a typo is reported instead of silently matching nothing."""
    by_name = {s.value.lower(): s for s in OrchestrationStatus}
    found: dict[OrchestrationStatus, None] = {}
    for text in texts:
        for item in filter(None, (part.strip() for part in text.split(","))):
            status = by_name.get(item.lower())
            if status is None:
                known = ", ".join(s.value for s in OrchestrationStatus)
                raise ValueError(f"{field} '{item}' is not one of: {known}")
            found[status] = None
    return tuple(found)


def utcnow() -> datetime:
    """Now, timezone-aware, in UTC."""
    return datetime.now(UTC)


@functools.lru_cache(maxsize=4096)
def format_time(value: datetime) -> str:
    """One fixed ISO form with microseconds and `Z`.

    Fixed so that timestamps are byte-stable across replays (the SDK's `new_uuid` hashes them) and
    so that `datetime.fromisoformat` can always parse them back. Cached: an episode formats
    the same few instants many times (its events, its instance row, its tasks), which was
    7% of a busy host's time.
    """
    if value.tzinfo is not UTC:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    # isoformat is several times faster than strftime, and this runs for every stored event.
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> datetime:
    """Parse an ISO timestamp; naive values are taken as UTC."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryEvent:
    """One history event. Which optional fields are set depends on `type` (see DTFx).

    Payload fields (`input`, `result`) hold JSON *text*, exactly as the SDK produced or expects
    it; they are never parsed by the host except for display.
    """

    type: EventType
    timestamp: datetime
    event_id: int = -1
    """Sequence number on scheduling events (TaskScheduled, TimerCreated, ...); -1 elsewhere."""
    name: str | None = None
    """Function name, event name, or entity operation."""
    version: str | None = None
    input: str | None = None
    result: str | None = None
    task_scheduled_id: int | None = None
    timer_id: int | None = None
    fire_at: datetime | None = None
    reason: str | None = None
    details: str | None = None
    instance_id: str | None = None
    """Target instance of a sub-orchestration or a sent event; own id on ExecutionStarted."""
    execution_id: str | None = None
    parent_instance_id: str | None = None
    parent_execution_id: str | None = None
    parent_task_id: int | None = None
    status: OrchestrationStatus | None = None
    """Final status on ExecutionCompleted."""
    trace_context: str | None = None
    """W3C `traceparent` of the span that started the execution (on ExecutionStarted) or sent
    an entity operation (on its EventRaised); see `dfhost.telemetry`."""

    def to_dict(self) -> dict[str, Any]:
        """Compact storage form: only the fields that are set."""
        out: dict[str, Any] = {"type": int(self.type), "timestamp": format_time(self.timestamp)}
        if self.event_id != -1:
            out["event_id"] = self.event_id
        for name in _OPTIONAL_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, datetime):
                value = format_time(value)
            elif isinstance(value, OrchestrationStatus):
                value = value.value
            out[name] = value
        return out

    def to_json(self) -> str:
        """Storage form as JSON text."""
        return _COMPACT.encode(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HistoryEvent:
        """Inverse of `to_dict`; raises `ValueError` on malformed data."""
        try:
            kwargs: dict[str, Any] = dict(data)
            for name, value in kwargs.items():
                expected = _PLAIN_FIELD_TYPES.get(name)
                # Exact types: what stored JSON gives back. A number where text belongs (or
                # true where a number does) would load here and break whoever reads it later.
                if expected is not None and value is not None and type(value) is not expected:
                    raise TypeError(f"{name} must be {expected.__name__}")
            kwargs["type"] = EventType(kwargs["type"])
            kwargs["timestamp"] = parse_time(kwargs["timestamp"])
            if kwargs.get("fire_at") is not None:
                kwargs["fire_at"] = parse_time(kwargs["fire_at"])
            if kwargs.get("status") is not None:
                kwargs["status"] = OrchestrationStatus(kwargs["status"])
            return cls(**kwargs)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed history event {data!r}: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> HistoryEvent:
        """Inverse of `to_json`; raises `ValueError` on malformed text."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"malformed history event JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"malformed history event: expected an object, got {text[:80]!r}")
        return cls.from_dict(data)

    def with_timestamp(self, timestamp: datetime) -> HistoryEvent:
        """The same event stamped with another time."""
        return replace(self, timestamp=timestamp)


# The fields stored as they are, by type: text and numbers (the others are parsed).
_PLAIN_FIELD_TYPES: dict[str, type] = {
    f.name: {"str | None": str, "int | None": int, "int": int}[str(f.type)]
    for f in fields(HistoryEvent)
    if str(f.type) in ("str | None", "int | None", "int")
}

# Every field but the two always stored and event_id (-1 means unset), in declaration order.
_OPTIONAL_FIELDS = tuple(
    f.name for f in fields(HistoryEvent) if f.name not in ("type", "timestamp", "event_id")
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Instance:
    """The queryable state of one orchestration instance (its current execution)."""

    instance_id: str
    name: str
    execution_id: str
    status: OrchestrationStatus
    created_at: datetime
    last_updated_at: datetime
    version: str | None = None
    input: str | None = None
    """JSON text."""
    output: str | None = None
    """JSON text (the failure message, as a JSON string, when Failed)."""
    custom_status: str | None = None
    """JSON text."""
    parent_instance_id: str | None = None
    failure_details: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
