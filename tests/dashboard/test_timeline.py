"""The timeline and history rows computed from stored histories (no web server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dfhost.history import EventType, HistoryEvent, Instance, OrchestrationStatus
from dfhost.web.timeline import WIDTH, build_timeline, duration_text, history_rows

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
E = EventType


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ev(kind: EventType, seconds: float, **fields: object) -> HistoryEvent:
    return HistoryEvent(type=kind, timestamp=at(seconds), **fields)  # type: ignore[arg-type]


def instance(status: OrchestrationStatus, updated: float) -> Instance:
    return Instance(
        instance_id="i",
        name="orch",
        execution_id="e",
        status=status,
        created_at=T0,
        last_updated_at=at(updated),
    )


HISTORY = [
    ev(E.ORCHESTRATOR_STARTED, 0),
    ev(E.EXECUTION_STARTED, 0, name="orch"),
    ev(E.TASK_SCHEDULED, 0, event_id=0, name="work", input='"a"'),
    ev(E.TIMER_CREATED, 0, event_id=1, fire_at=at(4)),
    ev(E.SUB_ORCHESTRATION_CREATED, 0, event_id=2, name="child", instance_id="i:2"),
    ev(E.ORCHESTRATOR_COMPLETED, 0),
    ev(E.ORCHESTRATOR_STARTED, 2),
    ev(E.TASK_FAILED, 1, task_scheduled_id=0, reason="boom"),
    ev(E.EVENT_RAISED, 1.5, name="Approve", input="true"),
    ev(E.ORCHESTRATOR_COMPLETED, 2),
    ev(E.ORCHESTRATOR_STARTED, 4.5),
    # TimerFired carries its due time; the episode that received it began 0.5 s later.
    ev(E.TIMER_FIRED, 4, timer_id=1, fire_at=at(4)),
    ev(E.SUB_ORCHESTRATION_COMPLETED, 4.2, task_scheduled_id=2, result="1"),
    ev(E.ORCHESTRATOR_COMPLETED, 4.5),
]


def test_spans_pair_each_task_with_its_outcome() -> None:
    timeline = build_timeline(instance(OrchestrationStatus.RUNNING, 4.5), HISTORY, at(10))
    by_kind = {s.kind: s for s in timeline.spans}
    execution = by_kind["execution"]
    assert (execution.label, execution.state, execution.end) == ("orch", "pending", None)
    work = by_kind["activity"]
    assert (work.label, work.state, work.end, work.detail) == ("work", "failed", at(1), "boom")
    timer = by_kind["timer"]
    assert timer.state == "done" and timer.end == at(4)
    assert timer.lateness == timedelta(seconds=0.5)
    child = by_kind["suborchestration"]
    assert (child.child_id, child.state, child.duration) == ("i:2", "done", timedelta(seconds=4.2))
    event = by_kind["event"]
    assert (event.label, event.state, event.start) == ("event Approve", "point", at(1.5))
    # Nothing pending while running: an idle span from the last event to now.
    assert by_kind["idle"].start == at(4.5) and timeline.pending == []
    assert timeline.end == at(10)


def test_spans_are_laid_out_on_the_time_axis() -> None:
    timeline = build_timeline(instance(OrchestrationStatus.COMPLETED, 5), HISTORY, at(99))
    assert timeline.start == T0 and timeline.end == at(5)  # finished: ends at its last update
    execution = timeline.spans[0]
    assert (execution.kind, execution.x, execution.w, execution.state) == (
        "execution",
        0,
        WIDTH,
        "done",
    )
    child = next(s for s in timeline.spans if s.kind == "suborchestration")
    assert child.x == 0 and abs(child.w - WIDTH * 4.2 / 5) < 0.01
    event = next(s for s in timeline.spans if s.kind == "event")
    assert abs(event.x - WIDTH * 1.5 / 5) < 0.01 and event.w == 2.0  # points stay visible
    assert [label for _, label in timeline.ticks] == ["+0ms", "+1.2s", "+2.5s", "+3.8s", "+5.0s"]


def test_pending_work_of_a_running_instance() -> None:
    history = HISTORY[:6]
    timeline = build_timeline(instance(OrchestrationStatus.RUNNING, 0), history, at(3))
    assert [(s.kind, s.end) for s in timeline.pending] == [
        ("activity", None),
        ("timer", None),
        ("suborchestration", None),
    ]
    assert next(s for s in timeline.pending if s.kind == "timer").due == at(4)
    # Once finished (terminated), nothing is pending any more.
    finished = build_timeline(instance(OrchestrationStatus.TERMINATED, 3), history, at(9))
    assert finished.pending == [] and all(s.end == at(3) for s in finished.spans)


def test_suspension_is_a_span() -> None:
    history = [
        ev(E.ORCHESTRATOR_STARTED, 0),
        ev(E.EXECUTION_STARTED, 0),
        ev(E.EXECUTION_SUSPENDED, 1, reason="wait"),
        ev(E.EXECUTION_RESUMED, 3),
    ]
    timeline = build_timeline(instance(OrchestrationStatus.RUNNING, 3), history, at(4))
    suspended = next(s for s in timeline.spans if s.kind == "suspended")
    assert (suspended.start, suspended.end, suspended.detail) == (at(1), at(3), "wait")


def test_at_most_200_spans_are_drawn() -> None:
    history = [ev(E.ORCHESTRATOR_STARTED, 0), ev(E.EXECUTION_STARTED, 0)]
    history += [ev(E.TASK_SCHEDULED, 0, event_id=n, name="f") for n in range(250)]
    timeline = build_timeline(instance(OrchestrationStatus.RUNNING, 0), history, at(1))
    assert len(timeline.spans) == 201 and timeline.hidden == 50  # the execution, 200 tasks
    assert len(timeline.pending) == 250


def test_an_empty_history_still_has_a_timeline() -> None:
    timeline = build_timeline(instance(OrchestrationStatus.PENDING, 0), [], at(1))
    (execution,) = timeline.spans
    assert (execution.kind, execution.start, execution.end) == ("execution", T0, None)
    assert timeline.start == T0 and timeline.end == at(1)


def test_history_rows_name_completions_after_what_they_complete() -> None:
    rows = history_rows(HISTORY)
    by_index = {row.index: row for row in rows}
    failed = by_index[7]
    assert (failed.type_name, failed.summary, failed.failed) == ("TaskFailed", "work (of #0)", True)
    assert failed.payload == "boom"
    assert by_index[2].summary == "work #0" and by_index[2].payload == '"a"'
    assert by_index[3].summary == "#1 due 2026-03-01 12:00:04.000Z"
    assert by_index[4].summary == "child #2 instance i:2"
    assert by_index[11].summary == "(of #1) due 2026-03-01 12:00:04.000Z"


def test_durations_read_short() -> None:
    cases = {
        0.0123: "12ms",
        2.25: "2.2s",
        245: "4m05s",
        3 * 3600 + 420: "3h07m",
        52 * 3600: "2d04h",
    }
    for seconds, text in cases.items():
        assert duration_text(timedelta(seconds=seconds)) == text
    assert duration_text(timedelta(seconds=-3)) == "-3.0s"
