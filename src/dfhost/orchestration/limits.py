"""Limits that keep one bad caller or one runaway function from hurting the whole host.

host.json (defaults in brackets):
- `functionTimeout` [00:30:00, Azure's default on dedicated plans; "-1" for none]: an activity
  or HTTP-triggered function still running after it fails with a timeout. Python cannot stop
  a thread, so a synchronous function that hangs keeps its worker thread until it returns;
  the host goes on serving and the task's orchestration sees the failure.
- `extensions.durableTask.maxOrchestrationActions` [100,000]: actions (activities, timers,
  sub-orchestrations, ...) one episode may schedule; more fails the orchestration, as in
  Azure.
- `extensions.durableTask.dfhost.limits.payloadBytes` [4 MiB]: the UTF-8 size of each
  orchestration input and output, event data, entity operation input, activity input and
  result, and custom status. The client refuses larger ones (the HTTP API answers 413); an
  orchestration or activity producing one fails with a message saying so.
- `extensions.durableTask.dfhost.limits.historyEvents` [500,000]: events in one execution's
  history; an orchestration reaching it fails (use `continue_as_new` for long-lived loops).

`dfhost.config` reads them (`Limits`, `app.settings.limits`); this module enforces them.
"""

from __future__ import annotations

from collections.abc import Iterable

from dfhost.config import Limits
from dfhost.orchestration.episode import EpisodeResult, Payload

__all__ = ["PayloadTooLargeError", "check_payload", "episode_problem"]


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


def episode_problem(
    limits: Limits, name: str, history_length: int, result: EpisodeResult
) -> str | None:
    """Why an orchestrator's episode must fail the orchestration instead of committing, or
    None. `history_length` counts the events the execution will have after it."""
    if len(result.work) > limits.max_actions:
        return (
            f"Orchestrator '{name}' scheduled {len(result.work):,} actions in one episode, "
            f"more than the maximum of {limits.max_actions:,} (host.json "
            "extensions.durableTask.maxOrchestrationActions)."
        )
    if history_length > limits.history_events:
        return (
            f"Orchestrator '{name}' has {history_length:,} history events, more than the limit "
            f"of {limits.history_events:,} (host.json extensions.durableTask.dfhost.limits."
            "historyEvents): use continue_as_new to start over with a fresh history."
        )
    try:
        for what, text in _payloads(result):
            check_payload(text, f"{what} of orchestrator '{name}'", limits.payload_bytes)
    except PayloadTooLargeError as exc:
        return str(exc)
    return None


def _payloads(result: EpisodeResult) -> Iterable[Payload]:
    yield from result.outcome.payloads()
    yield "custom status", result.custom_status
    for item in result.work:
        yield from item.payloads()
