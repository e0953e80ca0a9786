"""The arguments of one call of a function, as the Azure Python worker passes them, and what its
output bindings hold afterwards.

Triggers hand over what the Functions host hands the worker: the trigger's value as a typed
datum plus trigger metadata. `decode_input` turns them into the argument the way the worker
does: a `dataType` of string/binary, or a `str`/`bytes` annotation, gets the raw value; other
parameters go through the SDK's own converters (`func.QueueMessage`, `func.InputStream`,
`func.EventGridEvent`, `func.CloudEvent`), so the types are the SDK's own. `output_items`
turns what a function set on an output binding into the list of items to send, per binding
type; `resolve_expression` fills binding expressions (`{name}`, `{queueTrigger}`,
`{rand-guid}`, `%Setting%`) as the host does. Nothing here does I/O: the runtime sends.
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import json
import re
import threading
import typing
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions import meta

from dfhost.app.functions import Binding, Function
from dfhost.config import expand_app_settings

__all__ = [
    "BindingValueError",
    "BlobPathPattern",
    "InvocationContext",
    "OutBinding",
    "TriggerData",
    "decode_input",
    "invocation_arguments",
    "json_properties",
    "output_items",
    "resolve_expression",
]


class BindingValueError(ValueError):
    """A value a binding cannot take or give; the message is one line naming the binding."""


class OutBinding(func.Out[Any]):
    """The `func.Out` an output binding parameter receives; the function calls `.set(...)`."""

    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


@dataclass(frozen=True, slots=True)
class InvocationContext:
    """The `context` argument a function may declare (the worker's `func.Context`)."""

    invocation_id: str
    function_name: str
    function_directory: str
    trace_context: Any = None
    retry_context: Any = None
    thread_local_storage: threading.local = field(default_factory=threading.local)


@dataclass(frozen=True, slots=True)
class TriggerData:
    """What a trigger hands one invocation: its value as the host types it for the worker
    ("string", "bytes" or "json"), and its metadata, which is also the binding data that
    binding expressions read."""

    value: str | bytes
    type: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def datum(self) -> meta.Datum:
        return meta.Datum(self.value, self.type)


def invocation_arguments(
    function: Function,
    *,
    invocation_id: str,
    trigger_value: Any,
    client_starter: str | None = None,
    inputs: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, OutBinding]]:
    """The keyword arguments of one call, as the Python worker passes them, and the outputs.

    The trigger binding gets `trigger_value`; a `durableClient` binding the starter JSON; each
    output binding an `OutBinding` (also returned, by name, to read what the function set);
    other input bindings their value in `inputs` (None when absent); `context` only if the
    function declares it (the SDK's v2 client wrapper rejects it otherwise).
    """
    declared = function.parameter_names()
    kwargs: dict[str, Any] = {}
    outputs: dict[str, OutBinding] = {}
    for binding in function.bindings:
        if binding.name == "$return":
            continue
        value: Any = None
        if binding is function.trigger:
            value = trigger_value
        elif binding.direction in ("out", "inout"):
            value = outputs[binding.name] = OutBinding()
        elif binding.type == "durableClient":
            value = client_starter
        elif inputs is not None:
            value = inputs.get(binding.name)
        if not declared or binding.name in declared:
            kwargs[binding.name] = value
    if "context" in declared:
        kwargs["context"] = InvocationContext(
            invocation_id=invocation_id,
            function_name=function.name,
            function_directory=str(Path(function.source).parent),
        )
    return kwargs, outputs


# --------------------------------------------------------------------------------------------
# Inputs


