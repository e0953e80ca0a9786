"""One orchestration episode: replay the history through the SDK and say what happens next.

`run_episode` builds the SDK's context from the stored history plus the episode's new events,
runs the user's generator through the SDK's own `TaskOrchestrationExecutor` in-process, and
returns what the episode produced: new history events, work to schedule, timers to cancel and
the instance's new status. It is synchronous, touches no storage, and never raises because of
user code: user errors become a Failed result.

Task ids: the SDK numbers tasks with a private counter that never appears in its output, and
completions must carry those numbers. Instead of re-deriving the SDK's numbering from the
cumulative action list, we watch the context hand ids out (`_add_to_open_tasks` and
`_record_fire_and_forget_action`), which gives every id, in order, with the task it belongs to
- including the timers and re-schedules of `call_*_with_retry`, which never appear as actions.
"""

from __future__ import annotations

import importlib
import json
import threading
import traceback
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.durable_functions.models.actions.CallActivityAction import CallActivityAction
from azure.durable_functions.models.actions.CallActivityWithRetryAction import (
    CallActivityWithRetryAction,
)
from azure.durable_functions.models.actions.CallEntityAction import CallEntityAction
from azure.durable_functions.models.actions.CallHttpAction import CallHttpAction
from azure.durable_functions.models.actions.CallSubOrchestratorAction import (
    CallSubOrchestratorAction,
)
from azure.durable_functions.models.actions.CallSubOrchestratorWithRetryAction import (
    CallSubOrchestratorWithRetryAction,
)
from azure.durable_functions.models.actions.CreateTimerAction import CreateTimerAction
from azure.durable_functions.models.actions.NoOpAction import NoOpAction
from azure.durable_functions.models.actions.SignalEntityAction import SignalEntityAction
from azure.durable_functions.models.DurableOrchestrationContext import (
    DurableOrchestrationContext,
)
from azure.durable_functions.models.history.HistoryEvent import HistoryEvent as SdkHistoryEvent
from azure.durable_functions.models.history.HistoryEventType import HistoryEventType
from azure.durable_functions.models.Task import AtomicTask, RetryAbleTask
from azure.durable_functions.models.TaskOrchestrationExecutor import (
    TaskOrchestrationExecutor,
)

from dfhost.history import EventType, HistoryEvent, format_time
from dfhost.wire import dtfx_event, orchestration_context

__all__ = [
    "HTTP_ACTIVITY",
    "ActivityCall",
    "Completed",
    "ContinuedAsNew",
    "EntityMessage",
    "EpisodeInput",
    "EpisodeResult",
    "Failed",
    "NonDeterministicOrchestrationError",
    "Pitfall",
    "Running",
    "SubOrchestrationCall",
    "TimerRequest",
    "entity_request_id",
    "is_replaying",
    "run_episode",
]

HTTP_ACTIVITY = "BuiltIn::HttpActivity"
"""The built-in activity `call_http` runs as (the extension's name for it)."""

_replaying: ContextVar[Callable[[], bool] | None] = ContextVar("dfhost_replaying", default=None)


def is_replaying() -> bool:
    """Whether the orchestrator code running in this context is replaying old events."""
    probe = _replaying.get()
    return probe() if probe is not None else False


class NonDeterministicOrchestrationError(Exception):
    """The orchestrator's actions on replay contradict its recorded history."""


@dataclass(frozen=True, slots=True)
class EpisodeInput:
    """What an episode replays: the stored history and the events that are new this time."""

    instance_id: str
    execution_id: str
    name: str
    input: str | None
    parent_instance_id: str | None
    past: Sequence[HistoryEvent]
    new: Sequence[HistoryEvent]
    """Starts with this episode's OrchestratorStarted, whose timestamp is the episode's time."""

    @property
    def now(self) -> datetime:
        return self.new[0].timestamp


@dataclass(frozen=True, slots=True)
class ActivityCall:
    event_id: int
    name: str
    input: str | None


