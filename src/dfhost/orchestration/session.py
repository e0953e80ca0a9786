"""Sessions: the SDK objects of an instance's execution, kept between episodes.

A session is what replaying an execution leaves behind: the SDK's context, its executor and the
suspended generator. `SessionCache` keeps recent ones so that the instance's next episode feeds
only its new events to the generator (an "extended session") instead of replaying the whole
history; anything unexpected about the history drops the session, and the episode replays from
scratch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from azure.durable_functions.models.DurableOrchestrationContext import (
    DurableOrchestrationContext,
)
from azure.durable_functions.models.history.HistoryEvent import HistoryEvent as SdkHistoryEvent

from dfhost.history import EventType, HistoryEvent
from dfhost.orchestration.episode import SCHEDULING_TYPES, EpisodeInput, EpisodeResult
from dfhost.orchestration.sdk import Executor, IdRecorder
from dfhost.wire import dtfx_event, orchestration_context

__all__ = ["ContextError", "Session", "SessionCache", "replaying"]

replaying: ContextVar[Callable[[], bool] | None] = ContextVar("dfhost_replaying", default=None)
"""Tells whether the orchestrator code running in this context is replaying old events."""


class ContextError(Exception):
    """The SDK cannot build a context from the history (a dfhost bug or corrupt rows)."""


class Session:
    """The SDK objects of one instance's execution, and what dfhost has already reconciled."""

    def __init__(self, orchestrator: Callable[..., Any], ctx: Any, events: list[HistoryEvent]):
        self.orchestrator = orchestrator
        self.ctx = ctx
        self.events = events
        """Our events, one for one with `ctx.histories`."""
        self.recorder = IdRecorder(ctx)
        self.executor = Executor()
        self.scheduled = {
            e.event_id: e for e in events if e.type in SCHEDULING_TYPES and e.event_id >= 0
        }
        self.reconciled = 0
        """How many of `recorder.assigned` earlier episodes already turned into work."""
        self.reconciled_signals = 0
        """Likewise for `recorder.fire_and_forget`."""
        self.cancelled_reported: set[int] = set()
        self.crash: BaseException | None = None
        self.replayed_from_scratch = True

    @classmethod
    def replay_from_scratch(
        cls, orchestrator: Callable[..., Any], episode: EpisodeInput, input_type: type | None
    ) -> Session:
        try:
            ctx = DurableOrchestrationContext(
                **orchestration_context(
                    instance_id=episode.instance_id,
                    past=episode.past,
                    new=episode.new,
                    input_text=episode.input,
                    parent_instance_id=episode.parent_instance_id,
                )
            )
        except Exception as exc:  # the SDK rejects the history shape: a bug or corrupt rows
            message = f"dfhost could not build the orchestration context: {exc}"
            raise ContextError(message) from exc
        ctx._input_expected_type = input_type
        session = cls(orchestrator, ctx, [*episode.past, *episode.new])
        token = replaying.set(lambda: bool(ctx.is_replaying))
        try:
            session.executor.execute(ctx, ctx.histories, orchestrator)
        except Exception as exc:  # a plain (non-generator) orchestrator raised
            session.crash = exc
        finally:
            replaying.reset(token)
        return session

    def continue_with(self, episode: EpisodeInput) -> None:
        """Feed the events this session hasn't seen to the suspended generator."""
        self.replayed_from_scratch = False
        token = replaying.set(lambda: bool(self.ctx.is_replaying))
        try:
            self.feed(episode.past[len(self.events) :], played=True)
            self.feed(episode.new, played=False)
        finally:
            replaying.reset(token)

    def feed(self, events: Sequence[HistoryEvent], *, played: bool) -> None:
        executor = self.executor
        for event in events:
            sdk_event = SdkHistoryEvent(**dtfx_event(event, played=played))
            self.ctx._histories.append(sdk_event)
            self.events.append(event)
            if executor.has_execution_completed:
                continue  # as in full replay: later events are recorded but not processed
            executor._is_processing_new_events = not played
            executor.process_event(sdk_event)


