"""The arguments of one call of a function, as the Azure Python worker passes them."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func

from dfhost.app.functions import Function

__all__ = ["InvocationContext", "OutBinding", "invocation_arguments"]


class OutBinding(func.Out[Any]):
    """The `func.Out` an output binding parameter receives; the function calls `.set(...)`.

    dfhost reads back only the `http` output; other output bindings (e.g. `twilioSms`) are
    accepted and kept, not sent anywhere.
    """

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


def invocation_arguments(
    function: Function,
    *,
    invocation_id: str,
    trigger_value: Any,
    client_starter: str | None = None,
) -> tuple[dict[str, Any], dict[str, OutBinding]]:
    """The keyword arguments of one call, as the Python worker passes them, and the outputs.

    The trigger binding gets `trigger_value`; a `durableClient` binding the starter JSON; each
    output binding an `OutBinding` (also returned, by name, to read what the function set);
    input bindings dfhost does not provide get None; `context` only if the function declares
    it (the SDK's v2 client wrapper rejects it otherwise).
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
        if not declared or binding.name in declared:
            kwargs[binding.name] = value
    if "context" in declared:
        kwargs["context"] = InvocationContext(
            invocation_id=invocation_id,
            function_name=function.name,
            function_directory=str(Path(function.source).parent),
        )
    return kwargs, outputs
