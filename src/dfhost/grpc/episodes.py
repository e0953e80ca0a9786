"""An episode as a Durable Task orchestrator work item, and the worker's actions as dfhost's
work: each action becomes the history event that records it and the `Work` (or message) the
engine commits with the episode, as a replay of dfhost's own SDK would give them."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime

from durabletask.internal import orchestrator_service_pb2 as pb

from dfhost.grpc.convert import (
    event_from_proto,
    event_to_proto,
    failure_from_proto,
    text,
    time_from_proto,
    wrapped,
)
from dfhost.history import EventType, HistoryEvent
from dfhost.orchestration.entities import (
    OPERATION_EVENT,
    RELEASE_EVENT,
    EntityId,
    LockRequest,
    Operation,
    Release,
    creation_request,
)
from dfhost.orchestration.episode import (
    ActivityCall,
    Completed,
    ContinuedAsNew,
    EntityMessage,
    EpisodeInput,
    EpisodeResult,
    Failed,
    Outcome,
    Running,
    SubOrchestrationCall,
    TimerRequest,
    Work,
)
from dfhost.orchestration.limits import PayloadTooLargeError, check_payload
from dfhost.runtime.remote import RemoteEpisode
from dfhost.work import Message, StartRequest

__all__ = ["episode_request", "remote_episode"]


def episode_request(episode: EpisodeInput) -> pb.OrchestratorRequest:
    """The work item of `episode`: the stored history as past events, this episode's
    OrchestratorStarted and inbound events as new ones."""
    return pb.OrchestratorRequest(
        instanceId=episode.instance_id,
        executionId=wrapped(episode.execution_id),
        pastEvents=[event_to_proto(e) for e in episode.past],
        newEvents=[event_to_proto(e) for e in episode.new],
    )


class _Refused(Exception):
    """An action dfhost cannot carry out: the orchestration fails with this message."""


def remote_episode(
    episode: EpisodeInput, response: pb.OrchestratorResponse, payload_bytes: int
) -> RemoteEpisode:
    """What the worker decided for `episode`; an action dfhost cannot carry out, or a payload
    over `payload_bytes`, fails the orchestration instead (as a replay breaking a limit
    would)."""
    try:
        decided = _decided(episode, response)
        for what, payload in _payloads(decided):
            check_payload(payload, what, payload_bytes)
    except (_Refused, PayloadTooLargeError) as exc:
        message = f"Orchestrator '{episode.name}' failed: {exc}"
        return RemoteEpisode(EpisodeResult(Failed(message)))
    return decided


def _decided(episode: EpisodeInput, response: pb.OrchestratorResponse) -> RemoteEpisode:
    now = episode.now
    outcome: Outcome = Running()
    events: list[HistoryEvent] = []
    work: list[Work] = []
    messages: list[Message] = []
    starts: list[StartRequest] = []
    for action in response.actions:
        kind = action.WhichOneof("orchestratorActionType")
        if kind == "scheduleTask":
            task = action.scheduleTask
            payload = text(task, "input")
            events.append(
                HistoryEvent(
                    type=EventType.TASK_SCHEDULED,
                    timestamp=now,
                    event_id=action.id,
                    name=task.name,
                    version=text(task, "version"),
                    input=payload,
                )
            )
            work.append(ActivityCall(action.id, task.name, payload))
        elif kind == "createSubOrchestration":
            sub = action.createSubOrchestration
            # The SDK names its children; a deterministic id for one that does not.
            child = sub.instanceId or str(
                uuid.uuid5(uuid.NAMESPACE_URL, f"{episode.instance_id}:{action.id}")
            )
            call = SubOrchestrationCall(
                action.id, sub.name, child, text(sub, "input"), text(sub, "version")
            )
            events.append(call.scheduled_event(episode))
            work.append(call)
        elif kind == "createTimer":
            timer = TimerRequest(action.id, time_from_proto(action.createTimer.fireAt))
            events.append(timer.scheduled_event(episode))
            work.append(timer)
        elif kind == "sendEvent":
            sent = action.sendEvent
            target, data = sent.instance.instanceId, text(sent, "data")
            events.append(
                HistoryEvent(
                    type=EventType.EVENT_SENT,
                    timestamp=now,
                    event_id=action.id,
                    name=sent.name,
                    input=data,
                    instance_id=target,
                )
            )
            raised = HistoryEvent(
                type=EventType.EVENT_RAISED, timestamp=now, name=sent.name, input=data
            )
            messages.append(Message(instance_id=target, event=raised))
        elif kind == "terminateOrchestration":
            end = action.terminateOrchestration
            terminated = HistoryEvent(
                type=EventType.EXECUTION_TERMINATED, timestamp=now, input=text(end, "reason")
            )
            messages.append(Message(instance_id=end.instanceId, event=terminated))
        elif kind == "sendEntityMessage":
            _entity_message(episode, action, events, work, messages, starts)
        elif kind == "completeOrchestration":
            outcome = _completion(action.completeOrchestration, now)
        else:
            raise _Refused(
                f"dfhost does not carry out the action {kind!r} of a Durable Task worker"
            )
    result = EpisodeResult(
        outcome,
        events=events,
        work=work,
        custom_status=text(response, "customStatus"),
    )
    return RemoteEpisode(result, messages, starts)


def _entity_message(
    episode: EpisodeInput,
    action: pb.OrchestratorAction,
    events: list[HistoryEvent],
    work: list[Work],
    messages: list[Message],
    starts: list[StartRequest],
) -> None:
    """A call or signal of an entity, recorded and sent as a function app's (an EventSent
    whose input is the request message; the entity's response comes back as an EventRaised
    named by the request id, which the SDKs read as the call's result)."""
    sent = action.sendEntityMessage
    which = sent.WhichOneof("EntityMessageType")
    if which == "entityOperationCalled":
        called = sent.entityOperationCalled
        target, signal, scheduled = text(called, "targetInstanceId"), False, None
        operation, payload, request_id = called.operation, text(called, "input"), called.requestId
    elif which == "entityOperationSignaled":
        signaled = sent.entityOperationSignaled
        target, signal = text(signaled, "targetInstanceId"), True
        operation, payload = signaled.operation, text(signaled, "input")
        request_id = signaled.requestId
        scheduled = (
            time_from_proto(signaled.scheduledTime) if signaled.HasField("scheduledTime") else None
        )
    elif which == "entityLockRequested":
        _lock_request(episode, action, events, messages, starts)
        return
    elif which == "entityUnlockSent":
        _unlock(episode, action, events, messages)
        return
    else:
        raise _Refused(f"dfhost does not carry out the entity message {which!r}")
    entity = _entity(target)
    call = EntityMessage(
        action.id, entity.instance_id, operation, payload, request_id or str(uuid.uuid4()), signal
    )
    events.append(call.scheduled_event(episode))
    if scheduled is None or scheduled <= episode.now:
        work.append(call)
        return
    # A signal for later: its message waits in the entity's inbox until then.
    message = Operation(
        operation,
        payload,
        True,
        call.request_id,
        parent_instance_id=episode.instance_id,
        parent_execution_id=episode.execution_id,
    ).message(entity, episode.now)
    messages.append(replace(message, visible_at=scheduled))
    starts.append(creation_request(entity, episode.now))


