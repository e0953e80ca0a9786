"""What an orchestration episode commits: the decisions between a claim and its commit.

The engine claims an instance's `EpisodeWork` and asks `plan_episode` what to do with it. Most
of the time that is to replay the orchestrator (`Replay`: run its `episode`, then
`Replay.outcome` turns the replay's `EpisodeResult` into the `EpisodeOutcome` to commit).
Sometimes nothing needs orchestrator code (`Settled`: a late message for a finished instance,
a terminate, a suspend). And a Failed instance can be rewound (`Rewind`: replay a cut history,
then schedule again the work that lost its result). Everything here is a function of its
arguments: the engine does the claiming, the replay on its worker threads, the store lookups,
the logging and the commit.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import assert_never

from dfhost.history import TERMINAL_STATUSES, EventType, HistoryEvent, Instance, OrchestrationStatus
from dfhost.orchestration import entities
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
    Work,
    recorded_work,
)
from dfhost.orchestration.rewind import RewindPlan, plan_rewind
from dfhost.work import ActivityTask, EpisodeOutcome, EpisodeWork, Message, StartRequest

__all__ = ["Replay", "Rewind", "Settled", "failure", "plan_episode"]

_CONTROL_TYPES = (
    EventType.EXECUTION_TERMINATED,
    EventType.EXECUTION_SUSPENDED,
    EventType.EXECUTION_RESUMED,
)
# A rewound parent starts these sub-orchestrations again (their failure was never reported).
_RESTARTED_CHILDREN = (OrchestrationStatus.TERMINATED, OrchestrationStatus.CANCELED)


@dataclass(frozen=True, slots=True)
class Settled:
    """An episode that runs no orchestrator code: commit `outcome`, consuming `consumed`."""

    consumed: EpisodeWork
    outcome: EpisodeOutcome
    warning: str | None = None
    """Something wrong with the instance, for the engine to log as a warning."""
    error: str | None = None
    """Likewise, as an error."""


@dataclass(frozen=True, slots=True)
class Replay:
    """An episode that runs the orchestrator: replay `episode`, then commit `outcome(...)`."""

    work: EpisodeWork
    episode: EpisodeInput
    markers: list[HistoryEvent]
    """Suspend/resume markers, recorded after the episode's OrchestratorStarted."""

    def history_length(self, result: EpisodeResult) -> int:
        """The events the execution has after this episode (for the history limit)."""
        return (
            len(self.work.history) + len(self.episode.new) + len(self.markers) + len(result.events)
        )

    def outcome(self, result: EpisodeResult, *, default_version: str | None) -> EpisodeOutcome:
        """What to commit for `result`; `default_version`: the app's version for the
        sub-orchestrations it starts without one."""
        started, *inbound = self.episode.new
        new = [started, *self.markers, *inbound]
        return _replayed(self.work, self.episode.now, new, result, default_version)


@dataclass(frozen=True, slots=True)
class Rewind:
    """Rewinding a Failed execution (`dfhost.orchestration.rewind`): replay `episode`, the
    history cut back, fetch the `children` it names, then commit `outcome(...)`."""

    work: EpisodeWork
    rewound: HistoryEvent
    """The ExecutionRewound message, recorded in the new history."""
    cut: RewindPlan
    episode: EpisodeInput

    @property
    def children(self) -> list[str]:
        """The sub-orchestrations whose results are missing: their instances say whether to
        start them again, rewind them, or deliver the result they came to."""
        return [
            e.instance_id
            for e in self.cut.unanswered
            if e.type is EventType.SUB_ORCHESTRATION_CREATED and e.instance_id is not None
        ]

    def outcome(
        self,
        result: EpisodeResult,
        children: Mapping[str, Instance | None],
        *,
        default_version: str | None,
    ) -> EpisodeOutcome:
        """What to commit for `result`, with the `children`'s instances (None: no such
        instance) when it goes on running."""
        inst = self.work.instance
        now = self.episode.now
        notes: list[Message] = []
        if isinstance(result.outcome, Running):
            again, notes = self._again(result, children)
            result = replace(result, work=[*result.work, *again])
        base = replace(
            self.work,
            instance=replace(inst, output=None, failure_details=None),
            history=self.cut.past,
        )
        started, *redelivered = self.episode.new
        new = [started, self.rewound.with_timestamp(now), *redelivered]
        outcome = _replayed(base, now, new, result, default_version)
        if outcome.reset_history:  # continued as new: a fresh execution with its own history
            return outcome
        return replace(
            outcome,
            new_events=[*self.cut.past, *outcome.new_events],
            reset_history=True,
            messages=[*outcome.messages, *notes],
        )

    def _again(
        self, result: EpisodeResult, children: Mapping[str, Instance | None]
    ) -> tuple[list[Work], list[Message]]:
        """The work that answers the unanswered scheduling events again, and the messages for
        sub-orchestrations that need no new start."""
        inst = self.work.instance
        now = self.episode.now
        cancelled = set(result.cancelled_timer_ids)
        work: list[Work] = []
        messages: list[Message] = []
        for e in self.cut.unanswered:
            item = recorded_work(e)
            match item:
                case ActivityCall():
                    work.append(item)
                case TimerRequest():
                    if item.event_id not in cancelled:
                        work.append(replace(item, fire_at=e.fire_at or now))
                case SubOrchestrationCall():
                    if e.instance_id is None:
                        continue
                    child = children.get(e.instance_id)
                    if child is None or child.status in _RESTARTED_CHILDREN:
                        work.append(item)
                    elif child.status is OrchestrationStatus.FAILED:
                        why = f"rewind of its parent '{inst.instance_id}'"
                        event = HistoryEvent(
                            type=EventType.EXECUTION_REWOUND, timestamp=now, reason=why
                        )
                        messages.append(Message(instance_id=child.instance_id, event=event))
                    elif child.status is OrchestrationStatus.COMPLETED:
                        # It finished after this execution failed, so its result never arrived.
                        event = HistoryEvent(
                            type=EventType.SUB_ORCHESTRATION_COMPLETED,
                            timestamp=now,
                            task_scheduled_id=e.event_id,
                            result=child.output,
                        )
                        messages.append(_to(inst, event))
                    # Otherwise it is still running, and reports to this same execution.
                case EntityMessage():
                    pass  # sent with the failed episode already (never unanswered)
                case _:
                    assert_never(item)
        return work, messages


