"""The units of work in a task hub: messages on their way into an instance's history, instance
starts, activity tasks, and an episode's work (what a claim hands the engine) and outcome
(what its commit writes, atomically). Clients and engines make them; stores keep them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from dfhost.history import EventType, HistoryEvent, Instance, OrchestrationStatus

__all__ = ["ActivityTask", "EpisodeOutcome", "EpisodeWork", "Message", "StartRequest"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """An event on its way into an instance's history."""

    instance_id: str
    event: HistoryEvent
    execution_id: str | None = None
    """The execution it belongs to; None for client events, which go to whichever is current."""
    visible_at: datetime | None = None
    """Not deliverable before this time (durable timers); None means at once."""
    message_id: int | None = None
    """Assigned by the store; set on messages it returns."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StartRequest:
    """Create an instance (or replace a finished one) and enqueue its ExecutionStarted."""

    instance_id: str
    name: str
    execution_id: str
    created_at: datetime
    input: str | None = None
    """JSON text."""
    version: str | None = None
    parent_instance_id: str | None = None
    parent_execution_id: str | None = None
    parent_task_id: int | None = None
    visible_at: datetime | None = None
    """Scheduled start time; None means now."""
    on_conflict: Message | None = None
    """Enqueued instead when the id is taken by an unfinished instance (sub-orchestrations)."""
    trace_context: str | None = None
    """W3C `traceparent` of the span that starts it, kept on its ExecutionStarted."""

    def pending_instance(self) -> Instance:
        """The instance this request creates, before its first episode."""
        return Instance(
            instance_id=self.instance_id,
            name=self.name,
            execution_id=self.execution_id,
            status=OrchestrationStatus.PENDING,
            created_at=self.created_at,
            last_updated_at=self.created_at,
            version=self.version,
            input=self.input,
            parent_instance_id=self.parent_instance_id,
        )

    def started_event(self) -> HistoryEvent:
        """The ExecutionStarted event this request enqueues."""
        return HistoryEvent(
            type=EventType.EXECUTION_STARTED,
            timestamp=self.created_at,
            name=self.name,
            version=self.version,
            input=self.input,
            instance_id=self.instance_id,
            execution_id=self.execution_id,
            parent_instance_id=self.parent_instance_id,
            parent_execution_id=self.parent_execution_id,
            parent_task_id=self.parent_task_id,
            trace_context=self.trace_context,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityTask:
    """One activity invocation to run (at least once)."""

    instance_id: str
    execution_id: str
    task_scheduled_id: int
    name: str
    input: str | None
    """JSON text, as the orchestrator's action carried it."""
    scheduled_at: datetime
    task_id: int | None = None
    """Assigned by the store."""
    lease_token: int | None = None
    """Set on claimed tasks."""

    def failed_event(self, now: datetime, reason: str, details: str | None) -> HistoryEvent:
        """The TaskFailed event that reports this execution's failure to its orchestrator."""
        return HistoryEvent(
            type=EventType.TASK_FAILED,
            timestamp=now,
            task_scheduled_id=self.task_scheduled_id,
            reason=reason,
            details=details,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class EpisodeWork:
    """A claimed instance: its state, its stored history, and the messages to process."""

    instance: Instance
    history: list[HistoryEvent]
    messages: list[Message]
    lease_token: int
    history_error: str | None = None
    """Set when stored history rows could not be decoded; `history` is then empty."""
    history_start: int = 0
    """The position of `history[0]` in the execution's history: above 0 when the claim was
    given `known` and returned only the tail the claimer did not already hold."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EpisodeOutcome:
    """Everything one episode changes, committed atomically by `commit_episode`."""

    instance: Instance
    """The instance's new state (status, output, custom status, execution id, ...)."""
    new_events: list[HistoryEvent]
    """Appended to the history of `instance.execution_id`."""
    reset_history: bool = False
    """Delete the stored history first (continue-as-new starts a fresh one)."""
    activities: list[ActivityTask] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    """Timers for itself, results to a parent, events to other instances."""
    starts: list[StartRequest] = field(default_factory=list)
    """Sub-orchestrations to create."""
    cancelled_timer_ids: list[int] = field(default_factory=list)
    """Pending TimerFired messages of this execution to delete."""
    drop_pending_work: bool = False
    """The execution ended (finished or continued as new). Before the outcome's own messages
    are inserted, delete this instance's pending TimerFired messages, its messages addressed to
    an execution (results that can no longer matter), and all its activity tasks. Client
    messages (`execution_id` None, e.g. raised events) are kept for the next generation."""
