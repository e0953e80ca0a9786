"""`dfhost.orchestration.entities.schedule` on hand-made inboxes: which operations run while an
entity is locked, what waits in its queue, the grants and forwards of lock requests, and the
stored scheduler state."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from dfhost.history import EventType, HistoryEvent, Instance, OrchestrationStatus
from dfhost.orchestration.entities import (
    LOCK_GRANTED,
    OPERATION_EVENT,
    WAKE_EVENT,
    EntityId,
    LockRequest,
    Operation,
    Release,
    SchedulerState,
    late_grant_releases,
    request_of,
    schedule,
    unreleased_locks,
)
from dfhost.work import EpisodeOutcome, EpisodeWork, Message

T0 = datetime(2024, 1, 1, tzinfo=UTC)
A = EntityId("counter", "a")
B = EntityId("counter", "b")


def _work(*messages: Message, locks: SchedulerState | None = None) -> EpisodeWork:
    instance = Instance(
        instance_id=A.instance_id,
        name="counter",
        execution_id="e",
        status=OrchestrationStatus.RUNNING,
        created_at=T0,
        last_updated_at=T0,
        custom_status="0",
        input=None if locks is None else locks.stored(),
    )
    return EpisodeWork(instance=instance, history=[], messages=list(messages), lease_token=1)


def _op(name: str, parent: str | None) -> Operation:
    """A client's signal (no parent), or an orchestration's call."""
    return Operation(name, None, parent is None, f"r-{name}", parent, parent and f"x-{parent}")


def _lock(parent: str, *entities: EntityId, position: int = 0) -> LockRequest:
    ids = tuple(e.instance_id for e in entities)
    return LockRequest(f"cs-{parent}", parent, f"x-{parent}", ids, position)


def _names(messages: list[Message]) -> list[str]:
    names = []
    for message in messages:
        operation = Operation.from_event(message.event)
        assert operation is not None
        names.append(operation.name)
    return names


def test_a_free_entity_grants_a_lock_and_runs_only_the_holders_operations() -> None:
    plan = schedule(
        A,
        _work(
            _op("before", None).message(A, T0),
            _lock("orch1", A).message(T0),
            _op("mine", "orch1").message(A, T0),
            _op("theirs", "orch2").message(A, T0),
            _lock("orch2", A).message(T0),
        ),
        T0,
    )
    assert _names(plan.operations) == ["before", "mine"]
    assert plan.state.locked_by == "orch1"
    assert [type(r).__name__ for r in plan.state.queue] == ["Operation", "LockRequest"]
    # The set had one entity: the grant goes to the orchestration's execution.
    [granted] = plan.messages
    assert (granted.instance_id, granted.execution_id) == ("orch1", "x-orch1")
    assert granted.event.name == "cs-orch1"
    assert json.loads(granted.event.input or "") == {"result": LOCK_GRANTED}


def test_a_lock_request_goes_on_to_the_next_entity_of_its_set() -> None:
    plan = schedule(A, _work(_lock("orch1", A, B).message(T0)), T0)
    [forward] = plan.messages
    assert forward.instance_id == B.instance_id
    request = request_of(forward.event)
    assert isinstance(request, LockRequest) and request.position == 1
    assert [s.instance_id for s in plan.starts] == [B.instance_id]


def test_the_release_runs_the_queue_in_order_up_to_the_next_lock() -> None:
    locked = SchedulerState(
        "orch1",
        (_op("one", None), _lock("orch2", A), _op("two", None)),
    )
    plan = schedule(
        A,
        _work(
            _op("late", "orch1").message(A, T0),  # the holder's: at once
            Release("cs-orch1", "orch1").message(A.instance_id, T0),
            _op("three", "orch2").message(A, T0),  # the new holder's: at once
            locks=locked,
        ),
        T0,
    )
    assert _names(plan.operations) == ["late", "one", "three"]
    assert plan.state.locked_by == "orch2"
    assert [r.name for r in plan.state.queue if isinstance(r, Operation)] == ["two"]
    assert [m.event.name for m in plan.messages] == ["cs-orch2"]


def test_a_release_from_another_orchestration_withdraws_its_waiting_request() -> None:
    locked = SchedulerState("orch1", (_lock("orch2", A), _op("one", None)))
    plan = schedule(
        A, _work(Release("cs-orch2", "orch2").message(A.instance_id, T0), locks=locked), T0
    )
    assert plan.state.locked_by == "orch1"
    assert [type(r).__name__ for r in plan.state.queue] == ["Operation"]
    assert plan.operations == [] and plan.messages == []


def test_the_state_is_stored_in_the_input_and_unanswered_operations_go_back_first() -> None:
    locked = SchedulerState("orch1", (_op("waiting", None),))
    work = _work(
        _op("first", "orch1").message(A, T0), _op("second", "orch1").message(A, T0), locks=locked
    )
    plan = schedule(A, work, T0)
    assert _names(plan.operations) == ["first", "second"]
    ran = EpisodeOutcome(instance=work.instance, new_events=[])
    outcome = plan.finish(ran, 1, T0)
    again = SchedulerState.of(outcome.instance)
    assert again.locked_by == "orch1"
    assert [r.name for r in again.queue if isinstance(r, Operation)] == ["second", "waiting"]
    # It wakes itself: the holder's put-back operation runs in the next batch.
    assert [(m.instance_id, m.event.name) for m in outcome.messages] == [
        (A.instance_id, WAKE_EVENT)
    ]
    follow_up = schedule(A, _work(*outcome.messages, locks=again), T0)
    assert _names(follow_up.operations) == ["second"]


def test_a_free_entity_with_nothing_waiting_stores_no_lock_state() -> None:
    work = _work(
        _lock("orch1", A).message(T0), Release("cs-orch1", "orch1").message(A.instance_id, T0)
    )
    plan = schedule(A, work, T0)
    outcome = plan.finish(EpisodeOutcome(instance=work.instance, new_events=[]), 0, T0)
    assert outcome.instance.input is None
    assert [m.event.name for m in outcome.messages] == ["cs-orch1"]


def test_other_messages_are_ignored() -> None:
    started = HistoryEvent(type=EventType.EXECUTION_STARTED, timestamp=T0, name="counter")
    bad = HistoryEvent(type=EventType.EVENT_RAISED, timestamp=T0, name=OPERATION_EVENT, input="{")
    plan = schedule(
        A,
        _work(
            Message(instance_id=A.instance_id, event=started),
            Message(instance_id=A.instance_id, event=bad),
            _lock("orch1", B).message(T0),  # for another entity of the set: not this one's
        ),
        T0,
    )
    assert plan.operations == [] and plan.messages == [] and plan.state == SchedulerState()


def _sent(event_id: int, target: str, name: str, body: str) -> HistoryEvent:
    return HistoryEvent(
        type=EventType.EVENT_SENT,
        timestamp=T0,
        event_id=event_id,
        name=name,
        input=body,
        instance_id=target,
    )


def test_an_ending_execution_releases_what_it_did_not() -> None:
    first = _lock("orch1", A, B)
    history = [
        _sent(1, A.instance_id, OPERATION_EVENT, first.request_message()),
        _sent(2, A.instance_id, "release", Release("cs-orch1", "orch1").request_message()),
        # Not its own: another orchestration's request is not its to release.
        _sent(3, B.instance_id, OPERATION_EVENT, _lock("orch2", B).request_message()),
        # A call whose operation is named like the event is no lock request.
        _sent(4, A.instance_id, OPERATION_EVENT, _op("op", "orch1").request_message()),
    ]
    [release] = unreleased_locks("orch1", history, T0)
    assert release.instance_id == B.instance_id
    assert Release.from_event(release.event) == Release("cs-orch1", "orch1")


def test_a_grant_that_reaches_a_finished_execution_releases_its_whole_set() -> None:
    request = _lock("orch1", A, B)
    history = [_sent(1, A.instance_id, OPERATION_EVENT, request.request_message())]
    late = [request.granted(T0), _op("other", None).message(A, T0)]
    releases = late_grant_releases("orch1", history, late, T0)
    assert [(m.instance_id, Release.from_event(m.event)) for m in releases] == [
        (A.instance_id, Release("cs-orch1", "orch1")),
        (B.instance_id, Release("cs-orch1", "orch1")),
    ]
    assert late_grant_releases("orch1", history, late[1:], T0) == []
