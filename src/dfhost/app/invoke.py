"""Calling user code, the one way every trigger does: async functions awaited on the event
loop, sync ones on a thread so that blocking code does not stall the host, a returned awaitable
awaited too, and a timeout around the call (host.json `functionTimeout`)."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, TypeVar

from dfhost.app.functions import Function

__all__ = ["FunctionTimeoutError", "ThreadRunner", "call_function", "within"]

T = TypeVar("T")

ThreadRunner = Callable[[Callable[[], Any]], Awaitable[Any]]
"""Runs a blocking call on some thread and returns its result (e.g. `WorkerThreads.run`)."""


class FunctionTimeoutError(TimeoutError):
    """A function ran longer than `functionTimeout`."""


async def call_function(
    function: Function, kwargs: Mapping[str, Any], threads: ThreadRunner = asyncio.to_thread
) -> Any:
    """`function`'s handler called with `kwargs`; what it returns, awaited if awaitable.

    A sync handler runs through `threads` in a copy of the caller's context, so the invocation
    tag (`dfhost.logs`) follows the function's logs into the thread."""
    if function.is_async:
        result = function.handler(**kwargs)
    else:
        context = contextvars.copy_context()
        result = await threads(partial(context.run, function.handler, **kwargs))
    if inspect.isawaitable(result):
        result = await result
    return result


async def within(seconds: float | None, call: Awaitable[T], what: str) -> T:
    """Await `call`, raising `FunctionTimeoutError` after `seconds` (None: no limit)."""
    if seconds is None:
        return await call
    timeout = asyncio.timeout(seconds)
    try:
        async with timeout:
            return await call
    except TimeoutError:
        if not timeout.expired():
            raise  # the function's own TimeoutError
        raise FunctionTimeoutError(
            f"{what} timed out after {seconds:g} s (host.json functionTimeout)"
        ) from None
