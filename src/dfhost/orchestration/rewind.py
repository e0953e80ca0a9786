"""Rewinding a Failed orchestration: which history to keep, and which work to run again.

DTFx's rewind (the model) turns the failed tasks' events into no-ops so that the next replay
schedules them again. dfhost cuts the history at an episode boundary instead, so that replay up
to the cut is exactly what it was and the orchestrator cannot take a different path there:

- The cut is the start of the episode that delivered the failure that failed the
  orchestration: the last TaskFailed/SubOrchestrationInstanceFailed whose reason appears in the
  orchestration's failure (the task's exception propagated, the common case, retries included).
  Without one (the orchestrator code raised by itself, or dfhost could not run it), it is the
  start of the last episode.
- Events before the cut are kept unchanged. Of the events after it, ExecutionStarted, raised
  events and results of tasks scheduled before the cut are delivered again as new events;
  failures, scheduling events (replay produces them again) and results of tasks scheduled
  after the cut are dropped, so those tasks run again.
- Tasks scheduled before the cut that have no result left are the work to re-run.

The caller replays the orchestrator on `past` + `redelivered` and schedules `unanswered` again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from dfhost.history import EventType, HistoryEvent

__all__ = ["RewindPlan", "plan_rewind"]

_FAILURES = (EventType.TASK_FAILED, EventType.SUB_ORCHESTRATION_FAILED)
_SCHEDULING = (
    EventType.TASK_SCHEDULED,
    EventType.TIMER_CREATED,
    EventType.SUB_ORCHESTRATION_CREATED,
    EventType.EVENT_SENT,
)
_RESULTS = (
    EventType.TASK_COMPLETED,
    EventType.TASK_FAILED,
    EventType.SUB_ORCHESTRATION_COMPLETED,
    EventType.SUB_ORCHESTRATION_FAILED,
    EventType.TIMER_FIRED,
)


@dataclass(frozen=True, slots=True)
class RewindPlan:
    past: list[HistoryEvent]
    """The history to keep, unchanged, ending at an episode boundary."""
    redelivered: list[HistoryEvent]
    """Events from after the cut to deliver again, in their original order."""
    unanswered: list[HistoryEvent]
    """TaskScheduled, TimerCreated and SubOrchestrationInstanceCreated events of `past` that
    have no result in `past` or `redelivered`: the work to schedule again."""


def plan_rewind(history: Sequence[HistoryEvent]) -> RewindPlan:
    """Where to cut the history of a Failed execution, and what follows from the cut."""
    events = list(history)
    failure_text = ""
    if events and events[-1].type is EventType.EXECUTION_COMPLETED:
        final = events.pop()
        failure_text = f"{_json_text(final.result)}\n{final.details or ''}"
    cut = _cut(events, failure_text)
    past = events[:cut]
    scheduled = {e.event_id for e in past if e.type in _SCHEDULING}
    redelivered = [
        e
        for e in events[cut:]
        if e.type in (EventType.EXECUTION_STARTED, EventType.EVENT_RAISED)
        or (e.type in _RESULTS and e.type not in _FAILURES and _result_for(e) in scheduled)
    ]
    answered = {
        (_scheduling_type(e), _result_for(e)) for e in (*past, *redelivered) if e.type in _RESULTS
    }
    unanswered = [
        e
        for e in past
        if e.type in _SCHEDULING
        and e.type is not EventType.EVENT_SENT
        and (e.type, e.event_id) not in answered
    ]
    return RewindPlan(past, redelivered, unanswered)


def _cut(events: list[HistoryEvent], failure_text: str) -> int:
    cause = next(
        (
            index
            for index in range(len(events) - 1, -1, -1)
            if events[index].type in _FAILURES
            and events[index].reason
            and str(events[index].reason) in failure_text
        ),
        None,
    )
    # Without a cause, the last episode runs again: also right when the failure was recorded
    # outside any episode (dfhost could not run one), as replaying a recorded episode on the
    # same events schedules the same work.
    end = len(events) if cause is None else cause
    starts = [i for i in range(end) if events[i].type is EventType.ORCHESTRATOR_STARTED]
    return starts[-1] if starts else 0


def _result_for(event: HistoryEvent) -> int | None:
    if event.type is EventType.TIMER_FIRED:
        return event.timer_id
    return event.task_scheduled_id


def _scheduling_type(result: HistoryEvent) -> EventType:
    if result.type is EventType.TIMER_FIRED:
        return EventType.TIMER_CREATED
    if result.type in (EventType.TASK_COMPLETED, EventType.TASK_FAILED):
        return EventType.TASK_SCHEDULED
    return EventType.SUB_ORCHESTRATION_CREATED


def _json_text(text: str | None) -> str:
    """A stored failure message is a JSON string; its text is what tasks' reasons appear in."""
    if text is None:
        return ""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, str) else text
