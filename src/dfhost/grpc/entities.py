"""An entity's batch as a Durable Task entity work item, the worker's result as what dfhost
commits, and entities as the protocol shows them.

The batch is the operations the engine lets run now (the entity's inbox and queue, given its
locks: see `dfhost.orchestration.entities`), in order, with the stored state. The worker's
`EntityBatchResult` commits as a function app's batch does: the new state, a response to each
call (an EventRaised named by its request id, to the caller's execution: the shape the Durable
Task SDKs read as a call's result), and its actions (signals to entities, created if need be;
orchestrations it starts). A worker answering fewer operations than it was given leaves the rest
in the inbox for the next batch, as DTFx does."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import replace
from datetime import datetime

from durabletask.internal import orchestrator_service_pb2 as pb

from dfhost.grpc.convert import text, time_from_proto, time_to_proto, wrapped
from dfhost.history import EventType, OrchestrationStatus
from dfhost.orchestration.entities import (
    EntityId,
    EntityStatus,
    Operation,
    creation_request,
    response,
)
from dfhost.orchestration.limits import PayloadTooLargeError, check_payload
from dfhost.work import EpisodeOutcome, EpisodeWork, Message, StartRequest

__all__ = ["batch_outcome", "batch_request", "entity_metadata", "operations_of"]

log = logging.getLogger("dfhost.grpc")


def operations_of(work: EpisodeWork) -> list[tuple[Message, Operation | None]]:
    """The inbox in order, each message with the operation it carries (None: not one)."""
    return [(m, Operation.from_event(m.event)) for m in work.messages]


def batch_request(entity: EntityId, work: EpisodeWork) -> pb.EntityBatchRequest:
    return pb.EntityBatchRequest(
        instanceId=entity.instance_id,
        entityState=wrapped(work.instance.custom_status),
        operations=[
            pb.OperationRequest(
                operation=operation.name,
                requestId=operation.request_id,
                input=wrapped(operation.input),
            )
            for _, operation in operations_of(work)
            if operation is not None
        ],
    )


def batch_outcome(
    entity: EntityId,
    work: EpisodeWork,
    result: pb.EntityBatchResult,
    now: datetime,
    payload_bytes: int,
) -> tuple[EpisodeWork, EpisodeOutcome]:
    """(the messages consumed, what to commit) of a worker's `result` for `work`."""
    instance = work.instance
    inbox = operations_of(work)
    operations = [operation for _, operation in inbox if operation is not None]
    for message, operation in inbox:
        if operation is None and message.event.type is not EventType.EXECUTION_STARTED:
            log.warning(
                "dfhost: entity %s ignores a %s message (entities run operations only)",
                instance.instance_id,
                message.event.type.name,
            )
    running = replace(instance, status=OrchestrationStatus.RUNNING)
    if result.HasField("failureDetails"):
        # The whole batch failed: as a function app's failed batch, every operation fails
        # and the state stays as it was.
        reason = result.failureDetails.errorMessage or "the entity batch failed"
        log.error("dfhost: the batch of entity %s failed: %s", instance.instance_id, reason)
        failed = pb.OperationResult(
            failure=pb.OperationResultFailure(failureDetails=result.failureDetails)
        )
        results = [failed] * len(operations)
        state = instance.custom_status
        actions: list[pb.OperationAction] = []
    else:
        results = list(result.results)
        state = text(result, "entityState")
        actions = list(result.actions)
    if len(results) > len(operations):
        log.warning(
            "dfhost: a worker answered %d operations of entity %s, which was given %d",
            len(results),
            instance.instance_id,
            len(operations),
        )
        results = results[: len(operations)]
    done = len(results)
    consumed_messages: list[Message] = []
    seen = 0
    for message, operation in inbox:
        if operation is not None:
            if seen >= done:
                continue  # left in the inbox for the next batch
            seen += 1
        consumed_messages.append(message)
    consumed = replace(work, messages=consumed_messages)
    if done < len(operations):
        log.info(
            "dfhost: entity %s ran %d of %d operations; the rest run in its next batch",
            instance.instance_id,
            done,
            len(operations),
        )
    try:
        check_payload(state, "entity state", payload_bytes)
    except PayloadTooLargeError as exc:
        # As a failed batch: the operations fail and the state stays.
        error = json.dumps(f"Entity '{entity.name}' failed: {exc}")
        log.error("dfhost: entity %s: %s", instance.instance_id, exc)
        responses = [
            response(op, error, "PayloadTooLargeError", now)
            for op in operations[:done]
            if not op.signal and op.parent_instance_id is not None
        ]
        return consumed, EpisodeOutcome(
            instance=replace(running, last_updated_at=now), new_events=[], messages=responses
        )
    messages: list[Message] = []
    for operation, answered in zip(operations, results, strict=False):
        if operation.signal or operation.parent_instance_id is None:
            continue
        if answered.HasField("failure"):
            details = answered.failure.failureDetails
            messages.append(
                response(
                    operation, json.dumps(details.errorMessage), details.errorType or "Error", now
                )
            )
        else:
            value = text(answered.success, "result")
            messages.append(response(operation, value if value is not None else "null", None, now))
    starts: list[StartRequest] = []
    for action in actions:
        _carry_out(action, instance.instance_id, now, messages, starts)
    outcome = EpisodeOutcome(
        instance=replace(running, custom_status=state, last_updated_at=now),
        new_events=[],
        messages=messages,
        starts=starts,
    )
    return consumed, outcome


def _carry_out(
    action: pb.OperationAction,
    source: str,
    now: datetime,
    messages: list[Message],
    starts: list[StartRequest],
) -> None:
    kind = action.WhichOneof("operationActionType")
    if kind == "sendSignal":
        signal = action.sendSignal
        target = EntityId.parse(signal.instanceId)
        if target is None:
            log.error(
                "dfhost: entity %s signaled %r, which is not an entity id: dropped",
                source,
                signal.instanceId,
            )
            return
        operation = Operation(signal.name, text(signal, "input"), True, str(uuid.uuid4()))
        message = operation.message(target, now)
        if signal.HasField("scheduledTime"):
            message = replace(message, visible_at=time_from_proto(signal.scheduledTime))
        messages.append(message)
        if all(s.instance_id != target.instance_id for s in starts):
            starts.append(creation_request(target, now))
    elif kind == "startNewOrchestration":
        start = action.startNewOrchestration
        starts.append(
            StartRequest(
                instance_id=start.instanceId or uuid.uuid4().hex,
                name=start.name,
                execution_id=uuid.uuid4().hex,
                created_at=now,
                input=text(start, "input"),
                version=text(start, "version"),
                visible_at=(
                    time_from_proto(start.scheduledTime)
                    if start.HasField("scheduledTime")
                    else None
                ),
            )
        )
    else:
        log.error("dfhost: entity %s: an action of kind %r is not carried out", source, kind)


def entity_metadata(status: EntityStatus, include_state: bool) -> pb.EntityMetadata:
    metadata = pb.EntityMetadata(
        instanceId=status.entity.instance_id,
        lastModifiedTime=time_to_proto(status.last_operation_at),
        backlogQueueSize=status.backlog,
        lockedBy=wrapped(status.locked_by),
    )
    if include_state and status.state is not None:
        metadata.serializedState.value = status.state
    return metadata
