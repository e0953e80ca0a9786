"""Host settings, read once: local.settings.json, host.json and the environment.

An app's settings come from three places, read in this order when the app loads:

- `local.settings.json`: its `Values` become environment variables (app settings) unless
  already set, and `Host.LocalHttpPort` is the default port.
- `host.json`, the Functions 2.x+ schema (comments and trailing commas allowed, as the .NET
  host allows them).
- Environment variables `AzureFunctionsJobHost__a__b` override host.json's `a.b`. Their values
  are text, read as the setting's type: `false`, `7`, `00:00:30`.

`%Name%` in hubName is the app setting Name. The result is an `AppSettings`: frozen, typed and
checked once. A setting that cannot be used becomes a `LoadError` (one line naming it) and
keeps its default; the fatal ones (`Limits` and `OpsSettings`: functionTimeout, limits,
retention, ensure) stop `dfhost start`, which will not run on a guessed limit. The
storageProvider settings are the exception: only the task hub that uses them refuses a bad one,
so a typo in an Azure Storage setting does not stop a SQLite host.

Every setting follows two rules:

- Keys are case-insensitive, as .NET configuration reads them. Where one object holds a key in
  several casings (.NET refuses those as duplicates), the casing dfhost documents wins, else the
  first in file order; an environment override replaces them all.
- Durations are .NET TimeSpans, `[-][d.]hh:mm[:ss[.fffffff]]`, hours 0-23, minutes and seconds
  0-59. .NET reads hours over 23 as days ("24:00:00" is 24 days) and a bare number as days;
  dfhost refuses both rather than guess what was meant (timer schedules excepted: see
  `dfhost.runtime.schedule`). The storageProvider durations also take a JSON number of seconds.

This module is the bottom layer's: it imports nothing of dfhost but `dfhost.history`. It is
longer than most on purpose: every setting the host reads is here, next to the one lookup and
the one parser they share, in short sections that do not depend on each other.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar

from dfhost.history import TERMINAL_STATUSES, OrchestrationStatus

__all__ = [
    "AppLoadError",
    "AppNotFoundError",
    "AppSettings",
    "BlobSettings",
    "EnsureSpec",
    "HttpSettings",
    "Limits",
    "LoadError",
    "LoadErrors",
    "OpsSettings",
    "QueueSettings",
    "RabbitMQSettings",
    "RetentionPolicy",
    "SettingsError",
    "StorageProvider",
    "TriggerSettings",
    "app_root",
    "connection_setting",
    "describe_exception",
    "expand_app_settings",
    "get_ci",
    "get_path",
    "load_settings",
    "parse_drain_flag",
    "parse_ensure_flag",
    "parse_timespan",
    "read_json_object",
    "read_ops_settings",
    "read_settings",
    "truthy",
    "valid",
]

log = logging.getLogger("dfhost")
T = TypeVar("T")
S = TypeVar("S", bound=str)

DEFAULT_HUB_NAME = "TestHubName"
DEFAULT_PAYLOAD_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_ACTIONS = 100_000
DEFAULT_HISTORY_EVENTS = 500_000
DEFAULT_FUNCTION_TIMEOUT = 30 * 60.0
DEFAULT_BATCH_SIZE = 500
DEFAULT_SHUTDOWN_TIMEOUT = 30.0
"""Seconds a stopping host waits for its running work: .NET's host shutdown timeout, and what
Kubernetes waits between SIGTERM and SIGKILL."""
DURABLE = "extensions.durableTask"
OPS_SETTINGS = f"{DURABLE}.dfhost"

_HUB_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,44}$")
_ENV_OVERRIDE_PREFIX = "azurefunctionsjobhost__"  # AzureFunctionsJobHost__a__b overrides a.b
_TIMESPAN = re.compile(r"(-)?(?:(\d+)\.)?(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,7}))?)?")
_TIMESPAN_FORM = "[d.]hh:mm[:ss[.fffffff]]"
_MAX_DAYS = 10_675_199  # TimeSpan.MaxValue
_RETENTION_KEYS = {s.value.lower(): s for s in sorted(TERMINAL_STATUSES)}


def _default_concurrency() -> int:
    return 10 * (os.cpu_count() or 1)  # the extension's default outside the Consumption plan


# --------------------------------------------------------------------------------------------
# Errors


class SettingsError(ValueError):
    """A setting that cannot be used; one line naming it (its host.json path) and the problem."""


class AppLoadError(Exception):
    """The app cannot be loaded at all (as opposed to a `LoadError` about one part of it)."""


class AppNotFoundError(AppLoadError, FileNotFoundError):
    """The app folder does not exist or is not a folder."""


@dataclass(frozen=True, slots=True)
class LoadError:
    source: str  # file or folder
    message: str  # one line: what is wrong and how to fix it
    detail: str | None = None
    """For code that failed to import: the exception as Python prints it (the user's frames,
    each with its source line and caret)."""
    fatal: bool = False
    """`dfhost start` refuses to run with it: a limit, retention or ensure setting, which the
    host would otherwise replace with a default the user did not choose."""


class LoadErrors(list[LoadError]):
    def add(self, source: str | Path, message: str, *, fatal: bool = False) -> None:
        error = LoadError(str(source), message, fatal=fatal)
        if error not in self:  # e.g. a section two readers walk through is not an object
            self.append(error)


# --------------------------------------------------------------------------------------------
# The one lookup and the one TimeSpan parser


def get_ci(mapping: Any, key: str) -> Any:
    """`mapping[key]` with the key matched case-insensitively, as .NET configuration does; None
    when `mapping` is not an object or has no such key. Of several casings of `key` the exact
    one wins, else the first in file order."""
    if not isinstance(mapping, Mapping):
        return None
    if key in mapping:
        return mapping[key]
    lowered = key.lower()
    return next((v for k, v in mapping.items() if str(k).lower() == lowered), None)


def get_path(mapping: Any, path: str) -> Any:
    """`get_ci` along a dotted path such as `extensions.durableTask.hubName`."""
    for key in path.split("."):
        mapping = get_ci(mapping, key)
    return mapping


def parse_timespan(
    value: Any, setting: str, *, seconds: bool = False, example: str = "00:00:30"
) -> timedelta:
    """A duration setting: a .NET TimeSpan string `[-][d.]hh:mm[:ss[.fffffff]]` (hours 0-23,
    minutes and seconds 0-59, surrounding blanks ignored), or with `seconds` also a JSON number
    of seconds. Negative durations parse: each caller says whether its setting takes them.
    Raises SettingsError naming `setting`."""
    if seconds and isinstance(value, int | float) and not isinstance(value, bool):
        if not (math.isfinite(value) and abs(value) <= _MAX_DAYS * 86400):
            raise SettingsError(f"{setting} {value!r} is not a number of seconds")
        return timedelta(seconds=value)
    found = _TIMESPAN.fullmatch(value.strip()) if isinstance(value, str) else None
    if found is None:
        raise SettingsError(
            f"{setting} {value!r} is not a duration like {example} ({_TIMESPAN_FORM})"
        )
    sign, days, hours, minutes, whole, fraction = found.groups()
    if int(hours) > 23 or int(minutes) > 59 or int(whole or 0) > 59:
        raise SettingsError(
            f"{setting} {value!r} is out of range: hours must be 0-23 and minutes and seconds "
            "0-59 (write days as d.hh:mm:ss: .NET reads 24:00:00 as 24 days)"
        )
    if int(days or 0) > _MAX_DAYS:
        raise SettingsError(f"{setting} {value!r} is longer than {_MAX_DAYS} days")
    span = timedelta(
        days=int(days or 0),
        hours=int(hours),
        minutes=int(minutes),
        seconds=int(whole or 0),
        microseconds=int((fraction or "0").ljust(7, "0")) // 10,
    )
    return -span if sign else span


def _positive_int(value: Any) -> int | None:
    """A JSON integer, or digits (an environment override), above zero; else None."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def _positive(value: Any, setting: str) -> int:
    if (number := _positive_int(value)) is None:
        raise SettingsError(f"{setting} {value!r} is not a positive integer")
    return number


