"""Where a rewind cuts a failed history, what it delivers again and what it re-runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from dfhost.history import EventType, HistoryEvent, OrchestrationStatus
from dfhost.orchestration.rewind import plan_rewind

T = datetime(2024, 1, 1, tzinfo=UTC)
E = EventType


def ev(type_: EventType, **fields: Any) -> HistoryEvent:
    return HistoryEvent(type=type_, timestamp=T, **fields)


def started() -> list[HistoryEvent]:
    return [ev(E.ORCHESTRATOR_STARTED), ev(E.EXECUTION_STARTED, name="orch", input="null")]


def scheduled(task_id: int, name: str = "act") -> HistoryEvent:
    return ev(E.TASK_SCHEDULED, event_id=task_id, name=name, input="1")


def done(task_id: int) -> HistoryEvent:
    return ev(E.TASK_COMPLETED, task_scheduled_id=task_id, result='"ok"')


def failed(task_id: int, reason: str) -> HistoryEvent:
    return ev(E.TASK_FAILED, task_scheduled_id=task_id, reason=reason, details="Traceback ...")


def episode(*events: HistoryEvent) -> list[HistoryEvent]:
    return [ev(E.ORCHESTRATOR_STARTED), *events, ev(E.ORCHESTRATOR_COMPLETED)]


def ended(message: str) -> HistoryEvent:
    return ev(
        E.EXECUTION_COMPLETED,
        status=OrchestrationStatus.FAILED,
        result=json.dumps(f"Orchestrator function 'orch' failed: {message}"),
        details=f"Traceback...\nException: {message}",
    )


REASON = "Activity function 'act' failed: RuntimeError: broken"


def test_a_failed_activity_is_cut_off_and_scheduled_again() -> None:
    first = [*started(), scheduled(0), ev(E.ORCHESTRATOR_COMPLETED)]
    second = episode(done(0), scheduled(1))
    history = [*first, *second, *episode(failed(1, REASON)), ended(f"{REASON} \n details")]

    plan = plan_rewind(history)

    assert plan.past == [*first, *second]
    assert plan.redelivered == []
    assert plan.unanswered == [scheduled(1)]


def test_results_that_came_with_the_failure_are_delivered_again() -> None:
    first = [*started(), scheduled(0), scheduled(1), scheduled(2), ev(E.ORCHESTRATOR_COMPLETED)]
    failing = episode(done(2), failed(0, REASON), scheduled(3))  # 3: scheduled while failing
    history = [*first, *failing, ended(REASON)]

    plan = plan_rewind(history)

    assert plan.past == first
    assert plan.redelivered == [done(2)]
    assert plan.unanswered == [scheduled(0), scheduled(1)]


def test_retries_rewind_to_the_last_attempt() -> None:
    timer = ev(E.TIMER_CREATED, event_id=1, fire_at=T)
    fired = ev(E.TIMER_FIRED, timer_id=1, fire_at=T)
    final_timer = ev(E.TIMER_CREATED, event_id=3, fire_at=T)
    final_fired = ev(E.TIMER_FIRED, timer_id=3, fire_at=T)
    kept = [
        *started(),
        scheduled(0),
        ev(E.ORCHESTRATOR_COMPLETED),
        *episode(failed(0, REASON), timer),
        *episode(fired, scheduled(2)),
    ]
    history = [*kept, *episode(failed(2, REASON), final_timer), *episode(final_fired)]
    history.append(ended(REASON))

    plan = plan_rewind(history)

    assert plan.past == kept
    assert plan.redelivered == []  # the final retry timer belonged to the dropped episodes
    assert plan.unanswered == [scheduled(2)]


def test_a_bug_in_the_orchestrator_reruns_its_last_episode() -> None:
    first = [*started(), scheduled(0), ev(E.ORCHESTRATOR_COMPLETED)]
    history = [*first, *episode(done(0)), ended("ValueError: a bug")]

    plan = plan_rewind(history)

    assert plan.past == first
    assert plan.redelivered == [done(0)]
    assert plan.unanswered == []


def test_a_caught_failure_stays_in_the_history() -> None:
    caught = failed(0, "Activity function 'act' failed: handled")
    kept = [*started(), scheduled(0), ev(E.ORCHESTRATOR_COMPLETED), *episode(caught, scheduled(1))]
    history = [*kept, *episode(done(1)), ended("ValueError: later bug")]

    plan = plan_rewind(history)

    assert plan.past == kept
    assert plan.redelivered == [done(1)]
    assert plan.unanswered == []


def test_a_failure_in_the_first_episode_starts_over() -> None:
    raised = ev(E.EVENT_RAISED, name="Go", input="1")
    history = [*started(), raised, ev(E.ORCHESTRATOR_COMPLETED), ended("ValueError: at once")]

    plan = plan_rewind(history)

    assert plan.past == []
    assert plan.redelivered == [started()[1], raised]


def test_a_failure_recorded_outside_an_episode_reruns_the_last_episode() -> None:
    first = [*started(), scheduled(0), ev(E.ORCHESTRATOR_COMPLETED)]
    history = [*first, *episode(done(0), scheduled(1)), ended("dfhost internal error: boom")]

    plan = plan_rewind(history)

    assert plan.past == first
    assert plan.redelivered == [done(0)]
    assert plan.unanswered == []


def test_unfired_timers_and_unfinished_sub_orchestrations_are_unanswered() -> None:
    timer = ev(E.TIMER_CREATED, event_id=0, fire_at=T)
    child = ev(E.SUB_ORCHESTRATION_CREATED, event_id=1, name="child", instance_id="kid")
    sent = ev(E.EVENT_SENT, event_id=2, name="ping", instance_id="other")
    child_failed = ev(E.SUB_ORCHESTRATION_FAILED, task_scheduled_id=1, reason="child broke")
    kept = [*started(), timer, child, sent, ev(E.ORCHESTRATOR_COMPLETED)]
    history = [*kept, *episode(child_failed), ended("child broke \n details")]

    plan = plan_rewind(history)

    assert plan.past == kept
    assert plan.unanswered == [timer, child]
