"""What the dashboard's instance page shows of a history: the timeline (Gantt) of activities,
timers, sub-orchestrations and events, the work still pending, and the history table's rows.

Only stored facts are used. An activity's bar runs from the episode that scheduled it to its
result (queueing included: the start of its execution is not recorded); a timer's runs from its
creation to its due time, and its lateness is how long after that the episode that received it
began. What an orchestrator waits for (an external event, `task_any`) is not in the history,
so waits show only as the event's arrival and as an idle span of a running instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from dfhost.history import EventType, HistoryEvent, Instance, OrchestrationStatus
from dfhost.wire import event_type_name

__all__ = [
    "FAILURE_TYPES",
    "HistoryRow",
    "Span",
    "Timeline",
    "build_timeline",
    "history_rows",
    "started_event",
]

SpanKind = Literal[
    "execution", "activity", "timer", "suborchestration", "event", "suspended", "idle"
]
SpanState = Literal["done", "failed", "pending", "point"]

MAX_SPANS = 200
"""Rows drawn at most; a fan-out of thousands is read in the history table instead."""
WIDTH = 1000.0
"""The timeline's x scale (SVG user units)."""
_MIN_WIDTH = 2.0

FAILURE_TYPES = frozenset(
    {EventType.TASK_FAILED, EventType.SUB_ORCHESTRATION_FAILED, EventType.EXECUTION_FAILED}
)


@dataclass(slots=True)
class Span:
    kind: SpanKind
    label: str
    start: datetime
    end: datetime | None
    """None while pending: drawn up to now."""
    state: SpanState
    detail: str = ""
    child_id: str | None = None
    """The sub-orchestration's instance id, for a link."""
    lateness: timedelta | None = None
    """Timers: how long after its due time the episode that received it started."""
    due: datetime | None = None
    """Timers: when it is due."""
    x: float = 0.0
    w: float = 0.0

    @property
    def duration(self) -> timedelta | None:
        return None if self.end is None else self.end - self.start


@dataclass(slots=True)
class Timeline:
    start: datetime
    end: datetime
    spans: list[Span]
    hidden: int = 0
    """Spans beyond MAX_SPANS, not drawn."""
    pending: list[Span] = field(default_factory=list)
    """Activities, timers and sub-orchestrations not finished (all of them, drawn or not)."""
    ticks: list[tuple[float, str]] = field(default_factory=list)
    """(x, label) for the axis."""


@dataclass(frozen=True, slots=True)
class HistoryRow:
    index: int
    event: HistoryEvent
    type_name: str
    summary: str
    payload: str | None
    """JSON text (input, result or reason) to show folded."""
    details: str | None
    failed: bool


def started_event(history: Sequence[HistoryEvent]) -> HistoryEvent | None:
    return next((e for e in history if e.type is EventType.EXECUTION_STARTED), None)


def build_timeline(instance: Instance, history: Sequence[HistoryEvent], now: datetime) -> Timeline:
    """The timeline of the current generation's history."""
    spans: list[Span] = []
    open_tasks: dict[int, Span] = {}
    open_timers: dict[int, Span] = {}
    episode_start: datetime | None = None
    suspended: Span | None = None
    for e in history:
        if e.type is EventType.ORCHESTRATOR_STARTED:
            episode_start = e.timestamp
        elif e.type is EventType.TASK_SCHEDULED:
            span = Span("activity", e.name or "?", e.timestamp, None, "pending", e.input or "")
            open_tasks[e.event_id] = span
            spans.append(span)
        elif e.type is EventType.SUB_ORCHESTRATION_CREATED:
            span = Span(
                "suborchestration",
                e.name or "?",
                e.timestamp,
                None,
                "pending",
                e.input or "",
                child_id=e.instance_id,
            )
            open_tasks[e.event_id] = span
            spans.append(span)
        elif e.type in (
            EventType.TASK_COMPLETED,
            EventType.TASK_FAILED,
            EventType.SUB_ORCHESTRATION_COMPLETED,
            EventType.SUB_ORCHESTRATION_FAILED,
        ):
            task = open_tasks.pop(-1 if e.task_scheduled_id is None else e.task_scheduled_id, None)
            if task is not None:
                task.end = max(e.timestamp, task.start)
                failed = e.type in (EventType.TASK_FAILED, EventType.SUB_ORCHESTRATION_FAILED)
                task.state = "failed" if failed else "done"
                task.detail = (e.reason or "") if failed else (e.result or "")
        elif e.type is EventType.TIMER_CREATED:
            due = e.fire_at or e.timestamp
            span = Span("timer", f"timer #{e.event_id}", e.timestamp, None, "pending", due=due)
            open_timers[e.event_id] = span
            spans.append(span)
        elif e.type is EventType.TIMER_FIRED:
            timer = open_timers.pop(-1 if e.timer_id is None else e.timer_id, None)
            if timer is not None:
                timer.end = max(timer.due or e.timestamp, timer.start)
                timer.state = "done"
                if episode_start is not None and timer.due is not None:
                    timer.lateness = max(timedelta(0), episode_start - timer.due)
        elif e.type is EventType.EVENT_RAISED:
            spans.append(
                Span("event", f"event {e.name}", e.timestamp, e.timestamp, "point", e.input or "")
            )
        elif e.type is EventType.EVENT_SENT:
            target = e.instance_id or "?"
            spans.append(
                Span("event", f"sent {e.name} to {target}", e.timestamp, e.timestamp, "point")
            )
        elif e.type is EventType.EXECUTION_SUSPENDED:
            suspended = Span("suspended", "suspended", e.timestamp, None, "pending", e.reason or "")
            spans.append(suspended)
        elif e.type is EventType.EXECUTION_RESUMED and suspended is not None:
            suspended.end, suspended.state, suspended = e.timestamp, "done", None
        elif e.type in (EventType.EXECUTION_TERMINATED, EventType.EXECUTION_REWOUND):
            label = "terminated" if e.type is EventType.EXECUTION_TERMINATED else "rewound"
            detail = e.input or e.reason or ""
            spans.append(Span("event", label, e.timestamp, e.timestamp, "point", detail))
    # Timers cancelled by the orchestrator stay "pending" in the history forever (the SDK
    # records no cancellation); once the instance finished they are simply not pending.
    finished = instance.status not in (
        OrchestrationStatus.RUNNING,
        OrchestrationStatus.PENDING,
        OrchestrationStatus.SUSPENDED,
    )
    end = instance.last_updated_at if finished else max(now, instance.last_updated_at)
    pending = [s for s in spans if s.end is None and s.kind != "suspended"]
    if finished:
        for span in spans:
            if span.end is None:
                span.end = end
                span.state = "done" if span.kind == "timer" else span.state
        pending = []
    elif not pending and instance.status is OrchestrationStatus.RUNNING and history:
        last = history[-1].timestamp
        spans.append(Span("idle", "idle", last, None, "pending"))
    start = history[0].timestamp if history else instance.created_at
    start = min([start, *(s.start for s in spans)])
    drawn = [_execution_span(instance, history, finished, end), *spans[:MAX_SPANS]]
    timeline = Timeline(start=start, end=max(end, start), spans=drawn, pending=pending)
    timeline.hidden = max(0, len(spans) - MAX_SPANS)
    _layout(timeline)
    return timeline


