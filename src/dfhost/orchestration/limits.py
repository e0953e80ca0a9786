"""Limits that keep one bad caller or one runaway function from hurting the whole host, and
the ones Azure's Durable extension puts on what an orchestrator may do.

As on Azure (the extension's own messages; docs/differences.md lists them all):
- Custom status: its JSON may take at most 16 KB in UTF-16 (the extension's
  MessagePayloadDataConverter); a larger one fails the orchestration.
- `extensions.durableTask.maxOrchestrationActions` [100,000]: actions (activities, timers,
  sub-orchestrations, entity calls and signals) one execution may schedule, counted over the
  whole execution as the extension counts them on each replay; more fails the orchestration.
- Calls of functions the app does not have (an activity, sub-orchestrator or entity name) fail
  the orchestration when it schedules them; so does a sub-orchestration given the instance id
  of its parent or of itself.

dfhost's own, host.json (defaults in brackets):
- `functionTimeout` [00:30:00, Azure's default on dedicated plans; "-1" for none]: an activity
  or HTTP-triggered function still running after it fails with a timeout. Python cannot stop
  a thread, so a synchronous function that hangs keeps its worker thread until it returns;
  the host goes on serving and the task's orchestration sees the failure.
- `extensions.durableTask.dfhost.limits.payloadBytes` [4 MiB]: the UTF-8 size of each
  orchestration input and output, event data, entity operation input, activity input and
  result, and custom status. The client refuses larger ones (the HTTP API answers 413); an
  orchestration or activity producing one fails with a message saying so.
- `extensions.durableTask.dfhost.limits.historyEvents` [500,000]: events in one execution's
  history; an orchestration reaching it fails (use `continue_as_new` for long-lived loops).

`dfhost.config` reads them (`Limits`, `app.settings.limits`); this module enforces them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, Protocol, assert_never

from dfhost.config import Limits
from dfhost.orchestration import failures
from dfhost.orchestration.entities import EntityId
from dfhost.orchestration.episode import (
    HTTP_ACTIVITY,
    ActivityCall,
    EntityMessage,
    EpisodeResult,
    Failed,
    Payload,
    SubOrchestrationCall,
    TimerRequest,
    Work,
)

__all__ = [
    "CUSTOM_STATUS_KB",
    "Functions",
    "PayloadTooLargeError",
    "check_payload",
    "episode_problem",
]


class PayloadTooLargeError(ValueError):
    """A payload is larger than `payloadBytes` (answer 413)."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"The {what} is {size:,} bytes, more than the limit of {limit:,} bytes (host.json "
            "extensions.durableTask.dfhost.limits.payloadBytes)."
        )


def check_payload(text: str | None, what: str, limit: int) -> None:
    """Raise `PayloadTooLargeError` if `text` takes more than `limit` bytes in UTF-8."""
    if text is None or len(text) * 4 <= limit:  # no encoding needed: it cannot be too large
        return
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise PayloadTooLargeError(what, size, limit)


CUSTOM_STATUS_KB = 16
"""The extension's limit on a custom status, in KB of UTF-16 (Azure Storage's encoding)."""

_Kind = Literal["activity", "orchestrator", "entity"]


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class Functions(Protocol):
    """The app's functions, as `dfhost.app.functions.FunctionApp` has them."""

    def activity(self, name: str) -> object | None: ...
    def orchestrator(self, name: str) -> object | None: ...
    def entity(self, name: str) -> object | None: ...
    def of_kind(self, kind: _Kind) -> Sequence[_Named]: ...


def episode_problem(
    limits: Limits, name: str, history_length: int, result: EpisodeResult, functions: Functions
) -> Failed | None:
    """Why orchestrator `name`'s episode must fail the orchestration instead of committing,
    or None. `history_length` counts the events the execution will have after it; `functions`
    are the app's."""
    refused = _custom_status_problem(result.custom_status)
    if refused is None and result.actions > limits.max_actions:
        refused = failures.invalid_operation(
            f"Maximum amount of orchestration actions ({limits.max_actions}) has been reached. "
            "This value can be configured in host.json file as MaxOrchestrationActions."
        )
    if refused is None:
        refused = _unknown_function(result.work, functions)
    if refused is not None:
        return failures.orchestrator_refused(name, refused)
    if history_length > limits.history_events:
        return _failed(
            name,
            f"it has {history_length:,} history events, more than the limit of "
            f"{limits.history_events:,} (host.json extensions.durableTask.dfhost.limits."
            "historyEvents): use continue_as_new to start over with a fresh history.",
        )
    try:
        for what, text in _payloads(result):
            check_payload(text, f"{what} of orchestrator '{name}'", limits.payload_bytes)
    except PayloadTooLargeError as exc:
        return _failed(name, str(exc))
    return None


def _failed(name: str, message: str) -> Failed:
    return Failed(f"Orchestrator function '{name}' failed: {message}")


def _custom_status_problem(text: str | None) -> dict[str, Any] | None:
    # The extension measures the JSON it re-serializes: compact, non-ASCII text as is.
    if text is None or len(text) * 2 < (CUSTOM_STATUS_KB + 1) * 1024:  # cannot be too large
        return None
    compact = json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
    size_kb = len(compact.encode("utf-16-le", "surrogatepass")) // 1024
    if size_kb <= CUSTOM_STATUS_KB:
        return None
    return failures.argument_error(
        f"The UTF-16 size of the JSON-serialized payload must not exceed {CUSTOM_STATUS_KB:,} KB. "
        f"The current payload size is {size_kb:,} KB."
    )


def _unknown_function(work: Sequence[Work], functions: Functions) -> dict[str, Any] | None:
    """The functions an orchestrator calls must exist (ThrowIfFunctionDoesNotExist)."""
    lookups: dict[str, Callable[[str], object | None]] = {
        "activity": functions.activity,
        "orchestrator": functions.orchestrator,
        "entity": functions.entity,
    }
    checked: set[tuple[_Kind, str]] = set()  # a fan-out calls one name many times
    for item in work:
        called = _called(item)
        if called is None or called in checked:
            continue
        checked.add(called)
        kind, name = called
        if lookups[kind](name) is None:
            return failures.argument_error(_not_a_function(kind, name, functions))
    return None


def _called(item: Work) -> tuple[_Kind, str] | None:
    """The kind and name of the function `item` calls, if it calls one."""
    match item:
        case ActivityCall():
            return None if item.name == HTTP_ACTIVITY else ("activity", item.name)
        case SubOrchestrationCall():
            return ("orchestrator", item.name)
        case EntityMessage():
            entity = EntityId.parse(item.instance_id)
            return ("entity", entity.name if entity is not None else item.instance_id)
        case TimerRequest():
            return None
        case _:
            assert_never(item)


def _not_a_function(kind: _Kind, name: str, functions: Functions) -> str:
    message = f"The function '{name}' doesn't exist, is disabled, or is not an {kind} function. "
    known = [f.name for f in functions.of_kind(kind)]
    # The extension lists the known entities whenever there are orchestrators (sic).
    listed = bool(functions.of_kind("orchestrator")) if kind == "entity" else bool(known)
    if listed:
        names = "', '".join(known)
        return f"{message}Additional info: The following are the known {kind} functions: '{names}'."
    return f"{message}Additional info: No {kind} functions are currently registered!"


def _payloads(result: EpisodeResult) -> Iterable[Payload]:
    yield from result.outcome.payloads()
    yield "custom status", result.custom_status
    for item in result.work:
        yield from item.payloads()
