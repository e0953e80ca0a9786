"""Work whose code is not in the loaded app but in workers connected to this host (the
Durable Task gRPC protocol, `dfhost.grpc`): what the engine hands them and gets back.

The engine still claims, plans and commits: a remote worker only replaces the replay of an
orchestrator (`run_episode`) or the call of an activity (`run_activity`). So an episode a
worker decides commits through the same fenced store transaction as any other, and an
activity's result is recorded once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from dfhost.history import HistoryEvent
from dfhost.orchestration.episode import EpisodeInput, EpisodeResult
from dfhost.work import ActivityTask, Message

__all__ = ["RemoteAbandoned", "RemoteEpisode", "RemoteWorkers"]


class RemoteAbandoned(Exception):
    """The work went back undecided (no worker took it in time, or it gave it back): the
    engine releases the episode's lease so that it runs again."""


@dataclass(frozen=True, slots=True)
class RemoteEpisode:
    """A worker's decisions for one episode."""

    result: EpisodeResult
    messages: list[Message] = field(default_factory=list)
    """Events for other instances that are no `Work` of dfhost's own SDK (a Durable Task
    worker's SendEvent and TerminateOrchestration actions), committed with the episode."""


class RemoteWorkers(Protocol):
    """Connected workers, asked for what the app does not have."""

    async def run_episode(self, episode: EpisodeInput) -> RemoteEpisode:
        """A worker's decisions for `episode`; raises `RemoteAbandoned`."""

    async def run_activity(self, task: ActivityTask) -> HistoryEvent:
        """The TaskCompleted or TaskFailed event of one run of `task` by a worker (it waits
        for a worker, and gives the task to another if one disconnects with it); raises
        `RemoteAbandoned` once released."""

    def release(self) -> None:
        """The host is draining: give back the work no worker holds (and any that comes),
        instead of waiting for a worker; what workers hold is still answered."""