def _flag(value: Any, setting: str) -> bool:
    """A JSON boolean, or `true`/`false` in any case (an environment override)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise SettingsError(f"{setting} {value!r} is neither true nor false")


def _object(host_json: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    """The object at `path`, {} when absent; raises when a part of the path is not an object."""
    node: Mapping[str, Any] = host_json
    walked: list[str] = []
    for key in path.split("."):
        walked.append(key)
        child = get_ci(node, key)
        if child is None:
            return {}
        if not isinstance(child, Mapping):
            raise SettingsError(f"host.json {'.'.join(walked)} must be an object")
        node = child
    return node


def truthy(value: Any) -> bool:
    """A lenient yes: true, "true" (any case) or 1, as flags like `disabled` are written."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return value is True or value == 1


def valid(value: T | SettingsError) -> T:
    """A setting kept with its problem until it is used (see `StorageProvider`): the value, or
    raise the problem."""
    if isinstance(value, SettingsError):
        raise SettingsError(str(value))
    return value


# --------------------------------------------------------------------------------------------
# The sections


@dataclass(frozen=True, slots=True)
class Limits:
    """What one caller or one function may take (see `dfhost.orchestration.limits`):
    `functionTimeout`, `extensions.durableTask.maxOrchestrationActions` and
    `extensions.durableTask.dfhost.limits.{payloadBytes, historyEvents}`."""

    payload_bytes: int = DEFAULT_PAYLOAD_BYTES
    max_actions: int = DEFAULT_MAX_ACTIONS
    history_events: int = DEFAULT_HISTORY_EVENTS
    function_timeout: float | None = DEFAULT_FUNCTION_TIMEOUT
    """Seconds; None: no timeout."""

    @classmethod
    def from_host_json(cls, host_json: Mapping[str, Any]) -> Limits:
        """Raises `SettingsError`."""
        durable = _object(host_json, DURABLE)
        own = _object(host_json, f"{OPS_SETTINGS}.limits")

        def positive(section: Mapping[str, Any], key: str, path: str, default: int) -> int:
            raw = get_ci(section, key)
            return default if raw is None else _positive(raw, f"host.json {path}.{key}")

        return cls(
            payload_bytes=positive(
                own, "payloadBytes", f"{OPS_SETTINGS}.limits", DEFAULT_PAYLOAD_BYTES
            ),
            max_actions=positive(durable, "maxOrchestrationActions", DURABLE, DEFAULT_MAX_ACTIONS),
            history_events=positive(
                own, "historyEvents", f"{OPS_SETTINGS}.limits", DEFAULT_HISTORY_EVENTS
            ),
            function_timeout=_function_timeout(get_ci(host_json, "functionTimeout")),
        )


