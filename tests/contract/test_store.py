"""The storage contract: every `Store` backend must pass this suite unchanged.

Tests use only the `Store` protocol, `InstanceHolder` where a backend offers it, and the
`corrupt_history` hook. Time is passed in explicitly; the wall clock matters only to
`wait_for_work`.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dfhost.history import (
    TERMINAL_STATUSES,
    EventType,
    HistoryEvent,
    OrchestrationStatus,
    utcnow,
)
from dfhost.store import (
    Claim,
    Completion,
    InstanceHolder,
    InstanceQuery,
    LeaseLostError,
    Store,
    StoreError,
    TimerStatus,
)
from dfhost.work import ActivityTask, EpisodeOutcome, EpisodeWork, Message, StartRequest

Status = OrchestrationStatus
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
UNFINISHED = [Status.PENDING, Status.RUNNING, Status.CONTINUED_AS_NEW, Status.SUSPENDED]
FINISHED = sorted(TERMINAL_STATUSES)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def event(type_: EventType, **fields: Any) -> HistoryEvent:
    fields.setdefault("timestamp", T0)
    return HistoryEvent(type=type_, **fields)


def raised(name: str) -> HistoryEvent:
    return event(EventType.EVENT_RAISED, name=name, input=f'"{name}"')


def start(instance_id: str, execution_id: str = "", **fields: Any) -> StartRequest:
    fields.setdefault("name", "Orch")
    fields.setdefault("created_at", T0)
    return StartRequest(
        instance_id=instance_id, execution_id=execution_id or f"{instance_id}:1", **fields
    )


def timer(instance_id: str, execution_id: str, timer_id: int, fire_at: datetime) -> Message:
    fired = event(EventType.TIMER_FIRED, timer_id=timer_id, fire_at=fire_at)
    return Message(
        instance_id=instance_id, execution_id=execution_id, event=fired, visible_at=fire_at
    )


def task(instance_id: str, execution_id: str, scheduled_id: int) -> ActivityTask:
    return ActivityTask(
        instance_id=instance_id,
        execution_id=execution_id,
        task_scheduled_id=scheduled_id,
        name=f"Act{scheduled_id}",
        input=f"[{scheduled_id}]",
        scheduled_at=T0,
    )


def task_key(t: ActivityTask) -> tuple[object, ...]:
    return (t.instance_id, t.execution_id, t.task_scheduled_id, t.name, t.input, t.scheduled_at)


async def claim(
    store: Store, *, owner: str = "host-a", now: datetime = T0, lease: float = 60, limit: int = 10
) -> list[EpisodeWork]:
    lease_until = now + timedelta(seconds=lease)
    return await store.claim_episodes(Claim(owner=owner, now=now, lease_until=lease_until), limit)


async def claim_activities(
    store: Store, owner: str, now: datetime, lease_until: datetime, limit: int
) -> list[ActivityTask]:
    return await store.claim_activities(Claim(owner=owner, now=now, lease_until=lease_until), limit)


async def claim_by_id(store: Store, **kwargs: Any) -> dict[str, EpisodeWork]:
    return {work.instance.instance_id: work for work in await claim(store, **kwargs)}


async def claim_one(store: Store, instance_id: str, **kwargs: Any) -> EpisodeWork:
    works = await claim(store, **kwargs)
    assert [work.instance.instance_id for work in works] == [instance_id]
    return works[0]


def outcome(
    work: EpisodeWork,
    status: Status = Status.RUNNING,
    events: list[HistoryEvent] | None = None,
    **fields: Any,
) -> EpisodeOutcome:
    instance = replace(work.instance, status=status, last_updated_at=at(1))
    if events is None:
        events = [event(EventType.ORCHESTRATOR_STARTED), event(EventType.ORCHESTRATOR_COMPLETED)]
    return EpisodeOutcome(instance=instance, new_events=events, **fields)


async def episode(
    store: Store,
    instance_id: str,
    status: Status = Status.RUNNING,
    *,
    owner: str = "host-a",
    now: datetime = T0,
    **fields: Any,
) -> EpisodeOutcome:
    """Claim the instance (it must be the only claimable one) and commit an outcome."""
    work = await claim_one(store, instance_id, owner=owner, now=now)
    result = outcome(work, status, **fields)
    await store.commit_episode(owner, work, result)
    return result


async def drain(store: Store) -> None:
    """Consume any pending wake-up so the next wait really waits."""
    await asyncio.wait_for(store.wait_for_work(utcnow()), 1)


# --- clients ---------------------------------------------------------------------------------


async def test_create_and_get(store: Store) -> None:
    request = start("a", input='{"x": 1}', version="v2", parent_instance_id="p")
    assert await store.create_instance(request) is True

    instance = await store.get_instance("a")
    assert instance is not None
    assert (instance.instance_id, instance.name, instance.execution_id) == ("a", "Orch", "a:1")
    assert instance.status == Status.PENDING
    assert (instance.input, instance.version, instance.parent_instance_id) == (
        '{"x": 1}',
        "v2",
        "p",
    )
    assert instance.created_at == T0
    assert (instance.output, instance.custom_status, instance.failure_details) == (None,) * 3
    assert instance.tags == {}
    assert await store.get_history("a") == []
    assert await store.get_instance("missing") is None
    assert await store.get_history("missing") == []


TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_create_enqueues_execution_started(store: Store) -> None:
    request = start("a", input="1", parent_instance_id="p", parent_task_id=3, trace_context=TRACE)
    await store.create_instance(request)

    work = await claim_one(store, "a")
    assert work.instance == await store.get_instance("a")
    assert work.history == []
    assert work.history_error is None
    [message] = work.messages
    assert message.event == request.started_event()
    assert message.event.trace_context == TRACE
    assert message.execution_id == "a:1"
    assert message.message_id is not None


async def test_scheduled_start_is_not_claimable_early(store: Store) -> None:
    await store.create_instance(start("a", visible_at=at(10)))
    assert await claim(store, now=at(9)) == []
    await claim_one(store, "a", now=at(10))


@pytest.mark.parametrize("status", UNFINISHED)
async def test_create_refused_while_unfinished(store: Store, status: Status) -> None:
    first = start("a", input="1")
    await store.create_instance(first)
    if status != Status.PENDING:
        await episode(store, "a", status)

    assert await store.create_instance(start("a", "a:2", input="2")) is False

    instance = await store.get_instance("a")
    assert instance is not None
    assert (instance.execution_id, instance.status, instance.input) == ("a:1", status, "1")
    # Nothing was enqueued by the refused start: only what was there, plus a terminate that
    # makes even a suspended instance claimable.
    terminate = event(EventType.EXECUTION_TERMINATED, reason="stop")
    assert await store.send_message(Message(instance_id="a", event=terminate)) == "sent"
    work = await claim_one(store, "a")
    expected = [first.started_event()] if status == Status.PENDING else []
    assert [m.event for m in work.messages] == [*expected, terminate]


@pytest.mark.parametrize("status", FINISHED)
async def test_create_replaces_finished_instance(store: Store, status: Status) -> None:
    await store.create_instance(start("a", input="1"))
    old_events = [event(EventType.ORCHESTRATOR_STARTED), event(EventType.EXECUTION_STARTED)]
    await episode(
        store,
        "a",
        status,
        events=old_events,
        activities=[task("a", "a:1", 0)],
        messages=[timer("a", "a:1", 1, at(100))],
    )
    assert await store.get_history("a") == old_events
    assert await store.send_message(Message(instance_id="a", event=raised("late"))) == "gone"

    second = start("a", "a:2", input="2", created_at=at(10))
    assert await store.create_instance(second) is True

    instance = await store.get_instance("a")
    assert instance is not None
    assert (instance.execution_id, instance.status, instance.input) == ("a:2", Status.PENDING, "2")
    assert instance.created_at == at(10)
    assert instance.output is None
    assert await store.get_history("a") == []
    assert await claim_activities(store, "host-a", at(1000), at(1060), 10) == []
    work = await claim_one(store, "a", now=at(1000))
    assert [m.event for m in work.messages] == [second.started_event()]
    assert work.history == []


async def test_on_conflict_message_is_delivered_instead(store: Store) -> None:
    await store.create_instance(start("parent"))
    await episode(store, "parent")
    await store.create_instance(start("child"))

    failed = event(EventType.SUB_ORCHESTRATION_FAILED, task_scheduled_id=0, reason="taken")
    notice = Message(instance_id="parent", execution_id="parent:1", event=failed)
    assert await store.create_instance(start("child", "child:2", on_conflict=notice)) is False

    works = await claim_by_id(store)
    assert [m.event for m in works["parent"].messages] == [failed]
    assert [m.event.type for m in works["child"].messages] == [EventType.EXECUTION_STARTED]
    assert works["child"].instance.execution_id == "child:1"


async def test_on_conflict_unused_when_created(store: Store) -> None:
    await store.create_instance(start("parent"))
    await episode(store, "parent")
    failed = event(EventType.SUB_ORCHESTRATION_FAILED, task_scheduled_id=0)
    notice = Message(instance_id="parent", execution_id="parent:1", event=failed)

    assert await store.create_instance(start("child", on_conflict=notice)) is True
    assert list(await claim_by_id(store)) == ["child"]


async def test_racing_creates_exactly_one_wins(store: Store) -> None:
    requests = [start("race", f"race:{i}") for i in range(8)]
    results = await asyncio.gather(*(store.create_instance(r) for r in requests))

    assert results.count(True) == 1
    winner = requests[results.index(True)]
    instance = await store.get_instance("race")
    assert instance is not None
    assert instance.execution_id == winner.execution_id
    work = await claim_one(store, "race")
    assert [m.event for m in work.messages] == [winner.started_event()]


async def test_send_message(store: Store) -> None:
    message = Message(instance_id="a", event=raised("e1"))
    assert await store.send_message(message) == "not_found"

    await store.create_instance(start("a"))
    assert await store.send_message(message) == "sent"
    work = await claim_one(store, "a")
    assert [m.event for m in work.messages][1:] == [raised("e1")]
    assert work.messages[1].execution_id is None
    await store.commit_episode("host-a", work, outcome(work, Status.COMPLETED))

    assert await store.send_message(Message(instance_id="a", event=raised("e2"))) == "gone"
    assert await claim(store, now=at(1000)) == []


# --- episodes --------------------------------------------------------------------------------


async def test_claim_returns_visible_messages_only(store: Store) -> None:
    await store.create_instance(start("a"))
    await episode(store, "a")
    due = timer("a", "a:1", 1, at(10))
    await store.send_message(due)
    await store.send_message(Message(instance_id="a", event=raised("now")))

    work = await claim_one(store, "a", now=at(5))
    assert [m.event for m in work.messages] == [raised("now")]
    await store.commit_episode("host-a", work, outcome(work))

    assert await claim(store, now=at(9.999)) == []
    work = await claim_one(store, "a", now=at(10))
    assert [m.event for m in work.messages] == [due.event]
    assert work.messages[0].visible_at == at(10)
    assert work.messages[0].execution_id == "a:1"


async def test_claim_returns_all_messages_oldest_first(store: Store) -> None:
    request = start("a")
    await store.create_instance(request)
    names = [f"e{i}" for i in range(5)]
    for name in names:
        await store.send_message(Message(instance_id="a", event=raised(name)))

    work = await claim_one(store, "a")
    assert [m.event for m in work.messages] == [
        request.started_event(),
        *(raised(n) for n in names),
    ]
    ids = [m.message_id for m in work.messages]
    assert all(isinstance(i, int) for i in ids)
    assert len(set(ids)) == len(ids)


async def test_claim_respects_limit_oldest_first(store: Store) -> None:
    for name in ("a", "b", "c"):
        await store.create_instance(start(name))

    first = await claim(store, limit=2)
    assert sorted(w.instance.instance_id for w in first) == ["a", "b"]
    second = await claim(store, owner="host-b", limit=10)
    assert [w.instance.instance_id for w in second] == ["c"]
    assert await claim(store, owner="host-c", limit=0) == []


async def test_claim_finds_the_oldest_unlocked_instances_behind_locked_ones(
    store: Store,
) -> None:
    names = [f"i{n:02}" for n in range(30)]
    for name in names:
        await store.create_instance(start(name))
    held = await claim(store, owner="host-a", limit=25)
    assert sorted(w.instance.instance_id for w in held) == names[:25]
    later = await claim(store, owner="host-b", limit=2)
    assert sorted(w.instance.instance_id for w in later) == names[25:27]


async def test_locked_instance_is_not_claimed_twice(store: Store) -> None:
    await store.create_instance(start("a"))
    await claim_one(store, "a", owner="host-a", lease=60)

    assert await claim(store, owner="host-b", now=at(30)) == []
    await store.send_message(Message(instance_id="a", event=raised("more")))
    assert await claim(store, owner="host-b", now=at(59)) == []


async def test_expired_lease_is_reclaimed_and_old_commit_is_fenced(store: Store) -> None:
    await store.create_instance(start("a"))
    stale = await claim_one(store, "a", owner="host-a", lease=60)
    fresh = await claim_one(store, "a", owner="host-b", now=at(60))
    assert fresh.lease_token != stale.lease_token
    assert [m.message_id for m in fresh.messages] == [m.message_id for m in stale.messages]

    lost = outcome(
        stale,
        Status.COMPLETED,
        activities=[task("a", "a:1", 0)],
        messages=[timer("a", "a:1", 1, at(500))],
        starts=[start("child")],
    )
    with pytest.raises(LeaseLostError):
        await store.commit_episode("host-a", stale, lost)

    instance = await store.get_instance("a")
    assert instance is not None and instance.status == Status.PENDING
    assert await store.get_history("a") == []
    assert await store.get_instance("child") is None
    assert await claim_activities(store, "host-a", at(60), at(120), 10) == []

    # The new owner's episode still holds the messages and commits normally.
    done = outcome(fresh, Status.RUNNING)
    await store.commit_episode("host-b", fresh, done)
    assert await store.get_history("a") == done.new_events
    assert await claim(store, now=at(1000)) == []


async def test_same_owner_stale_token_is_fenced(store: Store) -> None:
    await store.create_instance(start("a"))
    stale = await claim_one(store, "a", owner="host-a", lease=60)
    fresh = await claim_one(store, "a", owner="host-a", now=at(61))
    with pytest.raises(LeaseLostError):
        await store.commit_episode("host-a", stale, outcome(stale, Status.COMPLETED))
    await store.commit_episode("host-a", fresh, outcome(fresh))
    instance = await store.get_instance("a")
    assert instance is not None and instance.status == Status.RUNNING


async def test_commit_by_another_owner_is_fenced(store: Store) -> None:
    await store.create_instance(start("a"))
    work = await claim_one(store, "a", owner="host-a")
    with pytest.raises(LeaseLostError):
        await store.commit_episode("host-b", work, outcome(work, Status.COMPLETED))
    await store.commit_episode("host-a", work, outcome(work))
    instance = await store.get_instance("a")
    assert instance is not None and instance.status == Status.RUNNING


async def test_abandon_releases_without_consuming(store: Store) -> None:
    await store.create_instance(start("a"))
    work = await claim_one(store, "a", owner="host-a", lease=60)

    await store.abandon_episode("host-x", work)  # not the owner: no effect
    assert await claim(store, owner="host-b") == []

    await store.abandon_episode("host-a", work)
    again = await claim_one(store, "a", owner="host-b")
    assert [m.message_id for m in again.messages] == [m.message_id for m in work.messages]
    with pytest.raises(LeaseLostError):
        await store.commit_episode("host-a", work, outcome(work))


async def test_abandon_until_a_time_makes_it_claimable_then_by_any_host(store: Store) -> None:
    """A host that may not run an instance's version gives it back for later (the engine's
    versionFailureStrategy Reject): nobody claims it before then, any host from then on, and
    the hub's next due time says when."""
    await store.create_instance(start("a"))
    work = await claim_one(store, "a", owner="host-a", lease=60)
    await store.abandon_episode("host-a", work, retry_at=at(10))
    assert await claim(store, owner="host-a", now=at(5)) == []
    assert await claim(store, owner="host-b", now=at(5)) == []
    assert await store.next_due_at(at(5)) == at(10)
    again = await claim_one(store, "a", owner="host-b", now=at(10))
    assert [m.message_id for m in again.messages] == [m.message_id for m in work.messages]