def decode_input(function: Function, binding: Binding, data: TriggerData) -> Any:
    """The value of `binding`'s parameter for `data`, as the Python worker decodes it."""
    annotation = _annotation(function.handler, binding.name)
    data_type = str(binding.settings.get("dataType") or "").lower()
    if data_type == "string" or (annotation is str and data_type != "binary"):
        return data.value if isinstance(data.value, str) else data.value.decode("utf-8")
    if data_type == "binary" or annotation is bytes:
        return data.value.encode("utf-8") if isinstance(data.value, str) else data.value
    converter: Any = meta._ConverterMeta.get(binding.type)  # type: ignore[no-untyped-call]
    if converter is not None and hasattr(converter, "decode"):
        metadata = {k: _datum(v) for k, v in data.metadata.items()}
        try:
            return converter.decode(data.datum, trigger_metadata=metadata)
        except (ValueError, TypeError, KeyError, NotImplementedError) as exc:
            raise BindingValueError(
                f"binding {binding.name!r} ({binding.type}) cannot take this value: {exc}"
            ) from None
    return data.value  # the worker's generic binding: text stays text, bytes stay bytes


def _datum(value: Any) -> meta.Datum:
    if isinstance(value, bool | dict | list):
        return meta.Datum(json.dumps(value), "json")
    if isinstance(value, int):
        return meta.Datum(value, "int")
    if isinstance(value, bytes):
        return meta.Datum(value, "bytes")
    return meta.Datum(None if value is None else str(value), "string")


@functools.cache
def _annotation(handler: Any, name: str) -> Any:
    """The annotation of parameter `name`, resolved (string annotations too); None if none."""
    try:
        hints = typing.get_type_hints(handler)
    except Exception:
        hints = {}
    if name in hints:
        return hints[name]
    try:
        parameter = inspect.signature(handler).parameters.get(name)
    except (TypeError, ValueError):
        return None
    if parameter is None or parameter.annotation is inspect.Parameter.empty:
        return None
    return {"str": str, "bytes": bytes}.get(parameter.annotation, parameter.annotation)


# --------------------------------------------------------------------------------------------
# Outputs


def output_items(binding: Binding, value: Any) -> list[Any]:
    """What `value`, set on output `binding`, sends: one item per message, blob or event.

    queue and rabbitMQ: str or bytes bodies (func.QueueMessage, dict and list items allowed);
    blob: one bytes; eventGrid: event dicts; redis: one list of command arguments. None sends
    nothing. Raises `BindingValueError` for a value of the wrong type.
    """
    if value is None:
        return []
    kind = binding.type
    try:
        if kind in ("queue", "rabbitMQ"):
            values = value if _is_sequence(value) else [value]
            return [_message_body(v) for v in values]
        if kind == "blob":
            return [_blob_bytes(value)]
        if kind == "eventGrid":
            return _events(value)
        if kind == "redis":
            return [_redis_arguments(value)]
    except (TypeError, ValueError) as exc:
        raise BindingValueError(f"output binding {binding.name!r} ({kind}): {exc}") from None
    raise BindingValueError(f"output binding {binding.name!r}: dfhost cannot send {kind}")


def _is_sequence(value: Any) -> bool:
    return isinstance(value, collections.abc.Iterable) and not isinstance(
        value, str | bytes | bytearray | dict | func.QueueMessage
    )


def _message_body(value: Any) -> str | bytes:
    if isinstance(value, str | bytes):
        return value
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, func.QueueMessage):
        return value.get_body()
    if isinstance(value, dict | list | int | float | bool):
        return json.dumps(value)  # a POCO in .NET: the host serializes it to JSON
    raise TypeError(f"a message must be str, bytes, func.QueueMessage or JSON, not {_t(value)}")


def _blob_bytes(value: Any) -> bytes:
    if callable(getattr(value, "read", None)):
        value = value.read()
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    raise TypeError(f"a blob must be str, bytes or a readable stream, not {_t(value)}")


def _events(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8")
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, func.EventGridOutputEvent):
        value = {
            "id": value.id,
            "subject": value.subject,
            "dataVersion": value.data_version,
            "eventType": value.event_type,
            "data": value.get_json(),
            "eventTime": value.event_time.isoformat() if value.event_time else None,
        }
    if isinstance(value, dict):
        return [_event_defaults(value)]
    if _is_sequence(value):
        return [event for item in value for event in _events(item)]
    raise TypeError(f"an event must be func.EventGridOutputEvent, a dict or JSON, not {_t(value)}")