def _function_timeout(raw: Any) -> float | None:
    if raw is None:
        return DEFAULT_FUNCTION_TIMEOUT
    if str(raw).strip() == "-1":
        return None
    span = parse_timespan(raw, "host.json functionTimeout", example="00:05:00")
    if span <= timedelta(0):
        raise SettingsError("host.json functionTimeout must be longer than zero (-1: no timeout)")
    return span.total_seconds()


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """`extensions.queues`: the Azure Queue Storage trigger's settings, as the extension reads
    them, plus `dfhost.messageLease` (how long a message being processed stays hidden from
    other hosts between renewals: a crashed host's messages come back after it)."""

    batch_size: int = 16
    new_batch_threshold: int | None = None
    """None: batch_size // 2, the extension's default."""
    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0
    """Seconds a failed message stays hidden before its next try."""
    max_dequeue_count: int = 5
    message_encoding: str = "base64"
    message_lease: float = 600.0

    @property
    def threshold(self) -> int:
        return (
            self.batch_size // 2 if self.new_batch_threshold is None else self.new_batch_threshold
        )

    @classmethod
    def from_host_json(cls, host_json: Mapping[str, Any]) -> QueueSettings:
        """Raises `SettingsError`."""
        path = "extensions.queues"
        section = _object(host_json, path)
        number = _section_reader(section, path)
        encoding = str(get_ci(section, "messageEncoding") or "base64").strip().lower()
        if encoding not in ("base64", "none"):
            raise SettingsError(f"host.json {path}.messageEncoding {encoding!r}: base64 or none")
        batch = number("batchSize", 16, 1, 32)
        threshold = get_ci(section, "newBatchThreshold")
        return cls(
            batch_size=batch,
            new_batch_threshold=None if threshold is None else number("newBatchThreshold", 0, 0),
            max_polling_interval=_span(section, path, "maxPollingInterval", 60.0, minimum=0.1),
            visibility_timeout=_span(section, path, "visibilityTimeout", 0.0, minimum=0.0),
            max_dequeue_count=number("maxDequeueCount", 5, 1),
            message_encoding=encoding,
            message_lease=_span(
                _object(section, "dfhost"), f"{path}.dfhost", "messageLease", 600.0, minimum=1.0
            ),
        )


@dataclass(frozen=True, slots=True)
class BlobSettings:
    """`extensions.blobs.maxDegreeOfParallelism` and dfhost's `extensions.blobs.dfhost`:
    `pollingInterval` between container scans (Azure scans about every 10 seconds) and
    `receiptLease`, how long a blob being processed is held before another host may retry it."""

    max_degree_of_parallelism: int = field(default_factory=lambda: 8 * (os.cpu_count() or 1))
    polling_interval: float = 10.0
    receipt_lease: float = 60.0

    @classmethod
    def from_host_json(cls, host_json: Mapping[str, Any]) -> BlobSettings:
        """Raises `SettingsError`."""
        path = "extensions.blobs"
        section = _object(host_json, path)
        own = _object(section, "dfhost")
        return cls(
            max_degree_of_parallelism=_section_reader(section, path)(
                "maxDegreeOfParallelism", 8 * (os.cpu_count() or 1), 1
            ),
            polling_interval=_span(own, f"{path}.dfhost", "pollingInterval", 10.0, minimum=0.1),
            receipt_lease=_span(own, f"{path}.dfhost", "receiptLease", 60.0, minimum=15.0),
        )


@dataclass(frozen=True, slots=True)
class RabbitMQSettings:
    """`extensions.rabbitMQ`: defaults for every RabbitMQ trigger and output binding."""

    prefetch_count: int = 30
    queue_name: str | None = None
    connection_string: str | None = None
    host_name: str | None = None
    port: int | None = None
    user_name: str | None = None
    password: str | None = None

    @classmethod
    def from_host_json(cls, host_json: Mapping[str, Any]) -> RabbitMQSettings:
        """Raises `SettingsError`."""
        path = "extensions.rabbitMQ"
        section = _object(host_json, path)
        number = _section_reader(section, path)

        def text(key: str) -> str | None:
            raw = get_ci(section, key)
            return None if raw in (None, "") else str(raw)

        return cls(
            prefetch_count=number("prefetchCount", 30, 1, 65535),
            queue_name=text("queueName"),
            connection_string=text("connectionString"),
            host_name=text("hostName"),
            port=None if get_ci(section, "port") is None else number("port", 5672, 1, 65535),
            user_name=text("userName"),
            password=text("password"),
        )


