"""Which held control-queue messages an episode gets (the consumer side of exactly-once).

A message can arrive twice (see `dfhost.store.azure`). It is dropped as void when it
belongs to another generation (the instance was replaced), epoch (its timers and activities were
dropped) or execution of the instance, or is a timer the instance cancelled; and as a
duplicate when its result is already in the history (a task or sub-orchestration answered,
a timer fired), or when the row lists its id as consumed. Ids are only recorded for messages
with no event id to dedupe by (events, terminate, suspend, ...), and for `DEDUPE_WINDOW`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from dfhost.history import EventType, HistoryEvent
from dfhost.store.azure.codec import InstanceRow
from dfhost.store.azure.queues import Held

__all__ = ["DEDUPE_WINDOW", "consumed_ids", "sift"]

DEDUPE_WINDOW = 15 * 60.0
"""Seconds a consumed message id is remembered (redeliveries come within a minute or so)."""
_RESULTS = {
    EventType.TASK_COMPLETED: "task",
    EventType.TASK_FAILED: "task",
    EventType.SUB_ORCHESTRATION_COMPLETED: "sub",
    EventType.SUB_ORCHESTRATION_FAILED: "sub",
}


def sift(
    row: InstanceRow, history: list[HistoryEvent], held: list[Held]
) -> tuple[list[Held], list[Held], set[int]]:
    """(messages to deliver, void or duplicate ones, cancelled timers among the latter)."""
    answered: set[tuple[str, int | None]] = {
        (_RESULTS[e.type], e.task_scheduled_id) for e in history if e.type in _RESULTS
    }
    fired = {e.timer_id for e in history if e.type is EventType.TIMER_FIRED}
    keep: list[Held] = []
    drop: list[Held] = []
    cancelled: set[int] = set()
    for h in held:
        env = h.envelope
        event = env.event
        assert event is not None
        void = (
            (env.generation is not None and env.generation != row.generation)
            or (env.epoch is not None and env.epoch != row.epoch)
            or (env.execution_id is not None and env.execution_id != row.instance.execution_id)
        )
        if event.type is EventType.TIMER_FIRED and event.timer_id in row.cancelled:
            assert event.timer_id is not None
            cancelled.add(event.timer_id)
            void = True
        if void:
            drop.append(h)
            continue
        duplicate = env.id in row.consumed
        if event.type in _RESULTS:
            answer = (_RESULTS[event.type], event.task_scheduled_id)
            duplicate = duplicate or answer in answered
            answered.add(answer)
        elif event.type is EventType.TIMER_FIRED:
            duplicate = duplicate or event.timer_id in fired
            fired.add(event.timer_id)
        (drop if duplicate else keep).append(h)
    return keep, drop, cancelled


def consumed_ids(previous: dict[str, float], used: Sequence[Held]) -> dict[str, float]:
    """The consumed-id record after consuming `used`: ids of messages with no event id to
    dedupe by, kept for DEDUPE_WINDOW."""
    now = time.time()
    kept = {k: t for k, t in previous.items() if now - t < DEDUPE_WINDOW}
    for held in used:
        event = held.envelope.event
        if (
            event is not None
            and event.type not in _RESULTS
            and event.type is not EventType.TIMER_FIRED
        ):
            kept[held.envelope.id] = now
    return kept
