"""A loaded function app: its functions, each with its trigger, bindings and handler."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dfhost.config import AppSettings, LoadError

__all__ = ["Binding", "Function", "FunctionApp", "FunctionKind"]

FunctionKind = Literal[
    "orchestrator",
    "activity",
    "entity",
    "http",
    "timer",
    "queue",
    "blob",
    "rabbitmq",
    "redis",
    "eventgrid",
    "other",
]


@dataclass(frozen=True, slots=True)
class Binding:
    type: str  # canonical spelling for the types dfhost knows, else as written
    name: str
    direction: str  # "in" | "out" | "inout"
    # Every other key, camelCase as in function.json; read-only. Mappings are unhashable.
    settings: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class Function:
    name: str
    kind: FunctionKind
    trigger: Binding
    bindings: tuple[Binding, ...]
    handler: Callable[..., Any]
    source: str
    aliases: tuple[str, ...] = ()
    # Computed once: engines ask per invocation and inspect.signature is not free.
    _params: frozenset[str] = field(init=False, repr=False, compare=False, hash=False)
    _async: bool = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_params", _parameter_names(self.handler))
        object.__setattr__(self, "_async", _is_async(self.handler))

    @property
    def is_async(self) -> bool:
        """Whether calling the handler returns an awaitable (still check the result)."""
        return self._async

    def parameter_names(self) -> frozenset[str]:
        """Named parameters of the handler (not *args/**kwargs), following `__wrapped__`."""
        return self._params

    @property
    def orchestrator_function(self) -> Callable[..., Any]:
        """An orchestrator's generator function, which `df.Orchestrator.create` wrapped into
        the handler (`load_app` refuses orchestrators made otherwise)."""
        return self.handler.orchestrator_function  # type: ignore[attr-defined, no-any-return]

    @property
    def input_type(self) -> type | None:
        """The type an orchestrator's input is deserialized to (its parameter's annotation in
        a v2 app), or None."""
        return getattr(self.handler, "_df_input_type", None)


@dataclass
class FunctionApp:
    root: Path
    functions: dict[str, Function]
    settings: AppSettings
    errors: list[LoadError]
    remote_workers: bool = False
    """Orchestrators and activities it lacks run in connected Durable Task workers
    (`--grpc-port`), so a name it does not have is not unknown."""

    def runs_orchestrator(self, name: str) -> bool:
        """Whether an instance of orchestrator `name` can run on this host."""
        return self.remote_workers or self.orchestrator(name) is not None

    # Function names are case-insensitive, as the extension compares them (FunctionName); it
    # also lower-cases entity names in instance ids (@name@key).

    def orchestrator(self, name: str) -> Function | None:
        return self._lookup("orchestrator", name)

    def activity(self, name: str) -> Function | None:
        return self._lookup("activity", name)

    def entity(self, name: str) -> Function | None:
        return self._lookup("entity", name)

    def of_kind(self, kind: FunctionKind) -> list[Function]:
        return [f for f in self.functions.values() if f.kind == kind]

    def _lookup(self, kind: FunctionKind, name: str) -> Function | None:
        # Names before aliases. load_app resolved alias clashes, so the first match is the only
        # one; a scan is fine for apps of tens of functions and survives edits to `functions`.
        found = self.functions.get(name)
        if found is not None and found.kind == kind:
            return found
        key = name.lower()
        for f in self.functions.values():
            names = (f.name, *f.aliases)
            if f.kind == kind and key in [n.lower() for n in names]:
                return f
        return None


def _parameter_names(handler: Callable[..., Any]) -> frozenset[str]:
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return frozenset()
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return frozenset(p.name for p in params if p.kind not in variadic)


def _is_async(handler: Callable[..., Any]) -> bool:
    try:
        inner = inspect.unwrap(handler)  # a functools.wraps wrapper may return the coroutine
    except ValueError:
        inner = handler
    call = type(handler).__call__  # objects with `async def __call__`
    return any(inspect.iscoroutinefunction(f) for f in (handler, inner, call))
