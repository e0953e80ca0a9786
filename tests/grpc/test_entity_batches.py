"""`dfhost.grpc.entities` and the entity actions of `episodes`, with no server: a worker's
entity calls and signals become what a function app's would, and its batch results become
the entity's new state, the callers' responses and its actions."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from durabletask.internal import orchestrator_service_pb2 as pb
from google.protobuf import wrappers_pb2

from dfhost.grpc.entities import batch_outcome, batch_request
from dfhost.grpc.episodes import remote_episode
from dfhost.grpc.workers import WorkerHub
from dfhost.history import EventType, HistoryEvent, Instance, OrchestrationStatus
from dfhost.orchestration.entities import EntityId, LockRequest, Operation, Release, request_of
from dfhost.orchestration.episode import EntityMessage, EpisodeInput, Failed, Running
from dfhost.runtime.remote import RemoteAbandoned
from dfhost.work import EpisodeWork, Message

T0 = datetime(2024, 1, 1, tzinfo=UTC)
COUNTER = EntityId("counter", "k")


def _text(value: str) -> wrappers_pb2.StringValue:
    return wrappers_pb2.StringValue(value=value)


def _episode() -> EpisodeInput:
    return EpisodeInput(
        instance_id="caller",
        execution_id="x",
        name="orch",
        input=None,
        parent_instance_id=None,
        past=[HistoryEvent(type=EventType.EXECUTION_STARTED, timestamp=T0, name="orch")],
        new=[HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=T0)],
    )


def _entity_action(action_id: int, **kind: object) -> pb.OrchestratorAction:
    message = pb.SendEntityMessageAction(**kind)  # type: ignore[arg-type]
    return pb.OrchestratorAction(id=action_id, sendEntityMessage=message)


def test_calls_and_signals_are_sent_as_a_function_apps() -> None:
    later = T0 + timedelta(minutes=5)
    scheduled = pb.EntityOperationSignaledEvent(
        requestId="r3", operation="add", input=_text("2"), targetInstanceId=_text("@counter@k")
    )
    scheduled.scheduledTime.FromDatetime(later)
    response = pb.OrchestratorResponse(
        actions=[
            _entity_action(
                1,
                entityOperationCalled=pb.EntityOperationCalledEvent(
                    requestId="r1",
                    operation="get",
                    targetInstanceId=_text("@counter@k"),
                    parentInstanceId=_text("caller"),
                ),
            ),
            _entity_action(
                2,
                entityOperationSignaled=pb.EntityOperationSignaledEvent(
                    requestId="r2",
                    operation="add",
                    input=_text("1"),
                    targetInstanceId=_text("@counter@k"),
                ),
            ),
            _entity_action(3, entityOperationSignaled=scheduled),
        ]
    )
    decided = remote_episode(_episode(), response, payload_bytes=1024)
    assert decided.result.outcome == Running()
    assert decided.result.work == [
        EntityMessage(1, "@counter@k", "get", None, "r1", False),
        EntityMessage(2, "@counter@k", "add", "1", "r2", True),
    ]
    sent = decided.result.events
    assert [(e.type, e.event_id, e.instance_id) for e in sent] == [
        (EventType.EVENT_SENT, 1, "@counter@k"),
        (EventType.EVENT_SENT, 2, "@counter@k"),
        (EventType.EVENT_SENT, 3, "@counter@k"),
    ]
    # The SDK reads the request id from the EventSent's input when it replays.
    assert [json.loads(e.input or "")["id"] for e in sent] == ["r1", "r2", "r3"]
    # The signal for later waits in the entity's inbox, which is created with it.
    [message] = decided.messages
    assert message.instance_id == "@counter@k" and message.visible_at == later
    operation = Operation.from_event(message.event)
    assert operation is not None and (operation.name, operation.signal) == ("add", True)
    assert [s.instance_id for s in decided.starts] == ["@counter@k"]


def test_lock_requests_and_releases_are_sent_as_dtfx_does() -> None:
    lock = pb.EntityLockRequestedEvent(
        criticalSectionId="s",
        lockSet=["@counter@a", "@counter@b"],
        parentInstanceId=_text("caller"),
    )
    unlock = pb.EntityUnlockSentEvent(
        criticalSectionId="s",
        targetInstanceId=_text("@counter@b"),
        parentInstanceId=_text("caller"),
    )
    response = pb.OrchestratorResponse(
        actions=[
            _entity_action(1, entityLockRequested=lock),
            _entity_action(2, entityUnlockSent=unlock),
        ]
    )
    decided = remote_episode(_episode(), response, payload_bytes=1024)
    assert decided.result.outcome == Running() and decided.result.work == []
    # EventSent to the first entity of the set, whose input the SDKs read the id of.
    sent = decided.result.events
    assert [(e.type, e.event_id, e.instance_id) for e in sent] == [
        (EventType.EVENT_SENT, 1, "@counter@a"),
        (EventType.EVENT_SENT, 2, "@counter@b"),
    ]
    assert json.loads(sent[0].input or "")["id"] == "s"
    request, release = decided.messages
    assert request_of(request.event) == LockRequest(
        "s", "caller", "x", ("@counter@a", "@counter@b"), 0
    )
    assert request.instance_id == "@counter@a"
    assert Release.from_event(release.event) == Release("s", "caller")
    assert release.instance_id == "@counter@b"
    assert [s.instance_id for s in decided.starts] == ["@counter@a"]


def test_a_lock_request_on_a_non_entity_fails_the_orchestration() -> None:
    lock = pb.EntityLockRequestedEvent(criticalSectionId="s", lockSet=["not-an-entity"])
    response = pb.OrchestratorResponse(actions=[_entity_action(1, entityLockRequested=lock)])
    decided = remote_episode(_episode(), response, payload_bytes=1024)
    assert isinstance(decided.result.outcome, Failed)
    assert "not an entity id" in decided.result.outcome.message


def _work(*operations: Operation, state: str | None = "1") -> EpisodeWork:
    instance = Instance(
        instance_id=COUNTER.instance_id,
        name="counter",
        execution_id="e",
        status=OrchestrationStatus.RUNNING,
        created_at=T0,
        last_updated_at=T0,
        custom_status=state,
    )
    started = Message(
        instance_id=COUNTER.instance_id,
        event=HistoryEvent(type=EventType.EXECUTION_STARTED, timestamp=T0, name="counter"),
    )
    messages = [started, *(op.message(COUNTER, T0) for op in operations)]
    return EpisodeWork(instance=instance, history=[], messages=messages, lease_token=1)


def _call(name: str, request_id: str, value: str | None = None) -> Operation:
    return Operation(name, value, False, request_id, "caller", "x")


def _success(value: str) -> pb.OperationResult:
    return pb.OperationResult(success=pb.OperationResultSuccess(result=_text(value)))


def test_a_batch_is_the_inbox_operations_with_the_state() -> None:
    request = batch_request(COUNTER, _work(_call("add", "r1", "2"), _call("get", "r2")))
    assert request.instanceId == "@counter@k"
    assert request.entityState.value == "1"
    assert [(o.operation, o.requestId, o.input.value) for o in request.operations] == [
        ("add", "r1", "2"),
        ("get", "r2", ""),
    ]


def test_results_become_state_responses_and_actions() -> None:
    work = _work(
        _call("add", "r1", "2"), _call("explode", "r2"), Operation.signal_from_client("add", "1")
    )
    failed = pb.OperationResult(
        failure=pb.OperationResultFailure(
            failureDetails=pb.TaskFailureDetails(errorType="ValueError", errorMessage="boom")
        )
    )
    start = pb.StartNewOrchestrationAction(instanceId="born", name="orch", input=_text("7"))
    result = pb.EntityBatchResult(
        results=[_success("3"), failed, _success("4")],
        entityState=_text("4"),
        actions=[
            pb.OperationAction(
                id=0,
                sendSignal=pb.SendSignalAction(
                    instanceId="@other@k", name="ping", input=_text("1")
                ),
            ),
            pb.OperationAction(id=1, startNewOrchestration=start),
        ],
    )
    consumed, outcome = batch_outcome(COUNTER, work, result, T0, payload_bytes=1024)
    assert consumed.messages == work.messages
    assert outcome.instance.custom_status == "4"
    assert outcome.instance.status is OrchestrationStatus.RUNNING
    replies = {m.event.name: json.loads(m.event.input or "") for m in outcome.messages[:2]}
    assert replies == {
        "r1": {"result": "3"},
        "r2": {"result": '"boom"', "exceptionType": "ValueError"},
    }
    assert all(m.instance_id == "caller" and m.execution_id == "x" for m in outcome.messages[:2])
    [signal] = outcome.messages[2:]
    assert signal.instance_id == "@other@k"
    assert [(s.instance_id, s.name, s.input) for s in outcome.starts] == [
        ("@other@k", "other", None),
        ("born", "orch", "7"),
    ]


def test_operations_the_worker_did_not_answer_stay_in_the_inbox() -> None:
    work = _work(_call("add", "r1", "2"), _call("get", "r2"))
    result = pb.EntityBatchResult(results=[_success("3")], entityState=_text("3"))
    consumed, outcome = batch_outcome(COUNTER, work, result, T0, payload_bytes=1024)
    assert consumed.messages == work.messages[:2]  # ExecutionStarted and the first call
    assert [m.event.name for m in outcome.messages] == ["r1"]


def test_a_failed_batch_fails_every_call_and_keeps_the_state() -> None:
    work = _work(_call("add", "r1", "2"), _call("get", "r2"))
    result = pb.EntityBatchResult(
        failureDetails=pb.TaskFailureDetails(errorType="E", errorMessage="worker broke")
    )
    consumed, outcome = batch_outcome(COUNTER, work, result, T0, payload_bytes=1024)
    assert consumed.messages == work.messages
    assert outcome.instance.custom_status == "1"
    bodies = [json.loads(m.event.input or "") for m in outcome.messages]
    assert [b["exceptionType"] for b in bodies] == ["E", "E"]
    assert [json.loads(b["result"]) for b in bodies] == ["worker broke", "worker broke"]


def test_a_state_over_the_payload_limit_fails_the_calls_and_keeps_the_state() -> None:
    work = _work(_call("add", "r1", "2"))
    result = pb.EntityBatchResult(results=[_success("3")], entityState=_text("9" * 2000))
    _, outcome = batch_outcome(COUNTER, work, result, T0, payload_bytes=1024)
    assert outcome.instance.custom_status == "1"
    [reply] = outcome.messages
    assert json.loads(reply.event.input or "")["exceptionType"] == "PayloadTooLargeError"


def test_a_batch_of_no_operation_keeps_the_state() -> None:
    work = _work()
    unchanged = pb.EntityBatchResult(entityState=batch_request(COUNTER, work).entityState)
    consumed, outcome = batch_outcome(COUNTER, work, unchanged, T0, payload_bytes=1024)
    assert consumed.messages == work.messages
    assert outcome.instance.custom_status == "1" and outcome.messages == []


async def test_a_batch_with_no_operation_for_a_worker_keeps_an_entity_without_state() -> None:
    # A lock request alone reaches no worker; the entity must not get an empty state.
    work = replace(_work(state=None), messages=[])
    hub = WorkerHub(payload_bytes=1024)
    _, outcome = await hub.run_entity_batch(COUNTER, work, T0)
    assert outcome.instance.custom_status is None


async def test_work_is_given_back_early_while_no_worker_is_connected() -> None:
    """On a shared hub, another host with workers can run it meanwhile (it waited two minutes)."""
    hub = WorkerHub(payload_bytes=1024, alone_wait=0.05, retry_after=0)
    async with asyncio.timeout(5):
        with pytest.raises(RemoteAbandoned, match="no worker connected"):
            await hub.run_entity_batch(COUNTER, _work(_call("add", "r1", "1")), T0)


async def test_work_waits_for_a_connected_worker_past_the_early_give_back() -> None:
    hub = WorkerHub(payload_bytes=1024, alone_wait=0.05, retry_after=0)
    items = hub.stream(pb.GetWorkItemsRequest())
    batch = asyncio.create_task(hub.run_entity_batch(COUNTER, _work(_call("add", "r1")), T0))
    try:
        async with asyncio.timeout(5):
            item = await anext(items)
        assert item.HasField("entityRequest")
        await asyncio.sleep(0.3)  # six give-back intervals: still held for the worker
        assert not batch.done()
    finally:
        batch.cancel()
        await items.aclose()