@dataclass(frozen=True, slots=True)
class TriggerSettings:
    """The host.json sections of the queue, blob and RabbitMQ extensions."""

    queues: QueueSettings = field(default_factory=QueueSettings)
    blobs: BlobSettings = field(default_factory=BlobSettings)
    rabbitmq: RabbitMQSettings = field(default_factory=RabbitMQSettings)

    @classmethod
    def from_host_json(cls, host_json: Mapping[str, Any], errors: list[str]) -> TriggerSettings:
        """Each section that cannot be used keeps its defaults, its problem in `errors`."""
        sections: dict[str, Any] = {}
        for name, reader in (
            ("queues", QueueSettings),
            ("blobs", BlobSettings),
            ("rabbitmq", RabbitMQSettings),
        ):
            try:
                sections[name] = reader.from_host_json(host_json)
            except SettingsError as exc:
                errors.append(str(exc))
        return cls(**sections)


def _section_reader(section: Mapping[str, Any], path: str) -> Callable[..., int]:
    def number(key: str, default: int, low: int, high: int | None = None) -> int:
        raw = get_ci(section, key)
        if raw is None:
            return default
        value = _whole_number(raw, f"host.json {path}.{key}")
        if value < low or (high is not None and value > high):
            upper = f" to {high}" if high is not None else " or more"
            raise SettingsError(f"host.json {path}.{key} {raw!r} must be {low}{upper}")
        return value

    return number


def _span(section: Mapping[str, Any], path: str, key: str, default: float, minimum: float) -> float:
    raw = get_ci(section, key)
    if raw is None:
        return default
    seconds = parse_timespan(raw, f"host.json {path}.{key}").total_seconds()
    if seconds < minimum:
        raise SettingsError(f"host.json {path}.{key} {raw!r} must be at least {minimum:g} s")
    return seconds