async def test_commit_appends_history_and_updates_every_field(store: Store) -> None:
    await store.create_instance(start("a"))
    first = [
        event(EventType.ORCHESTRATOR_STARTED),
        event(EventType.EXECUTION_STARTED, name="Orch"),
        event(EventType.TASK_SCHEDULED, event_id=0, name="Act"),
        event(EventType.ORCHESTRATOR_COMPLETED),
    ]
    await episode(store, "a", events=first)
    await store.send_message(Message(instance_id="a", event=raised("go")))

    work = await claim_one(store, "a")
    assert work.history == first
    second = [event(EventType.ORCHESTRATOR_STARTED, timestamp=at(2)), raised("go")]
    new_state = replace(
        work.instance,
        status=Status.COMPLETED,
        output='"done"',
        custom_status='{"step": 2}',
        failure_details='{"x": 1}',
        version="v9",
        tags={"team": "blue"},
        last_updated_at=at(2),
    )
    await store.commit_episode(
        "host-a", work, EpisodeOutcome(instance=new_state, new_events=second)
    )

    assert await store.get_history("a") == first + second
    assert await store.get_instance("a") == new_state


async def test_commit_consumes_exactly_the_claimed_messages(store: Store) -> None:
    await store.create_instance(start("a"))
    await store.send_message(Message(instance_id="a", event=raised("before")))
    work = await claim_one(store, "a")
    await store.send_message(Message(instance_id="a", event=raised("after")))

    await store.commit_episode("host-a", work, outcome(work))

    work = await claim_one(store, "a")
    assert [m.event for m in work.messages] == [raised("after")]


