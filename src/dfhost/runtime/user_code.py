"""Where user code runs: `LocalCode` runs activities, entity operations and orchestrator
episodes in this process (sync code on threads); `dfhost.runtime.workers.WorkerPool` runs
activities and entity operations in worker processes, each of which runs a `LocalCode`.
The engine talks to either through `UserCode`."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Protocol, TypeVar

from dfhost.app.functions import Function, FunctionApp
from dfhost.history import HistoryEvent
from dfhost.logs import Invocation, log_invocation
from dfhost.orchestration import entities, replay
from dfhost.orchestration.episode import EpisodeInput, EpisodeResult, Failed
from dfhost.orchestration.session import SessionCache
from dfhost.runtime.activities import ActivityRunner
from dfhost.runtime.worker_threads import WorkerThreads
from dfhost.work import ActivityTask, EpisodeOutcome, EpisodeWork

__all__ = ["LocalCode", "UserCode"]

T = TypeVar("T")


class UserCode(Protocol):
    """Runs the user's activities and entity operations for the engine."""

    async def run_activity(self, task: ActivityTask) -> HistoryEvent:
        """Execute `task` once: its TaskCompleted or TaskFailed event."""
        ...

    async def run_entity_batch(
        self, entity: entities.EntityId, work: EpisodeWork, now: datetime
    ) -> EpisodeOutcome:
        """Run the operations in `work` on `entity`: what to commit."""
        ...

    async def close(self) -> None:
        """Stop; calls not finished yet are abandoned (their work runs again later)."""
        ...


class LocalCode:
    """User code in this process: sync activities on a pool of `max_activities` threads,
    orchestrator episodes and entity batches on a few threads of their own (or, `inline`,
    on the event loop's thread: a test host's episodes take microseconds)."""

    def __init__(
        self,
        app: FunctionApp,
        clock: Callable[[], datetime],
        *,
        activity_threads: int,
        episode_threads: int,
        sessions: SessionCache | None,
        inline: bool = False,
    ) -> None:
        self.app = app
        self.sessions = sessions
        self.inline = inline
        self._episode_threads = WorkerThreads(episode_threads, "dfhost-orchestrator")
        self._activity_threads = WorkerThreads(activity_threads, "dfhost-activity")
        self._activities = ActivityRunner(app, app.settings.limits, self._activity_threads, clock)

    def use_app(self, app: FunctionApp) -> None:
        """Run `app`'s functions from now on (`dfhost start --reload`); calls in flight finish
        with the code they started with."""
        self.app = app
        self._activities.app = app

    async def run_activity(self, task: ActivityTask) -> HistoryEvent:
        return await self._activities.run(task)

    async def run_entity_batch(
        self, entity: entities.EntityId, work: EpisodeWork, now: datetime
    ) -> EpisodeOutcome:
        function = self.app.entity(entity.name)
        if function is None:  # no user code to run: every operation fails
            return entities.run_batch(None, entity, work, now)
        inv = Invocation(function=function.name, instance_id=work.instance.instance_id)
        with log_invocation(inv, "(null)"):
            # Copied inside the block, so that what the entity logs is tagged with `inv`.
            run = contextvars.copy_context().run
            call = partial(run, entities.run_batch, function.handler, entity, work, now)
            return await self._run_threaded(call)

    async def run_episode(self, function: Function, episode: EpisodeInput) -> EpisodeResult:
        """Replay `episode` through `function`, framed by its Executing/Executed lines."""
        inv = Invocation(
            function=function.name,
            instance_id=episode.instance_id,
            replaying=replay.is_replaying,
            execution_id=episode.execution_id,
            episode=len(episode.past),
        )
        generator, input_type = function.orchestrator_function, function.input_type
        result: EpisodeResult | None = None
        try:
            with log_invocation(inv, "(null)"):
                ctx = contextvars.copy_context()
                sessions = self.sessions

                def call() -> EpisodeResult:
                    return ctx.run(replay.run_episode, generator, episode, input_type, sessions)

                if self._continues_session(episode):
                    # A cached session replays only the episode's new events: microseconds
                    # of orchestrator code, less than a round trip to a worker thread.
                    result = call()
                else:
                    result = await self._run_threaded(call)
                if isinstance(result.outcome, Failed):
                    raise _EpisodeFailed
        except _EpisodeFailed:
            pass
        assert result is not None
        return result

    def _continues_session(self, episode: EpisodeInput) -> bool:
        if self.sessions is None:
            return False
        held = self.sessions.held(episode.instance_id)
        return held == (episode.execution_id, len(episode.past) - 1)

    async def _run_threaded(self, call: Callable[[], T]) -> T:
        if self.inline:
            return call()
        return await self._episode_threads.run(call)

    async def close(self) -> None:
        self._episode_threads.shutdown()
        self._activity_threads.shutdown()


class _EpisodeFailed(Exception):
    """Marks the Executed line of a failed episode as Failed."""
