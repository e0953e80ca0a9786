"""`dfhost.orchestration.outcome`: what the engine commits for a claimed instance, from
hand-built `EpisodeWork` and `EpisodeResult`s, with no store, engine or orchestrator code."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from dfhost.history import EventType, HistoryEvent, Instance, OrchestrationStatus
from dfhost.orchestration.episode import (
    ActivityCall,
    Completed,
    ContinuedAsNew,
    EntityMessage,
    EpisodeResult,
    Failed,
    Running,
    SubOrchestrationCall,
    TimerRequest,
)
from dfhost.orchestration.outcome import Replay, Rewind, Settled, failure, plan_episode
from dfhost.work import EpisodeOutcome, EpisodeWork, Message

T0 = datetime(2024, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(minutes=5)


def instance(status: OrchestrationStatus = OrchestrationStatus.RUNNING) -> Instance:
    return Instance(
        instance_id="inst-1",
        name="orch",
        execution_id="exec-1",
        status=status,
        created_at=T0,
        last_updated_at=T0,
        input='"in"',
    )


def started() -> HistoryEvent:
    return HistoryEvent(
        type=EventType.EXECUTION_STARTED,
        timestamp=T0,
        name="orch",
        input='"in"',
        instance_id="inst-1",
        execution_id="exec-1",
    )


def child_started(parent_task_id: int = 7) -> HistoryEvent:
    """The ExecutionStarted of a sub-orchestration of parent-1."""
    return replace(
        started(),
        parent_instance_id="parent-1",
        parent_execution_id="pexec",
        parent_task_id=parent_task_id,
    )


def first_episode(*, parent: bool = False) -> list[HistoryEvent]:
    """The stored history after one episode that scheduled activity 0."""
    return [
        HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=T0),
        child_started() if parent else started(),
        HistoryEvent(type=EventType.TASK_SCHEDULED, timestamp=T0, event_id=0, name="A"),
        HistoryEvent(type=EventType.ORCHESTRATOR_COMPLETED, timestamp=T0),
    ]


def message(event: HistoryEvent, execution_id: str | None = "exec-1") -> Message:
    return Message(instance_id="inst-1", execution_id=execution_id, event=event)


def completed_a() -> Message:
    return message(
        HistoryEvent(type=EventType.TASK_COMPLETED, timestamp=T0, task_scheduled_id=0, result='"a"')
    )


def work(
    *messages: Message,
    history: list[HistoryEvent] | None = None,
    inst: Instance | None = None,
) -> EpisodeWork:
    return EpisodeWork(
        instance=inst or instance(),
        history=first_episode() if history is None else history,
        messages=list(messages),
        lease_token=1,
    )


def replayed(w: EpisodeWork, result: EpisodeResult, version: str | None = None) -> EpisodeOutcome:
    step = plan_episode(w, NOW, orchestrator_known=True)
    assert isinstance(step, Replay)
    return step.outcome(result, default_version=version)


def types(events: list[HistoryEvent]) -> list[EventType]:
    return [e.type for e in events]


# --- replayed episodes ------------------------------------------------------------------------


def test_a_replay_takes_the_new_events_after_an_orchestrator_started_at_now() -> None:
    w = work(completed_a())
    step = plan_episode(w, NOW, orchestrator_known=True)
    assert isinstance(step, Replay)
    assert step.episode.past == w.history
    assert types(list(step.episode.new)) == [
        EventType.ORCHESTRATOR_STARTED,
        EventType.TASK_COMPLETED,
    ]
    assert step.episode.now == NOW
    assert step.markers == []


def test_a_new_executions_start_and_carried_events_come_before_events_sent_meanwhile() -> None:
    def raised(value: str) -> HistoryEvent:
        return HistoryEvent(type=EventType.EVENT_RAISED, timestamp=T0, name="e", input=value)

    # A continue-as-new enqueues the restart and the events it carries at its commit, after
    # the events a client sent while the episode ran.
    w = work(
        message(raised('"sent meanwhile"'), execution_id=None),
        message(started()),
        message(raised('"carried"')),
        history=[],
    )
    step = plan_episode(w, NOW, orchestrator_known=True)
    assert isinstance(step, Replay)
    new = list(step.episode.new)
    assert types(new) == [
        EventType.ORCHESTRATOR_STARTED,
        EventType.EXECUTION_STARTED,
        EventType.EVENT_RAISED,
        EventType.EVENT_RAISED,
    ]
    assert [e.input for e in new[2:]] == ['"carried"', '"sent meanwhile"']


def test_running_schedules_activities_timers_and_sub_orchestrations() -> None:
    fire_at = NOW + timedelta(hours=1)
    scheduled = [
        HistoryEvent(type=EventType.TASK_SCHEDULED, timestamp=NOW, event_id=1, name="B"),
        HistoryEvent(type=EventType.TIMER_CREATED, timestamp=NOW, event_id=2, fire_at=fire_at),
    ]
    result = EpisodeResult(
        Running(),
        events=scheduled,
        work=[
            ActivityCall(1, "B", '"b"'),
            TimerRequest(2, fire_at),
            SubOrchestrationCall(3, "child", "child-1", '"c"', None),
        ],
        cancelled_timer_ids=[9],
        custom_status='"busy"',
    )
    outcome = replayed(work(completed_a()), result, version="2.0")

    assert outcome.instance.status is OrchestrationStatus.RUNNING
    assert outcome.instance.custom_status == '"busy"'
    assert outcome.instance.last_updated_at == NOW
    assert types(outcome.new_events) == [
        EventType.ORCHESTRATOR_STARTED,
        EventType.TASK_COMPLETED,
        EventType.TASK_SCHEDULED,
        EventType.TIMER_CREATED,
        EventType.ORCHESTRATOR_COMPLETED,
    ]
    [task] = outcome.activities
    assert (task.task_scheduled_id, task.name, task.input, task.scheduled_at) == (
        1,
        "B",
        '"b"',
        NOW,
    )
    [timer] = outcome.messages
    assert timer.visible_at == fire_at
    assert (timer.instance_id, timer.execution_id) == ("inst-1", "exec-1")
    assert (timer.event.type, timer.event.timer_id) == (EventType.TIMER_FIRED, 2)
    assert outcome.cancelled_timer_ids == [9]
    assert not outcome.drop_pending_work and not outcome.reset_history


def test_a_sub_orchestration_starts_with_a_failure_for_its_parent_if_the_id_is_taken() -> None:
    result = EpisodeResult(Running(), work=[SubOrchestrationCall(3, "child", "kid", "1", None)])
    [start] = replayed(work(completed_a()), result, version="2.0").starts

    assert (start.instance_id, start.name, start.input) == ("kid", "child", "1")
    assert start.version == "2.0"  # the app's default, as the call named none
    assert (start.parent_instance_id, start.parent_execution_id, start.parent_task_id) == (
        "inst-1",
        "exec-1",
        3,
    )
    conflict = start.on_conflict
    assert conflict is not None
    assert (conflict.instance_id, conflict.execution_id) == ("inst-1", "exec-1")
    assert conflict.event.type is EventType.SUB_ORCHESTRATION_FAILED
    assert conflict.event.task_scheduled_id == 3
    assert conflict.event.reason == (
        "Orchestrator function 'child' failed: an orchestration instance with id 'kid' "
        "already exists and is still running."
    )


def test_a_sub_orchestration_keeps_its_own_version() -> None:
    result = EpisodeResult(Running(), work=[SubOrchestrationCall(3, "child", "kid", None, "1.5")])
    [start] = replayed(work(completed_a()), result, version="2.0").starts
    assert start.version == "1.5"


def test_completed_records_the_output_and_drops_pending_work() -> None:
    outcome = replayed(work(completed_a()), EpisodeResult(Completed('"done"')))

    assert outcome.instance.status is OrchestrationStatus.COMPLETED
    assert outcome.instance.output == '"done"'
    assert types(outcome.new_events)[-2:] == [
        EventType.ORCHESTRATOR_COMPLETED,
        EventType.EXECUTION_COMPLETED,
    ]
    final = outcome.new_events[-1]
    assert (final.status, final.result) == (OrchestrationStatus.COMPLETED, '"done"')
    assert outcome.drop_pending_work
    assert outcome.messages == []  # no parent to tell


def test_a_completed_sub_orchestration_reports_to_its_parent() -> None:
    w = work(completed_a(), history=first_episode(parent=True))
    [report] = replayed(w, EpisodeResult(Completed("42"))).messages

    assert (report.instance_id, report.execution_id) == ("parent-1", "pexec")
    assert report.event.type is EventType.SUB_ORCHESTRATION_COMPLETED
    assert (report.event.task_scheduled_id, report.event.result) == (7, "42")


def test_failed_notifies_the_parent_with_the_message_and_details() -> None:
    w = work(completed_a(), history=first_episode(parent=True))
    outcome = replayed(w, EpisodeResult(Failed("it broke", "Traceback ...")))

    assert outcome.instance.status is OrchestrationStatus.FAILED
    assert outcome.instance.output == json.dumps("it broke")
    assert outcome.instance.failure_details == "Traceback ..."
    [report] = outcome.messages
    assert (report.instance_id, report.execution_id) == ("parent-1", "pexec")
    assert report.event.type is EventType.SUB_ORCHESTRATION_FAILED
    assert report.event.task_scheduled_id == 7
    assert (report.event.reason, report.event.details) == ("it broke", "Traceback ...")


def test_the_parent_of_a_first_episode_is_found_in_its_start_message() -> None:
    w = work(message(child_started(4), None), history=[])
    [report] = replayed(w, EpisodeResult(Failed("no"))).messages
    assert (report.instance_id, report.event.task_scheduled_id) == ("parent-1", 4)


def test_continued_as_new_starts_a_fresh_execution_carrying_unconsumed_events() -> None:
    w = work(completed_a(), history=first_episode(parent=True))
    carried = HistoryEvent(type=EventType.EVENT_RAISED, timestamp=T0, name="go", input="1")
    dropped = HistoryEvent(type=EventType.EVENT_RAISED, timestamp=T0, name="old", input="0")
    outcome = replayed(w, EpisodeResult(ContinuedAsNew('"next"', [carried], [dropped])))

    execution_id = outcome.instance.execution_id
    assert execution_id != "exec-1"
    assert outcome.instance.input == '"next"'
    assert outcome.instance.custom_status is None
    assert outcome.reset_history and outcome.drop_pending_work
    assert outcome.new_events == []
    restart, event = outcome.messages
    assert {restart.execution_id, event.execution_id} == {execution_id}
    assert restart.event.type is EventType.EXECUTION_STARTED
    assert (restart.event.input, restart.event.execution_id) == ('"next"', execution_id)
    # The next generation is still its parent's child.
    assert (restart.event.parent_instance_id, restart.event.parent_task_id) == ("parent-1", 7)
    assert event.event == carried  # and nothing of the dropped one


def test_entity_messages_go_out_even_with_the_episode_that_ends_the_execution() -> None:
    call = EntityMessage(1, "@counter@k", "add", "1", "req-1", signal=True)
    outcome = replayed(work(completed_a()), EpisodeResult(Completed("null"), work=[call]))

    [operation] = outcome.messages
    assert operation.instance_id == "@counter@k"
    assert operation.event.name == "op"
    assert json.loads(operation.event.input or "")["parent"] == "inst-1"
    [create] = outcome.starts
    assert create.instance_id == "@counter@k"


# --- episodes that need no orchestrator code --------------------------------------------------


def test_terminated_records_the_reason_and_notifies_the_parent() -> None:
    terminate = HistoryEvent(type=EventType.EXECUTION_TERMINATED, timestamp=T0, input='"stop"')
    w = work(completed_a(), message(terminate, None), history=first_episode(parent=True))
    step = plan_episode(w, NOW, orchestrator_known=True)

    assert isinstance(step, Settled)
    assert step.consumed == w
    outcome = step.outcome
    assert outcome.instance.status is OrchestrationStatus.TERMINATED
    assert outcome.instance.output == '"stop"'
    assert types(outcome.new_events) == [
        EventType.EXECUTION_TERMINATED,
        EventType.EXECUTION_COMPLETED,
    ]
    assert outcome.new_events[0].timestamp == NOW
    assert outcome.drop_pending_work
    [report] = outcome.messages
    assert report.event.type is EventType.SUB_ORCHESTRATION_FAILED
    assert report.event.reason == "stop"


def test_suspended_records_a_marker_and_keeps_other_messages_in_the_inbox() -> None:
    suspend = message(
        HistoryEvent(type=EventType.EXECUTION_SUSPENDED, timestamp=T0, reason="wait"), None
    )
    w = work(completed_a(), suspend)
    step = plan_episode(w, NOW, orchestrator_known=True)

    assert isinstance(step, Settled)
    assert step.consumed.messages == [suspend]  # the result waits for the resume
    assert step.outcome.instance.status is OrchestrationStatus.SUSPENDED
    assert [(e.type, e.timestamp) for e in step.outcome.new_events] == [
        (EventType.EXECUTION_SUSPENDED, NOW)
    ]


def test_resumed_with_nothing_else_runs_again_and_records_the_marker() -> None:
    resume = message(HistoryEvent(type=EventType.EXECUTION_RESUMED, timestamp=T0), None)
    w = work(resume, inst=instance(OrchestrationStatus.SUSPENDED))
    step = plan_episode(w, NOW, orchestrator_known=True)

    assert isinstance(step, Settled)
    assert step.outcome.instance.status is OrchestrationStatus.RUNNING
    assert types(step.outcome.new_events) == [EventType.EXECUTION_RESUMED]


def test_resumed_with_results_replays_with_the_marker_after_orchestrator_started() -> None:
    resume = message(HistoryEvent(type=EventType.EXECUTION_RESUMED, timestamp=T0), None)
    w = work(resume, completed_a(), inst=instance(OrchestrationStatus.SUSPENDED))
    step = plan_episode(w, NOW, orchestrator_known=True)

    assert isinstance(step, Replay)
    assert types(step.markers) == [EventType.EXECUTION_RESUMED]
    outcome = step.outcome(EpisodeResult(Running()), default_version=None)
    assert types(outcome.new_events) == [
        EventType.ORCHESTRATOR_STARTED,
        EventType.EXECUTION_RESUMED,
        EventType.TASK_COMPLETED,
        EventType.ORCHESTRATOR_COMPLETED,
    ]


def test_a_suspend_before_the_first_episode_records_no_marker() -> None:
    suspend = HistoryEvent(type=EventType.EXECUTION_SUSPENDED, timestamp=T0)
    w = work(message(started(), None), message(suspend, None), history=[])
    step = plan_episode(w, NOW, orchestrator_known=True)
    assert isinstance(step, Settled)
    assert step.outcome.new_events == []  # nothing may come before OrchestratorStarted


@pytest.mark.parametrize(
    "status",
    [OrchestrationStatus.COMPLETED, OrchestrationStatus.FAILED, OrchestrationStatus.TERMINATED],
)
def test_late_messages_for_a_finished_instance_change_nothing(
    status: OrchestrationStatus,
) -> None:
    w = work(completed_a(), inst=instance(status))
    step = plan_episode(w, NOW, orchestrator_known=True)
    assert step == Settled(w, EpisodeOutcome(instance=w.instance, new_events=[]))


def test_an_unknown_orchestrator_fails_the_instance() -> None:
    step = plan_episode(work(completed_a()), NOW, orchestrator_known=False)
    assert isinstance(step, Settled)
    assert step.outcome.instance.status is OrchestrationStatus.FAILED
    assert json.loads(step.outcome.instance.output or "") == (
        "The orchestrator function 'orch' doesn't exist in this app (renamed or removed?)."
    )


def test_messages_without_an_execution_started_are_dropped_with_a_warning() -> None:
    step = plan_episode(work(completed_a(), history=[]), NOW, orchestrator_known=True)
    assert isinstance(step, Settled)
    assert step.outcome.new_events == []
    assert step.warning == "inst-1 has no ExecutionStarted; dropping its messages"


def test_unreadable_history_fails_the_instance() -> None:
    w = EpisodeWork(
        instance=instance(),
        history=[],
        messages=[completed_a()],
        lease_token=1,
        history_error="bad row",
    )
    step = plan_episode(w, NOW, orchestrator_known=True)
    assert isinstance(step, Settled)
    assert step.outcome.instance.status is OrchestrationStatus.FAILED
    assert step.outcome.instance.output == json.dumps("bad row")


def test_failure_without_replay_notifies_the_parent() -> None:
    w = work(completed_a(), history=first_episode(parent=True))
    outcome = failure(w, NOW, "dfhost internal error", "details")
    assert outcome.instance.status is OrchestrationStatus.FAILED
    assert types(outcome.new_events) == [EventType.EXECUTION_COMPLETED]
    [report] = outcome.messages
    assert (report.instance_id, report.event.reason) == ("parent-1", "dfhost internal error")


# --- rewind -----------------------------------------------------------------------------------


def failed_history() -> list[HistoryEvent]:
    """Activity 0 and sub-orchestrations 1 and 2 scheduled in the first episode; the second
    episode got activity 0's failure, which failed the orchestration."""
    return [
        HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=T0),
        started(),
        HistoryEvent(type=EventType.TASK_SCHEDULED, timestamp=T0, event_id=0, name="A"),
        HistoryEvent(
            type=EventType.SUB_ORCHESTRATION_CREATED,
            timestamp=T0,
            event_id=1,
            name="child",
            instance_id="kid-1",
        ),
        HistoryEvent(
            type=EventType.SUB_ORCHESTRATION_CREATED,
            timestamp=T0,
            event_id=2,
            name="child",
            instance_id="kid-2",
        ),
        HistoryEvent(type=EventType.ORCHESTRATOR_COMPLETED, timestamp=T0),
        HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=T0),
        HistoryEvent(type=EventType.TASK_FAILED, timestamp=T0, task_scheduled_id=0, reason="boom"),
        HistoryEvent(type=EventType.ORCHESTRATOR_COMPLETED, timestamp=T0),
        HistoryEvent(
            type=EventType.EXECUTION_COMPLETED,
            timestamp=T0,
            status=OrchestrationStatus.FAILED,
            result=json.dumps("Orchestrator function 'orch' failed: boom"),
        ),
    ]