async def test_commit_inserts_activities_messages_and_starts(store: Store) -> None:
    await store.create_instance(start("peer"))
    await episode(store, "peer")
    await store.create_instance(start("parent"))

    activities = [task("parent", "parent:1", 0), task("parent", "parent:1", 1)]
    to_peer = Message(instance_id="peer", event=replace(raised("hello"), trace_context=TRACE))
    own_timer = timer("parent", "parent:1", 2, at(30))
    to_nobody = Message(instance_id="ghost", event=raised("void"))
    child = start(
        "child",
        parent_instance_id="parent",
        parent_execution_id="parent:1",
        parent_task_id=3,
        input='"c"',
        trace_context=TRACE,
    )
    await episode(
        store,
        "parent",
        activities=activities,
        messages=[to_peer, own_timer, to_nobody],
        starts=[child],
    )

    claimed = await claim_activities(store, "host-a", T0, at(60), 10)
    assert sorted(map(task_key, claimed)) == sorted(map(task_key, activities))
    assert all(t.task_id is not None and t.lease_token is not None for t in claimed)

    child_instance = await store.get_instance("child")
    assert child_instance is not None
    assert child_instance.status == Status.PENDING
    assert child_instance.parent_instance_id == "parent"

    works = await claim_by_id(store)
    assert sorted(works) == ["child", "peer"]  # never "ghost", and not the parent's timer
    assert [m.event for m in works["peer"].messages] == [to_peer.event]
    assert [m.event for m in works["child"].messages] == [child.started_event()]
    assert works["child"].messages[0].event.trace_context == TRACE
    inbound = [m.event for m in works["child"].messages]
    await store.commit_episode("host-a", works["child"], outcome(works["child"], events=inbound))
    [started] = await store.get_history("child")  # kept in the history, for every episode
    assert started.trace_context == TRACE
    work = await claim_one(store, "parent", now=at(30))
    assert [m.event for m in work.messages] == [own_timer.event]


async def test_start_in_commit_respects_singleton(store: Store) -> None:
    await store.create_instance(start("parent"))
    await episode(store, "parent")
    await store.create_instance(start("child"))
    await store.send_message(Message(instance_id="parent", event=raised("go")))
    await store.create_instance(start("other"))  # keeps "child" from being the only claim

    works = await claim_by_id(store)
    failed = event(EventType.SUB_ORCHESTRATION_FAILED, task_scheduled_id=4)
    notice = Message(instance_id="parent", execution_id="parent:1", event=failed)
    parent = works["parent"]
    await store.commit_episode(
        "host-a",
        parent,
        outcome(parent, starts=[start("child", "child:2", on_conflict=notice)]),
    )
    for other in ("child", "other"):
        await store.abandon_episode("host-a", works[other])

    child = await store.get_instance("child")
    assert child is not None and child.execution_id == "child:1"
    works = await claim_by_id(store)
    assert [m.event for m in works["parent"].messages] == [failed]
    assert [m.event.type for m in works["child"].messages] == [EventType.EXECUTION_STARTED]


async def test_a_message_travels_with_the_start_of_its_instance(store: Store) -> None:
    # Entities rely on this: an orchestrator's operation for an entity is committed with a
    # start that creates the entity if needed; either way, the operation arrives.
    await store.create_instance(start("caller"))
    await store.create_instance(start("old"))
    works = await claim_by_id(store)
    to_new = Message(instance_id="new", event=raised("op1"))
    to_old = Message(instance_id="old", event=raised("op2"))
    caller = works["caller"]
    await store.commit_episode(
        "host-a",
        caller,
        outcome(caller, messages=[to_new, to_old], starts=[start("new"), start("old", "old:2")]),
    )
    await store.abandon_episode("host-a", works["old"])

    old = await store.get_instance("old")
    assert old is not None and old.execution_id == "old:1"
    works = await claim_by_id(store)
    assert sorted(works) == ["new", "old"]
    assert sorted(m.event.type for m in works["new"].messages) == [
        EventType.EXECUTION_STARTED,
        EventType.EVENT_RAISED,
    ]
    assert to_new.event in [m.event for m in works["new"].messages]
    assert [m.event.type for m in works["old"].messages] == [
        EventType.EXECUTION_STARTED,
        EventType.EVENT_RAISED,
    ]


async def test_commit_cancels_timers_by_id(store: Store) -> None:
    await store.create_instance(start("a"))
    timers = [timer("a", "a:1", i, at(10)) for i in (1, 2, 3)]
    await episode(store, "a", messages=timers)
    await store.send_message(Message(instance_id="a", event=raised("cancel")))

    await episode(store, "a", cancelled_timer_ids=[1, 3])

    work = await claim_one(store, "a", now=at(10))
    assert [m.event for m in work.messages] == [timers[1].event]


