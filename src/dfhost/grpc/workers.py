"""The Durable Task workers connected to this host (`GetWorkItems` streams) and the work items
they hold: the engine's `RemoteWorkers`.

A work item goes to the connected worker holding the fewest (among those whose filters take
its name) and waits, undelivered, while none is connected. Each carries a completion token;
the worker's Complete call resolves it. A worker whose stream ends (it stopped, crashed or
lost its connection) gives back everything it held: an activity goes to another worker at
once; an orchestrator work item too, and its episode's lease is released if none takes it
within `episode_wait` (`alone_wait` while no worker at all is connected), so that another
host may run it. An abandoned work item comes back
after `retry_after`, so that a worker abandoning everything does not spin the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from durabletask.internal import orchestrator_service_pb2 as pb

from dfhost.grpc.convert import failure_from_proto, text, wrapped
from dfhost.grpc.entities import batch_outcome, batch_request
from dfhost.grpc.episodes import episode_request, remote_episode
from dfhost.history import EventType, HistoryEvent, utcnow
from dfhost.orchestration.entities import EntityId
from dfhost.orchestration.episode import EpisodeInput
from dfhost.runtime.remote import RemoteAbandoned, RemoteEpisode
from dfhost.work import ActivityTask, EpisodeOutcome, EpisodeWork

__all__ = ["UnknownTokenError", "WorkerHub"]

log = logging.getLogger("dfhost.grpc")

Kind = Literal["orchestration", "activity", "entity"]
Answer = pb.OrchestratorResponse | pb.ActivityResponse | pb.EntityBatchResult
_ANSWER_OF: dict[Kind, type[Answer]] = {
    "orchestration": pb.OrchestratorResponse,
    "activity": pb.ActivityResponse,
    "entity": pb.EntityBatchResult,
}


class UnknownTokenError(LookupError):
    """A completion token no pending work item has (answered already, or given back)."""


@dataclass(eq=False)
class _Worker:
    id: str
    orchestrations: frozenset[str] | None
    """Names it takes (lower-cased); None: all."""
    activities: frozenset[str] | None
    entities: frozenset[str] | None
    queue: asyncio.Queue[pb.WorkItem] = field(default_factory=asyncio.Queue)
    held: set[str] = field(default_factory=set)
    """Tokens of the work items sent to it (or queued for it) and not answered yet."""

    def takes(self, kind: Kind, name: str) -> bool:
        names = {
            "orchestration": self.orchestrations,
            "activity": self.activities,
            "entity": self.entities,
        }[kind]
        return names is None or name.lower() in names


@dataclass(eq=False)
class _Pending:
    kind: Kind
    name: str
    item: pb.WorkItem
    answer: asyncio.Future[Answer | None]
    """The worker's answer; None if it gave the work item back."""
    worker: _Worker | None = None