class SessionCache:
    """Recently run instances' sessions, for incremental episodes (least recently used out).

    Thread-safe: episodes run in a thread pool, one episode per instance at a time.
    """

    def __init__(self, max_sessions: int = 10_000, max_events: int = 200_000) -> None:
        # Bounded by events as well as by count: memory grows with the events a session holds
        # (about 1.5 KB each, the SDK's copy included), and a host with more instances in
        # flight than sessions evicts each one before its next episode, which then replays
        # in full (1,000 sessions and 2,000 chains in flight: 3,205 of 8,000 episodes missed).
        self.max_sessions = max_sessions
        self.max_events = max_events
        self._sessions: OrderedDict[str, tuple[Session, str, int, HistoryEvent]] = OrderedDict()
        self._events = 0
        """Events held by the sessions in `_sessions`."""
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def take(self, orchestrator: Callable[..., Any], episode: EpisodeInput) -> Session | None:
        """The instance's session if `episode.past` is exactly what it left behind."""
        with self._lock:
            entry = self._sessions.pop(episode.instance_id, None)
            if entry is not None:
                session, execution_id, length, last = entry
                self._events -= length
                past = episode.past
                # The engine appends the episode's OrchestratorCompleted after our events;
                # anything else (another host's episode, a lost commit, suspend markers,
                # a rewind) changes the length or the last events, and we replay from scratch.
                if (
                    session.orchestrator is orchestrator
                    and execution_id == episode.execution_id
                    and len(past) == length + 1
                    and past[-1].type is EventType.ORCHESTRATOR_COMPLETED
                    and past[-2] == last
                ):
                    self.hits += 1
                    return session
            self.misses += 1
            return None

    def keep(self, episode: EpisodeInput, session: Session, result: EpisodeResult) -> None:
        # The engine stores the episode's scheduling events after its new events; the next full
        # replay would process them there, so the session processes them now.
        session.feed(result.events, played=True)
        session.scheduled.update((e.event_id, e) for e in result.events)
        with self._lock:
            replaced = self._sessions.pop(episode.instance_id, None)
            if replaced is not None:
                self._events -= replaced[2]
            self._sessions[episode.instance_id] = (
                session,
                episode.execution_id,
                len(session.events),
                session.events[-1],
            )
            self._events += len(session.events)
            while len(self._sessions) > self.max_sessions or (
                self._events > self.max_events and len(self._sessions) > 1
            ):
                _, evicted = self._sessions.popitem(last=False)
                self._events -= evicted[2]

    def known(self) -> Mapping[str, tuple[str, int]]:
        """A live view, instance id -> (execution id, events held): what a claim need not send
        again. Safe to read from the store's thread."""
        return _KnownSessions(self)

    def held(self, instance_id: str) -> tuple[str, int] | None:
        with self._lock:
            entry = self._sessions.get(instance_id)
        return None if entry is None else (entry[1], entry[2])

    def past(
        self, instance_id: str, tail: Sequence[HistoryEvent], start: int
    ) -> list[HistoryEvent] | None:
        """The whole history, if `tail` (the stored events from position `start` on) begins
        with the event this session holds there; None otherwise (the caller reloads it all)."""
        with self._lock:
            entry = self._sessions.get(instance_id)
        if entry is None or not tail:
            return None
        events = entry[0].events
        if start >= len(events) or events[start] != tail[0]:
            return None
        return [*events[:start], *tail]

    def forget(self, instance_id: str) -> None:
        """Drop an instance's session (its history changed behind our back)."""
        with self._lock:
            entry = self._sessions.pop(instance_id, None)
            if entry is not None:
                self._events -= entry[2]

    def __len__(self) -> int:
        return len(self._sessions)


class _KnownSessions(Mapping[str, tuple[str, int]]):
    """`SessionCache.known()`: looked up a few times per claim, so never copied."""

    def __init__(self, cache: SessionCache) -> None:
        self._cache = cache

    def __getitem__(self, instance_id: str) -> tuple[str, int]:
        held = self._cache.held(instance_id)
        if held is None:
            raise KeyError(instance_id)
        return held

    def __iter__(self) -> Iterator[str]:
        with self._cache._lock:
            return iter(list(self._cache._sessions))

    def __len__(self) -> int:
        return len(self._cache)
