"""What one orchestration episode takes and gives: its input, the work it schedules, its outcome.

The work types (`ActivityCall`, `TimerRequest`, `SubOrchestrationCall`, `EntityMessage`) carry
what every concern needs of them as methods: the history event that records their scheduling,
the signature replay compares with that event, the payloads the size limits check. Code that
turns work into something else matches on `Work` with `assert_never`. So adding a work type to
`Work` makes mypy list every place to update: these methods, `outcome.py`'s dispatch,
`entities.deliveries`, and the reconciler's `_plan`, which maps the SDK's actions to work.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, get_args

from dfhost.history import EventType, HistoryEvent, Instance, format_time

__all__ = [
    "HTTP_ACTIVITY",
    "SCHEDULING_TYPES",
    "ActivityCall",
    "Completed",
    "ContinuedAsNew",
    "EntityMessage",
    "EpisodeInput",
    "EpisodeResult",
    "Failed",
    "Outcome",
    "Payload",
    "Pitfall",
    "Running",
    "Signature",
    "SubOrchestrationCall",
    "TimerRequest",
    "Work",
    "describe",
    "entity_request_id",
    "recorded_work",
]

HTTP_ACTIVITY = "BuiltIn::HttpActivity"
"""The built-in activity `call_http` runs as (the extension's name for it)."""


@dataclass(frozen=True, slots=True)
class EpisodeInput:
    """What an episode replays: the stored history and the events that are new this time."""

    instance_id: str
    execution_id: str
    name: str
    input: str | None
    parent_instance_id: str | None
    past: Sequence[HistoryEvent]
    new: Sequence[HistoryEvent]
    """Starts with this episode's OrchestratorStarted, whose timestamp is the episode's time."""

    @classmethod
    def of(
        cls, instance: Instance, past: Sequence[HistoryEvent], new: Sequence[HistoryEvent]
    ) -> EpisodeInput:
        """An episode of `instance`'s current execution."""
        return cls(
            instance_id=instance.instance_id,
            execution_id=instance.execution_id,
            name=instance.name,
            input=instance.input,
            parent_instance_id=instance.parent_instance_id,
            past=past,
            new=new,
        )

    @property
    def now(self) -> datetime:
        return self.new[0].timestamp


Signature = tuple[str, str | None, str | None, str | None]
"""(API, name, target, input kind): what must be equal for a replayed call to match."""

Payload = tuple[str, str | None]
"""(what it is, JSON text): a payload the size limits check."""


# --- the work an episode schedules ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActivityCall:
    event_id: int
    name: str
    input: str | None

    scheduled_type: ClassVar[EventType] = EventType.TASK_SCHEDULED

    @classmethod
    def recorded(cls, e: HistoryEvent) -> ActivityCall:
        return cls(e.event_id, e.name or "", e.input)

    def scheduled_event(self, episode: EpisodeInput) -> HistoryEvent:
        return HistoryEvent(
            type=self.scheduled_type,
            timestamp=episode.now,
            event_id=self.event_id,
            name=self.name,
            input=self.input,
        )

    def signature(self) -> Signature:
        api = "call_http" if self.name == HTTP_ACTIVITY else "call_activity"
        return (api, self.name, None, _json_kind(self.input))

    def changed_from(self, recorded: HistoryEvent) -> str | None:
        if self.input == recorded.input:
            return None
        was = _clip(recorded.input)
        return f"{describe(self)} with input {_clip(self.input)} where its history has {was}"

    def payloads(self) -> list[Payload]:
        return [(f"input of activity '{self.name}'", self.input)]


@dataclass(frozen=True, slots=True)
class TimerRequest:
    event_id: int
    fire_at: datetime

    scheduled_type: ClassVar[EventType] = EventType.TIMER_CREATED

    @classmethod
    def recorded(cls, e: HistoryEvent) -> TimerRequest:
        return cls(e.event_id, e.fire_at or e.timestamp)

    def scheduled_event(self, episode: EpisodeInput) -> HistoryEvent:
        return HistoryEvent(
            type=self.scheduled_type,
            timestamp=episode.now,
            event_id=self.event_id,
            fire_at=self.fire_at,
        )

    def signature(self) -> Signature:
        return ("create_timer", None, None, None)

    def changed_from(self, recorded: HistoryEvent) -> str | None:
        if recorded.fire_at in (None, self.fire_at):
            return None
        assert recorded.fire_at is not None
        return (
            f"create_timer() for {format_time(self.fire_at)} where its history has "
            f"{format_time(recorded.fire_at)}"
        )

    def payloads(self) -> list[Payload]:
        return []


@dataclass(frozen=True, slots=True)
class SubOrchestrationCall:
    event_id: int
    name: str
    instance_id: str
    input: str | None
    version: str | None

    scheduled_type: ClassVar[EventType] = EventType.SUB_ORCHESTRATION_CREATED

    @classmethod
    def recorded(cls, e: HistoryEvent) -> SubOrchestrationCall:
        return cls(e.event_id, e.name or "", e.instance_id or "", e.input, e.version)

    def scheduled_event(self, episode: EpisodeInput) -> HistoryEvent:
        return HistoryEvent(
            type=self.scheduled_type,
            timestamp=episode.now,
            event_id=self.event_id,
            name=self.name,
            version=self.version,
            input=self.input,
            instance_id=self.instance_id,
        )

    def signature(self) -> Signature:
        return ("call_sub_orchestrator", self.name, None, _json_kind(self.input))

    def changed_from(self, recorded: HistoryEvent) -> str | None:
        moved = self.instance_id != recorded.instance_id
        if self.input == recorded.input and not moved:
            return None
        change = f"{describe(self)} with input {_clip(self.input)}"
        if moved:
            change += f" and instance id '{self.instance_id}'"
        change += f" where its history has {_clip(recorded.input)}"
        if moved:
            change += f" and '{recorded.instance_id}'"
        return change

    def payloads(self) -> list[Payload]:
        return [(f"input of sub-orchestration '{self.name}'", self.input)]


@dataclass(frozen=True, slots=True)
class EntityMessage:
    """An operation for an entity: `call_entity` (a response is awaited) or `signal_entity`."""

    event_id: int
    instance_id: str
    """The entity's instance id, `@<lower-cased name>@<key>`."""
    operation: str
    input: str | None
    """JSON text of the operation's input, as the SDK's action carried it."""
    request_id: str
    signal: bool

    scheduled_type: ClassVar[EventType] = EventType.EVENT_SENT

    @classmethod
    def recorded(cls, e: HistoryEvent) -> EntityMessage:
        request = _request_message(e.input)
        text = request.get("input")
        return cls(
            e.event_id,
            e.instance_id or "",
            e.name or "",
            text if isinstance(text, str) else None,
            str(request.get("id") or ""),
            bool(request.get("signal")),
        )

    def request_message(self, parent_instance_id: str, parent_execution_id: str) -> str:
        """The DTFx RequestMessage JSON: EventSent's Input (the SDK reads its `id`) and the
        operation message the entity receives."""
        return json.dumps(
            {
                "op": self.operation,
                "signal": self.signal,
                "input": self.input,
                "id": self.request_id,
                "parent": parent_instance_id,
                "parentExecution": parent_execution_id,
            },
            separators=(",", ":"),
        )

    def scheduled_event(self, episode: EpisodeInput) -> HistoryEvent:
        return HistoryEvent(
            type=self.scheduled_type,
            timestamp=episode.now,
            event_id=self.event_id,
            name=self.operation,
            input=self.request_message(episode.instance_id, episode.execution_id),
            instance_id=self.instance_id,
        )

    def signature(self) -> Signature:
        api = "signal_entity" if self.signal else "call_entity"
        return (api, self.operation, self.instance_id, _json_kind(self.input))

    def changed_from(self, recorded: HistoryEvent) -> str | None:
        return None  # an operation's input is part of its signature

    def payloads(self) -> list[Payload]:
        return []


Work = ActivityCall | TimerRequest | SubOrchestrationCall | EntityMessage

# Not checked by mypy: the assertion below finds a work type missing here at import.
_WORK_TYPES: dict[EventType, type[Work]] = {
    t.scheduled_type: t for t in (ActivityCall, TimerRequest, SubOrchestrationCall, EntityMessage)
}
assert set(_WORK_TYPES.values()) == set(get_args(Work)), "a work type is missing here"

SCHEDULING_TYPES = tuple(_WORK_TYPES)
"""The history events that record work: one per work type."""


def recorded_work(e: HistoryEvent) -> Work:
    """The work a stored scheduling event (one of `SCHEDULING_TYPES`) recorded."""
    return _WORK_TYPES[e.type].recorded(e)


def describe(work: Work) -> str:
    """The call as orchestrator code makes it, for messages: `call_activity('name')`."""
    api, name, target, _ = work.signature()
    if api == "create_timer":
        return "create_timer()"
    if api == "call_http":
        return "call_http()"
    if target is not None:
        return f"{api}('{target}', '{name}')"
    return f"{api}('{name}')"


def entity_request_id(instance_id: str, execution_id: str, event_id: int) -> str:
    """The id of an entity request, the same on every replay (the SDK re-keys the call's task
    to it and matches the response by it), and unique across executions."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dfhost:{instance_id}:{execution_id}:{event_id}"))


def _json_kind(text: str | None) -> str:
    stripped = (text or "null").lstrip()[:1]
    kinds = {'"': "string", "{": "object", "[": "array", "t": "boolean", "f": "boolean"}
    if stripped in kinds:
        return kinds[stripped]
    return "null" if stripped == "n" else "number"


def _request_message(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _clip(text: str | None, limit: int = 60) -> str:
    text = text or "null"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


# --- how it ends ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Running:
    def payloads(self) -> list[Payload]:
        return []


@dataclass(frozen=True, slots=True)
class Completed:
    output: str | None
    """JSON text; None when a Durable Task worker's orchestrator returned nothing."""

    def payloads(self) -> list[Payload]:
        return [("output", self.output)]


@dataclass(frozen=True, slots=True)
class Failed:
    message: str
    details: str | None = None

    def payloads(self) -> list[Payload]:
        return []


@dataclass(frozen=True, slots=True)
class ContinuedAsNew:
    input: str | None
    carried_events: list[HistoryEvent]
    """Raised events no wait consumed that arrived after continue_as_new was called: they go
    to the next generation, as DTFx carries them."""
    dropped_events: list[HistoryEvent] = field(default_factory=list)
    """Raised events no wait consumed that arrived before it: lost, as on Azure."""

    def payloads(self) -> list[Payload]:
        return [("continue_as_new input", self.input)]


Outcome = Running | Completed | Failed | ContinuedAsNew


@dataclass(frozen=True, slots=True)
class Pitfall:
    """Orchestrator code that runs, but likely not as its author meant (logged, never fatal)."""

    kind: str
    """"work after continue_as_new", "timer after continue_as_new", "changed call" or
    "event dropped"."""
    message: str
    every_time: bool = False
    """Log it each time, not once per orchestrator: it is about this instance's data."""


@dataclass(slots=True)
class EpisodeResult:
    outcome: Outcome
    events: list[HistoryEvent] = field(default_factory=list)
    """Scheduling events (TaskScheduled, TimerCreated, ...) to append after the new events."""
    work: list[Work] = field(default_factory=list)
    cancelled_timer_ids: list[int] = field(default_factory=list)
    custom_status: str | None = None
    """JSON text of the latest custom status, None if never set."""
    pitfalls: list[Pitfall] = field(default_factory=list, compare=False)
    actions: int = field(default=0, compare=False)
    """Scheduling events the execution has after this episode (Azure's action count)."""
    replayed: int = field(default=0, compare=False)
    """Stored events replayed from scratch (0 when a cached session went on from its state)."""
    cached: bool | None = field(default=None, compare=False)
    """Whether a cached session answered; None without a session cache."""