class WorkerHub:
    """Connected workers and the work items they hold."""

    def __init__(
        self,
        *,
        payload_bytes: int,
        episode_wait: float = 120.0,
        alone_wait: float = 10.0,
        retry_after: float = 1.0,
        ping_every: float = 30.0,
    ) -> None:
        self.payload_bytes = payload_bytes
        self.episode_wait = episode_wait
        self.alone_wait = alone_wait
        self.retry_after = retry_after
        self.ping_every = ping_every
        self._workers: dict[str, _Worker] = {}
        self._pending: dict[str, _Pending] = {}
        self._waiting: list[_Pending] = []
        """Work items that no connected worker takes yet."""
        self._ids = itertools.count(1)
        self._released = False

    @property
    def connected(self) -> int:
        return len(self._workers)

    # --- what the engine asks (RemoteWorkers) ---------------------------------------------

    async def run_episode(self, episode: EpisodeInput) -> RemoteEpisode:
        item = pb.WorkItem(orchestratorRequest=episode_request(episode))
        answer = await self._answer("orchestration", episode.name, episode.instance_id, item)
        assert isinstance(answer, pb.OrchestratorResponse)
        return remote_episode(episode, answer, self.payload_bytes)

    async def run_entity_batch(
        self, entity: EntityId, work: EpisodeWork, now: datetime
    ) -> tuple[EpisodeWork, EpisodeOutcome]:
        request = batch_request(entity, work)
        if not request.operations:
            # Only its creation (or messages that are no operations): nothing for a worker.
            # (From the stored state: `request.entityState` reads as "" when unset.)
            unchanged = pb.EntityBatchResult(entityState=wrapped(work.instance.custom_status))
            return batch_outcome(entity, work, unchanged, now, self.payload_bytes)
        item = pb.WorkItem(entityRequest=request)
        answer = await self._answer("entity", entity.name, entity.instance_id, item)
        assert isinstance(answer, pb.EntityBatchResult)
        return batch_outcome(entity, work, answer, now, self.payload_bytes)

    async def _answer(self, kind: Kind, name: str, instance_id: str, item: pb.WorkItem) -> Answer:
        """A worker's answer to an episode's or entity batch's work item; RemoteAbandoned when
        none answers in time or a worker gives it back."""
        pending = self._new(kind, name, item)
        try:
            async with asyncio.timeout(self.episode_wait):
                # With no worker connected for `alone_wait`, hand the lease back early: on a
                # shared hub, a host that has workers can run it meanwhile.
                while not await _within(pending.answer, self.alone_wait):
                    if not self._workers:
                        raise RemoteAbandoned(f"no worker connected for {instance_id}")
                answer = pending.answer.result()
        except TimeoutError:
            raise RemoteAbandoned(f"no worker answered for {instance_id}") from None
        finally:
            self._forget(pending)
        if answer is None:
            # Given back: the lease goes back to the hub, a little later, so that a worker
            # giving back everything does not spin the host.
            if not self._released:
                await asyncio.sleep(self.retry_after)
            raise RemoteAbandoned(f"a worker gave back {instance_id}")
        return answer

    async def run_activity(self, task: ActivityTask) -> HistoryEvent:
        request = pb.ActivityRequest(
            name=task.name,
            input=wrapped(task.input),
            orchestrationInstance=pb.OrchestrationInstance(
                instanceId=task.instance_id, executionId=wrapped(task.execution_id)
            ),
            taskId=task.task_scheduled_id,
        )
        pending = self._new("activity", task.name, pb.WorkItem(activityRequest=request))
        try:
            while (answer := await pending.answer) is None:
                if self._released:
                    raise RemoteAbandoned(f"activity '{task.name}' was given back")
                await asyncio.sleep(self.retry_after)  # abandoned: again, a little later
                self._forget(pending)
                pending = self._new("activity", task.name, pb.WorkItem(activityRequest=request))
        finally:
            self._forget(pending)
        assert isinstance(answer, pb.ActivityResponse)
        now = utcnow()
        if answer.HasField("failureDetails"):
            reason, details = failure_from_proto(answer.failureDetails)
            return task.failed_event(now, reason, details)
        return HistoryEvent(
            type=EventType.TASK_COMPLETED,
            timestamp=now,
            task_scheduled_id=task.task_scheduled_id,
            result=text(answer, "result"),
        )

    def release(self) -> None:
        self._released = True
        waiting, self._waiting = self._waiting, []
        for pending in waiting:
            if not pending.answer.done():
                pending.answer.set_result(None)

    # --- what workers ask -----------------------------------------------------------------

    async def stream(self, request: pb.GetWorkItemsRequest) -> AsyncGenerator[pb.WorkItem]:
        """A worker's work items, until it goes (then what it held goes to others)."""
        filters = request.workItemFilters if request.HasField("workItemFilters") else None
        worker = _Worker(
            id=request.worker_instance_id or f"worker-{next(self._ids)}",
            orchestrations=_names(filters.orchestrations) if filters else None,
            activities=_names(filters.activities) if filters else None,
            entities=_entity_names(filters),
        )
        key = f"{worker.id}#{next(self._ids)}"
        self._workers[key] = worker
        log.info("dfhost: Durable Task worker %s connected", worker.id)
        try:
            self._hand_out_waiting()
            while True:
                try:
                    async with asyncio.timeout(self.ping_every):
                        item = await worker.queue.get()
                except TimeoutError:
                    item = pb.WorkItem(healthPing=pb.HealthPing())
                yield item
        finally:
            del self._workers[key]
            given_back = [self._pending[t] for t in worker.held if t in self._pending]
            log.info(
                "dfhost: Durable Task worker %s disconnected%s",
                worker.id,
                f"; {len(given_back)} work item(s) go to other workers" if given_back else "",
            )
            for pending in given_back:
                pending.worker = None
                self._place(pending)

    def complete(self, token: str, answer: Answer) -> None:
        pending = self._pending.get(token)
        if pending is None or pending.answer.done():
            raise UnknownTokenError(token)
        if not isinstance(answer, _ANSWER_OF[pending.kind]):
            raise UnknownTokenError(token)
        pending.answer.set_result(answer)

    def abandon(self, token: str, kind: Kind) -> None:
        pending = self._pending.get(token)
        if pending is None or pending.kind != kind or pending.answer.done():
            raise UnknownTokenError(token)
        pending.answer.set_result(None)

    # --- internals ------------------------------------------------------------------------

    def _new(self, kind: Kind, name: str, item: pb.WorkItem) -> _Pending:
        token = uuid.uuid4().hex
        item.completionToken = token
        answer: asyncio.Future[Answer | None]
        answer = asyncio.get_running_loop().create_future()
        pending = _Pending(kind, name, item, answer)
        self._pending[token] = pending
        self._place(pending)
        return pending

    def _place(self, pending: _Pending) -> None:
        if self._released:
            if not pending.answer.done():
                pending.answer.set_result(None)
            return
        candidates = [w for w in self._workers.values() if w.takes(pending.kind, pending.name)]
        if not candidates:
            self._waiting.append(pending)
            return
        worker = min(candidates, key=lambda w: len(w.held))
        pending.worker = worker
        worker.held.add(pending.item.completionToken)
        worker.queue.put_nowait(pending.item)

    def _hand_out_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        for pending in waiting:
            if not pending.answer.done():
                self._place(pending)

    def _forget(self, pending: _Pending) -> None:
        token = pending.item.completionToken
        self._pending.pop(token, None)
        if pending.worker is not None:
            pending.worker.held.discard(token)
        with contextlib.suppress(ValueError):
            self._waiting.remove(pending)
        if not pending.answer.done():
            pending.answer.cancel()


def _entity_names(filters: pb.WorkItemFilters | None) -> frozenset[str] | None:
    """The entities a worker takes: with filters naming orchestrations or activities but no
    entity, none (it registered none, and would fail every operation)."""
    if filters is None:
        return None
    names = _names(filters.entities)
    if names is None and (filters.orchestrations or filters.activities):
        return frozenset()
    return names


async def _within(future: asyncio.Future[Answer | None], seconds: float) -> bool:
    """Whether `future` is done within `seconds` (it is not cancelled if not)."""
    done, _ = await asyncio.wait({future}, timeout=seconds)
    return bool(done)


def _names(filters: object) -> frozenset[str] | None:
    names = frozenset(f.name.lower() for f in filters)  # type: ignore[attr-defined]
    return names or None