@dataclass(frozen=True, slots=True)
class TimerRequest:
    event_id: int
    fire_at: datetime


@dataclass(frozen=True, slots=True)
class SubOrchestrationCall:
    event_id: int
    name: str
    instance_id: str
    input: str | None
    version: str | None


@dataclass(frozen=True, slots=True)
class EntityMessage:
    """An operation for an entity: `call_entity` (a response is awaited) or `signal_entity`."""

    event_id: int
    instance_id: str
    """The entity's instance id, `@<lower-cased name>@<key>`."""
    operation: str
    input: str | None
    """JSON text of the operation's input, as the SDK's action carried it."""
    request_id: str
    signal: bool

    def request_message(self, parent_instance_id: str, parent_execution_id: str) -> str:
        """The DTFx RequestMessage JSON: EventSent's Input (the SDK reads its `id`) and the
        operation message the entity receives."""
        return json.dumps(
            {
                "op": self.operation,
                "signal": self.signal,
                "input": self.input,
                "id": self.request_id,
                "parent": parent_instance_id,
                "parentExecution": parent_execution_id,
            },
            separators=(",", ":"),
        )


Work = ActivityCall | TimerRequest | SubOrchestrationCall | EntityMessage


@dataclass(frozen=True, slots=True)
class Running:
    pass


@dataclass(frozen=True, slots=True)
class Completed:
    output: str
    """JSON text."""


@dataclass(frozen=True, slots=True)
class Failed:
    message: str
    details: str | None = None


@dataclass(frozen=True, slots=True)
class ContinuedAsNew:
    input: str | None
    carried_events: list[HistoryEvent]
    """Raised events no wait consumed; they go to the next generation."""


Outcome = Running | Completed | Failed | ContinuedAsNew


@dataclass(frozen=True, slots=True)
class Pitfall:
    """Orchestrator code that runs, but likely not as its author meant (logged, never fatal)."""

    kind: str
    """"work after continue_as_new", "timer after continue_as_new" or "changed call"."""
    message: str


@dataclass(slots=True)
class EpisodeResult:
    outcome: Outcome
    events: list[HistoryEvent] = field(default_factory=list)
    """Scheduling events (TaskScheduled, TimerCreated, ...) to append after the new events."""
    work: list[Work] = field(default_factory=list)
    cancelled_timer_ids: list[int] = field(default_factory=list)
    custom_status: str | None = None
    """JSON text of the latest custom status, None if never set."""
    pitfalls: list[Pitfall] = field(default_factory=list, compare=False)
    replayed: int = field(default=0, compare=False)
    """Stored events replayed from scratch (0 when a cached session went on from its state)."""
    cached: bool | None = field(default=None, compare=False)
    """Whether a cached session answered; None without a session cache."""


# --- the SDK, patched once for speed ---------------------------------------------------------


def _install_fast_timestamps() -> None:
    """Make the SDK parse history timestamps with `datetime.fromisoformat`.

    The SDK parses every event's timestamp with dateutil on every replay, which is ~88% of
    replay time (performance-notes.md). Our timestamps always have one fixed ISO form, so the
    fast parser always applies; anything else still goes to dateutil.
    """
    import importlib

    # The package re-exports the class under the module's name, so fetch the module itself.
    sdk_history_event = importlib.import_module(
        "azure.durable_functions.models.history.HistoryEvent"
    )
    slow_parse = sdk_history_event.dt_parse
    if getattr(slow_parse, "_dfhost_fast", False):
        return

    def parse(text: str) -> datetime:
        try:
            return datetime.fromisoformat(text)
        except (TypeError, ValueError):
            return slow_parse(text)  # type: ignore[no-any-return]

    parse._dfhost_fast = True  # type: ignore[attr-defined]
    sdk_history_event.dt_parse = parse  # type: ignore[attr-defined]