async def test_reset_history_starts_a_fresh_execution(store: Store) -> None:
    await store.create_instance(start("a"))
    await episode(store, "a")
    await store.send_message(Message(instance_id="a", event=raised("again")))

    work = await claim_one(store, "a")
    fresh = [event(EventType.EXECUTION_STARTED, name="Orch", input='"next"')]
    state = replace(work.instance, execution_id="a:2", status=Status.RUNNING)
    await store.commit_episode(
        "host-a", work, EpisodeOutcome(instance=state, new_events=fresh, reset_history=True)
    )

    assert await store.get_history("a") == fresh
    await store.send_message(Message(instance_id="a", event=raised("more")))
    work = await claim_one(store, "a")
    assert work.instance.execution_id == "a:2"
    assert work.history == fresh

    # The reset does not depend on the execution id changing.
    again = [event(EventType.EXECUTION_STARTED, name="Orch", input='"again"')]
    await store.commit_episode(
        "host-a",
        work,
        EpisodeOutcome(instance=work.instance, new_events=again, reset_history=True),
    )
    assert await store.get_history("a") == again


async def test_drop_pending_work_keeps_client_messages(store: Store) -> None:
    await store.create_instance(start("a"))
    await episode(
        store, "a", activities=[task("a", "a:1", 0)], messages=[timer("a", "a:1", 1, at(100))]
    )
    await store.send_message(Message(instance_id="a", event=raised("e1")))
    work = await claim_one(store, "a")
    # Arriving during the episode: a result for the ending execution, and a client event.
    result = event(EventType.TASK_COMPLETED, task_scheduled_id=0, result="1")
    await store.send_message(Message(instance_id="a", execution_id="a:1", event=result))
    await store.send_message(Message(instance_id="a", event=raised("e2")))

    next_timer = timer("a", "a:2", 1, at(50))
    state = replace(work.instance, execution_id="a:2", status=Status.RUNNING)
    await store.commit_episode(
        "host-a",
        work,
        EpisodeOutcome(
            instance=state,
            new_events=[event(EventType.EXECUTION_STARTED)],
            reset_history=True,
            drop_pending_work=True,
            messages=[next_timer],
        ),
    )

    assert await claim_activities(store, "host-a", at(1000), at(1060), 10) == []
    work = await claim_one(store, "a", now=at(1000))
    assert [m.event for m in work.messages] == [raised("e2"), next_timer.event]


@pytest.mark.parametrize("wake", [EventType.EXECUTION_RESUMED, EventType.EXECUTION_TERMINATED])
async def test_suspended_instance_claimed_only_to_resume_or_terminate(
    store: Store, wake: EventType
) -> None:
    await store.create_instance(start("a"))
    await episode(store, "a", Status.SUSPENDED)
    await store.send_message(Message(instance_id="a", event=raised("e1")))
    await store.send_message(timer("a", "a:1", 1, at(5)))

    assert await claim(store, now=at(10)) == []

    await store.send_message(Message(instance_id="a", event=event(wake, reason="why")))
    work = await claim_one(store, "a", now=at(10))
    assert [m.event.type for m in work.messages] == [
        EventType.EVENT_RAISED,
        EventType.TIMER_FIRED,
        wake,
    ]


async def test_open_host_frees_work_of_dead_owners(store: Store) -> None:
    await store.create_instance(start("a"))
    await episode(store, "a", activities=[task("a", "a:1", 0)])
    await store.send_message(Message(instance_id="a", event=raised("e1")))
    dead = await claim_one(store, "a", owner="dead-host", lease=600)
    assert len(await claim_activities(store, "dead-host", T0, at(600), 10)) == 1

    await store.open_host("host-b", at(1))

    work = await claim_one(store, "a", owner="host-b", now=at(1))
    assert [m.message_id for m in work.messages] == [m.message_id for m in dead.messages]
    assert len(await claim_activities(store, "host-b", at(1), at(61), 10)) == 1
    with pytest.raises(LeaseLostError):
        await store.commit_episode("dead-host", dead, outcome(dead))


# --- timer triggers --------------------------------------------------------------------------


async def claim_run(
    store: Store,
    due: float | None,
    *,
    owner: str = "host-a",
    now: float = 0,
    lease: float = 60,
    function: str = "tick",
) -> int | None:
    due_at = None if due is None else at(due)
    claim = Claim(owner=owner, now=at(now), lease_until=at(now + lease))
    return await store.claim_timer_run(function, due_at, claim)


async def test_timer_occurrence_is_claimed_once_and_never_after_a_later_one(store: Store) -> None:
    first = await claim_run(store, 10, now=10)
    assert first is not None
    assert await store.finish_timer_run("tick", "host-a", first, None)

    assert await claim_run(store, 10, owner="host-b", now=10) is None  # same occurrence
    assert await claim_run(store, 5, owner="host-b", now=10) is None  # an older one
    second = await claim_run(store, 20, owner="host-b", now=20)
    assert second is not None and second > first
    assert await claim_run(store, 20, owner="host-b", now=21, function="other") is not None


async def test_timer_runs_never_overlap(store: Store) -> None:
    token = await claim_run(store, 10, now=10, lease=60)
    assert token is not None
    # A later occurrence, a run without occurrence, and the same owner are all refused.
    assert await claim_run(store, 20, owner="host-b", now=20) is None
    assert await claim_run(store, None, owner="host-b", now=20) is None
    assert await claim_run(store, 30, now=30) is None

    assert await store.finish_timer_run("tick", "host-a", token, None)
    # Refused occurrences were not recorded: a later one is claimable once the run ended.
    assert await claim_run(store, 30, owner="host-b", now=31) is not None


async def test_runs_without_an_occurrence_record_none(store: Store) -> None:
    token = await claim_run(store, None)
    assert token is not None
    assert await store.finish_timer_run("tick", "host-a", token, None)
    token = await claim_run(store, 10, now=10)
    assert token is not None
    assert await store.finish_timer_run("tick", "host-a", token, None)
    assert await claim_run(store, None, now=11) is not None


async def test_expired_timer_run_is_claimable_and_the_old_one_fenced(store: Store) -> None:
    old = await claim_run(store, 10, now=10, lease=5)
    assert old is not None
    assert await claim_run(store, 20, owner="host-b", now=14) is None
    new = await claim_run(store, 20, owner="host-b", now=15)
    assert new is not None

    status = TimerStatus(last=at(10), next=at(20), last_updated=at(11))
    assert not await store.renew_timer_run("tick", "host-a", old, at(100))
    assert not await store.finish_timer_run("tick", "host-a", old, status)
    assert await store.get_timer_status("tick") is None
    assert await claim_run(store, 30, now=30) is None  # host-b's run is still going


async def test_timer_run_lease_renewal(store: Store) -> None:
    token = await claim_run(store, 10, now=10, lease=10)
    assert token is not None
    assert await store.renew_timer_run("tick", "host-a", token, at(100))
    assert await claim_run(store, 50, owner="host-b", now=50) is None
    assert not await store.renew_timer_run("tick", "host-b", token, at(200))
    assert await claim_run(store, 101, owner="host-b", now=101) is not None


async def test_racing_timer_claims_exactly_one_wins(store: Store) -> None:
    results = await asyncio.gather(*(claim_run(store, 10, owner=f"h{i}") for i in range(8)))
    assert sum(token is not None for token in results) == 1


async def test_timer_status(store: Store) -> None:
    assert await store.get_timer_status("tick") is None
    initial = TimerStatus(last=None, next=at(10), last_updated=at(1))
    await store.set_timer_status("tick", initial)
    assert await store.get_timer_status("tick") == initial
    assert await store.get_timer_status("other") is None

    token = await claim_run(store, 10, now=10)
    assert token is not None
    await store.set_timer_status("tick", initial)  # leaves the run alone
    assert await claim_run(store, 20, owner="host-b", now=20) is None
    after = TimerStatus(last=at(10.5), next=at(20), last_updated=at(10.5))
    assert await store.finish_timer_run("tick", "host-a", token, after)
    assert await store.get_timer_status("tick") == after

    token = await claim_run(store, None, now=21)
    assert token is not None
    assert await store.finish_timer_run("tick", "host-a", token, None)
    assert await store.get_timer_status("tick") == after


