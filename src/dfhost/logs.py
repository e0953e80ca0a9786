"""Function-invocation logging: tag what user code logs or prints, drop orchestrator replays.

A `ContextVar` holds the invocation being run, so `logging` records and `print` output from any
thread or task that runs user code are tagged with the function and instance, as Core Tools
shows them. Orchestrator output emitted while the SDK replays old events is dropped, which is
why an eternal orchestration logs each line once per cycle instead of in bursts.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

__all__ = ["Invocation", "configure_console", "invocation", "log_invocation"]

HOST_LOGGER = logging.getLogger("dfhost")


@dataclass(slots=True)
class Invocation:
    """One execution of one function."""

    function: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    instance_id: str | None = None
    replaying: Callable[[], bool] | None = None
    """Set while an orchestrator runs: whether the SDK is replaying old events right now."""

    @property
    def tag(self) -> str:
        return f"{self.function} ({self.instance_id or self.id})"

    def is_replaying(self) -> bool:
        return self.replaying is not None and self.replaying()


_current: ContextVar[Invocation | None] = ContextVar("dfhost_invocation", default=None)


def current_invocation() -> Invocation | None:
    """The invocation whose user code is running in this context, if any."""
    return _current.get()


@contextmanager
def invocation(inv: Invocation) -> Iterator[Invocation]:
    """Run the block as `inv`: its logs and prints are tagged with it."""
    token = _current.set(inv)
    try:
        yield inv
    finally:
        _current.reset(token)


@contextmanager
def log_invocation(inv: Invocation, reason: str) -> Iterator[Invocation]:
    """`invocation(inv)` framed by the Azure-style Executing/Executed lines.

    The block signals failure by raising; the exception propagates after the Executed line.
    """
    HOST_LOGGER.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", inv.function, reason, inv.id)
    started = time.perf_counter()
    outcome = "Failed"
    try:
        with invocation(inv):
            yield inv
        outcome = "Succeeded"
    finally:
        ms = round((time.perf_counter() - started) * 1000)
        HOST_LOGGER.info(
            "Executed 'Functions.%s' (%s, Id=%s, Duration=%dms)", inv.function, outcome, inv.id, ms
        )


class _ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        inv = getattr(record, "dfhost_invocation", None)
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        prefix = f"[{stamp}Z] "
        if isinstance(inv, Invocation):
            prefix += f"{inv.tag}: "
        elif record.levelno >= logging.WARNING and not record.name.startswith("dfhost"):
            prefix += f"{record.levelname.lower()}: "
        return prefix + message


class _InvocationFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        inv = _current.get()
        if inv is None:
            return True
        if inv.is_replaying():
            return False
        record.dfhost_invocation = inv
        return True


class _PrintRouter(io.TextIOBase):
    """Sends `print` output of user code through logging, a line at a time."""

    def __init__(self, target: TextIO) -> None:
        self._target = target
        self._pending = threading.local()
        self._logger = logging.getLogger("function")

    def write(self, text: str) -> int:
        inv = _current.get()
        if inv is None:
            return self._target.write(text)
        buffered = getattr(self._pending, "text", "") + text
        *lines, rest = buffered.split("\n")
        self._pending.text = rest
        for line in lines:
            self._logger.info("%s", line)
        return len(text)

    def flush(self) -> None:
        self._target.flush()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target, "encoding", "utf-8")

    def isatty(self) -> bool:
        return self._target.isatty()

    def fileno(self) -> int:
        return self._target.fileno()


def configure_console(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Print host and function logs on the console, one tagged line each, as they happen."""
    target = stream or sys.stderr
    handler = logging.StreamHandler(target)
    handler.setFormatter(_ConsoleFormatter())
    handler.addFilter(_InvocationFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_dfhost", False)]:
        root.removeHandler(old)
    handler._dfhost = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # azure-functions' Durable codec logs one-time advisories to app authors at INFO from
    # inside our payload decoding, where they would read as the user's own log lines.
    logging.getLogger("azure.functions.DurableFunctions").setLevel(logging.WARNING)
    if not isinstance(sys.stdout, _PrintRouter):
        sys.stdout = _PrintRouter(sys.stdout)