_install_fast_timestamps()


class _SdkWarnings:
    """The executor module's `warnings`, minus the warning it gives for every buffered event.

    The SDK warns whenever an event arrives before its wait; for a host that buffers events
    this is normal operation. A process-wide `warnings.filterwarnings("ignore", ...)` is not
    enough: filters installed later in front of it (pytest's per-test `error` filter, an
    embedding app's `catch_warnings`) turn the warning into an exception inside the SDK's
    event processing, which then fails the orchestration.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(warnings, name)

    @staticmethod
    def warn(message: Any, *args: Any, **kwargs: Any) -> None:
        if not str(message).startswith("Potential duplicate Task completion"):
            warnings.warn(message, *args, **kwargs)


_sdk_executor_module = importlib.import_module(TaskOrchestrationExecutor.__module__)
_sdk_executor_module.warnings = _SdkWarnings()  # type: ignore[attr-defined]


_SDK_EXECUTOR = TaskOrchestrationExecutor()


class _Executor(TaskOrchestrationExecutor):  # type: ignore[misc]
    def __init__(self) -> None:
        # The SDK's constructor defines a namedtuple class each time (~60 µs, a large part of
        # a short episode's replay) to build two read-only tables: share one instance's.
        self.event_to_SetTaskValuePayload = _SDK_EXECUTOR.event_to_SetTaskValuePayload
        self.task_completion_events = _SDK_EXECUTOR.task_completion_events
        self.initialize()
        self.delivered_events: set[int] = set()
        """`id()`s of the SDK's EventRaised events that reached a wait."""

    def get_orchestrator_state_str(self) -> str:
        # We read the executor's state directly; serialising every cumulative action each
        # episode is an O(n) cost the SDK pays only to talk to the .NET extension.
        return ""

    def set_task_value(self, event: Any, is_success: bool, id_key: str) -> None:
        # Also called again for an event the SDK deferred, once its wait exists.
        if event.event_type == HistoryEventType.EVENT_RAISED and self.context.open_tasks.get(
            event.Name
        ):
            self.delivered_events.add(id(event))
        super().set_task_value(event, is_success, id_key)


@dataclass(slots=True)
class _Assigned:
    """A task id the SDK handed out, in order."""

    id: int
    task: Any
    after_continue_as_new: bool
    retry_is_final: bool = False


class _IdRecorder:
    """Watches a context hand out task ids (see the module docstring)."""

    def __init__(self, ctx: Any) -> None:
        self.assigned: list[_Assigned] = []
        self.timers: list[_Assigned] = []
        """The durable timers among `assigned`: they can be cancelled in a later episode."""
        self.fire_and_forget: list[tuple[int, Any]] = []
        add_to_open_tasks = ctx._add_to_open_tasks
        record_fire_and_forget = ctx._record_fire_and_forget_action

        def add(task: Any) -> None:
            if isinstance(task, AtomicTask) and not task._is_scheduled and task.id is None:
                entry = _Assigned(ctx._sequence_number, task, ctx.will_continue_as_new)
                parent = task.parent
                if isinstance(parent, RetryAbleTask) and _is_retry_timer(task):
                    # The SDK waits for one timer more after the last attempt failed
                    # (DTFx's back-compat dummy timer): that one fires at once.
                    entry.retry_is_final = (
                        parent.num_attempts >= parent.retry_options.max_number_of_attempts
                    )
                self.assigned.append(entry)
                if isinstance(task.action_repr, CreateTimerAction):
                    self.timers.append(entry)
            add_to_open_tasks(task)

        def fire_and_forget(action: Any) -> None:
            if not ctx.will_continue_as_new:
                self.fire_and_forget.append((ctx._sequence_number, action))
            record_fire_and_forget(action)

        ctx._add_to_open_tasks = add
        ctx._record_fire_and_forget_action = fire_and_forget