def _lock_request(
    episode: EpisodeInput,
    action: pb.OrchestratorAction,
    events: list[HistoryEvent],
    messages: list[Message],
    starts: list[StartRequest],
) -> None:
    """A lock request, recorded and sent as DTFx does: an EventSent to the first entity of the
    sorted set whose input is the request (the SDKs read its `id`, the critical section's); the
    grant comes back as an EventRaised named by that id."""
    asked = action.sendEntityMessage.entityLockRequested
    lock_set = [_entity(target).instance_id for target in asked.lockSet]
    if not lock_set or not 0 <= asked.position < len(lock_set):
        raise _Refused("a lock request with no entity at its position")
    # The SDKs sort the set, the same order for every orchestration, so that none waits for
    # another's locks while holding one it needs: the entities are locked in the order given.
    request = LockRequest(
        asked.criticalSectionId or str(uuid.uuid4()),
        episode.instance_id,
        episode.execution_id,
        tuple(lock_set),
        asked.position,
    )
    events.append(
        _sent(episode, action, OPERATION_EVENT, request.request_message(), request.target)
    )
    messages.append(request.message(episode.now))
    starts.append(creation_request(_entity(request.target), episode.now))


def _unlock(
    episode: EpisodeInput,
    action: pb.OrchestratorAction,
    events: list[HistoryEvent],
    messages: list[Message],
) -> None:
    """The release of one entity's lock, recorded as an EventSent and sent as DTFx's."""
    unlock = action.sendEntityMessage.entityUnlockSent
    entity = _entity(text(unlock, "targetInstanceId"))
    release = Release(unlock.criticalSectionId, episode.instance_id)
    events.append(
        _sent(episode, action, RELEASE_EVENT, release.request_message(), entity.instance_id)
    )
    messages.append(release.message(entity.instance_id, episode.now))


def _entity(target: str | None) -> EntityId:
    """The entity a worker's message is for; refused if `target` names none."""
    entity = EntityId.parse(target or "")
    if entity is None:
        raise _Refused(f"{target!r} is not an entity id (@name@key)")
    return entity


def _sent(
    episode: EpisodeInput, action: pb.OrchestratorAction, name: str, message: str, target: str
) -> HistoryEvent:
    """The EventSent that records a lock request or release in the orchestration's history."""
    return HistoryEvent(
        type=EventType.EVENT_SENT,
        timestamp=episode.now,
        event_id=action.id,
        name=name,
        input=message,
        instance_id=target,
    )


def _completion(done: pb.CompleteOrchestrationAction, now: datetime) -> Outcome:
    status = done.orchestrationStatus
    if status == pb.ORCHESTRATION_STATUS_COMPLETED:
        return Completed(text(done, "result"))
    if status == pb.ORCHESTRATION_STATUS_FAILED:
        return Failed(*failure_from_proto(done.failureDetails))
    if status == pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW:
        try:
            carried = [event_from_proto(e, now) for e in done.carryoverEvents]
        except ValueError as exc:
            raise _Refused(str(exc)) from None
        return ContinuedAsNew(text(done, "result"), carried)
    name = pb.OrchestrationStatus.Name(status)
    raise _Refused(f"an orchestration cannot complete itself with the status {name}")


def _payloads(decided: RemoteEpisode) -> list[tuple[str, str | None]]:
    found = [*decided.result.outcome.payloads()]
    for item in decided.result.work:
        found += item.payloads()
    found += [(f"event '{m.event.name}'", m.event.input) for m in decided.messages]
    return found
