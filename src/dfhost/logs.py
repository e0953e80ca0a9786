"""Function-invocation logging: tag what user code logs or prints, drop orchestrator replays.

A `ContextVar` holds the invocation being run, so `logging` records and `print` output from any
thread or task that runs user code are tagged with the function and instance, as Core Tools
shows them. Orchestrator output emitted while the SDK replays old events is dropped, which is
why an eternal orchestration logs each line once per cycle instead of in bursts.

`configure_console(log_format="json")` prints one JSON object per line instead, for log
collectors: every field as its own key (the Executing/Executed lines carry the function,
instance, invocation, and for Executed the duration and outcome), and replayed orchestrator
lines kept, marked `"replay": true`, so a pipeline can choose. Everything the host writes goes
through it then: prints outside any function and Python warnings too.

Both formats escape the control characters in the values a message is formatted with (its
arguments: an event name, an instance id, a path), so that none can drive a terminal (an
escape sequence) or overwrite a line (a carriage return). Line feeds stay, for tracebacks and
multi-line values, but cannot forge a line: in JSON they are inside a string, and on the
console every line of a record after its first starts with white space (one that would not is
indented by a space), so a line that starts with anything else is always a record's first.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO, cast

__all__ = [
    "ForwardingHandler",
    "InstanceLogs",
    "Invocation",
    "LogLine",
    "announce",
    "configure_console",
    "configure_forwarding",
    "escape_controls",
    "invocation",
    "keep_instance_logs",
    "log_invocation",
    "reemit",
    "set_host_id",
]

HOST_LOGGER = logging.getLogger("dfhost")


@dataclass(slots=True)
class Invocation:
    """One execution of one function."""

    function: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    instance_id: str | None = None
    replaying: Callable[[], bool] | None = None
    """Set while an orchestrator runs: whether the SDK is replaying old events right now."""
    execution_id: str | None = None
    episode: int | None = None
    """For orchestrators: where the episode starts in the execution's history (the number of
    events before it), which tells an instance's episodes apart."""

    @property
    def tag(self) -> str:
        return f"{self.function} ({self.instance_id or self.id})"

    def is_replaying(self) -> bool:
        return self.replaying is not None and self.replaying()


_current: ContextVar[Invocation | None] = ContextVar("dfhost_invocation", default=None)


def current_invocation() -> Invocation | None:
    """The invocation whose user code is running in this context, if any."""
    return _current.get()


class invocation:
    """Run the block as `inv`: its logs and prints are tagged with it.

    A class rather than a `@contextmanager` generator: it wraps every episode and activity,
    and the generator machinery cost more than the rest of it."""

    __slots__ = ("_inv", "_token")

    def __init__(self, inv: Invocation) -> None:
        self._inv = inv

    def __enter__(self) -> Invocation:
        self._token = _current.set(self._inv)
        return self._inv

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)


class log_invocation:
    """`invocation(inv)` framed by the Azure-style Executing/Executed lines.

    The block signals failure by raising; the exception propagates after the Executed line.
    """

    __slots__ = ("_inv", "_started", "_token")

    def __init__(self, inv: Invocation, reason: str) -> None:
        self._inv = inv
        _host_info(
            "Executing 'Functions.%s' (Reason='%s', Id=%s)",
            (inv.function, reason, inv.id),
            _fields(inv),
        )

    def __enter__(self) -> Invocation:
        self._started = time.perf_counter()
        self._token = _current.set(self._inv)
        return self._inv

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        _current.reset(self._token)
        ms = round((time.perf_counter() - self._started) * 1000)
        outcome = "Succeeded" if kind is None else "Failed"
        inv = self._inv
        fields = {**_fields(inv), "durationMs": ms, "succeeded": kind is None}
        _host_info(
            "Executed 'Functions.%s' (%s, Id=%s, Duration=%dms)",
            (inv.function, outcome, inv.id, ms),
            fields,
        )


