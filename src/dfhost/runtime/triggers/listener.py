"""What every trigger listener shares: one background task per function that runs the
listener's loop, starts it again after a failure (a lost connection, a server restarting)
with a growing pause, and logs each problem once per minute rather than once per retry."""

from __future__ import annotations

import asyncio
import logging
import time

from dfhost.app.functions import Function
from dfhost.config import describe_exception
from dfhost.runtime.shutdown import cancel_and_wait

__all__ = ["Listener"]

log = logging.getLogger("dfhost.triggers")

_FIRST_PAUSE = 1.0
_LONGEST_PAUSE = 30.0
_REPEAT_AFTER = 60.0


class Listener:
    """Subclasses implement `run` (never returns while all is well), `describe` and `drain`."""

    def __init__(self, function: Function) -> None:
        self.function = function
        self._task: asyncio.Task[None] | None = None
        self._reported: dict[str, float] = {}

    def describe(self) -> str:
        """What it listens to, for the startup line: `queue 'items'`."""
        raise NotImplementedError

    async def run(self) -> None:
        raise NotImplementedError

    async def drain(self, grace: float) -> None:
        """Let invocations in progress finish for up to `grace` seconds."""

    async def close(self) -> None:
        """Release what `run` opened (called after it was cancelled)."""

    def start(self) -> None:
        log.info(
            "dfhost: %s '%s' listens to %s",
            self.function.trigger.type,
            self.function.name,
            self.describe(),
        )
        self._task = asyncio.create_task(self._keep_running(), name=f"dfhost-{self.function.name}")

    async def stop(self, grace: float) -> None:
        """Stop taking messages, then let those in progress finish for up to `grace` s."""
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        await self.drain(grace)
        await self.close()

    async def _keep_running(self) -> None:
        pause = _FIRST_PAUSE
        while True:
            started = time.monotonic()
            try:
                await self.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.report_error("stopped listening", exc, f"; trying again in {pause:g} s")
            if time.monotonic() - started > _LONGEST_PAUSE:
                pause = _FIRST_PAUSE  # it ran a while: a new problem, start the back-off over
            await asyncio.sleep(pause)
            pause = min(pause * 2, _LONGEST_PAUSE)

    def report_error(self, what: str, exc: BaseException, after: str = "") -> None:
        """Log `what` failed, once per minute for the same problem."""
        text = describe_exception(exc)
        key = f"{what}|{text}"
        now = time.monotonic()
        if now - self._reported.get(key, -_REPEAT_AFTER) < _REPEAT_AFTER:
            return
        self._reported[key] = now
        log.error("dfhost: function '%s': %s: %s%s", self.function.name, what, text, after)