def _is_retry_timer(task: Any) -> bool:
    action = task.action_repr
    return isinstance(action, NoOpAction) and action.metadata == "-WithRetry timer"


# --- the episode ------------------------------------------------------------------------------

_SCHEDULING_TYPES = (
    EventType.TASK_SCHEDULED,
    EventType.TIMER_CREATED,
    EventType.SUB_ORCHESTRATION_CREATED,
    EventType.EVENT_SENT,
)


def run_episode(
    orchestrator: Callable[..., Any],
    episode: EpisodeInput,
    input_type: type | None = None,
    sessions: SessionCache | None = None,
) -> EpisodeResult:
    """Replay `episode` through the user's generator function `orchestrator`.

    With `sessions`, an instance whose previous episode ran here continues from where its
    generator stopped and only the new events are fed to it (an "extended session"); any
    doubt about the history falls back to a full replay from the stored events.
    """
    session = sessions.take(orchestrator, episode) if sessions is not None else None
    cached = None if sessions is None else session is not None
    replayed = 0 if session is not None else len(episode.past)
    if session is None:
        try:
            session = _Session.replay_from_scratch(orchestrator, episode, input_type)
        except _ContextError as exc:
            return EpisodeResult(Failed(str(exc)), replayed=replayed, cached=cached)
    else:
        session.continue_with(episode)
    result = _Reconciler(episode, session).result()
    result.replayed, result.cached = replayed, cached
    if sessions is not None and isinstance(result.outcome, Running):
        sessions.keep(episode, session, result)
    return result


class _ContextError(Exception):
    pass


class _Session:
    """The SDK objects of one instance's execution, and what dfhost has already reconciled."""

    def __init__(self, orchestrator: Callable[..., Any], ctx: Any, events: list[HistoryEvent]):
        self.orchestrator = orchestrator
        self.ctx = ctx
        self.events = events
        """Our events, one for one with `ctx.histories`."""
        self.recorder = _IdRecorder(ctx)
        self.executor = _Executor()
        self.scheduled = {
            e.event_id: e for e in events if e.type in _SCHEDULING_TYPES and e.event_id >= 0
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
    ) -> _Session:
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
            raise _ContextError(f"dfhost could not build the orchestration context: {exc}") from exc
        ctx._input_expected_type = input_type
        session = cls(orchestrator, ctx, [*episode.past, *episode.new])
        token = _replaying.set(lambda: bool(ctx.is_replaying))
        try:
            session.executor.execute(ctx, ctx.histories, orchestrator)
        except Exception as exc:  # a plain (non-generator) orchestrator raised
            session.crash = exc
        finally:
            _replaying.reset(token)
        return session

    def continue_with(self, episode: EpisodeInput) -> None:
        """Feed the events this session hasn't seen to the suspended generator."""
        self.replayed_from_scratch = False
        token = _replaying.set(lambda: bool(self.ctx.is_replaying))
        try:
            self.feed(episode.past[len(self.events) :], played=True)
            self.feed(episode.new, played=False)
        finally:
            _replaying.reset(token)

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
        self._sessions: OrderedDict[str, tuple[_Session, str, int, HistoryEvent]] = OrderedDict()
        self._events = 0
        """Events held by the sessions in `_sessions`."""
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def take(self, orchestrator: Callable[..., Any], episode: EpisodeInput) -> _Session | None:
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

    def keep(self, episode: EpisodeInput, session: _Session, result: EpisodeResult) -> None:
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


