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
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dfhost.orchestration import replay

__all__ = [
    "Limits",
    "LimitsError",
    "PayloadTooLargeError",
    "check_payload",
    "episode_problem",
]

log = logging.getLogger("dfhost")

DEFAULT_PAYLOAD_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_ACTIONS = 100_000
DEFAULT_HISTORY_EVENTS = 500_000
DEFAULT_FUNCTION_TIMEOUT = 30 * 60.0

_TIMESPAN = re.compile(r"(?:(\d+)\.)?(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,7}))?)?")


class LimitsError(ValueError):
    """A limit in host.json is malformed (one line naming the setting)."""


class PayloadTooLargeError(ValueError):
    """A payload is larger than `payloadBytes` (answer 413)."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"The {what} is {size:,} bytes, more than the limit of {limit:,} bytes (host.json "
            "extensions.durableTask.dfhost.limits.payloadBytes)."
        )


@dataclass(frozen=True, slots=True)
class Limits:
    payload_bytes: int = DEFAULT_PAYLOAD_BYTES
    max_actions: int = DEFAULT_MAX_ACTIONS
    history_events: int = DEFAULT_HISTORY_EVENTS
    function_timeout: float | None = DEFAULT_FUNCTION_TIMEOUT
    """Seconds; None: no timeout."""

    @classmethod
    def from_host_json(cls, host_json: Mapping[str, Any]) -> Limits:
        """Raises `LimitsError`."""
        durable = _object(_get(host_json, "extensions"), "extensions")
        durable = _object(_get(durable, "durableTask"), "extensions.durableTask")
        own = _object(_get(_object(_get(durable, "dfhost"), "dfhost"), "limits"), "limits")
        return cls(
            payload_bytes=_positive(
                _get(own, "payloadBytes"),
                DEFAULT_PAYLOAD_BYTES,
                "dfhost.limits.payloadBytes",
            ),
            max_actions=_positive(
                _get(durable, "maxOrchestrationActions"),
                DEFAULT_MAX_ACTIONS,
                "maxOrchestrationActions",
            ),
            history_events=_positive(
                _get(own, "historyEvents"),
                DEFAULT_HISTORY_EVENTS,
                "dfhost.limits.historyEvents",
            ),
            function_timeout=_timeout(_get(host_json, "functionTimeout")),
        )

    @classmethod
    def of(cls, host_json: Mapping[str, Any]) -> Limits:
        """As `from_host_json`, but malformed settings log an error and keep the defaults
        (`dfhost start` refuses them before it gets here)."""
        try:
            return cls.from_host_json(host_json)
        except LimitsError as exc:
            log.error("dfhost: %s; using the default limits", exc)
            return cls()


def check_payload(text: str | None, what: str, limit: int) -> None:
    """Raise `PayloadTooLargeError` if `text` takes more than `limit` bytes in UTF-8."""
    if text is None or len(text) * 4 <= limit:  # no encoding needed: it cannot be too large
        return
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise PayloadTooLargeError(what, size, limit)


def episode_problem(
    limits: Limits, name: str, history_length: int, result: replay.EpisodeResult
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


def _payloads(result: replay.EpisodeResult) -> Iterable[tuple[str, str | None]]:
    outcome = result.outcome
    if isinstance(outcome, replay.Completed):
        yield "output", outcome.output
    elif isinstance(outcome, replay.ContinuedAsNew):
        yield "continue_as_new input", outcome.input
    yield "custom status", result.custom_status
    for item in result.work:
        if isinstance(item, replay.ActivityCall):
            yield f"input of activity '{item.name}'", item.input
        elif isinstance(item, replay.SubOrchestrationCall):
            yield f"input of sub-orchestration '{item.name}'", item.input


def _get(mapping: Mapping[str, Any], key: str) -> Any:
    # host.json keys are case-insensitive, as the Functions host reads them.
    for k, v in mapping.items():
        if k.lower() == key.lower():
            return v
    return None


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise LimitsError(f"host.json {where} must be an object")
    return value


def _positive(value: Any, default: int, where: str) -> int:
    if value is None:
        return default
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)  # an AzureFunctionsJobHost__ environment override
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LimitsError(f"host.json {where} must be a positive integer, not {value!r}")
    return value


def _timeout(value: Any) -> float | None:
    if value is None:
        return DEFAULT_FUNCTION_TIMEOUT
    text = str(value).strip()
    if text == "-1":
        return None
    m = _TIMESPAN.fullmatch(text)
    if m is None or int(m.group(3)) > 59 or int(m.group(4) or 0) > 59:
        raise LimitsError(
            f"host.json functionTimeout {value!r} is not a TimeSpan ([d.]hh:mm:ss) or -1"
        )
    days, hours, minutes, seconds, fraction = m.groups()
    whole = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds or 0)
    total = whole + (float(f"0.{fraction}") if fraction else 0.0)
    if total <= 0:
        raise LimitsError("host.json functionTimeout must be longer than zero (-1: no timeout)")
    return total