async def test_open_host_frees_timer_runs_of_dead_owners(store: Store) -> None:
    assert await claim_run(store, 10, owner="dead-host", lease=600) is not None
    await store.open_host("host-b", at(1))
    assert await claim_run(store, 20, owner="host-b", now=1) is not None


async def test_history_error_is_reported_not_raised(store: Store, corrupt_history: Any) -> None:
    await store.create_instance(start("bad-one"))
    await episode(store, "bad-one")
    await corrupt_history(store, "bad-one")
    await store.send_message(Message(instance_id="bad-one", event=raised("e1")))

    work = await claim_one(store, "bad-one")
    assert work.history == []
    assert work.history_error is not None
    assert "bad-one" in work.history_error
    assert [m.event for m in work.messages] == [raised("e1")]


async def test_messages_to_missing_instances_do_not_wedge_the_queue(store: Store) -> None:
    await store.create_instance(start("src"))
    stray = [Message(instance_id=f"ghost-{i}", event=raised("x")) for i in range(5)]
    await episode(store, "src", messages=stray)
    await store.create_instance(start("real"))

    for _ in range(2):
        works = await claim(store, limit=1)
        assert [w.instance.instance_id for w in works] == ["real"]
        await store.abandon_episode("host-a", works[0])


# --- activities ------------------------------------------------------------------------------


async def test_activity_claim_lease_and_expiry(store: Store) -> None:
    await store.create_instance(start("a"))
    await episode(store, "a", activities=[task("a", "a:1", i) for i in range(3)])

    first = await claim_activities(store, "host-a", T0, at(60), 2)
    assert [t.task_scheduled_id for t in first] == [0, 1]
    assert all(t.task_id is not None and t.lease_token is not None for t in first)
    rest = await claim_activities(store, "host-b", at(30), at(90), 10)
    assert [t.task_scheduled_id for t in rest] == [2]
    assert await claim_activities(store, "host-b", at(59), at(119), 10) == []

    again = await claim_activities(store, "host-b", at(60), at(120), 10)
    assert [t.task_id for t in again] == [t.task_id for t in first]
    assert [t.lease_token for t in again] != [t.lease_token for t in first]


async def test_activity_completes_at_most_once(store: Store) -> None:
    await store.create_instance(start("a"))
    await episode(store, "a", activities=[task("a", "a:1", 0)])
    [slow] = await claim_activities(store, "host-a", T0, at(60), 10)
    [fast] = await claim_activities(store, "host-b", at(60), at(120), 10)

    result = event(EventType.TASK_COMPLETED, task_scheduled_id=0, result='"ok"')
    message = Message(instance_id="a", execution_id="a:1", event=result)
    assert await store.complete_activity(slow, message) == Completion()  # first wins, stale or not
    assert await store.complete_activity(fast, message) is None

    assert await claim_activities(store, "host-c", at(1000), at(1060), 10) == []
    work = await claim_one(store, "a", now=at(61))
    assert [m.event for m in work.messages] == [result]


async def test_activity_lease_renewal(store: Store) -> None:
    await store.create_instance(start("a"))
    await episode(store, "a", activities=[task("a", "a:1", 0)])
    claimed = await claim_activities(store, "host-a", T0, at(60), 10)

    await store.renew_activity_leases("host-a", claimed, at(120))
    await store.renew_activity_leases("host-x", claimed, at(1000))  # not the owner

    assert await claim_activities(store, "host-b", at(90), at(150), 10) == []
    assert len(await claim_activities(store, "host-b", at(120), at(180), 10)) == 1


# --- shortcuts: history tails, activities leased on commit, episodes claimed on completion ----

SHORTCUTS = {"sqlite", "postgres"}
"""Backends that take the optional shortcuts; the others must still answer consistently."""


def completed(scheduled_id: int) -> Message:
    done = event(EventType.TASK_COMPLETED, task_scheduled_id=scheduled_id, result='"ok"')
    return Message(instance_id="a", execution_id="a:1", event=done)


async def two_episodes(store: Store) -> list[HistoryEvent]:
    """Instance a with 4 history events; returns them as stored."""
    await store.create_instance(start("a"))
    await episode(store, "a")
    await store.send_message(Message(instance_id="a", event=raised("go")))
    await episode(store, "a", now=at(1))
    history = await store.get_history("a")
    assert len(history) == 4
    return history


async def test_claim_sends_only_the_history_tail_the_claimer_lacks(
    store: Store, backend: str
) -> None:
    history = await two_episodes(store)
    await store.send_message(Message(instance_id="a", event=raised("again")))
    known = {"a": ("a:1", 3)}
    [work] = await store.claim_episodes(
        Claim(owner="host-a", now=at(2), lease_until=at(60), known=known), 10
    )
    assert work.history_start in ({2} if backend in SHORTCUTS else {0, 2})
    assert work.history == history[work.history_start :]
    await store.commit_episode("host-a", work, outcome(work))
    assert len(await store.get_history("a")) == 6


@pytest.mark.parametrize(
    "known", [{"a": ("a:0", 3)}, {"a": ("a:1", 9)}, {"b": ("a:1", 3)}, {"a": ("a:1", 0)}]
)
async def test_claim_sends_the_whole_history_unless_the_claimer_holds_its_start(
    store: Store, known: dict[str, tuple[str, int]]
) -> None:
    history = await two_episodes(store)
    await store.send_message(Message(instance_id="a", event=raised("again")))
    [work] = await store.claim_episodes(
        Claim(owner="host-a", now=at(2), lease_until=at(60), known=known), 10
    )
    assert (work.history_start, work.history) == (0, history)


async def test_commit_can_lease_the_activities_it_creates(store: Store, backend: str) -> None:
    await store.create_instance(start("a"))
    work = await claim_one(store, "a")
    tasks = [task("a", "a:1", 0), task("a", "a:1", 1)]
    leased = await store.commit_episode(
        "host-a", work, outcome(work, activities=tasks), lease_activities=(at(60), 1)
    )
    assert len(leased) == (1 if backend in SHORTCUTS else 0)
    assert [task_key(t) for t in leased] == [task_key(t) for t in tasks[: len(leased)]]
    others = await claim_activities(store, "host-b", T0, at(600), 10)
    assert sorted(task_key(t) for t in [*leased, *others]) == sorted(map(task_key, tasks))
    # A leased task is held like a claimed one: completable once, claimable after expiry.
    for held in leased:
        assert await claim_activities(store, "host-b", at(59), at(120), 10) == []
        [again] = await claim_activities(store, "host-b", at(60), at(120), 10)
        assert task_key(again) == task_key(held)
        assert await store.complete_activity(held, completed(held.task_scheduled_id))
        assert not await store.complete_activity(again, completed(held.task_scheduled_id))


async def test_completing_an_activity_can_claim_its_instance(store: Store, backend: str) -> None:
    await store.create_instance(start("a"))
    await episode(store, "a", activities=[task("a", "a:1", 0), task("a", "a:1", 1)])
    first, second = await claim_activities(store, "host-a", T0, at(60), 10)
    grab = Claim(owner="host-a", now=at(1), lease_until=at(60))

    done = await store.complete_activity(first, completed(0), grab)
    assert done is not None
    work = done.work
    if backend in SHORTCUTS:
        assert work is not None
    if work is None:
        work = await claim_one(store, "a", now=at(1))
    else:  # leased: nobody else gets it
        assert await claim(store, owner="host-b", now=at(1)) == []
    assert [m.event for m in work.messages] == [completed(0).event]
    assert [e.type for e in work.history] == [
        EventType.ORCHESTRATOR_STARTED,
        EventType.ORCHESTRATOR_COMPLETED,
    ]
    # The instance is held: the second result is delivered, but its episode is not claimed.
    assert await store.complete_activity(second, completed(1), grab) == Completion()
    assert await store.complete_activity(second, completed(1), grab) is None
    await store.commit_episode("host-a", work, outcome(work))
    again = await claim_one(store, "a", now=at(2))
    assert [m.event for m in again.messages] == [completed(1).event]