def connection_setting(name: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The value of a binding's `connection` app setting, looked up as the host does: NAME,
    then AzureWebJobsNAME; no name means AzureWebJobsStorage. None when unset."""
    source = os.environ if env is None else env
    name = (name or "").strip() or "AzureWebJobsStorage"
    if name.startswith("%") and name.endswith("%"):
        name = name[1:-1]
    for candidate in (name, f"AzureWebJobs{name}"):
        value = source.get(candidate) or next(
            (v for k, v in source.items() if k.lower() == candidate.lower() and v), None
        )
        if value:
            return value
    return None


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Durable HTTP (`context.call_http`), `extensions.durableTask.httpSettings`."""

    poll_interval: float = 30.0
    """Seconds between polls when a 202 has no Retry-After (the extension's default)."""
    polling_limit: float = 24 * 3600.0
    """Seconds of polling after which the call fails."""
    request_timeout: float = 100.0
    """Seconds each request may take (.NET HttpClient's default)."""

    @classmethod
    def from_host_json(cls, host_json: Mapping[str, Any]) -> HttpSettings:
        """Raises `SettingsError`."""
        path = f"{DURABLE}.httpSettings.defaultAsyncRequestSleepTimeMilliseconds"
        raw = get_path(host_json, path)
        if raw is None:
            return cls()
        number: Any = raw
        if isinstance(raw, str):
            with contextlib.suppress(ValueError):
                number = float(raw)  # an environment override
        if not (
            isinstance(number, int | float)
            and not isinstance(number, bool)
            and math.isfinite(number)
            and number >= 0
        ):
            raise SettingsError(f"host.json {path} {raw!r} is not a number of milliseconds")
        return cls(poll_interval=number / 1000)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    periods: Mapping[OrchestrationStatus, timedelta]
    """How long finished instances are kept, by status."""
    batch_size: int = DEFAULT_BATCH_SIZE


@dataclass(frozen=True, slots=True)
class EnsureSpec:
    """Keep an instance of `orchestrator` with this id unfinished: start it at host start
    unless an unfinished instance already has the id."""

    instance_id: str
    orchestrator: str
    input: str | None = None
    """JSON text."""


@dataclass(frozen=True, slots=True)
class OpsSettings:
    """`extensions.durableTask.dfhost`'s retention and ensure (see `dfhost.runtime.retention`)
    and shutdownTimeout."""

    retention: RetentionPolicy | None = None
    ensure: list[EnsureSpec] = field(default_factory=list)
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    """Seconds a stopped host lets its running work finish before it hands the rest over."""


def read_ops_settings(host_json: Mapping[str, Any]) -> OpsSettings:
    """The `extensions.durableTask.dfhost` section; raises `SettingsError`."""
    section = get_path(host_json, OPS_SETTINGS)
    if section is None:
        return OpsSettings()
    if not isinstance(section, Mapping):
        raise SettingsError(f"host.json {OPS_SETTINGS} must be an object")
    for key in section:
        if key.lower() not in ("retention", "ensure", "limits", "shutdowntimeout"):
            expected = "expected retention, ensure, limits, shutdownTimeout"
            raise SettingsError(f"host.json {OPS_SETTINGS}: unknown key {key!r} ({expected})")
    return OpsSettings(
        retention=_read_retention(get_ci(section, "retention")),
        ensure=_read_ensure(get_ci(section, "ensure")),
        shutdown_timeout=_read_shutdown_timeout(get_ci(section, "shutdownTimeout")),
    )


def _read_shutdown_timeout(raw: Any) -> float:
    if raw is None:
        return DEFAULT_SHUTDOWN_TIMEOUT
    where = f"host.json {OPS_SETTINGS}.shutdownTimeout"
    span = parse_timespan(raw, where, example="00:00:30")
    if span < timedelta(0):
        raise SettingsError(f"{where} {raw!r} must not be negative")
    return span.total_seconds()


def parse_drain_flag(text: str) -> float:
    """The value of `dfhost start --drain SECONDS`: a number of seconds, 0 or more."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 <= seconds <= _MAX_DAYS * 86400):
        raise SettingsError(f"--drain {text!r}: expected a number of seconds, 0 or more")
    return seconds


def _read_retention(raw: Any) -> RetentionPolicy | None:
    where = f"host.json {OPS_SETTINGS}.retention"
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise SettingsError(f'{where} must be an object like {{"completed": "7.00:00:00"}}')
    periods: dict[OrchestrationStatus, timedelta] = {}
    batch_size = DEFAULT_BATCH_SIZE
    for key, value in raw.items():
        if key.lower() == "batchsize":
            batch_size = _positive(value, f"{where}.{key}")
            continue
        status = _RETENTION_KEYS.get(key.lower())
        if status is None:
            known = ", ".join([*_RETENTION_KEYS, "batchSize"])
            raise SettingsError(f"{where}: unknown key {key!r} (expected {known})")
        if not isinstance(value, str):
            raise SettingsError(f'{where}.{key}: expected a duration like "7.00:00:00"')
        period = parse_timespan(value, f"{where}.{key}", example="7.00:00:00")
        if period < timedelta(0):
            raise SettingsError(f"{where}.{key} {value!r} must not be negative")
        periods[status] = period
    return RetentionPolicy(periods, batch_size) if periods else None


def _read_ensure(raw: Any) -> list[EnsureSpec]:
    where = f"host.json {OPS_SETTINGS}.ensure"
    if raw is None:
        return []
    if not isinstance(raw, Mapping):
        raise SettingsError(f'{where} must be an object of "INSTANCE_ID": "ORCHESTRATOR"')
    specs: list[EnsureSpec] = []
    for instance_id, value in raw.items():
        if isinstance(value, str):
            specs.append(EnsureSpec(instance_id, value))
            continue
        orchestrator = get_ci(value, "orchestrator")
        if not isinstance(value, Mapping) or not isinstance(orchestrator, str) or not orchestrator:
            raise SettingsError(
                f'{where}.{instance_id}: expected "ORCHESTRATOR" or '
                '{"orchestrator": "...", "input": ...}'
            )
        unknown = [k for k in value if k.lower() not in ("orchestrator", "input")]
        if unknown:
            raise SettingsError(f"{where}.{instance_id}: unknown key {unknown[0]!r}")
        has_input = any(k.lower() == "input" for k in value)
        input_text = json.dumps(get_ci(value, "input")) if has_input else None
        specs.append(EnsureSpec(instance_id, orchestrator, input_text))
    return specs


def parse_ensure_flag(text: str) -> EnsureSpec:
    """`ID=ORCHESTRATOR[:JSON]`, the value of `dfhost start --ensure`."""
    instance_id, sep, rest = text.partition("=")
    orchestrator, colon, input_text = rest.partition(":")
    if not sep or not instance_id or not orchestrator:
        raise SettingsError(f"--ensure {text!r}: expected ID=ORCHESTRATOR[:JSON]")
    if colon:
        try:
            json.loads(input_text)
        except ValueError as exc:
            raise SettingsError(f"--ensure {text!r}: the input is not valid JSON: {exc}") from None
    return EnsureSpec(instance_id, orchestrator, input_text if colon else None)


@dataclass(frozen=True, slots=True)
class StorageProvider:
    """`extensions.durableTask.storageProvider` (`durableTask.storageProvider` in the Functions
    1.x schema): the Azure Storage and PostgreSQL task hubs' settings.

    A malformed value is kept as its `SettingsError`, raised by `valid` when the task hub that
    uses it is opened, and never when another is (a URL giving the option itself wins too)."""

    type: str | None = None
    connection_name: str | None = None
    """The app setting holding the Azure Storage connection string (connectionName,
    connectionStringName, or durableTask.azureStorageConnectionStringName)."""
    partition_count: int | SettingsError | None = None
    control_queue_visibility_timeout: timedelta | SettingsError | None = None
    work_item_queue_visibility_timeout: timedelta | SettingsError | None = None
    max_queue_polling_interval: timedelta | SettingsError | None = None
    task_event_lock_timeout: timedelta | SettingsError | None = None
    """PostgreSQL: how long a crashed host's work stays locked (the MSSQL provider's name)."""

    @classmethod
    def from_host_json(cls, host_json: Mapping[str, Any]) -> StorageProvider:
        durable, where = get_path(host_json, DURABLE), DURABLE
        if durable is None:
            durable, where = get_ci(host_json, "durableTask"), "durableTask"
        path = f"host.json {where}.storageProvider"
        provider = get_ci(durable, "storageProvider")

        def checked(key: str, read: Callable[[Any, str], T]) -> T | SettingsError | None:
            raw = get_ci(provider, key)
            try:
                return None if raw is None else read(raw, f"{path}.{key}")
            except SettingsError as exc:
                return exc

        kind = get_ci(provider, "type")
        connection = (
            get_ci(provider, "connectionName")
            or get_ci(provider, "connectionStringName")
            or get_ci(durable, "azureStorageConnectionStringName")
        )
        return cls(
            type=None if kind is None else str(kind),
            connection_name=str(connection) if connection else None,
            partition_count=checked("partitionCount", _whole_number),
            control_queue_visibility_timeout=checked("controlQueueVisibilityTimeout", _seconds),
            work_item_queue_visibility_timeout=checked("workItemQueueVisibilityTimeout", _seconds),
            max_queue_polling_interval=checked("maxQueuePollingInterval", _seconds),
            task_event_lock_timeout=checked("taskEventLockTimeout", _positive_seconds),
        )


def _whole_number(raw: Any, setting: str) -> int:
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise SettingsError(f"{setting} {raw!r} is not a whole number")
    return raw


def _seconds(raw: Any, setting: str) -> timedelta:
    return parse_timespan(raw, setting, seconds=True)


def _positive_seconds(raw: Any, setting: str) -> timedelta:
    span = parse_timespan(raw, setting, seconds=True)
    if span <= timedelta(0):
        raise SettingsError(f"{setting} {raw!r} must be a positive duration like 00:00:30")
    return span


# --------------------------------------------------------------------------------------------
# An app's settings


VersionMatch = Literal["None", "Strict", "CurrentOrOlder"]
"""`versionMatchStrategy`: which instances' versions a host runs (orchestration/versioning.py)."""
VersionFailure = Literal["Reject", "Fail"]
"""`versionFailureStrategy`: what becomes of an instance whose version a host may not run."""


