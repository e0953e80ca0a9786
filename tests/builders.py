"""Test helpers that play the host's role around `dfhost.orchestration.replay.run_episode`.

`HistoryBuilder` keeps one execution's history the way the engine does: every call runs one
episode whose new events start with an OrchestratorStarted stamped with the builder's clock, and
then appends `new + result.events + [OrchestratorCompleted]` to the history. Outcomes other than
Running (completion, failure, continue-as-new) are not acted on: the history simply stops
growing in a meaningful way, which is all the replay tests need.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from dfhost.history import EventType, HistoryEvent
from dfhost.orchestration.episode import EpisodeInput, EpisodeResult
from dfhost.orchestration.replay import run_episode
from dfhost.orchestration.session import SessionCache

__all__ = ["T0", "HistoryBuilder", "fixed_clock"]

INCREMENTAL = False
"""New builders keep a session cache, so episodes after the first continue the suspended
generator instead of replaying (tests/unit/test_replay.py runs every test both ways)."""

T0 = datetime(2024, 1, 1, tzinfo=UTC)
"""The default start of every builder's clock."""


def fixed_clock(moment: datetime) -> Callable[[], datetime]:
    """A clock that always reads `moment` (a client whose instances get that creation time)."""
    return lambda: moment


class HistoryBuilder:
    """Runs an orchestrator episode by episode over a hand-built, growing history."""

    def __init__(
        self,
        orchestrator: Callable[..., Any],
        *,
        name: str = "orch",
        input: str | None = None,
        instance_id: str = "inst-1",
        execution_id: str = "exec-1",
        version: str | None = None,
        parent_instance_id: str | None = None,
        start: datetime = T0,
        input_type: type | None = None,
        incremental: bool | None = None,
    ) -> None:
        self.orchestrator = orchestrator
        use_sessions = INCREMENTAL if incremental is None else incremental
        self.sessions = SessionCache() if use_sessions else None
        self.name = name
        self.input = input
        self.instance_id = instance_id
        self.execution_id = execution_id
        self.version = version
        self.parent_instance_id = parent_instance_id
        self.input_type = input_type
        self.now = start
        self.history: list[HistoryEvent] = []
        """Every event of every episode so far, including the episode markers."""
        self.last_episode: EpisodeInput | None = None
        self.last_result: EpisodeResult | None = None

    # --- the clock ----------------------------------------------------------------------------

    def advance(self, seconds: float = 0, **delta: float) -> HistoryBuilder:
        """Move the episode clock forward (`advance(5)`, `advance(minutes=1)`)."""
        self.now += timedelta(seconds=seconds, **delta)
        return self

    # --- episodes -----------------------------------------------------------------------------

    def start(self) -> EpisodeResult:
        """Episode 1: [OrchestratorStarted, ExecutionStarted]."""
        assert not self.history, "start() must be the first episode"
        started = HistoryEvent(
            type=EventType.EXECUTION_STARTED,
            timestamp=self.now,
            name=self.name,
            version=self.version,
            input=self.input,
            instance_id=self.instance_id,
            execution_id=self.execution_id,
            parent_instance_id=self.parent_instance_id,
        )
        return self.deliver(started)

    def deliver(self, *events: HistoryEvent) -> EpisodeResult:
        """One episode whose new events are `events` (after the OrchestratorStarted)."""
        episode = self.episode(*events)
        result = run_episode(self.orchestrator, episode, self.input_type, self.sessions)
        self.history.extend(episode.new)
        self.history.extend(result.events)
        self.history.append(HistoryEvent(type=EventType.ORCHESTRATOR_COMPLETED, timestamp=self.now))
        self.last_episode = episode
        self.last_result = result
        return result

    def episode(self, *events: HistoryEvent) -> EpisodeInput:
        """The `EpisodeInput` the next episode would replay, without running it."""
        new = [HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=self.now), *events]
        return EpisodeInput(
            instance_id=self.instance_id,
            execution_id=self.execution_id,
            name=self.name,
            input=self.input,
            parent_instance_id=self.parent_instance_id,
            past=list(self.history),
            new=new,
        )

    def rerun(self) -> EpisodeResult:
        """Replay the last episode again from the same input (the history is left alone)."""
        assert self.last_episode is not None, "no episode has run yet"
        return run_episode(self.orchestrator, self.last_episode, self.input_type)

    def complete(self, task_id: int, result: Any = None) -> EpisodeResult:
        return self.deliver(self.completed(task_id, result))

    def fail(self, task_id: int, reason: str = "boom", details: str | None = None) -> EpisodeResult:
        return self.deliver(self.failed(task_id, reason, details))

    def complete_sub(self, task_id: int, result: Any = None) -> EpisodeResult:
        return self.deliver(self.sub_completed(task_id, result))

    def fail_sub(
        self, task_id: int, reason: str = "boom", details: str | None = None
    ) -> EpisodeResult:
        return self.deliver(self.sub_failed(task_id, reason, details))

    def fire_timer(self, timer_id: int) -> EpisodeResult:
        """Fire a timer; the clock first moves to its FireAt if that is still ahead."""
        fired = self.timer_fired(timer_id)
        assert fired.fire_at is not None
        self.now = max(self.now, fired.fire_at)
        return self.deliver(fired)

    def raise_event(self, name: str, value: Any = None) -> EpisodeResult:
        return self.deliver(self.event_raised(name, value))

    # --- events (stamped with the clock; pass them to `deliver`) --------------------------------

    def completed(self, task_id: int, result: Any = None) -> HistoryEvent:
        """TaskCompleted whose Result is `json.dumps(result)`."""
        return HistoryEvent(
            type=EventType.TASK_COMPLETED,
            timestamp=self.now,
            task_scheduled_id=task_id,
            result=json.dumps(result),
        )

    def failed(
        self, task_id: int, reason: str = "boom", details: str | None = None
    ) -> HistoryEvent:
        return HistoryEvent(
            type=EventType.TASK_FAILED,
            timestamp=self.now,
            task_scheduled_id=task_id,
            reason=reason,
            details=details,
        )

    def sub_completed(self, task_id: int, result: Any = None) -> HistoryEvent:
        return HistoryEvent(
            type=EventType.SUB_ORCHESTRATION_COMPLETED,
            timestamp=self.now,
            task_scheduled_id=task_id,
            result=json.dumps(result),
        )

    def sub_failed(
        self, task_id: int, reason: str = "boom", details: str | None = None
    ) -> HistoryEvent:
        return HistoryEvent(
            type=EventType.SUB_ORCHESTRATION_FAILED,
            timestamp=self.now,
            task_scheduled_id=task_id,
            reason=reason,
            details=details,
        )

    def timer_fired(self, timer_id: int) -> HistoryEvent:
        """TimerFired stamped at the FireAt of the matching TimerCreated in the history."""
        created = self.scheduled(timer_id)
        assert created.type is EventType.TIMER_CREATED, f"task {timer_id} is not a timer"
        assert created.fire_at is not None
        return HistoryEvent(
            type=EventType.TIMER_FIRED,
            timestamp=created.fire_at,
            timer_id=timer_id,
            fire_at=created.fire_at,
        )

    def event_raised(self, name: str, value: Any = None) -> HistoryEvent:
        """EventRaised whose Input is `json.dumps(value)`."""
        return HistoryEvent(
            type=EventType.EVENT_RAISED, timestamp=self.now, name=name, input=json.dumps(value)
        )

    # --- looking at the history ---------------------------------------------------------------

    def scheduled(self, event_id: int) -> HistoryEvent:
        """The scheduling event (TaskScheduled, TimerCreated, ...) recorded for `event_id`."""
        for e in self.history:
            if e.event_id == event_id:
                return e
        raise KeyError(f"no scheduling event with EventId {event_id} in the history")

    def types(self) -> list[EventType]:
        """The history's event types, in order."""
        return [e.type for e in self.history]