def plan_episode(
    work: EpisodeWork, now: datetime, *, orchestrator_known: bool
) -> Settled | Replay | Rewind:
    """What to do with a claimed orchestration instance at `now`; `orchestrator_known`: whether
    the app has its orchestrator function."""
    inst = work.instance
    relevant = [m for m in work.messages if m.execution_id in (None, inst.execution_id)]
    rewound = next((m.event for m in relevant if m.event.type is EventType.EXECUTION_REWOUND), None)
    if rewound is not None and inst.status is OrchestrationStatus.FAILED:
        return _rewind(work, now, rewound, orchestrator_known)
    if inst.status in TERMINAL_STATUSES:
        # Late results and events for a finished instance: consume, change nothing.
        return Settled(work, EpisodeOutcome(instance=inst, new_events=[]))
    # Only a Failed instance can be rewound; a rewind that raced a restart is dropped.
    relevant = [m for m in relevant if m.event.type is not EventType.EXECUTION_REWOUND]
    if work.history_error:
        return Settled(work, failure(work, now, work.history_error, None))

    control = [m.event for m in relevant if m.event.type in _CONTROL_TYPES]
    terminated = next((e for e in control if e.type is EventType.EXECUTION_TERMINATED), None)
    if terminated is not None:
        return Settled(work, _terminated(work, now, terminated))

    suspended = inst.status is OrchestrationStatus.SUSPENDED
    for e in control:
        suspended = e.type is EventType.EXECUTION_SUSPENDED
    # Suspend/resume markers go into the history for the record (the SDK ignores them),
    # but never before the OrchestratorStarted/ExecutionStarted pair that must open it.
    markers = [e.with_timestamp(now) for e in control] if work.history else []
    if suspended:
        # Keep everything else in the inbox: it is delivered, in order, on resume.
        consumed = replace(
            work, messages=[m for m in work.messages if m.event.type in _CONTROL_TYPES]
        )
        state = replace(inst, status=OrchestrationStatus.SUSPENDED, last_updated_at=now)
        return Settled(consumed, EpisodeOutcome(instance=state, new_events=markers))

    # An execution's start opens its history, and the events a continue-as-new carried over
    # to it (addressed to it) follow, before events sent to the instance meanwhile: those
    # reached the inbox first, as the restart is enqueued at the continue-as-new's commit.
    inbound = [
        m.event
        for m in sorted(relevant, key=lambda m: _inbound_rank(m, inst))
        if m.event.type not in _CONTROL_TYPES
    ]
    has_start = bool(work.history) or any(e.type is EventType.EXECUTION_STARTED for e in inbound)
    if not has_start:
        why = f"{inst.instance_id} has no ExecutionStarted; dropping its messages"
        return Settled(work, EpisodeOutcome(instance=inst, new_events=[]), warning=why)
    if not inbound:
        status = OrchestrationStatus.RUNNING if control else inst.status
        state = replace(inst, status=status, last_updated_at=now)
        return Settled(work, EpisodeOutcome(instance=state, new_events=markers))

    if not orchestrator_known:
        message = (
            f"The orchestrator function '{inst.name}' doesn't exist in this app "
            "(renamed or removed?)."
        )
        return Settled(work, failure(work, now, message, None))
    started = HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=now)
    return Replay(work, EpisodeInput.of(inst, work.history, [started, *inbound]), markers)


