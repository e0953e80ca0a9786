"""One orchestration episode: replay the history through the SDK and say what happens next.

`run_episode` builds the SDK's context from the stored history plus the episode's new events
(or takes the instance's cached session, `session.py`), runs the user's generator through the
SDK's own `TaskOrchestrationExecutor` in-process (`sdk.py`), and returns what the episode
produced (`reconciler.py`): new history events, work to schedule, timers to cancel and the
instance's new status (`episode.py`). It is synchronous, touches no storage, and never raises
because of user code: user errors become a Failed result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dfhost.orchestration.episode import EpisodeInput, EpisodeResult, Failed, Running
from dfhost.orchestration.reconciler import Reconciler
from dfhost.orchestration.session import ContextError, Session, SessionCache, replaying

__all__ = ["is_replaying", "run_episode"]


def is_replaying() -> bool:
    """Whether the orchestrator code running in this context is replaying old events."""
    probe = replaying.get()
    return probe() if probe is not None else False


def run_episode(
    orchestrator: Callable[..., Any],
    episode: EpisodeInput,
    input_type: type | None = None,
    sessions: SessionCache | None = None,
) -> EpisodeResult:
    """Replay `episode` through the user's generator function `orchestrator`.

    With `sessions`, an instance whose previous episode ran here continues from where its
    generator stopped and only the new events are fed to it (an "extended session"); any
    doubt about the history falls back to a full replay from the stored events.
    """
    session = sessions.take(orchestrator, episode) if sessions is not None else None
    cached = None if sessions is None else session is not None
    replayed = 0 if session is not None else len(episode.past)
    if session is None:
        try:
            session = Session.replay_from_scratch(orchestrator, episode, input_type)
        except ContextError as exc:
            return EpisodeResult(Failed(str(exc)), replayed=replayed, cached=cached)
    else:
        session.continue_with(episode)
    result = Reconciler(episode, session).result()
    result.replayed, result.cached = replayed, cached
    if sessions is not None and isinstance(result.outcome, Running):
        sessions.keep(episode, session, result)
    return result