# --- scheduling and wake-ups -----------------------------------------------------------------


async def test_next_due_at(store: Store) -> None:
    assert await store.next_due_at(T0) is None
    await store.create_instance(start("a"))
    assert await store.next_due_at(T0) is None  # due now is not "next"

    work = await claim_one(store, "a", lease=20)
    assert await store.next_due_at(T0) == at(20)
    await store.commit_episode(
        "host-a",
        work,
        outcome(work, activities=[task("a", "a:1", 0)], messages=[timer("a", "a:1", 1, at(30))]),
    )
    assert await store.next_due_at(T0) == at(30)

    await claim_activities(store, "host-a", T0, at(10), 10)
    assert await store.next_due_at(T0) == at(10)
    assert await store.next_due_at(at(10)) == at(30)
    assert await store.next_due_at(at(30)) is None


async def test_wait_for_work_wakes_on_send_from_another_task(store: Store) -> None:
    await store.create_instance(start("a"))
    await drain(store)
    waiter = asyncio.create_task(store.wait_for_work(None))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiter.done()

    await store.send_message(Message(instance_id="a", event=raised("wake")))
    await asyncio.wait_for(waiter, 1)


@pytest.mark.parametrize(
    "trigger", ["create", "notify", "commit", "commit-enqueues", "abandon", "complete"]
)
async def test_wait_for_work_wakes_on_enqueue(store: Store, trigger: str) -> None:
    await store.create_instance(start("a"))
    work = await claim_one(store, "a")
    if trigger == "commit":
        # A message that arrives mid-episode must be picked up once the lock is released.
        await store.send_message(Message(instance_id="a", event=raised("mid")))
    elif trigger == "complete":
        await store.commit_episode("host-a", work, outcome(work, activities=[task("a", "a:1", 0)]))
        [activity] = await claim_activities(store, "host-a", T0, at(60), 10)
    await drain(store)
    waiter = asyncio.create_task(store.wait_for_work(None))
    await asyncio.sleep(0)

    if trigger == "create":
        await store.create_instance(start("b"))
    elif trigger == "notify":
        store.notify()
    elif trigger == "commit":
        await store.commit_episode("host-a", work, outcome(work))
    elif trigger == "abandon":  # its messages are claimable again
        await store.abandon_episode("host-a", work)
    elif trigger == "commit-enqueues":
        await store.commit_episode("host-a", work, outcome(work, activities=[task("a", "a:1", 0)]))
    else:
        result = event(EventType.TASK_COMPLETED, task_scheduled_id=0)
        message = Message(instance_id="a", execution_id="a:1", event=result)
        assert await store.complete_activity(activity, message)
    await asyncio.wait_for(waiter, 1)


async def test_wait_for_work_returns_at_until(store: Store) -> None:
    await drain(store)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.wait_for(store.wait_for_work(utcnow() + timedelta(seconds=0.15)), 2)
    assert 0.1 <= loop.time() - began < 1.0

    store.notify()  # a pending notification is consumed at once
    began = loop.time()
    await asyncio.wait_for(store.wait_for_work(utcnow() + timedelta(seconds=30)), 1)
    assert loop.time() - began < 0.5


# --- queries and purges ----------------------------------------------------------------------


async def populate(store: Store, count: int = 25) -> list[str]:
    """q-00..q-NN created a minute apart; every 5th Completed, the others Running, names
    alternating Even/Odd. Returns the ids newest first."""
    for i in range(count):
        name = "Even" if i % 2 == 0 else "Odd"
        await store.create_instance(start(f"q-{i:02}", name=name, created_at=T0 + i * MINUTE))
    works = await claim(store, limit=count)
    assert len(works) == count
    for work in works:
        index = int(work.instance.instance_id[2:])
        status = Status.COMPLETED if index % 5 == 0 else Status.RUNNING
        await store.commit_episode("host-a", work, outcome(work, status))
    return [f"q-{i:02}" for i in reversed(range(count))]


MINUTE = timedelta(minutes=1)


async def all_pages(store: Store, query: InstanceQuery) -> list[list[str]]:
    pages: list[list[str]] = []
    while True:
        page = await store.query_instances(query)
        pages.append([i.instance_id for i in page.instances])
        if page.continuation is None:
            return pages
        assert len(pages) < 100, "continuation never ends"
        query = replace(query, continuation=page.continuation)


async def test_query_pages_through_everything_once(store: Store) -> None:
    expected = await populate(store)

    pages = await all_pages(store, InstanceQuery(top=10))
    assert [len(p) for p in pages[:2]] == [10, 10]
    assert [i for page in pages for i in page] == expected
    for top in (1, 5, 7, 25, 1000):
        pages = await all_pages(store, InstanceQuery(top=top))
        assert [i for page in pages for i in page] == expected, top


async def test_query_breaks_created_at_ties_by_instance_id(store: Store) -> None:
    ids = ["tie-c", "tie-a", "tie-e", "tie-b", "tie-d"]
    for instance_id in ids:
        await store.create_instance(start(instance_id, created_at=T0))
    await store.create_instance(start("newer", created_at=at(1)))

    pages = await all_pages(store, InstanceQuery(top=2))
    assert [i for page in pages for i in page] == ["newer", *sorted(ids)]


async def test_query_filters(store: Store) -> None:
    expected = await populate(store)

    async def ids(**filters: Any) -> list[str]:
        pages = await all_pages(store, InstanceQuery(top=3, **filters))
        return [i for page in pages for i in page]

    window = await ids(created_from=T0 + 5 * MINUTE, created_to=T0 + 9 * MINUTE)
    assert window == ["q-09", "q-08", "q-07", "q-06", "q-05"]
    assert await ids(statuses=[Status.COMPLETED]) == ["q-20", "q-15", "q-10", "q-05", "q-00"]
    assert await ids(statuses=[Status.COMPLETED, Status.RUNNING]) == expected
    assert await ids(statuses=[Status.FAILED]) == []
    assert await ids(name="Odd") == [i for i in expected if int(i[2:]) % 2 == 1]
    assert await ids(name="Odd", statuses=[Status.COMPLETED]) == ["q-15", "q-05"]
    assert await ids(instance_id_prefix="q-1") == [f"q-{i}" for i in range(19, 9, -1)]
    assert await ids(instance_id_prefix="q-24") == ["q-24"]
    assert await ids(instance_id_prefix="zzz") == []


async def test_query_prefix_treats_wildcards_literally(store: Store) -> None:
    for i, instance_id in enumerate(["x%", "x%1", "x_1", "xa1", "x\\1", "y"]):
        await store.create_instance(start(instance_id, created_at=at(i)))

    async def ids(prefix: str) -> set[str]:
        page = await store.query_instances(InstanceQuery(instance_id_prefix=prefix))
        return {i.instance_id for i in page.instances}

    assert await ids("x%") == {"x%", "x%1"}
    assert await ids("x_") == {"x_1"}
    assert await ids("x\\") == {"x\\1"}
    assert await ids("x") == {"x%", "x%1", "x_1", "xa1", "x\\1"}


async def test_query_top_is_clamped(store: Store) -> None:
    await populate(store, 3)
    page = await store.query_instances(InstanceQuery(top=0))
    assert len(page.instances) == 1
    assert page.continuation is not None


