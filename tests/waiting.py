"""Waiting in tests: poll until something holds, never sleep a guessed while.

`eventually` is the one polling loop of the suite; `eventually_blocking` runs it for tests
without an event loop (a host in a subprocess, probed over HTTP).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

__all__ = ["eventually", "eventually_blocking"]

T = TypeVar("T")


@overload
async def eventually(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], object] = ...,
    *,
    timeout: float = ...,
    interval: float = ...,
    what: str = ...,
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T],
    accept: Callable[[T], object] = ...,
    *,
    timeout: float = ...,
    interval: float = ...,
    what: str = ...,
) -> T: ...


async def eventually(
    probe: Callable[[], Any],
    accept: Callable[[Any], object] = bool,
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Call `probe` (sync or async) until `accept` holds for what it returns (by default: until
    that is truthy); that value. After `timeout` seconds, fail with the last value seen. An
    exception from `probe` or `accept` ends the wait at once (a probe may assert)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout:g} s; last value: {value!r}")
        await asyncio.sleep(interval)


def eventually_blocking(
    probe: Callable[[], T],
    accept: Callable[[T], object] = bool,
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """`eventually` for a test that runs no event loop; `probe` may block."""
    return asyncio.run(eventually(probe, accept, timeout=timeout, interval=interval, what=what))