def _inbound_rank(message: Message, inst: Instance) -> int:
    if message.event.type is EventType.EXECUTION_STARTED:
        return 0
    carried = message.event.type is EventType.EVENT_RAISED and message.execution_id is not None
    return 1 if carried and message.execution_id == inst.execution_id else 2


def _rewind(
    work: EpisodeWork, now: datetime, rewound: HistoryEvent, orchestrator_known: bool
) -> Settled | Rewind:
    """Cut the failed execution's history back, to replay from there."""
    inst = work.instance
    if work.history_error or not orchestrator_known:
        why = work.history_error or f"its orchestrator '{inst.name}' is not in this app"
        error = f"cannot rewind {inst.instance_id}: {why}"
        return Settled(work, EpisodeOutcome(instance=inst, new_events=[]), error=error)
    cut = plan_rewind(work.history)
    redelivered = cut.redelivered
    if not any(e.type is EventType.EXECUTION_STARTED for e in (*cut.past, *redelivered)):
        # It failed before its first episode was recorded (e.g. its orchestrator was
        # missing then): start it over from what the instance row remembers.
        redelivered = [_restarted_event(inst, now), *redelivered]
    started = HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=now)
    return Rewind(work, rewound, cut, EpisodeInput.of(inst, cut.past, [started, *redelivered]))


def failure(work: EpisodeWork, now: datetime, message: str, details: str | None) -> EpisodeOutcome:
    """The instance fails at `now` without replaying (e.g. it broke a limit)."""
    state = replace(work.instance, last_updated_at=now)
    return _finished(work, now, state, [], Failed(message, details))


# --- an episode's outcome ---------------------------------------------------------------------


def _replayed(
    work: EpisodeWork,
    now: datetime,
    new: list[HistoryEvent],
    result: EpisodeResult,
    default_version: str | None,
) -> EpisodeOutcome:
    inst = work.instance
    outcome = result.outcome
    events = [*new, *result.events]
    state = replace(
        inst,
        status=OrchestrationStatus.RUNNING,
        last_updated_at=now,
        custom_status=result.custom_status,
    )
    # Entity operations go out even with the episode that ends the execution.
    sent, creations = entities.deliveries(inst, now, result.work)
    match outcome:
        case ContinuedAsNew():
            return _sending(_continued(work, now, state, outcome), sent, creations)
        case Completed() | Failed():
            events.append(HistoryEvent(type=EventType.ORCHESTRATOR_COMPLETED, timestamp=now))
            ended = _finished(work, now, state, events, outcome)
            return _sending(ended, sent, creations)
        case Running():
            events.append(HistoryEvent(type=EventType.ORCHESTRATOR_COMPLETED, timestamp=now))
        case _:
            assert_never(outcome)
    activities: list[ActivityTask] = []
    messages: list[Message] = []
    starts: list[StartRequest] = []
    for item in result.work:
        match item:
            case ActivityCall():
                activities.append(
                    ActivityTask(
                        instance_id=inst.instance_id,
                        execution_id=inst.execution_id,
                        task_scheduled_id=item.event_id,
                        name=item.name,
                        input=item.input,
                        scheduled_at=now,
                    )
                )
            case TimerRequest():
                fired = HistoryEvent(
                    type=EventType.TIMER_FIRED,
                    timestamp=item.fire_at,
                    timer_id=item.event_id,
                    fire_at=item.fire_at,
                )
                messages.append(replace(_to(inst, fired), visible_at=item.fire_at))
            case SubOrchestrationCall():
                starts.append(_sub_orchestration(inst, now, item, default_version))
            case EntityMessage():
                pass  # in `sent`
            case _:
                assert_never(item)
    return EpisodeOutcome(
        instance=state,
        new_events=events,
        activities=activities,
        messages=[*messages, *sent],
        starts=[*starts, *creations],
        cancelled_timer_ids=result.cancelled_timer_ids,
    )


def _sub_orchestration(
    parent: Instance, now: datetime, call: SubOrchestrationCall, default_version: str | None
) -> StartRequest:
    conflict = HistoryEvent(
        type=EventType.SUB_ORCHESTRATION_FAILED,
        timestamp=now,
        task_scheduled_id=call.event_id,
        reason=(
            f"Orchestrator function '{call.name}' failed: an orchestration instance with "
            f"id '{call.instance_id}' already exists and is still running."
        ),
    )
    return StartRequest(
        instance_id=call.instance_id,
        name=call.name,
        execution_id=uuid.uuid4().hex,
        created_at=now,
        input=call.input,
        version=call.version or default_version,
        parent_instance_id=parent.instance_id,
        parent_execution_id=parent.execution_id,
        parent_task_id=call.event_id,
        on_conflict=_to(parent, conflict),
    )


