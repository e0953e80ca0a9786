"""`TaskHubSidecarService`: the Durable Task gRPC protocol over dfhost's task hub.

Client calls go through `DurableClient`, as the management API's do, so an instance started
here is the same as one started over HTTP and the other way round. Work items come from the
engine through `WorkerHub`: the engine claims, the worker decides, the engine commits.
Entities are instances `@name@key` (see `dfhost.orchestration.entities`): signals and reads
go through the same client, their batches to the workers that registered them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Any, NoReturn, TypeVar

import grpc
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from google.protobuf import empty_pb2, wrappers_pb2

from dfhost.client import (
    DurableClient,
    InstanceExistsError,
    InstanceNotFoundError,
    UnknownOrchestratorError,
)
from dfhost.grpc.convert import (
    STATUS_FROM_PROTO,
    event_to_proto,
    state_to_proto,
    text,
    time_from_proto,
    wrapped,
)
from dfhost.grpc.entities import entity_metadata
from dfhost.grpc.workers import UnknownTokenError, WorkerHub
from dfhost.history import TERMINAL_STATUSES, EventType, Instance, OrchestrationStatus
from dfhost.ids import InvalidArgumentError, InvalidInstanceIdError
from dfhost.orchestration.entities import EntityId, EntityStatus
from dfhost.orchestration.limits import PayloadTooLargeError
from dfhost.store import DeliveryResult, InstanceQuery, StoreError
from dfhost.store.query import encode_continuation

__all__ = ["TaskHubService"]

log = logging.getLogger("dfhost.grpc")

T = TypeVar("T")

_HISTORY_CHUNK = 500
"""Events per `StreamInstanceHistory` message."""
_TERMINATE_WAIT = 10.0
"""Seconds a recursive terminate waits for an instance to end before it reads which
sub-orchestrations it started."""
_LIST_PAGES_PER_CALL = 10
"""Pages of finished instances one ListInstanceIds call reads at most: a completion-time
filter that matches few must not scan a whole hub in one call."""
_POLL_FIRST, _POLL_MAX = 0.05, 1.0
"""A wait for another host's commit polls the store, backing off between these (seconds)."""