def _execution_span(
    instance: Instance, history: Sequence[HistoryEvent], finished: bool, end: datetime
) -> Span:
    """The generation itself, from its start to its end (or now)."""
    started = next((e.timestamp for e in history if e.type is EventType.EXECUTION_STARTED), None)
    start = started or (history[0].timestamp if history else instance.created_at)
    state: SpanState = "pending"
    if finished:
        state = "failed" if instance.status is OrchestrationStatus.FAILED else "done"
    return Span(
        "execution",
        instance.name,
        start,
        max(end, start) if finished else None,
        state,
        instance.status.value,
    )


def _layout(timeline: Timeline) -> None:
    total = (timeline.end - timeline.start).total_seconds() or 1.0
    scale = WIDTH / total
    for span in timeline.spans:
        end = span.end or timeline.end
        x = (span.start - timeline.start).total_seconds() * scale
        w = max(_MIN_WIDTH, (end - span.start).total_seconds() * scale)
        span.x = min(max(0.0, x), WIDTH - _MIN_WIDTH)
        span.w = min(w, WIDTH - span.x)
    timeline.ticks = [
        (WIDTH * i / 4, _offset_text(timedelta(seconds=total * i / 4))) for i in range(5)
    ]


def _offset_text(offset: timedelta) -> str:
    return "+" + duration_text(offset)


def duration_text(value: timedelta) -> str:
    """A short human duration: 850ms, 12.3s, 4m05s, 3h07m, 2d04h."""
    seconds = value.total_seconds()
    if seconds < 0:
        return "-" + duration_text(-value)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def history_rows(history: Sequence[HistoryEvent]) -> list[HistoryRow]:
    """Every stored event with a one-line summary; completions are named after what they
    complete (the stored event carries only the task id)."""
    scheduled: dict[int, HistoryEvent] = {}
    rows: list[HistoryRow] = []
    for index, e in enumerate(history):
        if e.type in (
            EventType.TASK_SCHEDULED,
            EventType.SUB_ORCHESTRATION_CREATED,
            EventType.TIMER_CREATED,
        ):
            scheduled[e.event_id] = e
        origin_id = e.task_scheduled_id if e.task_scheduled_id is not None else e.timer_id
        origin = scheduled.get(origin_id) if origin_id is not None else None
        parts: list[str] = []
        name = e.name or (origin.name if origin is not None else None)
        if name:
            parts.append(name)
        if e.event_id >= 0:
            parts.append(f"#{e.event_id}")
        if origin_id is not None:
            parts.append(f"(of #{origin_id})")
        if e.fire_at is not None:
            parts.append(f"due {e.fire_at.strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]}Z")
        if e.instance_id and e.type is not EventType.EXECUTION_STARTED:
            parts.append(f"instance {e.instance_id}")
        if e.status is not None:
            parts.append(e.status.value)
        payload = e.input if e.input is not None else e.result
        if payload is None and e.reason is not None:
            payload = e.reason
        rows.append(
            HistoryRow(
                index=index,
                event=e,
                type_name=event_type_name(e.type),
                summary=" ".join(parts),
                payload=payload,
                details=e.details,
                failed=e.type in FAILURE_TYPES or e.status is OrchestrationStatus.FAILED,
            )
        )
    return rows