def _continued(
    work: EpisodeWork, now: datetime, state: Instance, outcome: ContinuedAsNew
) -> EpisodeOutcome:
    started = _execution_started(work)
    execution_id = uuid.uuid4().hex
    restart = HistoryEvent(
        type=EventType.EXECUTION_STARTED,
        timestamp=now,
        name=state.name,
        version=state.version,
        input=outcome.input,
        instance_id=state.instance_id,
        execution_id=execution_id,
        parent_instance_id=started.parent_instance_id if started else None,
        parent_execution_id=started.parent_execution_id if started else None,
        parent_task_id=started.parent_task_id if started else None,
        trace_context=started.trace_context if started else None,
    )
    next_execution = replace(state, execution_id=execution_id)
    return EpisodeOutcome(
        instance=replace(next_execution, input=outcome.input, custom_status=None),
        new_events=[],
        reset_history=True,
        messages=[_to(next_execution, e) for e in (restart, *outcome.carried_events)],
        drop_pending_work=True,
    )


def _finished(
    work: EpisodeWork,
    now: datetime,
    state: Instance,
    events: list[HistoryEvent],
    outcome: Completed | Failed,
) -> EpisodeOutcome:
    if isinstance(outcome, Completed):
        status, output, details = OrchestrationStatus.COMPLETED, outcome.output, None
    else:
        status, output, details = (
            OrchestrationStatus.FAILED,
            json.dumps(outcome.message),
            outcome.details,
        )
    events.append(
        HistoryEvent(
            type=EventType.EXECUTION_COMPLETED,
            timestamp=now,
            status=status,
            result=output,
            details=details,
        )
    )
    return EpisodeOutcome(
        instance=replace(state, status=status, output=output, failure_details=details),
        new_events=events,
        messages=_notify_parent(work, now, status, output, details),
        drop_pending_work=True,
    )


def _terminated(work: EpisodeWork, now: datetime, terminated: HistoryEvent) -> EpisodeOutcome:
    status = OrchestrationStatus.TERMINATED
    reason = terminated.input if terminated.input is not None else json.dumps(None)
    events = [
        terminated.with_timestamp(now),
        HistoryEvent(
            type=EventType.EXECUTION_COMPLETED, timestamp=now, status=status, result=reason
        ),
    ]
    state = replace(work.instance, status=status, output=reason, last_updated_at=now)
    return EpisodeOutcome(
        instance=state,
        new_events=events,
        messages=_notify_parent(work, now, status, reason, None),
        drop_pending_work=True,
    )


def _notify_parent(
    work: EpisodeWork,
    now: datetime,
    status: OrchestrationStatus,
    output: str | None,
    details: str | None,
) -> list[Message]:
    started = _execution_started(work)
    if started is None or started.parent_instance_id is None:
        return []
    if status is OrchestrationStatus.COMPLETED:
        event = HistoryEvent(
            type=EventType.SUB_ORCHESTRATION_COMPLETED,
            timestamp=now,
            task_scheduled_id=started.parent_task_id,
            result=output,
        )
    else:
        text = json.loads(output) if output else status.value
        event = HistoryEvent(
            type=EventType.SUB_ORCHESTRATION_FAILED,
            timestamp=now,
            task_scheduled_id=started.parent_task_id,
            reason=text if isinstance(text, str) else json.dumps(text),
            details=details,
        )
    return [
        Message(
            instance_id=started.parent_instance_id,
            execution_id=started.parent_execution_id,
            event=event,
        )
    ]


def _to(inst: Instance, event: HistoryEvent) -> Message:
    """A message for `inst`'s execution."""
    return Message(instance_id=inst.instance_id, execution_id=inst.execution_id, event=event)


def _sending(
    outcome: EpisodeOutcome, messages: list[Message], starts: list[StartRequest]
) -> EpisodeOutcome:
    if not messages and not starts:
        return outcome
    return replace(
        outcome, messages=[*outcome.messages, *messages], starts=[*outcome.starts, *starts]
    )


def _execution_started(work: EpisodeWork) -> HistoryEvent | None:
    for e in work.history[:2]:
        if e.type is EventType.EXECUTION_STARTED:
            return e
    for m in work.messages:
        if m.event.type is EventType.EXECUTION_STARTED:
            return m.event
    return None


def _restarted_event(inst: Instance, now: datetime) -> HistoryEvent:
    return HistoryEvent(
        type=EventType.EXECUTION_STARTED,
        timestamp=now,
        name=inst.name,
        version=inst.version,
        input=inst.input,
        instance_id=inst.instance_id,
        execution_id=inst.execution_id,
        parent_instance_id=inst.parent_instance_id,
    )
