"""The SDK, patched once for speed, and the hooks that watch it hand out task ids.

Task ids: the SDK numbers tasks with a private counter that never appears in its output, and
completions must carry those numbers. Instead of re-deriving the SDK's numbering from the
cumulative action list, we watch the context hand ids out (`_add_to_open_tasks` and
`_record_fire_and_forget_action`), which gives every id, in order, with the task it belongs to
- including the timers and re-schedules of `call_*_with_retry`, which never appear as actions.
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.durable_functions.models.actions.CreateTimerAction import CreateTimerAction
from azure.durable_functions.models.actions.NoOpAction import NoOpAction
from azure.durable_functions.models.history.HistoryEventType import HistoryEventType
from azure.durable_functions.models.Task import AtomicTask, RetryAbleTask
from azure.durable_functions.models.TaskOrchestrationExecutor import (
    TaskOrchestrationExecutor,
)

__all__ = [
    "TESTED_SDK_MINORS",
    "Assigned",
    "Executor",
    "IdRecorder",
    "is_retry_timer",
    "sdk_version_problem",
    "timer_cancelled",
]

TESTED_SDK_MINORS = ("1.7",)
"""azure-functions-durable minor versions whose internals this module and the reconciler were
tested against (pyproject.toml pins the same)."""


def sdk_version_problem() -> str | None:
    """Why the installed SDK may not replay correctly (an untested minor version), or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("azure-functions-durable")
    except PackageNotFoundError:
        return "azure-functions-durable is not installed"
    if ".".join(installed.split(".")[:2]) in TESTED_SDK_MINORS:
        return None
    return (
        f"azure-functions-durable {installed} is installed, but dfhost's replay relies on SDK "
        f"internals and was tested with {', '.join(TESTED_SDK_MINORS)} only: orchestrations "
        "may replay wrongly. Install a tested version (pip install -e .), or run the replay "
        "tests against this one and add it to TESTED_SDK_MINORS in dfhost/orchestration/sdk.py"
    )


def _install_fast_timestamps() -> None:
    """Make the SDK parse history timestamps with `datetime.fromisoformat`.

    The SDK parses every event's timestamp with dateutil on every replay, which is ~88% of
    replay time (performance-notes.md). Our timestamps always have one fixed ISO form, so the
    fast parser always applies; anything else still goes to dateutil.
    """
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


class Executor(TaskOrchestrationExecutor):  # type: ignore[misc]
    def __init__(self) -> None:
        # The SDK's constructor defines a namedtuple class each time (~60 µs, a large part of
        # a short episode's replay) to build two read-only tables: share one instance's.
        self.event_to_SetTaskValuePayload = _SDK_EXECUTOR.event_to_SetTaskValuePayload
        self.task_completion_events = _SDK_EXECUTOR.task_completion_events
        self.initialize()
        self.delivered_events: set[int] = set()
        """`id()`s of the SDK's EventRaised events that reached a wait."""
        self.processed = 0
        """History events processed so far, in order."""
        self.continued_at: int | None = None
        """How many history events had been processed when the orchestrator called
        continue_as_new (0: before the first, as a plain function does), or None."""

    def process_event(self, event: Any) -> None:
        super().process_event(event)
        self.processed += 1
        if self.continued_at is None and self.context.will_continue_as_new:
            self.continued_at = self.processed

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
class Assigned:
    """A task id the SDK handed out, in order."""

    id: int
    task: Any
    after_continue_as_new: bool
    retry_is_final: bool = False


class IdRecorder:
    """Watches a context hand out task ids (see the module docstring)."""

    def __init__(self, ctx: Any) -> None:
        self.assigned: list[Assigned] = []
        self.timers: list[Assigned] = []
        """The durable timers among `assigned`: they can be cancelled in a later episode."""
        self.fire_and_forget: list[tuple[int, Any]] = []
        add_to_open_tasks = ctx._add_to_open_tasks
        record_fire_and_forget = ctx._record_fire_and_forget_action

        def add(task: Any) -> None:
            if isinstance(task, AtomicTask) and not task._is_scheduled and task.id is None:
                entry = Assigned(ctx._sequence_number, task, ctx.will_continue_as_new)
                parent = task.parent
                if isinstance(parent, RetryAbleTask) and is_retry_timer(task):
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


def is_retry_timer(task: Any) -> bool:
    action = task.action_repr
    return isinstance(action, NoOpAction) and action.metadata == "-WithRetry timer"


def timer_cancelled(task: Any) -> bool:
    action = task.action_repr
    return isinstance(action, CreateTimerAction) and bool(action.is_cancelled)
