"""Durable Task SDK entities on `dfhost serve`: their batches run in the SDK's worker, clients
signal and read them, orchestrations call and signal them, and they are the same entities the
HTTP management API shows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from durabletask import client, entities, task, worker
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc

from tests.e2e.harness import APPS, HostProcess
from tests.grpc.conftest import ServeProcess, grpc_address, next_work_item
from tests.waiting import eventually_blocking

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

API = "/runtime/webhooks/durabletask"


def counter(ctx: entities.EntityContext, value: int | None) -> Any:
    current: int = ctx.get_state(int, 0)
    if ctx.operation == "add":
        ctx.set_state(current + (value or 0))
        return current + (value or 0)
    if ctx.operation == "get":
        return current
    if ctx.operation == "relay":
        # Actions of an entity: a signal to another entity, an orchestration started.
        ctx.signal_entity(entities.EntityInstanceId("counter", "relayed"), "add", value)
        return ctx.schedule_new_orchestration("uses_counter", input="started-by-entity")
    if ctx.operation == "delete":
        ctx.set_state(None)
        return None
    raise ValueError(f"no operation '{ctx.operation}'")


def uses_counter(ctx: task.OrchestrationContext, key: str) -> Any:
    target = entities.EntityInstanceId("counter", key)
    ctx.signal_entity(target, "add", 5)
    total = yield ctx.call_entity(target, "add", 1)
    try:
        yield ctx.call_entity(target, "explode")
        failure = None
    except task.TaskFailedError as exc:
        failure = str(exc)
    return [total, failure]


def entity_worker(address: str) -> worker.TaskHubGrpcWorker:
    w = worker.TaskHubGrpcWorker(host_address=address)
    w.add_entity(counter)
    w.add_orchestrator(uses_counter)
    return w


def _state(c: client.TaskHubGrpcClient, key: str) -> Any:
    found = c.get_entity(entities.EntityInstanceId("counter", key))
    return None if found is None else found.get_state(int)


def test_a_client_signals_and_reads_an_entity(served: ServeProcess) -> None:
    c = client.TaskHubGrpcClient(host_address=served.address)
    counter_id = entities.EntityInstanceId("counter", "c1")
    assert c.get_entity(counter_id) is None
    c.signal_entity(counter_id, "add", 3)  # waits in the inbox until a worker comes
    with entity_worker(served.address) as w:
        w.start()  # type: ignore[no-untyped-call]
        c.signal_entity(counter_id, "add", 4)
        eventually_blocking(lambda: _state(c, "c1") == 7, timeout=30)

        # The operation's actions: a signal to another entity, an orchestration started.
        c.signal_entity(counter_id, "relay", 10)
        eventually_blocking(lambda: _state(c, "relayed") == 10, timeout=30)
        started = [
            s
            for s in c.get_all_orchestration_states(client.OrchestrationQuery())
            if s.name == "uses_counter"
        ]
        assert len(started) == 1
        done = c.wait_for_orchestration_completion(started[0].instance_id, timeout=30)
        assert done is not None, "the orchestration the entity started did not finish"

    found = c.get_entity(counter_id)
    assert found is not None and found.get_state(int) == 7
    listed = c.get_all_entities(client.EntityQuery(instance_id_starts_with="@counter@"))
    assert {str(e.id) for e in listed} == {
        "@counter@c1",
        "@counter@relayed",
        "@counter@started-by-entity",
    }
    without_state = c.get_entity(counter_id, include_state=False)
    assert without_state is not None and without_state.includes_state is False

    # The same entities through the HTTP management API.
    shown = httpx.get(f"{served.origin}{API}/entities/counter/c1")
    assert shown.status_code == 200 and shown.json() == 7
    listing = httpx.get(f"{served.origin}{API}/entities/counter?fetchState=true").json()
    assert {(e["entityId"]["key"], e["state"]) for e in listing} >= {("c1", 7), ("relayed", 10)}


def test_an_orchestration_calls_and_signals_an_entity(served: ServeProcess) -> None:
    c = client.TaskHubGrpcClient(host_address=served.address)
    with entity_worker(served.address) as w:
        w.start()  # type: ignore[no-untyped-call]
        instance_id = c.schedule_new_orchestration(uses_counter, input="c2")
        state = c.wait_for_orchestration_completion(instance_id, timeout=60)
        assert state is not None
        assert state.runtime_status == client.OrchestrationStatus.COMPLETED, state.failure_details
        total, failure = json.loads(state.serialized_output or "")
        # The signal was sent first, so the call sees its addition.
        assert total == 6
        assert "no operation 'explode'" in failure
        assert _state(c, "c2") == 6

        # The worker's deleting the state deletes the entity.
        c.signal_entity(entities.EntityInstanceId("counter", "c2"), "delete")
        eventually_blocking(lambda: _state(c, "c2") is None, timeout=30)
    history = httpx.get(f"{served.origin}{API}/instances/{instance_id}?showHistory=true").json()
    sent = [e for e in history["historyEvents"] if e["EventType"] == "EventSent"]
    assert [e["InstanceId"] for e in sent] == ["@counter@c2"] * 3


def test_a_disconnected_workers_entity_batch_goes_to_the_next(
    served: ServeProcess, stub: pb_grpc.TaskHubSidecarServiceStub
) -> None:
    c = client.TaskHubGrpcClient(host_address=served.address)
    counter_id = entities.EntityInstanceId("counter", "c3")
    c.signal_entity(counter_id, "add", 2)
    stream = stub.GetWorkItems(pb.GetWorkItemsRequest(), timeout=60)
    item = next_work_item(stream)
    assert item.entityRequest.instanceId == "@counter@c3"
    assert [op.operation for op in item.entityRequest.operations] == ["add"]
    stream.cancel()  # gone without answering

    with entity_worker(served.address) as w:
        w.start()  # type: ignore[no-untyped-call]
        eventually_blocking(lambda: _state(c, "c3") == 2, timeout=30)
    # The first worker's late answer is refused and changes nothing.
    late = pb.EntityBatchResult(completionToken=item.completionToken)
    late.entityState.value = "99"
    with pytest.raises(grpc.RpcError) as refused:
        stub.CompleteEntityTask(late)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert _state(c, "c3") == 2


def test_an_abandoned_entity_batch_comes_back(
    served: ServeProcess, stub: pb_grpc.TaskHubSidecarServiceStub
) -> None:
    c = client.TaskHubGrpcClient(host_address=served.address)
    c.signal_entity(entities.EntityInstanceId("counter", "c4"), "add", 1)
    stream = stub.GetWorkItems(pb.GetWorkItemsRequest(), timeout=60)
    first = next_work_item(stream)
    stub.AbandonTaskEntityWorkItem(
        pb.AbandonEntityTaskRequest(completionToken=first.completionToken)
    )
    again = next_work_item(stream)
    assert again.entityRequest.instanceId == "@counter@c4"
    assert again.completionToken != first.completionToken
    stream.cancel()


def calls_the_apps_counter(ctx: task.OrchestrationContext, key: str) -> Any:
    target = entities.EntityInstanceId("Counter", key)
    ctx.signal_entity(target, "add", 3)
    value = yield ctx.call_entity(target, "get")
    try:
        yield ctx.call_entity(target, "fail")
        failure = None
    except task.TaskFailedError as exc:
        failure = str(exc)
    return [value, failure]


def test_a_workers_orchestration_calls_a_function_apps_entity(tmp_path: Path) -> None:
    host = HostProcess(
        APPS / "entities_v2", f"sqlite:///{tmp_path / 'hub.sqlite3'}", extra=("--grpc-port", "0")
    )
    host.start()
    try:
        address = grpc_address(host)
        c = client.TaskHubGrpcClient(host_address=address)
        w = worker.TaskHubGrpcWorker(host_address=address)
        w.add_orchestrator(calls_the_apps_counter)
        with w:
            w.start()  # type: ignore[no-untyped-call]
            instance_id = c.schedule_new_orchestration(calls_the_apps_counter, input="m")
            state = c.wait_for_orchestration_completion(instance_id, timeout=60)
        # The app's entity, read by a Durable Task client.
        found = c.get_entity(entities.EntityInstanceId("Counter", "m"))
    finally:
        host.stop()
    assert state is not None
    assert state.runtime_status == client.OrchestrationStatus.COMPLETED, state.failure_details
    value, failure = json.loads(state.serialized_output or "")
    assert value == 3
    assert "nope" in failure
    assert found is not None and found.get_state(int) == 3