@pytest.mark.parametrize("token", ["not a token", "bm9wZQ==", "W10=", "!!!"])
async def test_query_rejects_malformed_continuation(store: Store, token: str) -> None:
    await populate(store, 2)
    with pytest.raises(StoreError, match="invalid continuation token"):
        await store.query_instances(InstanceQuery(continuation=token))


async def test_purge_instance_removes_everything(store: Store) -> None:
    await store.create_instance(start("a"))
    await episode(
        store, "a", activities=[task("a", "a:1", 0)], messages=[timer("a", "a:1", 1, at(100))]
    )
    await store.send_message(Message(instance_id="a", event=raised("e1")))
    await store.create_instance(start("b"))

    assert await store.purge_instance("a") == 1
    assert await store.purge_instance("a") == 0
    assert await store.purge_instance("missing") == 0
    assert await store.get_instance("a") is None
    assert await store.get_history("a") == []
    assert await claim_activities(store, "host-a", at(1000), at(1060), 10) == []
    assert list(await claim_by_id(store, now=at(1000))) == ["b"]

    again = start("a", "a:2")
    assert await store.create_instance(again) is True
    work = await claim_one(store, "a", now=at(1000))
    assert [m.event for m in work.messages] == [again.started_event()]
    assert work.history == []


async def test_purge_instances_by_filter(store: Store) -> None:
    expected = await populate(store)

    assert await store.purge_instances(InstanceQuery(statuses=[Status.COMPLETED], top=1)) == 5
    remaining = [i for i in expected if int(i[2:]) % 5 != 0]
    pages = await all_pages(store, InstanceQuery())
    assert [i for page in pages for i in page] == remaining

    assert await store.purge_instances(InstanceQuery(name="Odd", instance_id_prefix="q-1")) == 4
    assert await store.get_instance("q-11") is None
    assert await store.get_history("q-11") == []
    assert await store.get_instance("q-12") is not None

    assert await store.purge_instances(InstanceQuery()) == len(remaining) - 4
    assert (await store.query_instances(InstanceQuery())).instances == []
    assert await store.purge_instances(InstanceQuery()) == 0


async def test_close_is_idempotent(store: Store) -> None:
    await store.close()
    await store.close()


async def test_watch_finish_resolves_when_this_process_commits_the_end(store: Store) -> None:
    await store.create_instance(start("a"))
    watch = store.watch_finish("a")
    other = store.watch_finish("b")
    await episode(store, "a")
    assert not watch.done()
    await store.send_message(Message(instance_id="a", event=raised("go")))
    await episode(store, "a", Status.COMPLETED, now=at(1))
    assert watch.done() and not other.done()
    other.cancel()


# --- holding an instance between episodes (`InstanceHolder`) ---------------------------------

HOLDERS = {"sqlite", "postgres"}
"""Backends that can hold an instance between episodes; the others release it at every
commit, and their episodes must come out the same without the hold."""


def holder(store: Store) -> InstanceHolder | None:
    return store if isinstance(store, InstanceHolder) else None


async def test_the_backends_that_hold_instances_say_so(store: Store, backend: str) -> None:
    assert (holder(store) is not None) == (backend in HOLDERS)


async def held_for_one_activity(store: Store) -> tuple[EpisodeWork, ActivityTask]:
    """Instance a after an episode that leased one activity to host-a and, where the store
    can, held the instance until at(10)."""
    await store.create_instance(start("a"))
    work = await claim_one(store, "a")
    scheduled = outcome(work, activities=[task("a", "a:1", 0)])
    holding = holder(store)
    if holding is not None:
        leased = await holding.commit_episode_holding(
            "host-a", work, scheduled, lease_activities=(at(60), 1), hold_until=at(10)
        )
    else:
        leased = await store.commit_episode("host-a", work, scheduled, lease_activities=(at(60), 1))
    if not leased:  # a backend that leases nothing on commit
        leased = await claim_activities(store, "host-a", T0, at(60), 10)
    return work, leased[0]


async def next_episode_on(store: Store, work: EpisodeWork) -> EpisodeWork:
    """The work of the episode that takes activity 0's result on a held instance: nothing
    claimed, the result not stored."""
    instance = await store.get_instance("a")
    assert instance is not None
    history = await store.get_history("a")
    return replace(work, instance=instance, history=history, messages=[completed(0)])


async def test_a_held_instance_takes_its_activity_result_with_no_claim(store: Store) -> None:
    work, leased = await held_for_one_activity(store)
    holding = holder(store)
    if holding is None:  # released by the commit: the result is stored, its episode claimed
        assert await store.complete_activity(leased, completed(0)) is not None
        taken = await claim_one(store, "a", owner="host-b", now=at(1))
        assert [m.event for m in taken.messages] == [completed(0).event]
        return
    assert await claim(store, owner="host-b", now=at(1)) == []
    again = await next_episode_on(store, work)
    await holding.commit_episode_holding("host-a", again, outcome(again), completes=leased)
    assert len(await store.get_history("a")) == 4
    assert await store.complete_activity(leased, completed(0)) is None  # consumed with it
    # Released: the next message is claimed at once.
    await store.send_message(Message(instance_id="a", event=raised("go")))
    taken = await claim_one(store, "a", owner="host-b", now=at(1))
    assert [m.event for m in taken.messages] == [raised("go")]


async def test_a_held_instance_can_finish_with_its_activitys_result(store: Store) -> None:
    # The last episode of a chain: it takes the result unstored and drops what is left of
    # the execution (as every finishing episode does), the task it completes included.
    work, leased = await held_for_one_activity(store)
    holding = holder(store)
    if holding is None:
        return
    again = await next_episode_on(store, work)
    done = outcome(again, Status.COMPLETED, drop_pending_work=True)
    await holding.commit_episode_holding("host-a", again, done, completes=leased)
    instance = await store.get_instance("a")
    assert instance is not None and instance.status is Status.COMPLETED
    assert len(await store.get_history("a")) == 4
    assert await store.complete_activity(leased, completed(0)) is None  # consumed with it


async def test_a_hold_keeps_claims_out_until_it_ends_and_then_loses(store: Store) -> None:
    work, leased = await held_for_one_activity(store)
    await store.send_message(Message(instance_id="a", event=raised("go")))
    holding = holder(store)
    if holding is None:  # nothing held: the event is claimed at once
        taken = await claim_one(store, "a", owner="host-b", now=at(1))
        assert [m.event for m in taken.messages] == [raised("go")]
        assert await store.complete_activity(leased, completed(0)) is not None
        return
    assert await claim(store, owner="host-b", now=at(9)) == []
    assert await store.next_due_at(at(9)) == at(10)  # its end wakes the claimers
    taken = await claim_one(store, "a", owner="host-b", now=at(10))
    assert [m.event for m in taken.messages] == [raised("go")]
    # The holder comes back too late: nothing is written.
    again = await next_episode_on(store, work)
    with pytest.raises(LeaseLostError):
        await holding.commit_episode_holding("host-a", again, outcome(again), completes=leased)
    assert len(await store.get_history("a")) == 2
    assert await store.complete_activity(leased, completed(0)) is not None  # still there


async def test_a_commit_does_not_hold_an_instance_with_messages_waiting(store: Store) -> None:
    await store.create_instance(start("a"))
    work = await claim_one(store, "a")
    await store.send_message(Message(instance_id="a", event=raised("go")))
    scheduled = outcome(work, activities=[task("a", "a:1", 0)])
    holding = holder(store)
    if holding is not None:
        await holding.commit_episode_holding(
            "host-a", work, scheduled, lease_activities=(at(60), 1), hold_until=at(10)
        )
    else:
        await store.commit_episode("host-a", work, scheduled, lease_activities=(at(60), 1))
    taken = await claim_one(store, "a", owner="host-b", now=at(1))
    assert [m.event for m in taken.messages] == [raised("go")]


