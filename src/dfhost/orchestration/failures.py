"""How failures read: the reason and details of a failed task or orchestration, in the shape
Azure gives them, because apps parse them.

On Azure a Python activity's exception travels as text: the Python worker sends
`"{type}: {message}"` and its stack to the Functions host, which wraps them in an RpcException
(`"Result: Failure\\nException: {message}\\nStack: {stack}"`); the Durable extension cuts the text
between "\\nException:" and "\\nStack:" out of that (keeping its leading space), makes it the
message of a new System.Exception around the RpcException, and records a TaskFailed whose
Reason is `"Activity function '{name}' failed: {that text}"` and whose Details are that
exception serialized by Newtonsoft.Json (one line of JSON, `$type` on every object). The SDK
hands the orchestrator `Exception(f"{Reason} \\n {Details}")`, so apps read the activity's
message with `json.loads(str(e).split("\\n")[1])["Message"]` (azure-functions-durable-extension
#2990, azure-functions-durable-python #496). dfhost writes the same texts. The stacks hold the
user's frames only: the frames of dfhost (and of the SDK and asyncio under it) that led to the
call are left out, where Azure shows its own worker's.

The .NET parts (`$type` names, HResult codes) are what the extension writes for the same
failure; .NET stack traces, which dfhost does not have, are null. docs/differences.md lists
what differs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import threading
import traceback
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from dfhost.orchestration.episode import Failed

__all__ = [
    "TaskFailure",
    "activity_failed",
    "activity_missing",
    "activity_timed_out",
    "argument_error",
    "invalid_operation",
    "net_exception",
    "orchestrator_failed",
    "orchestrator_refused",
    "python_traceback",
    "serialized",
    "timespan",
    "user_stack",
]

EXCEPTION_HRESULT = -2146233088
"""COR_E_EXCEPTION, the HResult of System.Exception and of types that keep it."""
SYSTEM_EXCEPTION = "System.Exception, System.Private.CoreLib"
_RPC_EXCEPTION = (
    "Microsoft.Azure.WebJobs.Script.Workers.Rpc.RpcException, Microsoft.Azure.WebJobs.Script"
)
_FUNCTION_FAILED = (
    "Microsoft.Azure.WebJobs.FunctionFailedException, "
    "Microsoft.Azure.WebJobs.Extensions.DurableTask"
)
_FUNCTION_TIMEOUT = (
    "Microsoft.Azure.WebJobs.Host.FunctionTimeoutException, Microsoft.Azure.WebJobs.Host"
)
_DATA = "System.Collections.ListDictionaryInternal, System.Private.CoreLib"

# OutOfProcExceptionHelpers' labels.
_MESSAGE_LABEL = "\nException:"
_STACK_LABEL = "\nStack:"
_OUT_OF_PROC_DATA_LABEL = "\n\n$OutOfProcData$:"


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """The Reason and Details of a TaskFailed event."""

    reason: str
    details: str | None


# --- .NET exceptions, as the extension serializes them ---------------------------------------


def net_exception(
    type_name: str,
    message: str | None,
    *,
    inner: dict[str, Any] | None = None,
    fields: dict[str, Any] | None = None,
    hresult: int = EXCEPTION_HRESULT,
) -> dict[str, Any]:
    """A .NET exception as the extension's error serializer writes it (Newtonsoft.Json with
    TypeNameHandling.Objects, TargetSite left out): the type's own properties, then
    System.Exception's, in declaration order."""
    return {
        "$type": type_name,
        **(fields or {}),
        "Message": message,
        "Data": {"$type": _DATA},
        "InnerException": inner,
        "HelpLink": None,
        "Source": None,
        "HResult": hresult,
        "StackTrace": None,
    }