class TaskHubService(pb_grpc.TaskHubSidecarServiceServicer):
    def __init__(self, client: DurableClient, workers: WorkerHub) -> None:
        self.client = client
        self.workers = workers

    # --- handshake ----------------------------------------------------------------------

    async def Hello(self, request: empty_pb2.Empty, context: Any) -> empty_pb2.Empty:
        return empty_pb2.Empty()

    # --- instances ----------------------------------------------------------------------

    async def StartInstance(
        self, request: pb.CreateInstanceRequest, context: Any
    ) -> pb.CreateInstanceResponse:
        start_at = None
        if request.HasField("scheduledStartTimestamp"):
            start_at = time_from_proto(request.scheduledStartTimestamp)
        instance_id = await _answer(
            context,
            lambda: self.client.start_new(
                request.name,
                request.instanceId or None,
                text(request, "input"),
                text(request, "version"),
                start_at=start_at,
            ),
        )
        return pb.CreateInstanceResponse(instanceId=instance_id)

    async def GetInstance(
        self, request: pb.GetInstanceRequest, context: Any
    ) -> pb.GetInstanceResponse:
        instance = await _answer(context, lambda: self.client.get_status(request.instanceId))
        return _instance_response(instance, request.getInputsAndOutputs)

    async def WaitForInstanceStart(
        self, request: pb.GetInstanceRequest, context: Any
    ) -> pb.GetInstanceResponse:
        instance = await self._wait(
            context, request.instanceId, lambda i: i.status is not OrchestrationStatus.PENDING
        )
        return _instance_response(instance, request.getInputsAndOutputs)

    async def WaitForInstanceCompletion(
        self, request: pb.GetInstanceRequest, context: Any
    ) -> pb.GetInstanceResponse:
        instance = await self._wait(
            context, request.instanceId, lambda i: i.status in TERMINAL_STATUSES
        )
        return _instance_response(instance, request.getInputsAndOutputs)

    async def _wait(
        self, context: Any, instance_id: str, reached: Callable[[Instance], bool]
    ) -> Instance | None:
        """The instance once `reached` holds (or None once it does not exist); the caller's
        deadline ends the wait. An end this process commits answers at once; another host's
        is polled for."""
        pause = _POLL_FIRST
        while True:
            finished = self.client.store.watch_finish(instance_id)
            try:
                instance = await _answer(context, lambda: self.client.get_status(instance_id))
                if instance is None or reached(instance):
                    return instance
                await asyncio.wait({finished}, timeout=pause)
            finally:
                finished.cancel()
            pause = min(pause * 2, _POLL_MAX)

    async def RaiseEvent(
        self, request: pb.RaiseEventRequest, context: Any
    ) -> pb.RaiseEventResponse:
        result = await _answer(
            context,
            lambda: self.client.raise_event(
                request.instanceId, request.name, text(request, "input")
            ),
        )
        await _delivered(context, result, request.instanceId)
        return pb.RaiseEventResponse()

    async def TerminateInstance(
        self, request: pb.TerminateRequest, context: Any
    ) -> pb.TerminateResponse:
        output = text(request, "output")
        output = output if output is not None else "null"
        result = await _answer(
            context, lambda: self.client.terminate_with_output(request.instanceId, output)
        )
        await _delivered(context, result, request.instanceId, finished_ok=True)
        if request.recursive:  # the Durable Task SDKs' default
            await _answer(context, lambda: self._terminate_children(request.instanceId, output))
        return pb.TerminateResponse()

    async def _terminate_children(self, instance_id: str, output: str) -> None:
        """Terminate the sub-orchestrations `instance_id` started, theirs too, once it has
        ended (an episode under way when the terminate came may still start one)."""
        seen = {instance_id}
        parents = [instance_id]
        while parents:
            parent = parents.pop()
            await self.client.wait_for_completion(parent, timeout=_TERMINATE_WAIT)
            for child in await self._children(parent):
                if child not in seen:
                    seen.add(child)
                    parents.append(child)
                    await self.client.terminate_with_output(child, output)

    async def _children(self, instance_id: str) -> list[str]:
        """The sub-orchestrations `instance_id`'s history says it started."""
        return [
            e.instance_id
            for e in await self.client.get_history(instance_id)
            if e.type is EventType.SUB_ORCHESTRATION_CREATED and e.instance_id
        ]

    async def SuspendInstance(self, request: pb.SuspendRequest, context: Any) -> pb.SuspendResponse:
        result = await _answer(
            context, lambda: self.client.suspend(request.instanceId, text(request, "reason"))
        )
        await _delivered(context, result, request.instanceId)
        return pb.SuspendResponse()

    async def ResumeInstance(self, request: pb.ResumeRequest, context: Any) -> pb.ResumeResponse:
        result = await _answer(
            context, lambda: self.client.resume(request.instanceId, text(request, "reason"))
        )
        await _delivered(context, result, request.instanceId)
        return pb.ResumeResponse()

    async def RewindInstance(
        self, request: pb.RewindInstanceRequest, context: Any
    ) -> pb.RewindInstanceResponse:
        result = await _answer(
            context, lambda: self.client.rewind(request.instanceId, text(request, "reason"))
        )
        if result == "gone":
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Instance '{request.instanceId}' is not Failed: only a failed one is rewound.",
            )
        await _delivered(context, result, request.instanceId)
        return pb.RewindInstanceResponse()

    async def RestartInstance(
        self, request: pb.RestartInstanceRequest, context: Any
    ) -> pb.RestartInstanceResponse:
        instance_id = await _answer(
            context,
            lambda: self.client.restart(request.instanceId, request.restartWithNewInstanceId),
        )
        return pb.RestartInstanceResponse(instanceId=instance_id)

    async def QueryInstances(
        self, request: pb.QueryInstancesRequest, context: Any
    ) -> pb.QueryInstancesResponse:
        q = request.query
        query = InstanceQuery(
            created_from=_time(q, "createdTimeFrom"),
            created_to=_time(q, "createdTimeTo"),
            statuses=[STATUS_FROM_PROTO[s] for s in q.runtimeStatus],
            instance_id_prefix=text(q, "instanceIdPrefix") or None,
            top=q.maxInstanceCount or 100,
            continuation=text(q, "continuationToken") or None,
        )
        page = await _answer(context, lambda: self.client.query(query))
        return pb.QueryInstancesResponse(
            orchestrationState=[state_to_proto(i, q.fetchInputsAndOutputs) for i in page.instances],
            continuationToken=(
                None
                if page.continuation is None
                else wrappers_pb2.StringValue(value=page.continuation)
            ),
        )

    async def ListInstanceIds(
        self, request: pb.ListInstanceIdsRequest, context: Any
    ) -> pb.ListInstanceIdsResponse:
        """Finished instances' ids, a page at a time (newest first), filtered by the time they
        finished; a page is full unless it is the last, or the filter left many pages
        without a match (then a short page comes with the token to go on)."""
        statuses = [STATUS_FROM_PROTO[s] for s in request.runtimeStatus] or list(TERMINAL_STATUSES)
        since = _time(request, "completedTimeFrom")
        until = _time(request, "completedTimeTo")
        size = request.pageSize or 100
        token = text(request, "lastInstanceKey") or None
        ids: list[str] = []
        for _ in range(_LIST_PAGES_PER_CALL):
            query = InstanceQuery(statuses=statuses, top=size, continuation=token)
            page = await _answer(context, partial(self.client.query, query))
            token = page.continuation
            for instance in page.instances:
                finished = instance.last_updated_at
                if (since is None or finished >= since) and (until is None or finished <= until):
                    ids.append(instance.instance_id)
                    if len(ids) == size:
                        # Go on after this one; the rest of this page goes to the next call.
                        if instance is not page.instances[-1]:
                            token = encode_continuation(instance.created_at, instance.instance_id)
                        break
            if token is None or len(ids) == size:
                break
        return pb.ListInstanceIdsResponse(
            instanceIds=ids,
            lastInstanceKey=None if token is None else wrappers_pb2.StringValue(value=token),
        )

    async def PurgeInstances(
        self, request: pb.PurgeInstancesRequest, context: Any
    ) -> pb.PurgeInstancesResponse:
        if request.HasField("purgeInstanceFilter"):
            f = request.purgeInstanceFilter
            query = InstanceQuery(
                created_from=_time(f, "createdTimeFrom"),
                created_to=_time(f, "createdTimeTo"),
                statuses=[STATUS_FROM_PROTO[s] for s in f.runtimeStatus] or list(TERMINAL_STATUSES),
            )
            purged = await _answer(context, lambda: self.client.purge_many(query))
        elif request.HasField("instanceBatch"):
            purged = 0
            for instance_id in request.instanceBatch.instanceIds:
                purged += await self._purge_one(context, instance_id, request.recursive)
        else:
            purged = await self._purge_one(context, request.instanceId, request.recursive)
        return pb.PurgeInstancesResponse(
            deletedInstanceCount=purged, isComplete=wrappers_pb2.BoolValue(value=True)
        )

    async def _purge_one(self, context: Any, instance_id: str, recursive: bool) -> int:
        """Purge a finished instance, and with `recursive` the sub-orchestrations it started
        (the Durable Task SDKs' default), all of them finished first."""
        purging = [instance_id]
        if recursive:
            pending = [instance_id]
            while pending:
                children = await _answer(context, partial(self._children, pending.pop()))
                fresh = [c for c in children if c not in purging]
                purging += fresh
                pending += fresh
        for each in purging:
            instance = await _answer(context, partial(self.client.get_status, each))
            if instance is not None and instance.status not in TERMINAL_STATUSES:
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Instance '{each}' is {instance.status.value}: only a finished "
                    "instance is purged.",
                )
        purged = 0
        for each in purging:
            purged += await _answer(context, partial(self.client.purge, each))
        return purged

    async def StreamInstanceHistory(
        self, request: pb.StreamInstanceHistoryRequest, context: Any
    ) -> AsyncIterator[pb.HistoryChunk]:
        instance = await _answer(context, lambda: self.client.get_status(request.instanceId))
        if instance is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"No instance with ID '{request.instanceId}' found."
            )
        history = await _answer(context, lambda: self.client.get_history(request.instanceId))
        for start in range(0, max(len(history), 1), _HISTORY_CHUNK):
            chunk = history[start : start + _HISTORY_CHUNK]
            yield pb.HistoryChunk(events=[event_to_proto(e) for e in chunk])

    # --- work items ---------------------------------------------------------------------

    async def GetWorkItems(
        self, request: pb.GetWorkItemsRequest, context: Any
    ) -> AsyncIterator[pb.WorkItem]:
        async for item in self.workers.stream(request):
            yield item

    async def CompleteOrchestratorTask(
        self, request: pb.OrchestratorResponse, context: Any
    ) -> pb.CompleteTaskResponse:
        await self._settle(context, lambda: self.workers.complete(request.completionToken, request))
        return pb.CompleteTaskResponse()

    async def CompleteActivityTask(
        self, request: pb.ActivityResponse, context: Any
    ) -> pb.CompleteTaskResponse:
        await self._settle(context, lambda: self.workers.complete(request.completionToken, request))
        return pb.CompleteTaskResponse()

    async def AbandonTaskOrchestratorWorkItem(
        self, request: pb.AbandonOrchestrationTaskRequest, context: Any
    ) -> pb.AbandonOrchestrationTaskResponse:
        await self._settle(
            context, lambda: self.workers.abandon(request.completionToken, "orchestration")
        )
        return pb.AbandonOrchestrationTaskResponse()

    async def AbandonTaskActivityWorkItem(
        self, request: pb.AbandonActivityTaskRequest, context: Any
    ) -> pb.AbandonActivityTaskResponse:
        await self._settle(
            context, lambda: self.workers.abandon(request.completionToken, "activity")
        )
        return pb.AbandonActivityTaskResponse()

    async def CompleteEntityTask(
        self, request: pb.EntityBatchResult, context: Any
    ) -> pb.CompleteTaskResponse:
        await self._settle(context, lambda: self.workers.complete(request.completionToken, request))
        return pb.CompleteTaskResponse()

    async def AbandonTaskEntityWorkItem(
        self, request: pb.AbandonEntityTaskRequest, context: Any
    ) -> pb.AbandonEntityTaskResponse:
        await self._settle(context, lambda: self.workers.abandon(request.completionToken, "entity"))
        return pb.AbandonEntityTaskResponse()

    # --- entities -----------------------------------------------------------------------

    async def SignalEntity(
        self, request: pb.SignalEntityRequest, context: Any
    ) -> pb.SignalEntityResponse:
        entity = await _entity_of(context, request.instanceId)
        visible_at = _time(request, "scheduledTime")
        await _answer(
            context,
            lambda: self.client.signal_entity(
                entity.name, entity.key, request.name, text(request, "input"), visible_at=visible_at
            ),
        )
        return pb.SignalEntityResponse()

    async def GetEntity(self, request: pb.GetEntityRequest, context: Any) -> pb.GetEntityResponse:
        entity = await _entity_of(context, request.instanceId)
        status = await _answer(context, lambda: self.client.read_entity(entity.name, entity.key))
        if status is None or status.state is None:
            return pb.GetEntityResponse(exists=False)
        return pb.GetEntityResponse(
            exists=True, entity=entity_metadata(status, request.includeState)
        )

    async def QueryEntities(
        self, request: pb.QueryEntitiesRequest, context: Any
    ) -> pb.QueryEntitiesResponse:
        q = request.query
        # The SDKs' prefix may leave out the leading '@' of the instance id.
        prefix = text(q, "instanceIdStartsWith") or "@"
        if not prefix.startswith("@"):
            prefix = "@" + prefix
        since, until = _time(q, "lastModifiedFrom"), _time(q, "lastModifiedTo")
        query = InstanceQuery(
            instance_id_prefix=prefix,
            top=q.pageSize.value if q.HasField("pageSize") and q.pageSize.value > 0 else 100,
            continuation=text(q, "continuationToken") or None,
        )
        page = await _answer(context, lambda: self.client.query(query))
        found = [
            status
            for instance in page.instances
            if (status := EntityStatus.of(instance)) is not None
            and (status.state is not None or q.includeTransient)
            and (since is None or status.last_operation_at >= since)
            and (until is None or status.last_operation_at <= until)
        ]
        return pb.QueryEntitiesResponse(
            entities=[entity_metadata(status, q.includeState) for status in found],
            continuationToken=wrapped(page.continuation),
        )

    async def CleanEntityStorage(
        self, request: pb.CleanEntityStorageRequest, context: Any
    ) -> pb.CleanEntityStorageResponse:
        """Releases the locks of orchestrations that no longer run, a page of entities per
        call. Removes no entity: a deleted one (no state) keeps its instance row, since
        removing it safely needs a store transaction that also finds its inbox empty, which
        the stores do not offer (a purge between a signal's send and its batch would lose
        the signal)."""
        released, continuation = 0, None
        if request.releaseOrphanedLocks:
            released, continuation = await _answer(
                context,
                lambda: self.client.release_orphaned_locks(
                    continuation=text(request, "continuationToken") or None
                ),
            )
        return pb.CleanEntityStorageResponse(
            emptyEntitiesRemoved=0,
            orphanedLocksReleased=released,
            continuationToken=wrapped(continuation),
        )

    async def _settle(self, context: Any, call: Callable[[], None]) -> None:
        try:
            call()
        except UnknownTokenError:
            # Answered already, or given to another worker after this one's stream ended.
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                "No work item has this completion token: it was answered already or handed "
                "to another worker.",
            )