async def test_a_commit_that_leases_its_activity_releases_the_instance(store: Store) -> None:
    """What every backend does, holder or not, when not asked to hold."""
    await store.create_instance(start("a"))
    work = await claim_one(store, "a")
    scheduled = outcome(work, activities=[task("a", "a:1", 0)])
    await store.commit_episode("host-a", work, scheduled, lease_activities=(at(60), 1))
    await store.send_message(Message(instance_id="a", event=raised("go")))
    taken = await claim_one(store, "a", owner="host-b", now=at(1))
    assert [m.event for m in taken.messages] == [raised("go")]


async def test_completing_a_task_that_is_gone_writes_nothing(store: Store) -> None:
    work, leased = await held_for_one_activity(store)
    assert await store.complete_activity(leased, completed(0)) is not None  # another run did
    holding = holder(store)
    if holding is None:
        assert await store.complete_activity(leased, completed(0)) is None
        return
    again = await next_episode_on(store, work)
    with pytest.raises(LeaseLostError):
        await holding.commit_episode_holding("host-a", again, outcome(again), completes=leased)
    assert len(await store.get_history("a")) == 2


# --- operations: rewind delivery, counting, retention, startup report --------------------------


async def finish_at(store: Store, instance_id: str, status: Status, when: datetime) -> None:
    """Claim `instance_id` and end it in `status`, finished (last updated) at `when`."""
    work = next(
        w for w in await claim(store, now=when, limit=100) if w.instance.instance_id == instance_id
    )
    result = outcome(work, status)
    finished = replace(result, instance=replace(result.instance, last_updated_at=when))
    await store.commit_episode("host-a", work, finished)


def rewound() -> HistoryEvent:
    return event(EventType.EXECUTION_REWOUND, reason="fixed")


async def test_rewind_message_is_delivered_to_failed_instances_only(store: Store) -> None:
    assert await store.send_message(Message(instance_id="x", event=rewound())) == "not_found"
    await store.create_instance(start("a"))
    assert await store.send_message(Message(instance_id="a", event=rewound())) == "gone"
    await finish_at(store, "a", Status.FAILED, at(1))
    await store.create_instance(start("b"))
    await finish_at(store, "b", Status.COMPLETED, at(1))

    assert await store.send_message(Message(instance_id="a", event=raised("e"))) == "gone"
    assert await store.send_message(Message(instance_id="b", event=rewound())) == "gone"
    assert await store.send_message(Message(instance_id="a", event=rewound())) == "sent"
    work = await claim_one(store, "a", now=at(2))
    assert [m.event for m in work.messages] == [rewound()]
    assert work.instance.status is Status.FAILED


async def test_count_instances(store: Store) -> None:
    await populate(store)
    assert await store.count_instances(InstanceQuery()) == 25
    assert await store.count_instances(InstanceQuery(top=1)) == 25
    assert await store.count_instances(InstanceQuery(statuses=[Status.COMPLETED])) == 5
    assert await store.count_instances(InstanceQuery(name="Odd", instance_id_prefix="q-1")) == 5
    assert await store.count_instances(InstanceQuery(created_from=T0 + 20 * MINUTE)) == 5
    assert await store.count_instances(InstanceQuery(name="Nope")) == 0


async def test_purge_finished_in_bounded_batches(store: Store) -> None:
    old, recent = at(0), at(3600)
    for i, (status, when) in enumerate(
        [
            (Status.COMPLETED, old),
            (Status.COMPLETED, old),
            (Status.COMPLETED, old),
            (Status.COMPLETED, recent),
            (Status.FAILED, old),
            (Status.TERMINATED, old),
        ]
    ):
        await store.create_instance(start(f"f{i}"))
        await finish_at(store, f"f{i}", status, when)
    await store.create_instance(start("running"))
    await episode(store, "running", now=at(10))
    cutoff = at(60)

    assert await store.oldest_finished(Status.COMPLETED) == old
    assert await store.oldest_finished(Status.CANCELED) is None
    assert await store.purge_finished(Status.COMPLETED, cutoff, 2) == 2
    assert await store.purge_finished(Status.COMPLETED, cutoff, 2) == 1
    assert await store.purge_finished(Status.COMPLETED, cutoff, 2) == 0
    assert await store.oldest_finished(Status.COMPLETED) == recent
    assert [i for i in ("f0", "f1", "f2") if await store.get_instance(i)] == []
    assert await store.get_history("f0") == []
    for kept in ("f3", "f4", "f5", "running"):
        assert await store.get_instance(kept) is not None, kept

    # A failed instance whose episode is in flight (e.g. being rewound) is left alone.
    assert await store.send_message(Message(instance_id="f4", event=rewound())) == "sent"
    work = await claim_one(store, "f4", now=at(100))
    assert await store.purge_finished(Status.FAILED, cutoff, 10) == 0
    await store.abandon_episode("host-a", work)
    assert await store.purge_finished(Status.FAILED, cutoff, 10) == 1
    assert await store.purge_finished(Status.TERMINATED, cutoff, 10) == 1
    with pytest.raises(ValueError, match="finished"):
        await store.purge_finished(Status.RUNNING, cutoff, 10)


async def test_overdue_timers(store: Store) -> None:
    await store.create_instance(start("a"))
    await episode(
        store, "a", messages=[timer("a", "a:1", 1, at(50)), timer("a", "a:1", 2, at(500))]
    )
    await store.create_instance(start("b"))
    await episode(store, "b", messages=[timer("b", "b:1", 1, at(20))])
    await store.send_message(Message(instance_id="b", event=raised("e")))

    assert await store.overdue_timers(at(10), 10) == []
    due = await store.overdue_timers(at(100), 10)
    assert [(m.instance_id, m.event.timer_id, m.visible_at) for m in due] == [
        ("b", 1, at(20)),
        ("a", 1, at(50)),
    ]
    assert all(m.event.type is EventType.TIMER_FIRED and m.message_id for m in due)
    assert len(await store.overdue_timers(at(1000), 1)) == 1


async def test_hub_summary(store: Store) -> None:
    empty = await store.hub_summary(T0)
    assert (empty.instances, empty.ready_messages, empty.ready_activities) == ({}, 0, 0)
    assert (empty.oldest_ready, empty.next_timer) == (None, None)
    assert empty.running_activities in (0, None)

    await store.create_instance(start("a"))
    await episode(
        store,
        "a",
        activities=[task("a", "a:1", 0), task("a", "a:1", 1)],
        messages=[timer("a", "a:1", 2, at(30))],
    )
    await store.create_instance(start("b", name="Other"))
    await store.create_instance(start("c", name="Other"))
    [running] = await claim_activities(store, "host-a", T0, at(60), 1)

    summary = await store.hub_summary(at(1))
    assert summary.instances == {("Orch", Status.RUNNING): 1, ("Other", Status.PENDING): 2}
    # Queue-based backends count every queued message (the timer too) and every work item.
    assert summary.ready_messages >= 2
    if summary.running_activities is None:
        assert summary.ready_activities == 2
    else:
        assert (summary.ready_activities, summary.running_activities) == (1, 1)
        assert summary.ready_messages == 2
        assert summary.oldest_ready == T0
        assert summary.next_timer == at(30)
    assert summary.oldest_ready is not None
    assert summary.next_timer in (at(30), None)  # None: a queue that hides its timers

    assert await store.complete_activity(running, Message(instance_id="a", event=raised("r")))
    await store.open_host("host-a", at(2))
    after = await store.hub_summary(at(40))
    assert after.live_hosts == 1
    assert after.ready_messages >= 4  # b's and c's starts, the result, the due timer
    assert after.next_timer is None