def serialized(exception: dict[str, Any]) -> str:
    """One line of JSON, non-ASCII text as is (Newtonsoft.Json's defaults)."""
    text = json.dumps(exception, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: only its escaped form can be stored
        return json.dumps(exception, separators=(",", ":"))
    return text


def timespan(seconds: float) -> str:
    """A .NET TimeSpan's default text: `[d.]hh:mm:ss[.fffffff]`."""
    ticks = round(seconds * 10_000_000)
    whole, fraction = divmod(ticks, 10_000_000)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    if days:
        text = f"{days}.{text}"
    if fraction:
        text += f".{fraction:07d}"
    return text


# --- Python stacks ----------------------------------------------------------------------------


@cache
def _host_paths() -> tuple[str, ...]:
    """Where the code that calls user functions lives: dfhost, the SDK, and the parts of the
    standard library that hand calls between threads and tasks."""
    import azure.durable_functions

    packages = [Path(__file__).parents[1], Path(azure.durable_functions.__file__).parent]
    packages += [Path(asyncio.__file__).parent, Path(concurrent.futures.__file__).parents[1]]
    return (*(f"{p}{os.sep}" for p in packages), threading.__file__)


def user_stack(exc: BaseException) -> str:
    """The frames of `exc`'s traceback from the first one outside the host's own code, in the
    Python worker's format (`traceback.StackSummary.format`)."""
    frames = traceback.extract_tb(exc.__traceback__)
    host = _host_paths()
    first = 0
    while first < len(frames) and frames[first].filename.startswith(host):
        first += 1
    return "".join(traceback.StackSummary.from_list(frames[first:]).format())


def python_traceback(exc: BaseException) -> str:
    """`exc` as Python prints it, its traceback cut to the user's frames: for logs."""
    stack = user_stack(exc)
    head = f"Traceback (most recent call last):\n{stack}" if stack else ""
    return head + "".join(traceback.format_exception_only(exc)).rstrip()


def python_message(exc: BaseException) -> str:
    """The message the Python worker sends for `exc`."""
    return f"{type(exc).__name__}: {exc}"


# --- activities -------------------------------------------------------------------------------


def activity_failed(name: str, exc: BaseException) -> TaskFailure:
    """An activity function raised `exc` (TaskActivityShim, a user code error)."""
    message, stack = python_message(exc), user_stack(exc)
    rpc_text = f"Result: Failure{_MESSAGE_LABEL} {message}{_STACK_LABEL} {stack}"
    rpc = net_exception(
        _RPC_EXCEPTION,
        rpc_text,
        fields={
            "IsUserException": False,
            "RemoteStackTrace": stack,
            "RemoteMessage": message,
            "RemoteTypeName": None,
        },
    )
    friendly = _friendly_message(rpc_text)
    outer = net_exception(SYSTEM_EXCEPTION, friendly, inner=rpc)
    return TaskFailure(f"Activity function '{name}' failed: {friendly}", serialized(outer))


def _friendly_message(rpc_text: str) -> str:
    # OutOfProcExceptionHelpers.TryGetExceptionWithFriendlyMessage, step by step: the first
    # "\nException:" and the first "\nStack:" bound it, whatever the user's message holds.
    start = rpc_text.index(_MESSAGE_LABEL) + len(_MESSAGE_LABEL)
    end = rpc_text.index(_STACK_LABEL)
    friendly = rpc_text[start:end]
    data = friendly.find(_OUT_OF_PROC_DATA_LABEL)
    return friendly if data < 0 else friendly[:data]


def activity_timed_out(name: str, seconds: float) -> TaskFailure:
    """An activity ran past host.json `functionTimeout` (the WebJobs FunctionTimeoutException,
    which the extension reports as is)."""
    message = f"Timeout value of {timespan(seconds)} was exceeded by function: Functions.{name}"
    exception = net_exception(_FUNCTION_TIMEOUT, message)
    return TaskFailure(f"Activity function '{name}' failed: {message}", serialized(exception))


def activity_missing(name: str) -> TaskFailure:
    """The app has no activity `name` when its task runs (TaskNonexistentActivityShim)."""
    message = f"Activity function '{name}' does not exist."
    exception = net_exception(_FUNCTION_FAILED, message)
    return TaskFailure(f"Activity function '{name}' failed: {message}", serialized(exception))


# --- orchestrations ---------------------------------------------------------------------------


def orchestrator_failed(name: str, exc: BaseException | None, error: str | None = None) -> Failed:
    """The orchestrator raised `exc` (OutOfProcOrchestrationShim): the SDK reports `str(exc)`
    (its type when that is empty) as the error, and the extension adds a stack trace.
    `error` replaces the text for a failure the SDK itself detects; its stack is then empty."""
    if error is None:
        assert exc is not None
        error = str(exc) or str(type(exc))
        stack = user_stack(exc)
    else:
        stack = ""
    return Failed(
        f"Orchestrator function '{name}' failed: {error}", f"Message: {error}, StackTrace: {stack}"
    )


def orchestrator_refused(name: str, exception: dict[str, Any]) -> Failed:
    """The extension refused what the orchestrator asked for (an action, a custom status) with
    `exception` (`argument_error`, `invalid_operation`), which fails the orchestration
    (TaskOrchestrationShim)."""
    message = exception["Message"]
    return Failed(f"Orchestrator function '{name}' failed: {message}", serialized(exception))


def argument_error(message: str) -> dict[str, Any]:
    """A System.ArgumentException thrown with `message`."""
    return net_exception(
        "System.ArgumentException, System.Private.CoreLib",
        message,
        fields={"ParamName": None},
        hresult=-2147024809,
    )


def invalid_operation(message: str) -> dict[str, Any]:
    """A System.InvalidOperationException thrown with `message`."""
    return net_exception(
        "System.InvalidOperationException, System.Private.CoreLib", message, hresult=-2146233079
    )
