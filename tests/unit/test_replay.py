"""`dfhost.orchestration.replay.run_episode` against hand-built histories, one action kind at a
time.

Every test plays the host with `HistoryBuilder` and asserts the exact `EpisodeResult`: the new
scheduling events, the work to dispatch (with the SDK's task ids), cancelled timers, custom
status and outcome.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Generator
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, TypeAlias

import azure.durable_functions as df
import pytest

from dfhost.history import EventType, HistoryEvent
from dfhost.orchestration import replay
from dfhost.orchestration.episode import (
    ActivityCall,
    Completed,
    ContinuedAsNew,
    EntityMessage,
    EpisodeInput,
    EpisodeResult,
    Failed,
    Running,
    SubOrchestrationCall,
    TimerRequest,
    entity_request_id,
)
from dfhost.orchestration.replay import run_episode
from dfhost.orchestration.session import SessionCache
from tests import builders
from tests.builders import T0, HistoryBuilder

# The SDK's one-time advisory for `df_loads` without an expected type fires on the first
# result any orchestrator receives in the process; it is meant for app authors, not a failure.
pytestmark = pytest.mark.filterwarnings(
    "ignore:azure.functions df_loads was called without expected_type:DeprecationWarning"
)

Ctx: TypeAlias = df.DurableOrchestrationContext
Orchestrator = Generator[Any, Any, Any]


@pytest.fixture(autouse=True, params=["full replay", "incremental"])
def replay_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs twice: replaying whole histories, and continuing cached sessions."""
    monkeypatch.setattr(builders, "INCREMENTAL", request.param == "incremental")
    return str(request.param)