class _Reconciler:
    """Turns what the SDK did in one episode into an `EpisodeResult`."""

    def __init__(self, episode: EpisodeInput, session: _Session):
        self.episode = episode
        self.session = session
        self.ctx = session.ctx
        self.executor = session.executor
        self.recorder = session.recorder
        self.scheduled = session.scheduled
        self.pitfalls: list[Pitfall] = []

    def result(self) -> EpisodeResult:
        crash = self.session.crash
        custom_status: str | None = None
        try:
            custom_status = self._custom_status()
            events, work, cancelled = self._new_work()
            if self.session.replayed_from_scratch:
                # A continued session only ever saw histories it wrote itself.
                self._check_nothing_missing()
            self._check_no_stray_results()
        except NonDeterministicOrchestrationError as exc:
            message = f"NonDeterministicOrchestrationError: {exc}"
            return EpisodeResult(Failed(message), custom_status=custom_status)
        except _UnsupportedError as exc:
            return EpisodeResult(Failed(str(exc)), custom_status=custom_status)
        outcome = self._outcome(crash)
        if not isinstance(outcome, Running):
            # Nothing an ended execution scheduled may run (e.g. a timer created after
            # continue_as_new, which the SDK also drops from its actions). Entity messages
            # sent before it ended are still delivered, as DTFx sends them with the episode.
            work = [w for w in work if isinstance(w, EntityMessage)]
            cancelled = []
        return EpisodeResult(outcome, events, work, cancelled, custom_status, self.pitfalls)

    # -- status -----------------------------------------------------------------------------

    def _custom_status(self) -> str | None:
        value = self.ctx.custom_status
        if value is None:
            return None
        try:
            return json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise _UnsupportedError(f"custom status is not JSON-serializable: {exc}") from exc

    def _outcome(self, crash: BaseException | None) -> Outcome:
        executor, ctx = self.executor, self.ctx
        error = crash or executor.exception
        if error is None and ctx.will_continue_as_new:
            return ContinuedAsNew(self._continue_as_new_input(), self._unconsumed_events())
        if error is None and executor.orchestrator_returned:
            try:
                return Completed(json.dumps(executor.output))
            except (TypeError, ValueError) as exc:
                error = exc
        if error is not None:
            message = str(error) or type(error).__name__
            details = "".join(traceback.format_exception(error)).rstrip()
            return Failed(f"Orchestrator function '{self.episode.name}' failed: {message}", details)
        return Running()

    def _continue_as_new_input(self) -> str | None:
        for action in self.ctx._action_payload_v2:
            if action.action_type == 4:  # ActionType.CONTINUE_AS_NEW
                text = action.input_
                return text if isinstance(text, str) else json.dumps(text)
        return None

    def _unconsumed_events(self) -> list[HistoryEvent]:
        # The context's events are ours, one for one and in order (`orchestration_context`).
        delivered = self.executor.delivered_events
        carried = [
            e
            for e, sdk_event in zip(self.session.events, self.ctx.histories, strict=True)
            if e.type is EventType.EVENT_RAISED
            and e.name is not None
            and id(sdk_event) not in delivered
        ]
        carried.sort(key=lambda e: e.timestamp)
        return carried

    # -- scheduling -------------------------------------------------------------------------

    def _new_work(self) -> tuple[list[HistoryEvent], list[Work], list[int]]:
        now = self.episode.now
        session = self.session
        events: list[HistoryEvent] = []
        work: list[Work] = []
        cancelled: list[int] = []
        self._note_work_after_continue_as_new(self.recorder.assigned[session.reconciled :])
        fresh: list[tuple[int, _Assigned | SignalEntityAction]] = [
            (entry.id, entry)
            for entry in self.recorder.assigned[session.reconciled :]
            if not entry.after_continue_as_new
        ]
        session.reconciled = len(self.recorder.assigned)
        # Signals take their ids when called, not when yielded; merged in id order, the
        # scheduling events read as the calls were made.
        fresh.extend(
            (event_id, action)
            for event_id, action in self.recorder.fire_and_forget[session.reconciled_signals :]
            if isinstance(action, SignalEntityAction)
        )
        session.reconciled_signals = len(self.recorder.fire_and_forget)
        fresh.sort(key=lambda item: item[0])
        for event_id, item in fresh:
            if isinstance(item, _Assigned):
                planned = self._plan(item, now)
            else:
                planned = self._entity_message(event_id, item, signal=True)
            recorded = self.scheduled.get(event_id)
            if recorded is not None:
                self._check_matches(event_id, recorded, planned)
                self._note_changed_call(event_id, item, recorded, planned)
                continue
            events.append(_scheduling_event(planned, now, self.episode))
            if (
                isinstance(item, _Assigned)
                and isinstance(planned, TimerRequest)
                and _timer_cancelled(item.task)
            ):
                session.cancelled_reported.add(event_id)
                continue
            work.append(planned)
        for entry in self.recorder.timers:
            if entry.id not in session.cancelled_reported and _timer_cancelled(entry.task):
                session.cancelled_reported.add(entry.id)
                if entry.id in self.scheduled:
                    cancelled.append(entry.id)
        return events, work, cancelled

    def _plan(self, entry: _Assigned, now: datetime) -> Work:
        task = entry.task
        action = task.action_repr
        if isinstance(action, NoOpAction):
            retry = task.parent
            if action.metadata == "-WithRetry timer":
                delay = timedelta(
                    milliseconds=retry.retry_options.first_retry_interval_in_milliseconds
                )
                return TimerRequest(entry.id, now if entry.retry_is_final else now + delay)
            action = retry.actions  # "rescheduled task": run the original action again
        if isinstance(action, CallActivityAction | CallActivityWithRetryAction):
            return ActivityCall(entry.id, action.function_name, action.input_)
        if isinstance(action, CreateTimerAction):
            fire_at = action.fire_at
            if fire_at.tzinfo is None:  # the SDK labels naive datetimes as UTC too
                fire_at = fire_at.replace(tzinfo=UTC)
            return TimerRequest(entry.id, fire_at)
        if isinstance(action, CallSubOrchestratorAction | CallSubOrchestratorWithRetryAction):
            child_id = action.instance_id or f"{self.episode.execution_id}:{entry.id}"
            return SubOrchestrationCall(
                entry.id, action.function_name, child_id, action._input, action.version
            )
        if isinstance(action, CallEntityAction):
            return self._entity_message(entry.id, action, signal=False)
        if isinstance(action, CallHttpAction):
            request = json.dumps(action.http_request.to_json())
            return ActivityCall(entry.id, HTTP_ACTIVITY, request)
        if isinstance(action, SignalEntityAction):
            raise _UnsupportedError(
                "signal_entity has no result to wait for: call it without `yield` "
                "(call_entity waits for an operation's result)"
            )
        raise _UnsupportedError(f"unsupported orchestrator action {type(action).__name__}")

    def _entity_message(
        self, event_id: int, action: CallEntityAction | SignalEntityAction, *, signal: bool
    ) -> EntityMessage:
        return EntityMessage(
            event_id,
            action.instance_id,
            action.operation,
            action.input_,
            entity_request_id(self.episode.instance_id, self.episode.execution_id, event_id),
            signal,
        )

    def _check_matches(self, event_id: int, recorded: HistoryEvent, planned: Work) -> None:
        expected = _describe_event(recorded)
        actual = _describe_work(planned)
        was, now = _call_signature(recorded), _work_signature(planned)
        if was != now:
            if was[:-1] == now[:-1]:  # only the input differs: say how
                expected = f"{expected[:-1]}, <{was[-1]}>)"
                actual = f"{actual[:-1]}, <{now[-1]}>)"
            raise NonDeterministicOrchestrationError(
                f"instance '{self.episode.instance_id}', task {event_id}: the history has "
                f"{expected} but the orchestrator now schedules {actual}. Orchestrator code "
                "must make the same calls, in the same order, on every replay."
            )

    # -- pitfalls ---------------------------------------------------------------------------

    def _note_work_after_continue_as_new(self, entries: Sequence[_Assigned]) -> None:
        where = f"orchestrator '{self.episode.name}' (instance '{self.episode.instance_id}')"
        kinds = {p.kind for p in self.pitfalls}
        for entry in entries:
            action = entry.task.action_repr
            timer = isinstance(action, CreateTimerAction)
            kind = "timer after continue_as_new" if timer else "work after continue_as_new"
            if not entry.after_continue_as_new or kind in kinds:
                continue
            kinds.add(kind)
            if timer:
                message = (
                    f"{where} creates a timer after continue_as_new: it never fires, because "
                    "the next execution starts as soon as this episode ends. Return right "
                    "after continue_as_new."
                )
            else:
                message = (
                    f"{where} schedules {_describe_action(action)} after continue_as_new: it "
                    "never runs, because the execution ends with this episode. Return right "
                    "after continue_as_new."
                )
            self.pitfalls.append(Pitfall(kind, message))

    def _note_changed_call(
        self,
        event_id: int,
        item: _Assigned | SignalEntityAction,
        recorded: HistoryEvent,
        planned: Work,
    ) -> None:
        """The same call with other arguments than its history recorded: replay goes on (as in
        Azure), but the orchestrator computes them from something that changes between replays."""
        if isinstance(planned, TimerRequest):
            # Retry timers are computed from the current episode's time, so only user timers.
            user_timer = isinstance(item, _Assigned) and isinstance(
                item.task.action_repr, CreateTimerAction
            )
            if not user_timer or recorded.fire_at in (None, planned.fire_at):
                return
            assert recorded.fire_at is not None
            change = (
                f"create_timer() for {format_time(planned.fire_at)} where its history has "
                f"{format_time(recorded.fire_at)}"
            )
        elif isinstance(planned, ActivityCall | SubOrchestrationCall):
            child = planned.instance_id if isinstance(planned, SubOrchestrationCall) else None
            moved = child is not None and child != recorded.instance_id
            if planned.input == recorded.input and not moved:
                return
            change = f"{_describe_work(planned)} with input {_clip(planned.input)}"
            if moved:
                change += f" and instance id '{child}'"
            change += f" where its history has {_clip(recorded.input)}"
            if moved:
                change += f" and '{recorded.instance_id}'"
        else:
            return
        if any(p.kind == "changed call" for p in self.pitfalls):
            return
        self.pitfalls.append(
            Pitfall(
                "changed call",
                f"orchestrator '{self.episode.name}' (instance '{self.episode.instance_id}', "
                f"task {event_id}) replays {change}. Orchestrator code must compute the same "
                "calls on every replay: use context.current_utc_datetime, not datetime.now(); "
                "context.new_uuid(), not uuid4(); and take random values from an activity.",
            )
        )

    def _check_nothing_missing(self) -> None:
        produced = {e.id for e in self.recorder.assigned if not e.after_continue_as_new}
        produced.update(seq for seq, _ in self.recorder.fire_and_forget)
        for event_id, recorded in sorted(self.scheduled.items()):
            if event_id not in produced:
                raise NonDeterministicOrchestrationError(
                    f"instance '{self.episode.instance_id}', task {event_id}: the history has "
                    f"{_describe_event(recorded)} but the orchestrator no longer schedules it."
                )

    def _check_no_stray_results(self) -> None:
        for key in self.ctx.deferred_tasks:
            if isinstance(key, int):
                raise NonDeterministicOrchestrationError(
                    f"instance '{self.episode.instance_id}', task {key}: the history has a "
                    "result for it, but the orchestrator never scheduled that task."
                )


