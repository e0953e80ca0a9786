"""Incremental episodes (continued sessions) must behave exactly like full replays.

Random orchestrations, made of every kind of step, are driven in lockstep by two builders
with identical deliveries in random order and batches: one replays the whole history each
episode, the other continues its cached session. Every episode's result must be the same.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from datetime import timedelta
from typing import Any

import azure.durable_functions as df
import pytest

from dfhost.orchestration.episode import (
    ActivityCall,
    EpisodeResult,
    Failed,
    Running,
    SubOrchestrationCall,
    TimerRequest,
)
from tests.builders import HistoryBuilder

Step = tuple[str, int]


def make_program(rng: random.Random) -> list[Step]:
    kinds = ["act", "fan", "timer", "race", "retry", "status", "sub", "catch"]
    return [(rng.choice(kinds), rng.randint(1, 4)) for _ in range(rng.randint(1, 7))]


def orchestrator_for(program: list[Step]) -> Any:
    def orchestrator(ctx: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        results: list[Any] = []
        for i, (kind, n) in enumerate(program):
            if kind == "act":
                results.append((yield ctx.call_activity("A", i)))
            elif kind == "fan":
                results.append((yield ctx.task_all([ctx.call_activity("F", j) for j in range(n)])))
            elif kind == "timer":
                yield ctx.create_timer(ctx.current_utc_datetime + timedelta(seconds=n))
                results.append("tick")
            elif kind == "race":
                timer = ctx.create_timer(ctx.current_utc_datetime + timedelta(seconds=n))
                event = ctx.wait_for_external_event(f"E{i}")
                winner = yield ctx.task_any([event, timer])
                if winner == event:
                    timer.cancel()
                    results.append(event.result)
                else:
                    results.append("timeout")
            elif kind == "retry":
                options = df.RetryOptions(1000, n)
                try:
                    results.append((yield ctx.call_activity_with_retry("R", options, i)))
                except Exception as exc:
                    results.append(f"gave up: {str(exc)[:20]}")
            elif kind == "status":
                ctx.set_custom_status({"step": i})
            elif kind == "sub":
                results.append((yield ctx.call_sub_orchestrator("Child", i)))
            else:
                try:
                    results.append((yield ctx.call_activity("X", i)))
                except Exception:
                    results.append("caught")
        return results

    return orchestrator


def comparable(result: EpisodeResult) -> tuple[Any, ...]:
    # Failure details hold tracebacks, whose frames differ between the two paths.
    outcome = result.outcome
    if isinstance(outcome, Failed):
        outcome = Failed(outcome.message)
    return (outcome, result.events, result.work, result.custom_status)


@pytest.mark.parametrize("seed", range(60))
def test_incremental_episodes_equal_full_replays(seed: int) -> None:
    rng = random.Random(seed)
    program = make_program(rng)
    orchestrator = orchestrator_for(program)
    full = HistoryBuilder(orchestrator, incremental=False)
    fast = HistoryBuilder(orchestrator, incremental=True)
    outstanding: list[Any] = []
    events = [f"E{i}" for i, (kind, _) in enumerate(program) if kind == "race"]
    result = full.start()
    assert comparable(fast.start()) == comparable(result)
    cancelled: set[int] = set()
    timers_with_message = {w.event_id for w in result.work if isinstance(w, TimerRequest)}
    for _ in range(120):
        if not isinstance(result.outcome, Running):
            break
        outstanding.extend(result.work)
        rng.shuffle(outstanding)
        batch, outstanding = outstanding[: rng.randint(1, 3)], outstanding[3:]
        deliveries = [delivery(full, item, rng) for item in batch]
        if events and rng.random() < 0.3:
            deliveries.append(full.event_raised(events.pop(rng.randrange(len(events))), "yes"))
        if not deliveries:
            deliveries.append(full.event_raised("unrelated", None))
        full.advance(rng.randint(0, 3))
        fast.now = full.now
        result = full.deliver(*deliveries)
        continued = fast.deliver(*deliveries)
        assert comparable(continued) == comparable(result), program
        # A full replay re-reports timers cancelled in earlier episodes, and timers created and
        # cancelled within one episode (which never got a message); deleting those again is
        # harmless. A continued session reports each timer that has a message once, in the
        # episode that cancelled it.
        reported = set(continued.cancelled_timer_ids)
        assert reported <= set(result.cancelled_timer_ids), program
        assert set(result.cancelled_timer_ids) & timers_with_message - cancelled <= reported
        cancelled |= reported
        timers_with_message |= {w.event_id for w in result.work if isinstance(w, TimerRequest)}
    # The lockstep proves nothing if the fast builder never continued a session.
    assert fast.sessions is not None
    assert fast.sessions.misses == 1  # only the first episode replays from scratch


def delivery(builder: HistoryBuilder, item: Any, rng: random.Random) -> Any:
    if isinstance(item, TimerRequest):
        builder.now = max(builder.now, item.fire_at)
        return builder.timer_fired(item.event_id)
    if isinstance(item, SubOrchestrationCall):
        return builder.sub_completed(item.event_id, f"child {item.input}")
    assert isinstance(item, ActivityCall)
    if item.name in ("R", "X") and rng.random() < 0.6:
        return builder.failed(item.event_id, "flaky", "tb")
    return builder.completed(item.event_id, f"{item.name}:{item.input}")