@dataclass(frozen=True, slots=True)
class AppSettings:
    hub_name: str = DEFAULT_HUB_NAME
    route_prefix: str = "api"
    max_concurrent_activities: int = field(default_factory=_default_concurrency)
    max_concurrent_orchestrators: int = field(default_factory=_default_concurrency)
    default_version: str | None = None
    version_match: VersionMatch = "CurrentOrOlder"
    version_failure: VersionFailure = "Reject"
    local_http_port: int | None = None
    worker_processes: int = 0
    """`FUNCTIONS_WORKER_PROCESS_COUNT`: processes that run activities and entity operations
    (`dfhost.runtime.workers`); 0 runs them in the host's process. Read from an app, unset
    means `default_worker_processes()`; only `dfhost start` (unless `--in-process`) and the
    benchmarks start workers, never `dfhost.testing`."""
    worker_threads: int | None = None
    """`PYTHON_THREADPOOL_THREAD_COUNT`: threads for sync functions in each worker process;
    None: `max_concurrent_activities`, so one worker can run as many as the host claims."""
    extended_sessions: bool = True
    """Keep orchestrators' replay state between episodes: on unless `extendedSessionsEnabled`
    is false (Azure's default is off; both give the same results)."""
    limits: Limits = field(default_factory=Limits)
    http: HttpSettings = field(default_factory=HttpSettings)
    operations: OpsSettings = field(default_factory=OpsSettings, hash=False)
    storage: StorageProvider = field(default_factory=StorageProvider)
    triggers: TriggerSettings = field(default_factory=TriggerSettings)
    host_json: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """host.json with the environment's overrides, read-only at the top, as dfhost read it."""


def app_root(app_dir: str | Path) -> Path:
    """The app folder, resolved; raises `AppNotFoundError`."""
    root = Path(app_dir).expanduser()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise AppNotFoundError(f"function app folder {str(root)!r} {what}")
    return root.resolve()


def load_settings(app_dir: str | Path) -> tuple[AppSettings, list[LoadError]]:
    """The settings of the app in `app_dir` (local.settings.json into the environment) without
    importing its code, as commands that only open its task hub need."""
    errors = LoadErrors()
    return read_settings(app_root(app_dir), errors), list(errors)


def read_settings(root: Path, errors: LoadErrors) -> AppSettings:
    """The settings of the app folder `root`; problems land in `errors`."""
    # local.settings.json first: its Values feed %Setting% references and host.json overrides.
    port = _apply_local_settings(root, errors)
    return _app_settings(_read_host_json(root, errors), port, root, errors)


def expand_app_settings(value: str, env: Mapping[str, str] | None = None) -> str:
    """Replace `%Name%` with the app setting (environment variable) Name, as the host does.

    Raises KeyError(name) for the first setting that is not defined.
    """
    source = os.environ if env is None else env
    return re.sub(r"%([^%\s]+)%", lambda m: source[m.group(1)], value)