class _UnsupportedError(Exception):
    pass


def _timer_cancelled(task: Any) -> bool:
    action = task.action_repr
    return isinstance(action, CreateTimerAction) and bool(action.is_cancelled)


def entity_request_id(instance_id: str, execution_id: str, event_id: int) -> str:
    """The id of an entity request, the same on every replay (the SDK re-keys the call's task
    to it and matches the response by it), and unique across executions."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dfhost:{instance_id}:{execution_id}:{event_id}"))


def _scheduling_event(work: Work, now: datetime, episode: EpisodeInput) -> HistoryEvent:
    if isinstance(work, EntityMessage):
        return HistoryEvent(
            type=EventType.EVENT_SENT,
            timestamp=now,
            event_id=work.event_id,
            name=work.operation,
            input=work.request_message(episode.instance_id, episode.execution_id),
            instance_id=work.instance_id,
        )
    if isinstance(work, ActivityCall):
        return HistoryEvent(
            type=EventType.TASK_SCHEDULED,
            timestamp=now,
            event_id=work.event_id,
            name=work.name,
            input=work.input,
        )
    if isinstance(work, TimerRequest):
        return HistoryEvent(
            type=EventType.TIMER_CREATED,
            timestamp=now,
            event_id=work.event_id,
            fire_at=work.fire_at,
        )
    return HistoryEvent(
        type=EventType.SUB_ORCHESTRATION_CREATED,
        timestamp=now,
        event_id=work.event_id,
        name=work.name,
        version=work.version,
        input=work.input,
        instance_id=work.instance_id,
    )


def _json_kind(text: str | None) -> str:
    stripped = (text or "null").lstrip()[:1]
    kinds = {'"': "string", "{": "object", "[": "array", "t": "boolean", "f": "boolean"}
    if stripped in kinds:
        return kinds[stripped]
    return "null" if stripped == "n" else "number"


Signature = tuple[str, str | None, str | None, str | None]
"""(API, name, target, input kind): what must be equal for a replayed call to match."""


def _call_signature(e: HistoryEvent) -> Signature:
    if e.type is EventType.TASK_SCHEDULED:
        api = "call_http" if e.name == HTTP_ACTIVITY else "call_activity"
        return (api, e.name, None, _json_kind(e.input))
    if e.type is EventType.TIMER_CREATED:
        return ("create_timer", None, None, None)
    if e.type is EventType.SUB_ORCHESTRATION_CREATED:
        return ("call_sub_orchestrator", e.name, None, _json_kind(e.input))
    request = _request_message(e.input)
    api = "signal_entity" if request.get("signal") else "call_entity"
    return (api, e.name, e.instance_id, _json_kind(request.get("input")))


def _work_signature(w: Work) -> Signature:
    if isinstance(w, ActivityCall):
        api = "call_http" if w.name == HTTP_ACTIVITY else "call_activity"
        return (api, w.name, None, _json_kind(w.input))
    if isinstance(w, TimerRequest):
        return ("create_timer", None, None, None)
    if isinstance(w, SubOrchestrationCall):
        return ("call_sub_orchestrator", w.name, None, _json_kind(w.input))
    api = "signal_entity" if w.signal else "call_entity"
    return (api, w.operation, w.instance_id, _json_kind(w.input))


def _request_message(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _describe(signature: Signature) -> str:
    api, name, target, _ = signature
    if api == "create_timer":
        return "create_timer()"
    if api == "call_http":
        return "call_http()"
    if target is not None:
        return f"{api}('{target}', '{name}')"
    return f"{api}('{name}')"


def _describe_event(e: HistoryEvent) -> str:
    return _describe(_call_signature(e))


def _describe_action(action: Any) -> str:
    if isinstance(action, CallActivityAction | CallActivityWithRetryAction):
        return f"call_activity('{action.function_name}')"
    if isinstance(action, CallSubOrchestratorAction | CallSubOrchestratorWithRetryAction):
        return f"call_sub_orchestrator('{action.function_name}')"
    if isinstance(action, CallEntityAction):
        return "call_entity()"
    if isinstance(action, CallHttpAction):
        return "call_http()"
    return "a retry"


def _clip(text: str | None, limit: int = 60) -> str:
    text = text or "null"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _describe_work(w: Work) -> str:
    return _describe(_work_signature(w))