def _instance_response(instance: Instance | None, with_payloads: bool) -> pb.GetInstanceResponse:
    if instance is None:
        return pb.GetInstanceResponse(exists=False)
    return pb.GetInstanceResponse(
        exists=True, orchestrationState=state_to_proto(instance, with_payloads)
    )


async def _entity_of(context: Any, instance_id: str) -> EntityId:
    entity = EntityId.parse(instance_id)
    if entity is None:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"'{instance_id}' is not an entity instance id (@name@key).",
        )
        raise AssertionError("abort returns only by raising")
    return entity


def _time(message: Any, name: str) -> datetime | None:
    return time_from_proto(getattr(message, name)) if message.HasField(name) else None


async def _delivered(
    context: Any, result: DeliveryResult, instance_id: str, *, finished_ok: bool = False
) -> None:
    if result == "not_found":
        await context.abort(
            grpc.StatusCode.NOT_FOUND, f"No instance with ID '{instance_id}' found."
        )
    if result == "gone" and not finished_ok:
        await context.abort(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"Instance '{instance_id}' has already finished.",
        )


async def _answer(context: Any, call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, its errors as gRPC statuses with their one-line messages."""
    try:
        return await call()
    except InstanceExistsError as exc:
        await _abort(context, grpc.StatusCode.ALREADY_EXISTS, exc)
    except InstanceNotFoundError as exc:
        await _abort(context, grpc.StatusCode.NOT_FOUND, exc)
    except PayloadTooLargeError as exc:
        await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, exc)
    except UnknownOrchestratorError as exc:
        await _abort(context, grpc.StatusCode.NOT_FOUND, exc)
    except (InvalidInstanceIdError, InvalidArgumentError, ValueError) as exc:
        await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc)
    except StoreError as exc:
        log.error("dfhost: the task hub failed a gRPC call: %s", exc)
        await _abort(context, grpc.StatusCode.UNAVAILABLE, exc)


async def _abort(context: Any, code: grpc.StatusCode, exc: Exception) -> NoReturn:
    await context.abort(code, str(exc))
    raise AssertionError("abort returns only by raising")