def rewinding() -> tuple[EpisodeWork, Rewind]:
    rewound = HistoryEvent(type=EventType.EXECUTION_REWOUND, timestamp=T0, reason="fixed")
    w = work(
        message(rewound, None),
        history=failed_history(),
        inst=replace(instance(OrchestrationStatus.FAILED), output='"boom"', failure_details="tb"),
    )
    step = plan_episode(w, NOW, orchestrator_known=True)
    assert isinstance(step, Rewind)
    return w, step


def test_rewind_replays_the_history_before_the_failed_episode() -> None:
    _, step = rewinding()
    assert types(list(step.episode.past)) == types(failed_history()[:6])
    assert types(list(step.episode.new)) == [EventType.ORCHESTRATOR_STARTED]
    assert step.children == ["kid-1", "kid-2"]


def test_rewind_schedules_unanswered_work_again_by_what_became_of_the_children() -> None:
    _, step = rewinding()
    kid_2 = Instance(
        instance_id="kid-2",
        name="child",
        execution_id="k2",
        status=OrchestrationStatus.COMPLETED,
        created_at=T0,
        last_updated_at=T0,
        output='"late"',
    )
    outcome = step.outcome(
        EpisodeResult(Running()), {"kid-1": None, "kid-2": kid_2}, default_version=None
    )

    assert outcome.reset_history
    assert (outcome.instance.status, outcome.instance.output) == (OrchestrationStatus.RUNNING, None)
    assert outcome.instance.failure_details is None
    assert types(outcome.new_events) == [
        *types(failed_history()[:6]),
        EventType.ORCHESTRATOR_STARTED,
        EventType.EXECUTION_REWOUND,
        EventType.ORCHESTRATOR_COMPLETED,
    ]
    [task] = outcome.activities
    assert (task.task_scheduled_id, task.name) == (0, "A")
    [start] = outcome.starts  # kid-1 is gone: it starts again
    assert (start.instance_id, start.parent_task_id) == ("kid-1", 1)
    [late] = outcome.messages  # kid-2 finished after the failure: its result is delivered
    assert late.event.type is EventType.SUB_ORCHESTRATION_COMPLETED
    assert (late.event.task_scheduled_id, late.event.result) == (2, '"late"')


def test_a_rewind_without_the_orchestrator_changes_nothing_and_says_why() -> None:
    w, _ = rewinding()
    step = plan_episode(w, NOW, orchestrator_known=False)
    assert isinstance(step, Settled)
    assert step.outcome == EpisodeOutcome(instance=w.instance, new_events=[])
    assert step.error == "cannot rewind inst-1: its orchestrator 'orch' is not in this app"
