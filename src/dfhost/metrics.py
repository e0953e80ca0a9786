"""Prometheus metrics of this host process: what its engine did, counted as it happens.

The counters and histograms live in one registry of their own (`REGISTRY`), so an app's own
`prometheus_client` metrics never collide with them. Gauges that describe the whole task hub
(instances by status, queue depth, live hosts) are not kept here: `/admin/metrics` reads them
from the store at each scrape (`dfhost.web.metrics`), so every host reports the same numbers.

Recording is a few lock-protected additions per episode or activity; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from dfhost.history import EventType, HistoryEvent

__all__ = [
    "ACTIVITIES",
    "ACTIVITY_SECONDS",
    "COMMIT_SECONDS",
    "EPISODES",
    "EPISODE_SECONDS",
    "REGISTRY",
    "REPLAYED_EVENTS",
    "REPLAY_CACHE",
    "TIMER_LATENESS",
    "activity_done",
    "episode_done",
    "episode_replayed",
]

REGISTRY = CollectorRegistry(auto_describe=True)

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# Timers are late by milliseconds when all is well, by the takeover window after a crash.
_LATENESS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_EVENTS = (0, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000)

EPISODES = Counter(
    "dfhost_episodes",
    "Orchestrator and entity episodes run by this host, by the instance's status afterwards "
    "(lease_lost: another host ran it; error: a dfhost bug failed the instance).",
    ["orchestrator", "result"],
    registry=REGISTRY,
)
EPISODE_SECONDS = Histogram(
    "dfhost_episode_duration_seconds",
    "Time from claiming an episode's work to its commit, replay included.",
    ["orchestrator"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
COMMIT_SECONDS = Histogram(
    "dfhost_store_commit_duration_seconds",
    "Time the task hub took to commit one episode's outcome.",
    buckets=_SECONDS,
    registry=REGISTRY,
)
ACTIVITIES = Counter(
    "dfhost_activity_executions",
    "Activity executions run by this host (at least once: a retried or re-run activity counts "
    "each time), by result.",
    ["activity", "result"],
    registry=REGISTRY,
)
ACTIVITY_SECONDS = Histogram(
    "dfhost_activity_duration_seconds",
    "Time one activity execution took, the function call and its result's encoding.",
    ["activity"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
TIMER_LATENESS = Histogram(
    "dfhost_timer_lateness_seconds",
    "How long after its due time a durable timer's TimerFired reached its orchestrator.",
    buckets=_LATENESS,
    registry=REGISTRY,
)
REPLAYED_EVENTS = Histogram(
    "dfhost_replayed_events",
    "History events replayed per orchestrator episode (0 when an incremental session "
    "continued from the cache).",
    buckets=_EVENTS,
    registry=REGISTRY,
)
REPLAY_CACHE = Counter(
    "dfhost_replay_cache",
    "Lookups of the incremental replay cache (extended sessions), by result.",
    ["result"],
    registry=REGISTRY,
)


_children: dict[tuple[object, ...], Any] = {}


def _child(metric: Counter | Histogram, *labels: str) -> Any:
    """`metric.labels(*labels)`, looked up once: that call validates and locks each time,
    and it runs several times per episode."""
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def episode_replayed(events: int, cached: bool | None) -> None:
    """An orchestrator episode replayed `events` old events; `cached` says whether the
    incremental replay cache answered (None: the cache is off)."""
    REPLAYED_EVENTS.observe(events)
    if cached is not None:
        _child(REPLAY_CACHE, "hit" if cached else "miss").inc()


def episode_done(
    name: str,
    result: str,
    seconds: float,
    *,
    commit_seconds: float | None = None,
    consumed: Iterable[HistoryEvent] = (),
    now: datetime | None = None,
) -> None:
    """An episode of orchestrator or entity `name` ended with `result` (the instance's status
    afterwards, or lease_lost / error). `consumed` are the events it took from the inbox: the
    TimerFired among them, compared with `now`, give the timers' lateness."""
    _child(EPISODES, name, result).inc()
    _child(EPISODE_SECONDS, name).observe(seconds)
    if commit_seconds is not None:
        COMMIT_SECONDS.observe(commit_seconds)
    if now is not None:
        for event in consumed:
            if event.type is EventType.TIMER_FIRED and event.fire_at is not None:
                TIMER_LATENESS.observe(max(0.0, (now - event.fire_at).total_seconds()))


def activity_done(name: str, succeeded: bool, seconds: float) -> None:
    """One execution of activity `name` ended."""
    _child(ACTIVITIES, name, "succeeded" if succeeded else "failed").inc()
    _child(ACTIVITY_SECONDS, name).observe(seconds)
