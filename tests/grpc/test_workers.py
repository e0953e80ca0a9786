"""Work items over the raw protocol: a worker that disconnects or gives work back does not
lose it; answers with a stale token are refused."""

from __future__ import annotations

import grpc
import pytest
from durabletask import client
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from google.protobuf import wrappers_pb2

from tests.grpc.conftest import ServeProcess, next_work_item
from tests.grpc.test_sdk import sdk_worker

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_disconnected_workers_orchestrator_work_item_goes_to_the_next(
    served: ServeProcess, stub: pb_grpc.TaskHubSidecarServiceStub
) -> None:
    c = client.TaskHubGrpcClient(host_address=served.address)
    instance_id = c.schedule_new_orchestration("child", input=1)
    stream = stub.GetWorkItems(pb.GetWorkItemsRequest(), timeout=60)
    item = next_work_item(stream)
    assert item.orchestratorRequest.instanceId == instance_id
    # The orchestrator decides to run an activity; the activity's work item then goes to
    # this same worker, which disconnects without answering it.
    schedule = pb.OrchestratorAction(
        id=1,
        scheduleTask=pb.ScheduleTaskAction(
            name="plus_one", input=wrappers_pb2.StringValue(value="1")
        ),
    )
    stub.CompleteOrchestratorTask(
        pb.OrchestratorResponse(
            instanceId=instance_id, actions=[schedule], completionToken=item.completionToken
        )
    )
    activity = next_work_item(stream)
    assert activity.activityRequest.name == "plus_one"
    assert activity.activityRequest.orchestrationInstance.instanceId == instance_id
    stream.cancel()

    with sdk_worker(served.address) as w:
        w.start()  # type: ignore[no-untyped-call]
        state = c.wait_for_orchestration_completion(instance_id, timeout=60)
    assert state is not None
    assert state.runtime_status == client.OrchestrationStatus.COMPLETED
    assert state.serialized_output == "2"
    # Its answer after the hand-over is refused, and changes nothing.
    late = pb.ActivityResponse(
        instanceId=instance_id,
        taskId=1,
        result=wrappers_pb2.StringValue(value="99"),
        completionToken=activity.completionToken,
    )
    with pytest.raises(grpc.RpcError) as refused:
        stub.CompleteActivityTask(late)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


def test_an_abandoned_work_item_comes_back(
    served: ServeProcess, stub: pb_grpc.TaskHubSidecarServiceStub
) -> None:
    c = client.TaskHubGrpcClient(host_address=served.address)
    instance_id = c.schedule_new_orchestration("child", input=1)
    stream = stub.GetWorkItems(pb.GetWorkItemsRequest(), timeout=60)
    first = next_work_item(stream)
    stub.AbandonTaskOrchestratorWorkItem(
        pb.AbandonOrchestrationTaskRequest(completionToken=first.completionToken)
    )
    again = next_work_item(stream)
    assert again.orchestratorRequest.instanceId == instance_id
    assert again.completionToken != first.completionToken
    stream.cancel()
    unfinished = c.get_orchestration_state(instance_id)
    assert unfinished is not None
    assert unfinished.runtime_status == client.OrchestrationStatus.PENDING


def test_work_items_follow_the_workers_filters(
    served: ServeProcess, stub: pb_grpc.TaskHubSidecarServiceStub
) -> None:
    c = client.TaskHubGrpcClient(host_address=served.address)
    only_other = pb.GetWorkItemsRequest(
        workItemFilters=pb.WorkItemFilters(orchestrations=[pb.OrchestrationFilter(name="other")])
    )
    picky = stub.GetWorkItems(only_other, timeout=60)
    taker = stub.GetWorkItems(pb.GetWorkItemsRequest(), timeout=60)
    instance_id = c.schedule_new_orchestration("child", input=1)
    item = next_work_item(taker)
    assert item.orchestratorRequest.instanceId == instance_id
    picky.cancel()
    taker.cancel()