def _host_info(message: str, args: tuple[object, ...], fields: dict[str, object]) -> None:
    """`HOST_LOGGER.info(message, *args)` without `Logger.findCaller`'s walk up the stack
    (the caller is always this module): two of these per function run, each on the event
    loop's thread, where their cost adds to every orchestration's latency."""
    if HOST_LOGGER.isEnabledFor(logging.INFO):
        record = HOST_LOGGER.makeRecord(
            HOST_LOGGER.name,
            logging.INFO,
            __file__,
            0,
            message,
            args,
            None,
            extra={"dfhost_fields": fields},
        )
        HOST_LOGGER.handle(record)


def _fields(inv: Invocation) -> dict[str, object]:
    """What a JSON line of the invocation's Executing/Executed record carries as fields."""
    fields: dict[str, object] = {
        "function": inv.function,
        "invocationId": inv.id,
        "instanceId": inv.instance_id,
    }
    if inv.execution_id is not None:
        fields["executionId"] = inv.execution_id
    return fields


# Control characters, and the Unicode line and paragraph separators that some viewers break
# lines at; tabs and line feeds (see the module doc) stay in message arguments.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_RECORD_LIKE_LINE = re.compile(r"\n(?=\S)")


def _escape(found: re.Match[str]) -> str:
    char = found.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """`text` with control characters written as escapes (`\\n`, `\\x1b`), on one line."""
    return _CONTROL.sub(_escape, text)


def _escape_but_lines(text: str) -> str:
    return _CONTROL_BUT_LINES.sub(_escape, text)