def secs(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


def scheduled(event_id: int, name: str, input: str = "null", at: datetime = T0) -> HistoryEvent:
    return HistoryEvent(
        type=EventType.TASK_SCHEDULED, timestamp=at, event_id=event_id, name=name, input=input
    )


def timer_created(event_id: int, fire_at: datetime, at: datetime = T0) -> HistoryEvent:
    return HistoryEvent(
        type=EventType.TIMER_CREATED, timestamp=at, event_id=event_id, fire_at=fire_at
    )


def sub_created(
    event_id: int,
    name: str,
    instance_id: str,
    input: str = "null",
    version: str | None = None,
    at: datetime = T0,
) -> HistoryEvent:
    return HistoryEvent(
        type=EventType.SUB_ORCHESTRATION_CREATED,
        timestamp=at,
        event_id=event_id,
        name=name,
        version=version,
        input=input,
        instance_id=instance_id,
    )


def running(*events: HistoryEvent, work: list[Any] | None = None, **kw: Any) -> EpisodeResult:
    return EpisodeResult(Running(), list(events), work or [], **kw)


def completed(value: Any, **kw: Any) -> EpisodeResult:
    return EpisodeResult(Completed(json.dumps(value)), **kw)


NOTHING = EpisodeResult(Running())


# --- activities ---------------------------------------------------------------------------------


def chain(ctx: Ctx) -> Orchestrator:
    a = yield ctx.call_activity("Hello", "Tokyo")
    b = yield ctx.call_activity("Hello", a)
    c = yield ctx.call_activity("Bye", {"from": b})
    return [a, b, c]


def test_chaining_schedules_each_activity_once_as_the_previous_one_completes() -> None:
    b = HistoryBuilder(chain, input=json.dumps("x"))

    assert b.start() == running(
        scheduled(0, "Hello", '"Tokyo"'), work=[ActivityCall(0, "Hello", '"Tokyo"')]
    )
    b.advance(5)
    assert b.complete(0, "Hello Tokyo!") == running(
        scheduled(1, "Hello", '"Hello Tokyo!"', at=secs(5)),
        work=[ActivityCall(1, "Hello", '"Hello Tokyo!"')],
    )
    b.advance(5)
    assert b.complete(1, "Hi") == running(
        scheduled(2, "Bye", '{"from": "Hi"}', at=secs(10)),
        work=[ActivityCall(2, "Bye", '{"from": "Hi"}')],
    )
    assert b.complete(2, 3) == completed(["Hello Tokyo!", "Hi", 3])
    assert b.types() == [
        EventType.ORCHESTRATOR_STARTED,
        EventType.EXECUTION_STARTED,
        EventType.TASK_SCHEDULED,
        EventType.ORCHESTRATOR_COMPLETED,
        *[
            EventType.ORCHESTRATOR_STARTED,
            EventType.TASK_COMPLETED,
            EventType.TASK_SCHEDULED,
            EventType.ORCHESTRATOR_COMPLETED,
        ]
        * 2,
        EventType.ORCHESTRATOR_STARTED,
        EventType.TASK_COMPLETED,
        EventType.ORCHESTRATOR_COMPLETED,
    ]


def test_the_session_cache_keeps_within_its_event_budget_least_recent_out() -> None:
    cache = SessionCache(max_sessions=100, max_events=25)
    i0, i1, i2 = (
        HistoryBuilder(chain, input=json.dumps("x"), instance_id=f"i{n}") for n in range(3)
    )
    for b in (i0, i1, i2):
        b.sessions = cache
        b.start()  # a session holds 3 events
        b.complete(0, "Hello Tokyo!")  # then 7: 21 in all
    assert [cache.held(b.instance_id) for b in (i0, i1, i2)] == [("exec-1", 7)] * 3
    i0.complete(1, "Hi")  # 11: 25 in all, within the budget
    i1.complete(1, "Hi")  # 29: i2, the least recently used, goes
    assert [cache.held(b.instance_id) for b in (i0, i1, i2)] == [
        ("exec-1", 11),
        ("exec-1", 11),
        None,
    ]
    hits = cache.hits
    # Evicted, i2 replays in full, the same way, and now i0 is the least recent.
    assert i2.complete(1, "Hi") == running(
        scheduled(2, "Bye", '{"from": "Hi"}'), work=[ActivityCall(2, "Bye", '{"from": "Hi"}')]
    )
    assert cache.hits == hits
    assert [cache.held(b.instance_id) for b in (i0, i1, i2)] == [
        None,
        ("exec-1", 11),
        ("exec-1", 11),
    ]


def test_an_episode_without_a_relevant_event_schedules_nothing_again() -> None:
    b = HistoryBuilder(chain)
    b.start()
    assert b.raise_event("Unrelated", 1) == NOTHING


def fan_out(ctx: Ctx) -> Orchestrator:
    tasks = [ctx.call_activity("Work", i) for i in range(4)]
    results = yield ctx.task_all(tasks)
    return results


def test_fan_out_numbers_the_tasks_in_one_episode_and_fans_in_across_episodes() -> None:
    b = HistoryBuilder(fan_out)

    assert b.start() == running(
        *[scheduled(i, "Work", str(i)) for i in range(4)],
        work=[ActivityCall(i, "Work", str(i)) for i in range(4)],
    )
    assert b.deliver(b.completed(2, "r2"), b.completed(0, "r0")) == NOTHING
    assert b.complete(3, "r3") == NOTHING
    assert b.complete(1, "r1") == completed(["r0", "r1", "r2", "r3"])


def test_fan_in_of_all_results_in_one_episode() -> None:
    b = HistoryBuilder(fan_out)
    b.start()
    assert b.deliver(*[b.completed(i, i * 10) for i in (3, 1, 2, 0)]) == completed([0, 10, 20, 30])


def test_fan_out_fails_on_the_first_failure() -> None:
    b = HistoryBuilder(fan_out)
    b.start()
    assert b.complete(0) == NOTHING
    result = b.fail(2, "Activity function 'Work' failed: nope", "trace")
    assert isinstance(result.outcome, Failed)
    assert result.outcome.message == (
        "Orchestrator function 'orch' failed: Activity function 'Work' failed: nope \n trace"
    )


def first_wins(ctx: Ctx) -> Orchestrator:
    fast = ctx.call_activity("Fast")
    slow = ctx.call_activity("Slow")
    winner = yield ctx.task_any([fast, slow])
    return ["fast" if winner == fast else "slow", winner.result]


def test_task_any_returns_the_first_completion() -> None:
    b = HistoryBuilder(first_wins)
    assert b.start() == running(
        scheduled(0, "Fast"),
        scheduled(1, "Slow"),
        work=[ActivityCall(0, "Fast", "null"), ActivityCall(1, "Slow", "null")],
    )
    assert b.complete(1, "s") == completed(["slow", "s"])


def test_task_any_takes_the_earlier_of_two_completions_in_one_episode() -> None:
    b = HistoryBuilder(first_wins)
    b.start()
    assert b.deliver(b.completed(1, "s"), b.completed(0, "f")) == completed(["slow", "s"])


# --- retries ------------------------------------------------------------------------------------


def flaky(max_attempts: int) -> Callable[[Ctx], Orchestrator]:
    def orchestrator(ctx: Ctx) -> Orchestrator:
        result = yield ctx.call_activity_with_retry(
            "Flaky", df.RetryOptions(1000, max_attempts), "x"
        )
        return result

    return orchestrator


def test_retry_schedules_timers_and_reruns_until_success() -> None:
    b = HistoryBuilder(flaky(3))

    assert b.start() == running(
        scheduled(0, "Flaky", '"x"'), work=[ActivityCall(0, "Flaky", '"x"')]
    )
    b.advance(5)
    assert b.fail(0, "boom1", "tb1") == running(
        timer_created(1, secs(6), at=secs(5)), work=[TimerRequest(1, secs(6))]
    )
    assert b.fire_timer(1) == running(
        scheduled(2, "Flaky", '"x"', at=secs(6)), work=[ActivityCall(2, "Flaky", '"x"')]
    )
    b.advance(2)
    assert b.fail(2, "boom2", "tb2") == running(
        timer_created(3, secs(9), at=secs(8)), work=[TimerRequest(3, secs(9))]
    )
    assert b.fire_timer(3) == running(
        scheduled(4, "Flaky", '"x"', at=secs(9)), work=[ActivityCall(4, "Flaky", '"x"')]
    )
    assert b.complete(4, "ok") == completed("ok")


def test_retry_exhausted_fires_a_dummy_timer_at_once_then_fails_with_the_last_error() -> None:
    b = HistoryBuilder(flaky(2))
    b.start()
    assert b.fail(0, "boom1", "tb1") == running(
        timer_created(1, secs(1)), work=[TimerRequest(1, secs(1))]
    )
    assert b.fire_timer(1).work == [ActivityCall(2, "Flaky", '"x"')]
    b.advance(3)
    # The last attempt failed: one more timer, due right now (DTFx's back-compat dummy timer).
    assert b.fail(2, "boom2", "tb2") == running(
        timer_created(3, secs(4), at=secs(4)), work=[TimerRequest(3, secs(4))]
    )
    result = b.fire_timer(3)
    assert (result.work, result.events) == ([], [])
    assert isinstance(result.outcome, Failed)
    assert result.outcome.message == "Orchestrator function 'orch' failed: boom2 \n tb2"
    assert "boom1" not in result.outcome.message


def test_a_caught_retry_failure_lets_the_orchestrator_go_on() -> None:
    def orchestrator(ctx: Ctx) -> Orchestrator:
        try:
            yield ctx.call_activity_with_retry("Flaky", df.RetryOptions(1000, 1))
        except Exception as exc:
            fallback = yield ctx.call_activity("Fallback", str(exc))
            return fallback

    b = HistoryBuilder(orchestrator)
    b.start()
    assert b.fail(0, "boom", "tb").work == [TimerRequest(1, T0)]  # max 1: dummy timer only
    assert b.fire_timer(1) == running(
        scheduled(2, "Fallback", '"boom \\n tb"'),
        work=[ActivityCall(2, "Fallback", '"boom \\n tb"')],
    )
    assert b.complete(2, "plan B") == completed("plan B")


def test_retry_ids_interleave_with_tasks_yielded_together() -> None:
    def orchestrator(ctx: Ctx) -> Orchestrator:
        a = ctx.call_activity_with_retry("A", df.RetryOptions(1000, 3))
        other = ctx.call_activity("B")
        timer = ctx.create_timer(ctx.current_utc_datetime + timedelta(seconds=30))
        results = yield ctx.task_all([a, other, timer])
        return results

    b = HistoryBuilder(orchestrator)
    assert b.start() == running(
        scheduled(0, "A"),
        scheduled(1, "B"),
        timer_created(2, secs(30)),
        work=[
            ActivityCall(0, "A", "null"),
            ActivityCall(1, "B", "null"),
            TimerRequest(2, secs(30)),
        ],
    )
    assert b.fail(0, "x") == running(timer_created(3, secs(1)), work=[TimerRequest(3, secs(1))])
    assert b.complete(1, "b") == NOTHING
    assert b.fire_timer(3) == running(
        scheduled(4, "A", at=secs(1)), work=[ActivityCall(4, "A", "null")]
    )
    assert b.fire_timer(2) == NOTHING
    assert b.complete(4, "a") == completed(["a", "b", None])


# --- durable timers -----------------------------------------------------------------------------


def test_timer_fires_at_current_time_plus_delta_and_later_code_sees_the_episode_time() -> None:
    def orchestrator(ctx: Ctx) -> Orchestrator:
        yield ctx.create_timer(ctx.current_utc_datetime + timedelta(seconds=30))
        after = ctx.current_utc_datetime
        yield ctx.create_timer(after + timedelta(minutes=1))
        return after.isoformat()

    b = HistoryBuilder(orchestrator)
    assert b.start() == running(timer_created(0, secs(30)), work=[TimerRequest(0, secs(30))])
    b.advance(31)  # the timer is delivered a second late
    assert b.fire_timer(0) == running(
        timer_created(1, secs(91), at=secs(31)), work=[TimerRequest(1, secs(91))]
    )
    assert b.fire_timer(1) == completed(secs(31).isoformat())


def test_a_naive_timer_datetime_is_taken_as_utc() -> None:
    def orchestrator(ctx: Ctx) -> Orchestrator:
        yield ctx.create_timer(datetime(2024, 1, 1, 0, 5))

    b = HistoryBuilder(orchestrator)
    assert b.start().work == [TimerRequest(0, secs(300))]


def approval(ctx: Ctx) -> Orchestrator:
    event = ctx.wait_for_external_event("Approval")
    timeout = ctx.create_timer(ctx.current_utc_datetime + timedelta(minutes=5))
    winner = yield ctx.task_any([event, timeout])
    if winner == event:
        timeout.cancel()
        done = yield ctx.call_activity("Process", event.result)
        return done
    return "timeout"


def test_event_beats_the_timeout_and_the_timer_is_cancelled() -> None:
    b = HistoryBuilder(approval)
    assert b.start() == running(timer_created(0, secs(300)), work=[TimerRequest(0, secs(300))])
    b.advance(10)
    assert b.raise_event("Approval", {"by": "bob"}) == running(
        scheduled(1, "Process", '{"by": "bob"}', at=secs(10)),
        work=[ActivityCall(1, "Process", '{"by": "bob"}')],
        cancelled_timer_ids=[0],
    )
    assert b.complete(1, "approved") == completed("approved")


def test_timeout_beats_the_event() -> None:
    b = HistoryBuilder(approval)
    b.start()
    assert b.fire_timer(0) == completed("timeout")
    # an event raised after the timeout changes nothing
    assert b.raise_event("Approval", {"by": "late"}) == completed("timeout")


def test_a_timer_created_and_cancelled_in_one_episode_is_recorded_but_never_requested() -> None:
    def orchestrator(ctx: Ctx) -> Orchestrator:
        yield ctx.call_activity("Prepare")
        event = ctx.wait_for_external_event("Go")
        timeout = ctx.create_timer(ctx.current_utc_datetime + timedelta(minutes=5))
        winner = yield ctx.task_any([event, timeout])
        if winner == event:
            timeout.cancel()
        result = yield ctx.call_activity("Run")
        return result

    b = HistoryBuilder(orchestrator)
    b.start()
    b.advance(2)
    # "Go" arrived before the wait: the timer is created and loses the race in this episode.
    assert b.deliver(b.completed(0), b.event_raised("Go")) == running(
        timer_created(1, secs(302), at=secs(2)),
        scheduled(2, "Run", at=secs(2)),
        work=[ActivityCall(2, "Run", "null")],
    )
    assert b.complete(2, "ran") == completed("ran")


# --- external events ----------------------------------------------------------------------------


def test_waiting_for_an_event_takes_no_task_id() -> None:
    def orchestrator(ctx: Ctx) -> Orchestrator:
        value = yield ctx.wait_for_external_event("Approval")
        done = yield ctx.call_activity("Process", value)
        return done

    b = HistoryBuilder(orchestrator)
    assert b.start() == NOTHING
    assert b.raise_event("Approval", {"ok": True}) == running(
        scheduled(0, "Process", '{"ok": true}'), work=[ActivityCall(0, "Process", '{"ok": true}')]
    )
    assert b.complete(0, 1) == completed(1)


def test_an_event_raised_before_its_wait_is_buffered() -> None:
    def orchestrator(ctx: Ctx) -> Orchestrator:
        first = yield ctx.call_activity("First")
        value = yield ctx.wait_for_external_event("Go")
        return [first, value]

    b = HistoryBuilder(orchestrator)
    b.start()
    assert b.raise_event("Go", 42) == NOTHING
    assert b.complete(0, "a") == completed(["a", 42])


def test_two_different_events() -> None:
    def orchestrator(ctx: Ctx) -> Orchestrator:
        values = yield ctx.task_all(
            [ctx.wait_for_external_event("A"), ctx.wait_for_external_event("B")]
        )
        return values

    b = HistoryBuilder(orchestrator)
    assert b.start() == NOTHING
    assert b.raise_event("B", "b") == NOTHING
    assert b.raise_event("C", "c") == NOTHING
    assert b.raise_event("A", "a") == completed(["a", "b"])


def test_an_event_without_payload_is_none() -> None:
    def orchestrator(ctx: Ctx) -> Orchestrator:
        value = yield ctx.wait_for_external_event("Ping")
        return {"value": value}

    b = HistoryBuilder(orchestrator)
    b.start()
    raised = HistoryEvent(type=EventType.EVENT_RAISED, timestamp=T0, name="Ping", input=None)
    assert b.deliver(raised) == completed({"value": None})


# --- continue-as-new ----------------------------------------------------------------------------


def test_continue_as_new_carries_the_input_json_text() -> None:
    def orchestrator(ctx: Ctx) -> Orchestrator:
        n = ctx.get_input()
        yield ctx.call_activity("Tick", n)
        ctx.continue_as_new({"n": n + 1})

    b = HistoryBuilder(orchestrator, input="1")
    assert b.start().work == [ActivityCall(0, "Tick", "1")]
    assert b.complete(0) == EpisodeResult(ContinuedAsNew('{"n": 2}', []))


def test_work_scheduled_after_continue_as_new_is_dropped() -> None:
    def orchestrator(ctx: Ctx) -> Orchestrator:
        yield ctx.call_activity("Tick")
        ctx.continue_as_new(None)
        yield ctx.create_timer(ctx.current_utc_datetime + timedelta(minutes=10))
        yield ctx.call_activity("Never")

    b = HistoryBuilder(orchestrator)
    b.start()
    assert b.complete(0) == EpisodeResult(ContinuedAsNew("null", []))


def test_continue_as_new_from_a_plain_function() -> None:
    def orchestrator(ctx: Ctx) -> None:
        ctx.continue_as_new(5)

    assert HistoryBuilder(orchestrator).start() == EpisodeResult(ContinuedAsNew("5", []))


def test_events_no_wait_consumed_before_continue_as_new_are_dropped_as_on_azure() -> None:
    """The extension keeps events no wait asked for yet in a buffer that continue_as_new
    discards; DTFx carries only the events that arrive after the orchestrator called it."""

    def orchestrator(ctx: Ctx) -> Orchestrator:
        value = yield ctx.wait_for_external_event("A")
        ctx.continue_as_new(value)

    b = HistoryBuilder(orchestrator)
    b.start()
    b.advance(1)
    c = b.event_raised("C", "nobody waits for me")
    assert b.deliver(c) == NOTHING
    b.advance(1)
    early = b.event_raised("B", 0)
    a1, other, a2 = b.event_raised("A", 1), b.event_raised("B", 2), b.event_raised("A", 3)
    result = b.deliver(early, a1, other, a2)
    assert result == EpisodeResult(ContinuedAsNew("1", [other, a2], [c, early]))
    # One warning line per dropped event, naming the instance and the event.
    dropped = [p for p in result.pitfalls if p.kind == "event dropped"]
    assert [p.every_time for p in dropped] == [True, True]
    assert "instance 'inst-1' dropped its event 'C'" in dropped[0].message
    assert "instance 'inst-1' dropped its event 'B'" in dropped[1].message
    assert "continue_as_new" in dropped[0].message


def test_events_after_an_immediate_continue_as_new_are_carried() -> None:
    def generator(ctx: Ctx) -> Orchestrator:
        ctx.continue_as_new(1)
        yield ctx.call_activity("never")

    def plain(ctx: Ctx) -> None:
        ctx.continue_as_new(1)

    for orchestrator in (generator, plain):
        b = HistoryBuilder(orchestrator)
        started = HistoryEvent(
            type=EventType.EXECUTION_STARTED,
            timestamp=T0,
            name="orch",
            instance_id="inst-1",
            execution_id="exec-1",
        )
        raised = b.event_raised("A", 1)
        result = b.deliver(started, raised)
        assert result == EpisodeResult(ContinuedAsNew("1", [raised], []))
        assert not [p for p in result.pitfalls if p.kind == "event dropped"]


def test_an_event_that_lost_the_race_to_continue_as_new_is_carried() -> None:
    def orchestrator(ctx: Ctx) -> Orchestrator:
        event = ctx.wait_for_external_event("A")
        timeout = ctx.create_timer(ctx.current_utc_datetime + timedelta(seconds=10))
        winner = yield ctx.task_any([event, timeout])
        if winner == event:
            timeout.cancel()
            return event.result
        ctx.continue_as_new(None)

    b = HistoryBuilder(orchestrator)
    b.start()
    b.advance(10)
    raised = b.event_raised("A", 1)
    # The timer fired first: the wait never received "A", so it goes to the next generation.
    assert b.deliver(b.timer_fired(0), raised) == EpisodeResult(ContinuedAsNew("null", [raised]))


def load_after_continue_orchestrator() -> ModuleType:
    path = (
        Path(__file__).resolve().parents[1] / "apps/after_continue_v1/loop-orchestrator/__init__.py"
    )
    spec = importlib.util.spec_from_file_location("after_continue_loop_orchestrator", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_eternal_loop_with_code_after_continue_as_new() -> None:
    loop = load_after_continue_orchestrator()
    b = HistoryBuilder(loop.main.orchestrator_function, name="loop-orchestrator")

    assert b.start() == running(
        scheduled(0, "loop-activity"), work=[ActivityCall(0, "loop-activity", "null")]
    )
    b.advance(5)
    assert b.complete(0) == running(
        timer_created(1, secs(65), at=secs(5)), work=[TimerRequest(1, secs(65))]
    )
    # It goes on after continue_as_new (a deadline timer, a task_any): none of that may run.
    assert b.fire_timer(1) == EpisodeResult(ContinuedAsNew("null", []))


# --- sub-orchestrations -------------------------------------------------------------------------


def test_sub_orchestrations_ids_versions_results_and_caught_failures() -> None:
    def orchestrator(ctx: Ctx) -> Orchestrator:
        a = yield ctx.call_sub_orchestrator("Child", {"a": 1})
        b = yield ctx.call_sub_orchestrator("Child", None, instance_id="c1", version="2.0")
        try:
            yield ctx.call_sub_orchestrator("Child")
        except Exception as exc:
            return [a, b, str(exc)]

    b = HistoryBuilder(orchestrator, execution_id="ex9")
    assert b.start() == running(
        sub_created(0, "Child", "ex9:0", '{"a": 1}'),
        work=[SubOrchestrationCall(0, "Child", "ex9:0", '{"a": 1}', None)],
    )
    assert b.complete_sub(0, {"r": 1}) == running(
        sub_created(1, "Child", "c1", version="2.0"),
        work=[SubOrchestrationCall(1, "Child", "c1", "null", "2.0")],
    )
    assert b.complete_sub(1, 2) == running(
        sub_created(2, "Child", "ex9:2"),
        work=[SubOrchestrationCall(2, "Child", "ex9:2", "null", None)],
    )
    assert b.fail_sub(2, "Orchestrator function 'Child' failed: bad", "tb") == completed(
        [{"r": 1}, 2, "Orchestrator function 'Child' failed: bad \n tb"]
    )


def test_an_uncaught_sub_orchestration_failure_fails_the_parent() -> None:
    def orchestrator(ctx: Ctx) -> Orchestrator:
        result = yield ctx.call_sub_orchestrator("Child")
        return result

    b = HistoryBuilder(orchestrator)
    b.start()
    result = b.fail_sub(0, "Orchestrator function 'Child' failed: bad", "tb")
    assert isinstance(result.outcome, Failed)
    assert result.outcome.message == (
        "Orchestrator function 'orch' failed: Orchestrator function 'Child' failed: bad \n tb"
    )
    assert (result.events, result.work) == ([], [])


def test_sub_orchestrator_with_retry() -> None:
    def orchestrator(ctx: Ctx) -> Orchestrator:
        result = yield ctx.call_sub_orchestrator_with_retry(
            "Child", df.RetryOptions(500, 2), "i", instance_id="kid", version="v1"
        )
        return result

    b = HistoryBuilder(orchestrator)
    assert b.start() == running(
        sub_created(0, "Child", "kid", '"i"', "v1"),
        work=[SubOrchestrationCall(0, "Child", "kid", '"i"', "v1")],
    )
    after_half_a_second = T0 + timedelta(milliseconds=500)
    assert b.fail_sub(0, "x") == running(
        timer_created(1, after_half_a_second), work=[TimerRequest(1, after_half_a_second)]
    )
    assert b.fire_timer(1) == running(
        sub_created(2, "Child", "kid", '"i"', "v1", at=after_half_a_second),
        work=[SubOrchestrationCall(2, "Child", "kid", '"i"', "v1")],
    )
    assert b.complete_sub(2, "ok") == completed("ok")


# --- status, output and failures ----------------------------------------------------------------


def test_custom_status_is_set_and_updated() -> None:
    def orchestrator(ctx: Ctx) -> Orchestrator:
        ctx.set_custom_status({"stage": 1})
        yield ctx.call_activity("A")
        ctx.set_custom_status("almost")
        ctx.set_custom_status(0)  # falsy values are kept (the SDK's own output drops them)
        yield ctx.call_activity("B")
        ctx.set_custom_status("done")
        return "ok"

    b = HistoryBuilder(orchestrator)
    assert b.start().custom_status == '{"stage": 1}'
    assert b.complete(0).custom_status == "0"
    assert b.complete(1) == completed("ok", custom_status='"done"')


def test_custom_status_is_none_until_set() -> None:
    assert HistoryBuilder(chain).start().custom_status is None


def test_custom_status_that_is_not_json_fails_the_orchestration() -> None:
    def orchestrator(ctx: Ctx) -> Orchestrator:
        ctx.set_custom_status({1, 2})
        yield ctx.call_activity("A")

    result = HistoryBuilder(orchestrator).start()
    assert isinstance(result.outcome, Failed)
    assert "custom status is not JSON-serializable" in result.outcome.message
    assert result.work == []


@pytest.mark.parametrize("value", [None, 0, "", "héllo", [1, {"a": None}], {"k": [True, 1.5]}])
def test_output_is_json_text(value: Any) -> None:
    def orchestrator(ctx: Ctx) -> Orchestrator:
        yield ctx.call_activity("A")
        return value

    b = HistoryBuilder(orchestrator)
    b.start()
    assert b.complete(0) == EpisodeResult(Completed(json.dumps(value)))


def test_a_plain_function_returning_a_value_completes() -> None:
    def orchestrator(ctx: Ctx) -> dict[str, Any]:
        return {"echo": ctx.get_input()}

    b = HistoryBuilder(orchestrator, input='"hi"')
    assert b.start() == completed({"echo": "hi"})


def test_an_orchestrator_exception_fails_with_message_and_traceback() -> None:
    def exploding(ctx: Ctx) -> Orchestrator:
        ctx.set_custom_status("about to fail")
        yield ctx.call_activity("A")
        raise ValueError("bad things")

    b = HistoryBuilder(exploding)
    b.start()
    result = b.complete(0)
    assert isinstance(result.outcome, Failed)
    assert result.outcome.message == "Orchestrator function 'orch' failed: bad things"
    # As the extension reports it ("Message: {error}, StackTrace: {stack}"), the stack holding
    # the orchestrator's frames and none of dfhost's or the SDK's.
    details = result.outcome.details
    assert details is not None
    assert details.startswith("Message: bad things, StackTrace:   File ")
    assert details.endswith(', in exploding\n    raise ValueError("bad things")\n')
    assert details.count("File ") == 1
    assert result.custom_status == '"about to fail"'
    assert (result.events, result.work) == ([], [])


def test_a_plain_function_raising_fails() -> None:
    def exploding(ctx: Ctx) -> None:
        raise KeyError("missing")

    result = HistoryBuilder(exploding, name="plain").start()
    assert isinstance(result.outcome, Failed)
    assert result.outcome.message == "Orchestrator function 'plain' failed: 'missing'"
    details = result.outcome.details
    assert details is not None
    assert details.startswith("Message: 'missing', StackTrace:   File ")
    assert details.endswith(', in exploding\n    raise KeyError("missing")\n')
    assert details.count("File ") == 1


def test_an_exception_without_message_is_named_by_its_type_as_the_sdk_does() -> None:
    def exploding(ctx: Ctx) -> Orchestrator:
        yield ctx.call_activity("A")
        raise RuntimeError

    b = HistoryBuilder(exploding)
    b.start()
    outcome = b.complete(0).outcome
    assert isinstance(outcome, Failed)
    # The SDK reports str(type(exception)) when the exception's text is empty.
    assert outcome.message == "Orchestrator function 'orch' failed: <class 'RuntimeError'>"


@pytest.mark.parametrize("plain", [False, True])
def test_a_non_json_return_value_fails_naming_its_type(plain: bool) -> None:
    class Point:
        pass

    def generator(ctx: Ctx) -> Orchestrator:
        yield ctx.call_activity("A")
        return Point()

    def function(ctx: Ctx) -> Point:
        return Point()

    b = HistoryBuilder(function if plain else generator)
    result = b.start()
    if not plain:
        result = b.complete(0)
    assert isinstance(result.outcome, Failed)
    message = "Object of type Point is not JSON serializable"
    assert result.outcome == Failed(
        f"Orchestrator function 'orch' failed: {message}", f"Message: {message}, StackTrace: "
    )


# --- context properties -------------------------------------------------------------------------


def test_version_input_and_ids_come_from_the_execution() -> None:
    def orchestrator(ctx: Ctx) -> dict[str, Any]:
        return {
            "version": ctx.version,
            "input": ctx.get_input(),
            "instance": ctx.instance_id,
            "parent": ctx.parent_instance_id,
            "now": ctx.current_utc_datetime.isoformat(),
        }

    b = HistoryBuilder(
        orchestrator,
        input=json.dumps({"city": "Tokyo", "n": [1, 2]}),
        version="1.2",
        instance_id="abc",
        parent_instance_id="dad",
        start=secs(7),
    )
    assert b.start() == completed(
        {
            "version": "1.2",
            "input": {"city": "Tokyo", "n": [1, 2]},
            "instance": "abc",
            "parent": "dad",
            "now": secs(7).isoformat(),
        }
    )


def test_version_and_input_default_to_none() -> None:
    def orchestrator(ctx: Ctx) -> list[Any]:
        return [ctx.version, ctx.get_input()]

    assert HistoryBuilder(orchestrator).start() == completed([None, None])


def test_is_replaying_is_true_for_old_events_only(replay_mode: str) -> None:
    seen: list[tuple[bool, bool]] = []

    def orchestrator(ctx: Ctx) -> Orchestrator:
        seen.append((ctx.is_replaying, replay.is_replaying()))
        yield ctx.call_activity("A")
        seen.append((ctx.is_replaying, replay.is_replaying()))
        yield ctx.call_activity("B")
        seen.append((ctx.is_replaying, replay.is_replaying()))
        yield ctx.call_activity("C")

    b = HistoryBuilder(orchestrator)
    b.start()
    assert seen == [(False, False)]
    seen.clear()
    b.complete(0)
    if replay_mode == "incremental":
        # A continued session doesn't re-run old code at all: nothing to replay.
        assert seen == [(False, False)]
    else:
        assert seen == [(True, True), (False, False)]
    seen.clear()
    b.complete(1)
    if replay_mode == "incremental":
        assert seen == [(False, False)]
    else:
        assert seen == [(True, True), (True, True), (False, False)]
    assert replay.is_replaying() is False  # outside an episode
    b.sessions = None  # a full replay (a cache miss) still marks old code as replaying
    seen.clear()
    b.complete(2)
    assert seen == [(True, True), (True, True), (True, True)]


def test_new_uuid_is_stable_across_replays() -> None:
    # Full replays only: the point is that re-running old code gives the same ids.
    seen: list[str] = []

    def orchestrator(ctx: Ctx) -> Orchestrator:
        seen.append(ctx.new_uuid())
        yield ctx.call_activity("A")
        seen.append(ctx.new_uuid())
        yield ctx.call_activity("B")

    b = HistoryBuilder(orchestrator, incremental=False)
    b.start()
    [first] = seen
    seen.clear()
    b.advance(3)
    b.complete(0)
    replayed, second = seen
    assert replayed == first
    assert second != first
    seen.clear()
    b.rerun()  # the same episode once more
    assert seen == [first, second]


# --- non-determinism ----------------------------------------------------------------------------


def two_steps(ctx: Ctx) -> Orchestrator:
    a = yield ctx.call_activity("A", "x")
    b = yield ctx.call_activity("B", "y")
    return [a, b]


def renamed(ctx: Ctx) -> Orchestrator:
    yield ctx.call_activity("A", "x")
    yield ctx.call_activity("B2", "y")


def timer_instead(ctx: Ctx) -> Orchestrator:
    yield ctx.call_activity("A", "x")
    yield ctx.create_timer(ctx.current_utc_datetime)


def other_input_kind(ctx: Ctx) -> Orchestrator:
    yield ctx.call_activity("A", "x")
    yield ctx.call_activity("B", {"y": 1})


def fewer_tasks(ctx: Ctx) -> Orchestrator:
    a = yield ctx.call_activity("A", "x")
    return a


@pytest.mark.parametrize(
    ("changed", "expected", "actual"),
    [
        (renamed, "call_activity('B')", "now schedules call_activity('B2')"),
        (timer_instead, "call_activity('B')", "now schedules create_timer()"),
        (other_input_kind, "call_activity('B', <string>)", "call_activity('B', <object>)"),
        (fewer_tasks, "call_activity('B')", "no longer schedules it"),
    ],
)
def test_a_changed_orchestrator_fails_as_non_deterministic(
    changed: Callable[[Ctx], Orchestrator], expected: str, actual: str
) -> None:
    b = HistoryBuilder(two_steps, instance_id="inst-7")
    b.start()
    b.complete(0, 1)
    assert b.scheduled(1) == scheduled(1, "B", '"y"')
    b.orchestrator = changed
    result = b.complete(1, 2)
    assert (result.events, result.work) == ([], [])
    assert isinstance(result.outcome, Failed)
    message = result.outcome.message
    assert message.startswith("NonDeterministicOrchestrationError: ")
    assert "instance 'inst-7'" in message
    assert "task 1" in message
    assert expected in message
    assert actual in message


def test_a_missing_task_is_non_deterministic_even_before_its_result() -> None:
    b = HistoryBuilder(two_steps)
    b.start()
    b.complete(0, 1)
    b.orchestrator = fewer_tasks
    outcome = b.raise_event("Unrelated").outcome
    assert isinstance(outcome, Failed)
    assert outcome.message.startswith("NonDeterministicOrchestrationError: instance 'inst-1'")


def test_the_same_input_kind_with_other_values_is_deterministic() -> None:
    def other_value(ctx: Ctx) -> Orchestrator:
        a = yield ctx.call_activity("A", "x")
        b = yield ctx.call_activity("B", "not y")
        return [a, b]

    b = HistoryBuilder(two_steps)
    b.start()
    b.complete(0, 1)
    b.orchestrator = other_value
    assert b.complete(1, 2) == completed([1, 2])


# --- entities -----------------------------------------------------------------------------------

COUNTER = "@counter@k"


def entity_sent(
    event_id: int, op: str, input: str = "null", *, signal: bool = False, at: datetime = T0
) -> HistoryEvent:
    """The EventSent dfhost records for `call_entity`/`signal_entity` at `event_id`."""
    return HistoryEvent(
        type=EventType.EVENT_SENT,
        timestamp=at,
        event_id=event_id,
        name=op,
        input=entity_message(event_id, op, input, signal=signal).request_message(
            "inst-1", "exec-1"
        ),
        instance_id=COUNTER,
    )


def entity_message(
    event_id: int, op: str, input: str = "null", *, signal: bool = False
) -> EntityMessage:
    request_id = entity_request_id("inst-1", "exec-1", event_id)
    return EntityMessage(event_id, COUNTER, op, input, request_id, signal)


def entity_response(b: HistoryBuilder, event_id: int, result: Any, error: bool = False) -> Any:
    """Deliver the entity's response to the call at `event_id` (an EventRaised named by the
    request id, whose input is the double-encoded ResponseMessage)."""
    body: dict[str, str] = {"result": json.dumps(result)}
    if error:
        body["exceptionType"] = "Error"
    request_id = entity_request_id("inst-1", "exec-1", event_id)
    return b.deliver(
        HistoryEvent(
            type=EventType.EVENT_RAISED, timestamp=b.now, name=request_id, input=json.dumps(body)
        )
    )


def signals_then_calls(ctx: Ctx) -> Orchestrator:
    counter = df.EntityId("Counter", "k")
    ctx.signal_entity(counter, "add", 5)
    first = yield ctx.call_entity(counter, "get")
    try:
        yield ctx.call_entity(counter, "fail", {"why": 1})
    except Exception as exc:
        return [first, str(exc)]
    return [first, None]


def test_entity_calls_are_sent_and_answered_by_request_id() -> None:
    b = HistoryBuilder(signals_then_calls)
    assert b.start() == running(
        entity_sent(0, "add", "5", signal=True),
        entity_sent(1, "get"),
        work=[entity_message(0, "add", "5", signal=True), entity_message(1, "get")],
    )
    assert entity_response(b, 1, 5) == running(
        entity_sent(2, "fail", '{"why": 1}'), work=[entity_message(2, "fail", '{"why": 1}')]
    )
    assert entity_response(b, 2, "nope", error=True) == completed([5, "nope"])


def test_entity_request_ids_are_stable_and_unique() -> None:
    same = entity_request_id("inst-1", "exec-1", 3)
    assert same == entity_request_id("inst-1", "exec-1", 3)
    others = {
        entity_request_id("inst-1", "exec-2", 3),
        entity_request_id("inst-2", "exec-1", 3),
        entity_request_id("inst-1", "exec-1", 4),
    }
    assert same not in others and len(others) == 3


def test_signals_take_ids_when_called_between_yielded_tasks() -> None:
    def mixed(ctx: Ctx) -> Orchestrator:
        a = yield ctx.call_activity("A")
        ctx.signal_entity(df.EntityId("Counter", "k"), "add", a)
        ctx.signal_entity(df.EntityId("Counter", "k"), "add", a)
        b = yield ctx.call_activity("B")
        return b

    b = HistoryBuilder(mixed)
    b.start()
    assert b.complete(0, 2) == running(
        entity_sent(1, "add", "2", signal=True),
        entity_sent(2, "add", "2", signal=True),
        scheduled(3, "B"),
        work=[
            entity_message(1, "add", "2", signal=True),
            entity_message(2, "add", "2", signal=True),
            ActivityCall(3, "B", "null"),
        ],
    )
    assert b.complete(3, "done") == completed("done")


def test_signals_of_the_last_episode_are_still_sent() -> None:
    def signal_and_return(ctx: Ctx) -> str:
        ctx.signal_entity(df.EntityId("Counter", "k"), "reset")
        return "bye"

    result = HistoryBuilder(signal_and_return).start()
    assert result == completed(
        "bye",
        events=[entity_sent(0, "reset", signal=True)],
        work=[entity_message(0, "reset", signal=True)],
    )


def test_a_different_entity_call_on_replay_is_nondeterministic() -> None:
    def other_operation(ctx: Ctx) -> Orchestrator:
        ctx.signal_entity(df.EntityId("Counter", "k"), "add", 5)
        value = yield ctx.call_entity(df.EntityId("Counter", "k"), "reset")
        return value

    b = HistoryBuilder(signals_then_calls)
    b.start()
    b.orchestrator = other_operation
    outcome = entity_response(b, 1, 5).outcome
    assert isinstance(outcome, Failed)
    assert outcome.message == (
        "NonDeterministicOrchestrationError: instance 'inst-1', task 1: the history has "
        "call_entity('@counter@k', 'get') but the orchestrator now schedules "
        "call_entity('@counter@k', 'reset'). Orchestrator code must make the same calls, in "
        "the same order, on every replay."
    )


def test_a_signal_replaced_by_an_activity_is_nondeterministic() -> None:
    def activity_instead(ctx: Ctx) -> Orchestrator:
        yield ctx.call_activity("add")
        value = yield ctx.call_entity(df.EntityId("Counter", "k"), "get")
        return value

    b = HistoryBuilder(signals_then_calls)
    b.start()
    b.orchestrator = activity_instead
    outcome = entity_response(b, 1, 5).outcome
    assert isinstance(outcome, Failed)
    assert "the history has signal_entity('@counter@k', 'add') but the orchestrator now " in (
        outcome.message
    )


def test_yielding_a_signal_fails_clearly() -> None:
    def waits_for_a_signal(ctx: Ctx) -> Orchestrator:
        yield ctx.signal_entity(df.EntityId("Counter", "k"), "add", 1)

    outcome = HistoryBuilder(waits_for_a_signal).start().outcome
    assert isinstance(outcome, Failed)
    assert outcome.message.startswith("signal_entity has no result to wait for")


# --- durable HTTP --------------------------------------------------------------------------------


def calls_http(ctx: Ctx) -> Orchestrator:
    response = yield ctx.call_http("POST", "https://example.com/x", {"a": 1}, {"X-A": "1"})
    return response["statusCode"]


def test_call_http_runs_as_the_built_in_activity() -> None:
    request = json.dumps(
        {
            "method": "POST",
            "uri": "https://example.com/x",
            "content": '{"a": 1}',
            "headers": {"X-A": "1"},
        }
    )
    b = HistoryBuilder(calls_http)
    assert b.start() == running(
        scheduled(0, "BuiltIn::HttpActivity", request),
        work=[ActivityCall(0, "BuiltIn::HttpActivity", request)],
    )
    response = {"statusCode": 201, "headers": {"a": "b"}, "content": ""}
    assert b.complete(0, response) == completed(201)


def test_call_http_replaced_by_an_activity_is_nondeterministic() -> None:
    def activity_instead(ctx: Ctx) -> Orchestrator:
        result = yield ctx.call_activity("Fetch", {})
        return result

    b = HistoryBuilder(calls_http)
    b.start()
    b.orchestrator = activity_instead
    outcome = b.complete(0, {}).outcome
    assert isinstance(outcome, Failed)
    assert "the history has call_http() but the orchestrator now schedules " in outcome.message


# --- run_episode itself -------------------------------------------------------------------------


def test_a_history_the_sdk_rejects_fails_instead_of_raising() -> None:
    b = HistoryBuilder(chain)
    episode = b.episode()
    broken = EpisodeInput(
        instance_id=episode.instance_id,
        execution_id=episode.execution_id,
        name=episode.name,
        input=episode.input,
        parent_instance_id=None,
        past=[],
        new=[
            HistoryEvent(type=EventType.EXECUTION_STARTED, timestamp=T0)
        ],  # no OrchestratorStarted
    )
    outcome = run_episode(chain, broken).outcome
    assert isinstance(outcome, Failed)
    assert outcome.message.startswith("dfhost could not build the orchestration context")


# --- arguments no task hub could store ------------------------------------------------------


def test_a_function_name_that_is_not_a_string_fails_the_orchestration() -> None:
    # Once stored, such an activity task made the commit fail on every retry: the instance
    # was stuck (SQLite: "type 'list' is not supported").
    def orchestrator(ctx: Ctx) -> Orchestrator:
        result = yield ctx.call_activity(["A"], 1)
        return result

    result = HistoryBuilder(orchestrator).start()
    assert isinstance(result.outcome, Failed)
    assert "The function name must be a non-empty string, not ['A']" in result.outcome.message
    assert result.work == []


def test_a_sub_orchestration_id_with_a_nul_fails_the_orchestration() -> None:
    # PostgreSQL refuses NUL in text: the parent's commit failed on every retry.
    def orchestrator(ctx: Ctx) -> Orchestrator:
        result = yield ctx.call_sub_orchestrator("Child", None, instance_id="kid\x00")
        return result

    result = HistoryBuilder(orchestrator).start()
    assert isinstance(result.outcome, Failed)
    assert "Instance ID 'kid\\x00' contains invalid characters: '\\x00'" in result.outcome.message
    assert result.work == []
