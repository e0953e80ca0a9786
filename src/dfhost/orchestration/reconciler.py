"""The reconciler: turns what the SDK did in one episode into history events and work.

It maps the SDK's actions to dfhost's work (`_plan`, the one place that knows the SDK's action
classes), checks that a replay makes the calls its history recorded (non-determinism fails the
orchestration, as in Azure), and notes pitfalls: code that runs but likely not as its author
meant.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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

from dfhost import ids
from dfhost.history import EventType, HistoryEvent, format_time
from dfhost.orchestration import failures
from dfhost.orchestration.episode import (
    HTTP_ACTIVITY,
    ActivityCall,
    Completed,
    ContinuedAsNew,
    EntityMessage,
    EpisodeInput,
    EpisodeResult,
    Failed,
    Outcome,
    Pitfall,
    Running,
    SubOrchestrationCall,
    TimerRequest,
    Work,
    describe,
    entity_request_id,
    recorded_work,
)
from dfhost.orchestration.sdk import Assigned, is_retry_timer, timer_cancelled
from dfhost.orchestration.session import Session

__all__ = ["NonDeterministicOrchestrationError", "Reconciler"]


class NonDeterministicOrchestrationError(Exception):
    """The orchestrator's actions on replay contradict its recorded history."""


class Reconciler:
    """Turns what the SDK did in one episode into an `EpisodeResult`."""

    def __init__(self, episode: EpisodeInput, session: Session):
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
        except _RefusedError as exc:
            failed = failures.orchestrator_refused(self.episode.name, exc.exception)
            return EpisodeResult(failed, custom_status=custom_status)
        outcome = self._outcome(crash)
        if not isinstance(outcome, Running):
            # Nothing an ended execution scheduled may run (e.g. a timer created after
            # continue_as_new, which the SDK also drops from its actions). Entity messages
            # sent before it ended are still delivered, as DTFx sends them with the episode.
            work = [w for w in work if isinstance(w, EntityMessage)]
            cancelled = []
        result = EpisodeResult(outcome, events, work, cancelled, custom_status, self.pitfalls)
        result.actions = len(self.scheduled) + len(events)
        return result

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
            carried, dropped = self._unconsumed_events()
            self._note_dropped(dropped)
            return ContinuedAsNew(self._continue_as_new_input(), carried, dropped)
        if error is None and executor.orchestrator_returned:
            try:
                return Completed(json.dumps(executor.output))
            except (TypeError, ValueError) as exc:
                # The SDK checks the output the same way, and reports the error without
                # a stack of the orchestrator's.
                return failures.orchestrator_failed(self.episode.name, exc, str(exc))
        if error is not None:
            return failures.orchestrator_failed(self.episode.name, error)
        return Running()

    def _continue_as_new_input(self) -> str | None:
        for action in self.ctx._action_payload_v2:
            if action.action_type == 4:  # ActionType.CONTINUE_AS_NEW
                text = action.input_
                return text if isinstance(text, str) else json.dumps(text)
        return None

    def _unconsumed_events(self) -> tuple[list[HistoryEvent], list[HistoryEvent]]:
        """(carried, dropped): the raised events no wait consumed, split as Azure splits
        them. The extension replays the orchestrator's actions as DTFx goes through the
        history; an event that arrives before it reaches continue_as_new waits in the
        extension's buffer, which continue_as_new discards (out-of-process orchestrators
        cannot ask to keep it), while DTFx carries the events that come after it to the next
        execution. That point is where the SDK, going through the same history, had the
        orchestrator call continue_as_new."""
        # The context's events are ours, one for one and in order (`orchestration_context`).
        delivered = self.executor.delivered_events
        continued_at = self.executor.continued_at or 0
        carried: list[HistoryEvent] = []
        dropped: list[HistoryEvent] = []
        events = zip(self.session.events, self.ctx.histories, strict=True)
        for position, (e, sdk_event) in enumerate(events):
            if (
                e.type is EventType.EVENT_RAISED
                and e.name is not None
                and id(sdk_event) not in delivered
            ):
                (carried if position >= continued_at else dropped).append(e)
        return carried, dropped

    # -- scheduling -------------------------------------------------------------------------

    def _new_work(self) -> tuple[list[HistoryEvent], list[Work], list[int]]:
        now = self.episode.now
        session = self.session
        events: list[HistoryEvent] = []
        work: list[Work] = []
        cancelled: list[int] = []
        self._note_work_after_continue_as_new(self.recorder.assigned[session.reconciled :])
        fresh: list[tuple[int, Assigned | SignalEntityAction]] = [
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
            if isinstance(item, Assigned):
                planned = self._plan(item, now)
            else:
                planned = self._entity_message(event_id, item, signal=True)
            recorded = self.scheduled.get(event_id)
            if recorded is not None:
                self._check_matches(event_id, recorded, planned)
                self._note_changed_call(event_id, item, recorded, planned)
                continue
            events.append(planned.scheduled_event(self.episode))
            if (
                isinstance(item, Assigned)
                and isinstance(planned, TimerRequest)
                and timer_cancelled(item.task)
            ):
                session.cancelled_reported.add(event_id)
                continue
            work.append(planned)
        for entry in self.recorder.timers:
            if entry.id not in session.cancelled_reported and timer_cancelled(entry.task):
                session.cancelled_reported.add(entry.id)
                if entry.id in self.scheduled:
                    cancelled.append(entry.id)
        return events, work, cancelled

    def _plan(self, entry: Assigned, now: datetime) -> Work:
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
            _check_function_name(action.function_name)
            return ActivityCall(entry.id, action.function_name, action.input_)
        if isinstance(action, CreateTimerAction):
            fire_at = action.fire_at
            if fire_at.tzinfo is None:  # the SDK labels naive datetimes as UTC too
                fire_at = fire_at.replace(tzinfo=UTC)
            return TimerRequest(entry.id, fire_at)
        if isinstance(action, CallSubOrchestratorAction | CallSubOrchestratorWithRetryAction):
            _check_function_name(action.function_name)
            child_id = action.instance_id or f"{self.episode.execution_id}:{entry.id}"
            self._check_child_id(child_id)
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

    def _check_child_id(self, child_id: str) -> None:
        """The extension's checks of a sub-orchestration's instance id, and the ids every task
        hub can store (`dfhost.ids`: no NUL or control characters, ...)."""
        if not isinstance(child_id, str):
            raise _RefusedError(
                failures.argument_error(
                    f"The instance ID of a sub-orchestration must be a string, not "
                    f"{type(child_id).__name__}."
                )
            )
        own = (self.episode.instance_id, self.episode.parent_instance_id)
        if child_id.lower() in (i.lower() for i in own if i is not None):
            raise _RefusedError(
                failures.argument_error(
                    "The instance ID of a sub-orchestration must be different than the "
                    "instance ID of a parent orchestration."
                )
            )
        if child_id.startswith("@"):
            # Its ArgumentException takes the parameter name as the message (sic).
            raise _RefusedError(
                failures.argument_error(
                    "instanceId (Parameter 'Orchestration instance ids must not start with @')"
                )
            )
        try:
            ids.validate_instance_id(child_id)
        except ids.InvalidInstanceIdError as exc:
            raise _RefusedError(failures.argument_error(str(exc))) from None

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
        recorded_call = recorded_work(recorded)
        expected, actual = describe(recorded_call), describe(planned)
        was, now = recorded_call.signature(), planned.signature()
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

    def _note_work_after_continue_as_new(self, entries: Sequence[Assigned]) -> None:
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
                    f"{where} schedules {self._describe_entry(entry)} after continue_as_new: it "
                    "never runs, because the execution ends with this episode. Return right "
                    "after continue_as_new."
                )
            self.pitfalls.append(Pitfall(kind, message))

    def _note_dropped(self, dropped: Sequence[HistoryEvent]) -> None:
        for e in dropped:
            self.pitfalls.append(
                Pitfall(
                    "event dropped",
                    f"instance '{self.episode.instance_id}' dropped its event '{e.name}' (raised "
                    f"{format_time(e.timestamp)}): it arrived before orchestrator "
                    f"'{self.episode.name}' called continue_as_new and no wait received it, "
                    "and Azure discards such events at continue_as_new. Wait for it first "
                    "to keep it.",
                    every_time=True,
                )
            )

    def _describe_entry(self, entry: Assigned) -> str:
        action = entry.task.action_repr
        if isinstance(action, NoOpAction):
            return "a retry"
        try:
            return describe(self._plan(entry, self.episode.now))
        except (_UnsupportedError, _RefusedError):  # it never runs: only its name matters
            return type(action).__name__

    def _note_changed_call(
        self,
        event_id: int,
        item: Assigned | SignalEntityAction,
        recorded: HistoryEvent,
        planned: Work,
    ) -> None:
        """The same call with other arguments than its history recorded: replay goes on (as in
        Azure), but the orchestrator computes them from something that changes between replays."""
        if isinstance(item, Assigned) and is_retry_timer(item.task):
            return  # computed from the current episode's time
        change = planned.changed_from(recorded)
        if change is None or any(p.kind == "changed call" for p in self.pitfalls):
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
                    f"{describe(recorded_work(recorded))} but the orchestrator no longer "
                    "schedules it."
                )

    def _check_no_stray_results(self) -> None:
        for key in self.ctx.deferred_tasks:
            if isinstance(key, int):
                raise NonDeterministicOrchestrationError(
                    f"instance '{self.episode.instance_id}', task {key}: the history has a "
                    "result for it, but the orchestrator never scheduled that task."
                )


def _check_function_name(name: object) -> None:
    """A function name the SDK serialized from whatever the orchestrator passed: the extension
    cannot read a non-string one back, and a task hub cannot store it."""
    if not isinstance(name, str) or not name:
        raise _RefusedError(
            failures.argument_error(
                f"The function name must be a non-empty string, not {name!r}."[:300]
            )
        )


class _UnsupportedError(Exception):
    """Orchestrator code that does what dfhost cannot run (fails the orchestration)."""


class _RefusedError(Exception):
    """An action the extension refuses with a .NET exception (fails the orchestration)."""

    def __init__(self, exception: dict[str, Any]) -> None:
        super().__init__(exception["Message"])
        self.exception = exception