class _Escaped:
    """A message argument shown with its control characters but tabs and line feeds escaped,
    however the message formats it (%s, %r, or a format spec)."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return _escape_but_lines(str(self.value))

    def __repr__(self) -> str:
        return _escape_but_lines(repr(self.value))

    def __format__(self, spec: str) -> str:
        return _escape_but_lines(format(self.value, spec))


def _safe(value: object) -> object:
    # Numbers stay numbers, for %d and %.3f; nothing in them needs escaping, and neither in a
    # printable string (most arguments: names and ids), which skips a regular expression.
    if isinstance(value, (int, float)) or (type(value) is str and value.isprintable()):
        return value
    return _Escaped(value)


def _message(record: logging.LogRecord) -> str:
    """The record's message with its arguments' control characters escaped."""
    args = record.args
    if not args:
        return record.getMessage()
    safe: Mapping[str, object] | tuple[object, ...]
    if isinstance(args, Mapping):
        safe = {str(key): _safe(value) for key, value in args.items()}
    else:
        safe = tuple(_safe(value) for value in args)
    try:
        return str(record.msg) % safe
    except (TypeError, ValueError, KeyError):
        return _escape_but_lines(record.getMessage())


class _ConsoleFormatter(logging.Formatter):
    _second = -1
    _second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        # strftime once a second: it was the dearest step of a line (10 us in 40).
        second = int(record.created)
        if second != self._second:
            text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second, self._second_text = second, text
        stamp = f"{self._second_text}.{int(record.msecs):03d}"
        inv = getattr(record, "dfhost_invocation", None)
        message = _message(record)
        if exception := _exception_text(self, record):
            message = f"{message}\n{exception}"
        prefix = f"[{stamp}Z] "
        if isinstance(inv, Invocation):
            prefix += f"{escape_controls(inv.tag)}: "
        elif record.levelno >= logging.WARNING and not record.name.startswith("dfhost"):
            prefix += f"{record.levelname.lower()}: "
        # Continuation lines start with white space: only a record's first line does not.
        return prefix + _RECORD_LIKE_LINE.sub("\n ", message)


class _JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        inv = getattr(record, "dfhost_invocation", None)
        out: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="microseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
            "hostId": _host_id,
        }
        fields = getattr(record, "dfhost_fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if isinstance(inv, Invocation):
            out.update(
                function=inv.function,
                invocationId=inv.id,
                instanceId=inv.instance_id,
                executionId=inv.execution_id,
                episode=inv.episode,
                replay=getattr(record, "dfhost_replay", False),
            )
        if exception := _exception_text(self, record):
            out["exception"] = exception
        return json.dumps(out, ensure_ascii=False, default=str)


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_info:
        return formatter.formatException(record.exc_info)
    # A record forwarded from a worker process (`reemit`) carries its traceback as text.
    return getattr(record, "dfhost_exception", None)


_host_id: str | None = None


def set_host_id(host_id: str) -> None:
    """The host id JSON log lines carry (the engine's owner id)."""
    global _host_id
    _host_id = host_id


class _InvocationFilter(logging.Filter):
    def __init__(self, keep_replays: bool = False) -> None:
        super().__init__()
        self.keep_replays = keep_replays

    def filter(self, record: logging.LogRecord) -> bool:
        inv = _current.get()
        if inv is None:
            return True
        replaying = inv.is_replaying()
        if replaying and not self.keep_replays:
            return False
        record.dfhost_invocation = inv
        record.dfhost_replay = replaying
        return True


class _PrintRouter(io.TextIOBase):
    """Sends `print` output of user code through logging, a line at a time; with `everything`
    (JSON logs) also what is printed outside any function, so every line is JSON."""

    def __init__(self, target: TextIO, everything: bool = False) -> None:
        self._target = target
        self._pending = threading.local()
        self._logger = logging.getLogger("function")
        self._host_logger = logging.getLogger("stdout")
        self.everything = everything

    def write(self, text: str) -> int:
        inv = _current.get()
        pending = self._pending
        # Not while logging a line already: a handler writing to stdout would come back here.
        if (inv is None and not self.everything) or getattr(pending, "busy", False):
            return self._target.write(text)
        buffered = getattr(pending, "text", "") + text
        *lines, rest = buffered.split("\n")
        pending.text = rest
        logger = self._logger if inv is not None else self._host_logger
        pending.busy = True
        try:
            for line in lines:
                logger.info("%s", line)
        finally:
            pending.busy = False
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


def configure_console(
    level: int = logging.INFO, stream: TextIO | None = None, log_format: str = "console"
) -> None:
    """Print host and function logs on the console, one tagged line each, as they happen;
    `log_format` "json" prints JSON lines (see the module doc)."""
    if log_format not in ("console", "json"):
        raise ValueError(f"unknown log format {log_format!r} (use console or json)")
    target = stream or sys.stderr
    handler = logging.StreamHandler(target)
    as_json = log_format == "json"
    handler.setFormatter(_JsonFormatter() if as_json else _ConsoleFormatter())
    handler.addFilter(_InvocationFilter(keep_replays=as_json))
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
    sys.stdout.everything = as_json
    logging.captureWarnings(as_json)
    global _json_console
    _json_console = as_json


_json_console = False


def announce(text: str, **fields: object) -> None:
    """Tell the person starting the host something (the functions it serves, keys it created):
    `text` as is on the console, one JSON line with `fields` as keys with JSON logs."""
    if _json_console:
        HOST_LOGGER.info("%s", text.strip().splitlines()[0], extra={"dfhost_fields": fields})
    else:
        print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line a function logged (or printed) while working for an instance."""

    time: datetime
    level: str
    function: str
    message: str


class InstanceLogs(logging.Handler):
    """The latest log lines of the instances this process ran functions for, in memory, for
    the dashboard: nothing is stored in the task hub, so lines are lost when the host stops
    and lines logged by other hosts are not here.

    Bounded: `per_instance` lines for each of the `instances` instances that logged last.
    Orchestrator lines logged while replaying are dropped, as on the console.
    """

    MAX_MESSAGE = 4000

    def __init__(self, per_instance: int = 200, instances: int = 1000) -> None:
        super().__init__(logging.DEBUG)
        self.per_instance = per_instance
        self.instances = instances
        self._lines: OrderedDict[str, deque[LogLine]] = OrderedDict()

    def emit(self, record: logging.LogRecord) -> None:
        inv = _current.get()
        if inv is None or inv.instance_id is None or inv.is_replaying():
            return
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
        line = LogLine(
            time=datetime.fromtimestamp(record.created, UTC),
            level=record.levelname,
            function=inv.function,
            message=message[: self.MAX_MESSAGE],
        )
        # `handle` holds the handler's lock around `emit`; `lines` takes it too.
        kept = self._lines.get(inv.instance_id)
        if kept is None:
            kept = self._lines[inv.instance_id] = deque(maxlen=self.per_instance)
            while len(self._lines) > self.instances:
                self._lines.popitem(last=False)
        else:
            self._lines.move_to_end(inv.instance_id)
        kept.append(line)

    def lines(self, instance_id: str) -> list[LogLine]:
        """The lines kept for `instance_id`, oldest first."""
        self.acquire()
        try:
            return list(self._lines.get(instance_id, ()))
        finally:
            self.release()


def keep_instance_logs() -> InstanceLogs:
    """The process's `InstanceLogs`, installed on the root logger on first use."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, InstanceLogs):
            return handler
    handler = InstanceLogs()
    root.addHandler(handler)
    return handler


# --- records of worker processes ---------------------------------------------------------------
#
# User code can run in worker processes (`dfhost.runtime.workers`). Their records travel to the
# host as plain dicts and are logged there again, so that the console, the JSON lines and the
# dashboard's `InstanceLogs` see them exactly as if the host had run the code: same tags, same
# order, replays filtered by the host's own rules.

_ForwardedInvocation = tuple[str, str, str | None, str | None, int | None, bool]
"""(function, invocation id, instance id, execution id, episode, replaying)."""


class ForwardingHandler(logging.Handler):
    """A worker process's only handler: hands each record to `send` as a dict."""

    def __init__(self, send: Callable[[dict[str, object]], None]) -> None:
        super().__init__(logging.DEBUG)
        self._send = send

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: `send` serializes writes itself, and records from different
        # threads need no order between them beyond the one the pipe gives.
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(_forwardable(record))
        except Exception:
            self.handleError(record)


def _forwardable(record: logging.LogRecord) -> dict[str, object]:
    inv = _current.get()
    data: dict[str, object] = {
        "name": record.name,
        "levelno": record.levelno,
        "levelname": record.levelname,
        # Formatted here, control characters of the arguments escaped as the host would:
        # the arguments may be objects the host cannot rebuild.
        "msg": _message(record),
        "created": record.created,
        "msecs": record.msecs,
        "process": record.process,
        "threadName": record.threadName,
    }
    if record.exc_info:
        data["dfhost_exception"] = logging.Formatter().formatException(record.exc_info)
    fields = getattr(record, "dfhost_fields", None)
    if isinstance(fields, dict):
        data["dfhost_fields"] = fields
    if inv is not None:
        invocation_data: _ForwardedInvocation = (
            inv.function,
            inv.id,
            inv.instance_id,
            inv.execution_id,
            inv.episode,
            inv.is_replaying(),
        )
        data["invocation"] = invocation_data
    return data


def reemit(data: Mapping[str, object]) -> None:
    """Log a record forwarded by a worker process (`ForwardingHandler`) through this
    process's handlers, tagged with the invocation it was logged in."""
    fields = {k: v for k, v in data.items() if k != "invocation"}
    fields["args"] = None
    fields["exc_info"] = None
    record = logging.makeLogRecord(fields)
    logger = logging.getLogger(str(data["name"]))
    if not logger.isEnabledFor(record.levelno):
        return
    forwarded = data.get("invocation")
    if forwarded is None:
        logger.handle(record)
        return
    function, inv_id, instance_id, execution_id, episode, replay = cast(
        _ForwardedInvocation, forwarded
    )
    inv = Invocation(
        function=function,
        id=inv_id,
        instance_id=instance_id,
        execution_id=execution_id,
        episode=episode,
        replaying=_REPLAYING if replay else None,
    )
    token = _current.set(inv)
    try:
        logger.handle(record)
    finally:
        _current.reset(token)


def _replaying() -> bool:
    return True


_REPLAYING = _replaying


def configure_forwarding(
    send: Callable[[dict[str, object]], None], log_format: str, level: int = logging.INFO
) -> None:
    """Set up a worker process's logging: every record from `level` up, and what user code
    prints, goes to `send` (the host logs it, `reemit`); `log_format` and `level` are the
    host's (with JSON logs, prints outside any function go through logging too)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(ForwardingHandler(send))
    root.setLevel(level)
    logging.getLogger("azure.functions.DurableFunctions").setLevel(logging.WARNING)
    as_json = log_format == "json"
    if not isinstance(sys.stdout, _PrintRouter):
        sys.stdout = _PrintRouter(sys.stdout)
    sys.stdout.everything = as_json
    logging.captureWarnings(as_json)
