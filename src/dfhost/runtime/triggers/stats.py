"""What this host's triggered functions did: counts, the last run and the last error per function
for the dashboard's Functions page, and the same as Prometheus metrics (`/admin/metrics`).

Process-wide, like `dfhost.metrics`: the dashboard reads `TRIGGER_STATS` without a reference to
the runners. Nothing here does I/O.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import datetime

from prometheus_client import Counter, Histogram

from dfhost.history import utcnow
from dfhost.metrics import REGISTRY

__all__ = ["TRIGGER_STATS", "FunctionStats", "TriggerStats"]

EXECUTIONS = Counter(
    "dfhost_trigger_executions",
    "Executions of queue, blob, RabbitMQ, Redis and Event Grid triggered functions run by this "
    "host, by result (at least once: a message retried after a failure counts each time).",
    ["function", "trigger", "result"],
    registry=REGISTRY,
)
SECONDS = Histogram(
    "dfhost_trigger_duration_seconds",
    "Time one triggered execution took, inputs and outputs included.",
    ["function", "trigger"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
POISONED = Counter(
    "dfhost_trigger_poison_messages",
    "Messages and blobs given up on after their last allowed try (moved to a poison queue, "
    "dead-lettered, or acknowledged unprocessed).",
    ["function", "trigger"],
    registry=REGISTRY,
)


@dataclass(frozen=True, slots=True)
class FunctionStats:
    trigger: str
    succeeded: int = 0
    failed: int = 0
    poisoned: int = 0
    running: int = 0
    last_run: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None


class TriggerStats:
    """Per-function counts, safe to update from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[str, FunctionStats] = {}

    def started(self, function: str, trigger: str) -> None:
        with self._lock:
            now = self._stats.get(function) or FunctionStats(trigger)
            self._stats[function] = replace(now, running=now.running + 1, last_run=utcnow())

    def finished(self, function: str, trigger: str, seconds: float, error: str | None) -> None:
        EXECUTIONS.labels(function, trigger, "failed" if error else "succeeded").inc()
        SECONDS.labels(function, trigger).observe(seconds)
        with self._lock:
            now = self._stats.get(function) or FunctionStats(trigger)
            running = max(0, now.running - 1)
            if error is None:
                self._stats[function] = replace(now, succeeded=now.succeeded + 1, running=running)
            else:
                self._stats[function] = replace(
                    now,
                    failed=now.failed + 1,
                    running=running,
                    last_error=error,
                    last_error_at=utcnow(),
                )

    def poisoned(self, function: str, trigger: str) -> None:
        POISONED.labels(function, trigger).inc()
        with self._lock:
            now = self._stats.get(function) or FunctionStats(trigger)
            self._stats[function] = replace(now, poisoned=now.poisoned + 1)

    def snapshot(self) -> dict[str, FunctionStats]:
        with self._lock:
            return dict(self._stats)


TRIGGER_STATS = TriggerStats()