def _event_defaults(event: dict[str, Any]) -> dict[str, Any]:
    if "specversion" in event:  # a CloudEvent: sent as it is
        return event
    event = dict(event)
    event.setdefault("id", str(uuid.uuid4()))
    event.setdefault("eventTime", datetime.now(UTC).isoformat())
    event.setdefault("dataVersion", "1.0")
    return event


def _redis_arguments(value: Any) -> list[str]:
    """Arguments of the binding's command. The extension takes a string of arguments
    separated by spaces (`"key value"`); a JSON array or a list keeps spaces inside one."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8")
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            value = json.loads(text)
        else:
            return text.split()
    if isinstance(value, list | tuple):
        return [v if isinstance(v, str) else json.dumps(v) for v in value]
    raise TypeError(f"redis arguments must be a string or a list, not {_t(value)}")


def _t(value: Any) -> str:
    return type(value).__name__


# --------------------------------------------------------------------------------------------
# Binding expressions

_EXPRESSION = re.compile(r"\{([^{}]+)\}")


def resolve_expression(
    template: str, binding_data: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> str:
    """`template` with `%Setting%` and `{expression}` filled in, as the host fills a binding's
    path or name: `{rand-guid}`, `{datetime}`, and binding data by name (case-insensitive,
    dotted into JSON objects: `{data.id}`). Raises `BindingValueError` naming what is missing."""
    try:
        text = expand_app_settings(template, env)
    except KeyError as exc:
        raise BindingValueError(
            f"{template!r} uses app setting {exc.args[0]!r}, which is not set"
        ) from None

    def fill(found: re.Match[str]) -> str:
        expression = found.group(1).strip()
        lowered = expression.lower()
        if lowered == "rand-guid":
            return str(uuid.uuid4())
        if lowered in ("datetime", "sys.utcnow"):
            return datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
        value: Any = binding_data
        for part in expression.split("."):
            value = _lookup(value, part)
            if value is None:
                names = ", ".join(sorted(binding_data)) or "none"
                raise BindingValueError(
                    f"{template!r}: no value for {{{expression}}} (binding data: {names})"
                )
        return value if isinstance(value, str) else json.dumps(value)

    return _EXPRESSION.sub(fill, text)


def _lookup(value: Any, key: str) -> Any:
    if isinstance(value, str) and value.startswith("{"):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, Mapping):
        return None
    if key in value:
        return value[key]
    return next((v for k, v in value.items() if str(k).lower() == key.lower()), None)


def json_properties(text: str | bytes) -> dict[str, Any]:
    """The top-level properties of a JSON object payload (binding data of queue messages and
    events), else {}."""
    try:
        parsed = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


@dataclass(frozen=True, slots=True)
class BlobPathPattern:
    """A blob trigger's `path`: `container/prefix{name}.ext`. The container is literal; the
    rest may hold `{name}` parts, which match within the blob name and become binding data."""

    container: str
    blob_pattern: str
    _regex: re.Pattern[str]

    @classmethod
    def parse(cls, path: str) -> BlobPathPattern:
        container, _, rest = path.strip().strip("/").partition("/")
        if not container or "{" in container:
            raise BindingValueError(
                f"blob path {path!r} must start with a container name (no expression in it)"
            )
        regex: list[str] = []
        names: list[str] = []
        position = 0
        for found in _EXPRESSION.finditer(rest):
            regex.append(re.escape(rest[position : found.start()]))
            name = found.group(1).strip()
            if not name.isidentifier() or name.lower() in (n.lower() for n in names):
                raise BindingValueError(f"blob path {path!r}: {{{name}}} is not a usable name")
            names.append(name)
            regex.append(f"(?P<{name}>.+?)")
            position = found.end()
        regex.append(re.escape(rest[position:]) if rest else ".*")  # a bare container: all
        return cls(container, rest, re.compile("".join(regex) + r"\Z", re.DOTALL))

    @property
    def prefix(self) -> str:
        """The literal start of blob names that can match (a listing prefix)."""
        return self.blob_pattern.split("{", 1)[0]

    def match(self, blob_name: str) -> dict[str, str] | None:
        """The values of the `{name}` parts for a matching blob name, else None."""
        found = self._regex.match(blob_name)
        return None if found is None else dict(found.groupdict())