def _apply_local_settings(root: Path, errors: LoadErrors) -> int | None:
    """Copy `Values` into os.environ (variables already set win); return Host.LocalHttpPort."""
    path = root / "local.settings.json"
    data = read_json_object(path, errors) if path.is_file() else None
    if data is None:
        return None
    values = get_ci(data, "Values") or {}
    if truthy(get_ci(data, "IsEncrypted")):
        errors.add(
            path,
            "IsEncrypted is true, and dfhost cannot decrypt values (they use the "
            "machine key); run `func settings decrypt` or set them in the "
            "environment",
        )
    elif not isinstance(values, dict):
        errors.add(path, '"Values" must be an object of "NAME": "value" pairs')
    else:
        for key, value in values.items():
            if key in os.environ or value is None:
                continue
            try:
                # Environment values are text; JSON numbers/booleans keep their JSON spelling.
                os.environ[key] = value if isinstance(value, str) else json.dumps(value)
            except ValueError as e:  # e.g. "=" in the name
                errors.add(path, f"Values: cannot set {key!r}: {describe_exception(e)}")
    port = get_path(data, "Host.LocalHttpPort")
    if port is None:
        return None
    if (number := _positive_int(port)) is None or number > 65535:
        errors.add(path, f"Host.LocalHttpPort {port!r} is not a port number (1-65535)")
        return None
    return number


def _read_host_json(root: Path, errors: LoadErrors) -> dict[str, Any]:
    path = root / "host.json"
    data = (read_json_object(path, errors) if path.is_file() else None) or {}
    if data and get_ci(data, "version") != "2.0":
        errors.add(path, 'needs "version": "2.0" (the Functions 2.x+ schema dfhost reads)')
    for key, value in os.environ.items():
        if key.lower().startswith(_ENV_OVERRIDE_PREFIX):
            _override(data, key[len(_ENV_OVERRIDE_PREFIX) :].split("__"), value)
    return data


def _override(node: dict[str, Any], path: list[str], value: str) -> None:
    """Set `path` to `value` so that every reading of it sees the override: the leaf's other
    casings go, and an object in several casings gets it in each."""
    head, rest = path[0], path[1:]
    casings = [k for k in node if k.lower() == head.lower()]
    if not rest:
        for key in casings[1:]:
            del node[key]
        node[casings[0] if casings else head] = value
        return
    children = [node[k] for k in casings if isinstance(node[k], dict)]
    if not children:
        child: dict[str, Any] = {}
        node[casings[0] if casings else head] = child
        children = [child]
    for child in children:
        _override(child, rest, value)


def _app_settings(
    host: dict[str, Any], port: int | None, root: Path, errors: LoadErrors
) -> AppSettings:
    src = root / "host.json"
    durable = get_path(host, DURABLE)
    prefix = get_path(host, "extensions.http.routePrefix")
    version = get_ci(durable, "defaultVersion")

    def read(reader: Callable[[], T], default: T, *, fatal: bool) -> T:
        try:
            return reader()
        except SettingsError as exc:
            errors.add(src, str(exc).removeprefix("host.json "), fatal=fatal)
            return default

    def from_environment(reader: Callable[[], T], default: T) -> T:
        try:
            return reader()
        except SettingsError as exc:  # an app setting: local.settings.json or the environment
            errors.add("app settings", f"{exc}; using {default}")
            return default

    def concurrency(key: str) -> int:
        return read(lambda: _concurrency(durable, key), _default_concurrency(), fatal=False)

    return AppSettings(
        hub_name=_hub_name(get_ci(durable, "hubName"), src, errors),
        route_prefix=str(prefix).strip("/") if prefix is not None else "api",
        max_concurrent_activities=concurrency("maxConcurrentActivityFunctions"),
        max_concurrent_orchestrators=concurrency("maxConcurrentOrchestratorFunctions"),
        default_version=str(version) if version not in (None, "") else None,
        version_match=read(
            lambda: _choice(durable, "versionMatchStrategy", _VERSION_MATCHES),
            "CurrentOrOlder",
            fatal=True,
        ),
        version_failure=read(
            lambda: _choice(durable, "versionFailureStrategy", _VERSION_FAILURES),
            "Reject",
            fatal=True,
        ),
        local_http_port=port,
        extended_sessions=read(lambda: _extended_sessions(durable), True, fatal=False),
        worker_processes=from_environment(_worker_processes, default_worker_processes()),
        worker_threads=from_environment(_worker_threads, None),
        limits=read(lambda: Limits.from_host_json(host), Limits(), fatal=True),
        http=read(lambda: HttpSettings.from_host_json(host), HttpSettings(), fatal=False),
        operations=read(lambda: read_ops_settings(host), OpsSettings(), fatal=True),
        storage=StorageProvider.from_host_json(host),
        triggers=_trigger_settings(host, src, errors),
        host_json=MappingProxyType(host),
    )


def _trigger_settings(host: Mapping[str, Any], src: Path, errors: LoadErrors) -> TriggerSettings:
    problems: list[str] = []
    settings = TriggerSettings.from_host_json(host, problems)
    for problem in problems:
        errors.add(src, problem.removeprefix("host.json "))
    return settings


