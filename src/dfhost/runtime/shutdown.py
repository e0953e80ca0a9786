"""Stopping the runtime's asyncio tasks, the same way in the engine and the timer runner."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Iterable
from typing import Any

__all__ = ["cancel_and_wait", "finish_within"]


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """Cancel background loops and wait until they have unwound."""
    started = [task for task in tasks if task is not None]
    for task in started:
        task.cancel()
    for task in started:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def finish_within(tasks: Collection[asyncio.Task[Any]], grace: float) -> None:
    """Let work in flight finish for up to `grace` seconds, then cancel what is left and wait
    for it to unwind."""
    if not tasks:
        return
    _, still_running = await asyncio.wait(tasks, timeout=grace)
    for task in still_running:
        task.cancel()
    if still_running:
        await asyncio.wait(still_running)