def _concurrency(durable: Any, key: str) -> int:
    raw = get_ci(durable, key)
    return _default_concurrency() if raw is None else _positive(raw, f"host.json {DURABLE}.{key}")


MAX_WORKER_PROCESSES = 64


def default_worker_processes(cpus: int | None = None) -> int:
    """Worker processes when FUNCTIONS_WORKER_PROCESS_COUNT is not set: the cores beyond two
    (the host's event loop, and its store thread with the OS), at most 8. On 2 cores none:
    measured there, each activity's two process hops cost more than they spare the host
    (bench/RESULTS.md, issue 20); with cores to spare, CPU-bound functions get them."""
    cores = (os.cpu_count() or 1) if cpus is None else cpus
    return max(0, min(cores - 2, 8))


def _worker_processes() -> int:
    raw = get_ci(os.environ, "FUNCTIONS_WORKER_PROCESS_COUNT")
    if raw is None or not raw.strip():
        return default_worker_processes()
    text = raw.strip()
    if not text.isdigit() or int(text) > MAX_WORKER_PROCESSES:
        raise SettingsError(
            f"FUNCTIONS_WORKER_PROCESS_COUNT {raw!r} is not a whole number from 0 "
            f"(run functions in the host's process) to {MAX_WORKER_PROCESSES}"
        )
    return int(text)


def _worker_threads() -> int | None:
    raw = get_ci(os.environ, "PYTHON_THREADPOOL_THREAD_COUNT")
    if raw is None or not raw.strip():
        return None
    return _positive(raw, "PYTHON_THREADPOOL_THREAD_COUNT")


_VERSION_MATCHES: tuple[VersionMatch, ...] = ("CurrentOrOlder", "Strict", "None")
_VERSION_FAILURES: tuple[VersionFailure, ...] = ("Reject", "Fail")
"""Each with its default first."""


def _choice(durable: Any, key: str, choices: tuple[S, ...]) -> S:
    """One of `choices` (any casing); the first when the setting is absent."""
    raw = get_ci(durable, key)
    if raw is None:
        return choices[0]
    for choice in choices:
        if isinstance(raw, str) and raw.strip().casefold() == choice.casefold():
            return choice
    raise SettingsError(f"host.json {DURABLE}.{key} {raw!r} is not one of: {', '.join(choices)}")


def _extended_sessions(durable: Any) -> bool:
    raw = get_ci(durable, "extendedSessionsEnabled")
    return True if raw is None else _flag(raw, f"host.json {DURABLE}.extendedSessionsEnabled")


def _hub_name(raw: Any, src: Path, errors: LoadErrors) -> str:
    if raw is None:
        # Not chosen by the user: derive it quietly from the site name, as the extension does.
        site = os.environ.get("WEBSITE_SITE_NAME")
        return _sanitize_hub_name(site) if site else DEFAULT_HUB_NAME
    try:
        name = expand_app_settings(str(raw))
    except KeyError as e:
        errors.add(
            src,
            f"hubName {raw!r} uses app setting {e.args[0]!r}, which is not set; "
            "add it to local.settings.json Values (using TestHubName)",
        )
        return DEFAULT_HUB_NAME
    if _HUB_NAME_RE.match(name):
        return name
    fixed = _sanitize_hub_name(name)
    errors.add(
        src,
        f"hubName {name!r} is invalid: use 3-45 letters or digits, starting with a "
        f"letter (using {fixed!r})",
    )
    return fixed


def _sanitize_hub_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9]", "", name)
    if not cleaned:
        return DEFAULT_HUB_NAME
    if not cleaned[0].isalpha():
        cleaned = "Hub" + cleaned
    return (cleaned + "Hub" if len(cleaned) < 3 else cleaned)[:45]


# --------------------------------------------------------------------------------------------
# JSON files


def read_json_object(path: Path, errors: LoadErrors) -> dict[str, Any] | None:
    """The JSON object in `path` (a BOM, comments and trailing commas allowed, as the .NET host
    allows them), or None with the problem in `errors`."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # Windows editors add a BOM
        try:
            data = json.loads(text)
        except json.JSONDecodeError as first:
            try:
                data = json.loads(_strip_json_extras(text))
            except json.JSONDecodeError:
                raise first from None
    except json.JSONDecodeError as e:
        errors.add(path, f"not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}")
        return None
    except (OSError, UnicodeError) as e:
        errors.add(path, f"cannot be read: {describe_exception(e)}")
        return None
    if not isinstance(data, dict):
        errors.add(path, "must hold a JSON object ({...})")
        return None
    return data


_JSON_EXTRAS = re.compile(r'("(?:\\.|[^"\\])*")|//[^\n]*|/\*.*?\*/|,(?=\s*[}\]])', re.S)


def _strip_json_extras(text: str) -> str:
    """Drop // and /* */ comments and trailing commas, leaving strings alone."""
    return _JSON_EXTRAS.sub(lambda m: m.group(1) or "", text)


def describe_exception(e: BaseException) -> str:
    """`e` in one line: its type and message."""
    text = " ".join(str(e).split())  # one line, whatever the exception put in its message
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
