"""Durable Task SDK apps on `dfhost serve`: the SDK's worker and client over gRPC, the
instances the same as any other through the HTTP management API and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import timedelta
from typing import Any

import grpc
import httpx
import pytest
from durabletask import client, task, worker

from tests.grpc.conftest import ServeProcess
from tests.waiting import eventually_blocking

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

API = "/runtime/webhooks/durabletask"


def plus_one(ctx: task.ActivityContext, value: int) -> int:
    return value + 1


def fails(ctx: task.ActivityContext, value: int) -> int:
    raise ValueError(f"no luck with {value}")


def child(ctx: task.OrchestrationContext, value: int) -> Any:
    result = yield ctx.call_activity(plus_one, input=value)
    return result


def patterns(ctx: task.OrchestrationContext, start: int) -> Any:
    first = yield ctx.call_activity(plus_one, input=start)
    fanned = yield task.when_all([ctx.call_activity(plus_one, input=i) for i in range(4)])
    sub = yield ctx.call_sub_orchestrator(child, input=first)
    ctx.set_custom_status("waiting")
    approval = ctx.wait_for_external_event("approve")
    timeout = ctx.create_timer(timedelta(seconds=30))
    winner = yield task.when_any([approval, timeout])
    approved = approval.get_result() if winner == approval else "timed out"
    try:
        yield ctx.call_activity(fails, input=7)
        caught = None
    except task.TaskFailedError as exc:
        caught = exc.details.message
    return [first, fanned, sub, approved, caught]


def counter(ctx: task.OrchestrationContext, n: int) -> Any:
    if n < 3:
        ctx.continue_as_new(n + 1)
        return None
    return n


def waits(ctx: task.OrchestrationContext, _: Any) -> Any:
    value = yield ctx.wait_for_external_event("go")
    return value


def family(ctx: task.OrchestrationContext, depth: int) -> Any:
    """`depth` generations of sub-orchestrations (ID-c, ID-c-c, ...); the last waits for "go"."""
    if depth == 0:
        return (yield ctx.wait_for_external_event("go"))
    child_id = f"{ctx.instance_id}-c"
    return (yield ctx.call_sub_orchestrator(family, input=depth - 1, instance_id=child_id))


def failing(ctx: task.OrchestrationContext, _: Any) -> Any:
    yield ctx.call_activity(fails, input=1)


_failed_once: set[str] = set()


def fails_once(ctx: task.ActivityContext, value: str) -> str:
    if value not in _failed_once:
        _failed_once.add(value)
        raise RuntimeError(f"first try of {value}")
    return f"{value} done"


def rewindable(ctx: task.OrchestrationContext, value: str) -> Any:
    result = yield ctx.call_activity(fails_once, input=value)
    return result


def sdk_worker(
    address: str, metadata: list[tuple[str, str]] | None = None
) -> worker.TaskHubGrpcWorker:
    w = worker.TaskHubGrpcWorker(host_address=address, metadata=metadata)
    for orchestrator in (patterns, child, counter, waits, family, failing, rewindable):
        w.add_orchestrator(orchestrator)
    for activity in (plus_one, fails, fails_once):
        w.add_activity(activity)
    return w


def test_patterns_run_and_show_over_http_and_cli(served: ServeProcess, hub_url: str) -> None:
    with sdk_worker(served.address) as w:
        w.start()  # type: ignore[no-untyped-call]
        c = client.TaskHubGrpcClient(host_address=served.address)
        instance_id = c.schedule_new_orchestration(patterns, input=1)
        started = c.wait_for_orchestration_start(instance_id, timeout=30)
        assert started is not None
        c.raise_orchestration_event(instance_id, "approve", data="yes")
        state = c.wait_for_orchestration_completion(instance_id, timeout=60)
        assert state is not None
        assert state.runtime_status == client.OrchestrationStatus.COMPLETED
        assert json.loads(state.serialized_output or "") == [
            2,
            [1, 2, 3, 4],
            3,
            "yes",
            "no luck with 7",
        ]
        assert state.serialized_custom_status == '"waiting"'

        continued = c.schedule_new_orchestration(counter, input=0)
        done = c.wait_for_orchestration_completion(continued, timeout=30)
        assert done is not None and done.serialized_output == "3"

    # The same instance over HTTP: the management API and the history it keeps.
    shown = httpx.get(f"{served.origin}{API}/instances/{instance_id}?showHistory=true").json()
    assert shown["runtimeStatus"] == "Completed"
    assert shown["name"] == "patterns"
    assert shown["output"] == [2, [1, 2, 3, 4], 3, "yes", "no luck with 7"]
    kinds = [e["EventType"] for e in shown["historyEvents"]]
    assert kinds.count("TaskCompleted") == 5
    assert "TaskFailed" in kinds
    assert "SubOrchestrationInstanceCompleted" in kinds
    assert "EventRaised" in kinds

    # And from another process, straight from the task hub.
    listing = subprocess.run(
        [
            sys.executable,
            "-m",
            "dfhost",
            "instances",
            "show",
            instance_id,
            "--store",
            hub_url,
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(listing.stdout)["runtimeStatus"] == "Completed"
    status = subprocess.run(
        [sys.executable, "-m", "dfhost", "status", "--store", hub_url, "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "patterns" in status.stdout


def test_http_started_instance_runs_in_a_worker(served: ServeProcess) -> None:
    reply = httpx.post(f"{served.origin}{API}/orchestrators/waits/from-http", json=None)
    assert reply.status_code == 202, reply.text
    with sdk_worker(served.address) as w:
        w.start()  # type: ignore[no-untyped-call]
        c = client.TaskHubGrpcClient(host_address=served.address)
        assert c.wait_for_orchestration_start("from-http", timeout=30) is not None
        raised = httpx.post(f"{served.origin}{API}/instances/from-http/raiseEvent/go", json=5)
        assert raised.status_code == 202, raised.text
        state = c.wait_for_orchestration_completion("from-http", timeout=30)
    assert state is not None and state.serialized_output == "5"


def test_failures_reach_the_client_as_the_worker_sent_them(served: ServeProcess) -> None:
    with sdk_worker(served.address) as w:
        w.start()  # type: ignore[no-untyped-call]
        c = client.TaskHubGrpcClient(host_address=served.address)
        instance_id = c.schedule_new_orchestration(failing)
        state = c.wait_for_orchestration_completion(instance_id, timeout=30)
    assert state is not None
    assert state.runtime_status == client.OrchestrationStatus.FAILED
    assert state.failure_details is not None
    assert state.failure_details.error_type == "durabletask.task.TaskFailedError"
    assert "no luck with 1" in state.failure_details.message


def test_client_operations(served: ServeProcess) -> None:
    c = client.TaskHubGrpcClient(host_address=served.address)
    with sdk_worker(served.address) as w:
        w.start()  # type: ignore[no-untyped-call]
        first = c.schedule_new_orchestration(waits, instance_id="ops-1")
        c.wait_for_orchestration_start(first, timeout=30)
        with pytest.raises(grpc.RpcError) as taken:
            c.schedule_new_orchestration(waits, instance_id="ops-1")
        assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS

        c.suspend_orchestration(first)
        suspended = _status_becomes(c, first, client.OrchestrationStatus.SUSPENDED)
        assert suspended.runtime_status == client.OrchestrationStatus.SUSPENDED
        c.raise_orchestration_event(first, "go", data=1)  # kept until it resumes
        c.resume_orchestration(first)
        done = c.wait_for_orchestration_completion(first, timeout=30)
        assert done is not None and done.serialized_output == "1"

        second = c.schedule_new_orchestration(waits, instance_id="ops-2")
        c.wait_for_orchestration_start(second, timeout=30)
        c.terminate_orchestration(second, output="enough")
        ended = c.wait_for_orchestration_completion(second, timeout=30)
        assert ended is not None
        assert ended.runtime_status == client.OrchestrationStatus.TERMINATED
        assert ended.serialized_output == '"enough"'

        restarted = c.restart_orchestration(second, restart_with_new_instance_id=True)
        assert restarted != second
        c.raise_orchestration_event(restarted, "go", data=2)
        again = c.wait_for_orchestration_completion(restarted, timeout=30)
        assert again is not None and again.serialized_output == "2"

    found = c.get_all_orchestration_states()
    assert {s.instance_id for s in found} >= {first, second, restarted}
    assert c.purge_orchestration(first).deleted_instance_count == 1
    assert c.get_orchestration_state(first) is None
    with pytest.raises(grpc.RpcError) as missing:
        c.raise_orchestration_event("no-such-instance", "go")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_finished_instance_ids_come_in_full_pages_filtered_by_completion_time(
    served: ServeProcess,
) -> None:
    c = client.TaskHubGrpcClient(host_address=served.address)
    ids = [f"list-{i}" for i in range(6)]
    finished: dict[str, Any] = {}
    with sdk_worker(served.address) as w:
        w.start()  # type: ignore[no-untyped-call]
        for instance_id in ids:
            c.schedule_new_orchestration(waits, instance_id=instance_id)
        for instance_id in ids:  # one at a time, oldest first: each finishes after the last
            c.wait_for_orchestration_start(instance_id, timeout=30)
            c.raise_orchestration_event(instance_id, "go", data=1)
            state = c.wait_for_orchestration_completion(instance_id, timeout=30)
            assert state is not None
            finished[instance_id] = state.last_updated_at

    def listed(**filters: Any) -> list[str]:
        """Every page's ids, checking that only the last page is short."""
        pages, token = [], None
        while True:
            page = c.list_instance_ids(page_size=2, continuation_token=token, **filters)
            pages.append(list(page.items))
            token = page.continuation_token
            if token is None:
                assert all(len(full) == 2 for full in pages[:-1]), pages
                return [i for ids in pages for i in ids]

    # The newest-created instances finished last: filtered out, they must not leave pages
    # short (the first pages came back empty, then half full).
    assert listed(completed_time_to=finished["list-2"]) == ["list-2", "list-1", "list-0"]
    assert listed(completed_time_from=finished["list-4"]) == ["list-5", "list-4"]
    assert listed() == ids[::-1]


def test_terminate_and_purge_reach_sub_orchestrations_unless_told_not_to(
    served: ServeProcess,
) -> None:
    c = client.TaskHubGrpcClient(host_address=served.address)
    with sdk_worker(served.address) as w:
        w.start()  # type: ignore[no-untyped-call]
        for root in ("deep", "shallow"):
            c.schedule_new_orchestration(family, input=2, instance_id=root)
            _status_becomes(c, f"{root}-c-c", client.OrchestrationStatus.RUNNING)
        c.terminate_orchestration("deep", output="stop")  # recursive, the SDK's default
        for instance_id in ("deep", "deep-c", "deep-c-c"):
            ended = _status_becomes(c, instance_id, client.OrchestrationStatus.TERMINATED)
            assert ended.serialized_output == '"stop"'
        c.terminate_orchestration("shallow", recursive=False)
        _status_becomes(c, "shallow", client.OrchestrationStatus.TERMINATED)
        still = c.get_orchestration_state("shallow-c-c")
        assert still is not None and still.runtime_status == client.OrchestrationStatus.RUNNING

        assert c.purge_orchestration("deep").deleted_instance_count == 3
        assert [c.get_orchestration_state(i) for i in ("deep", "deep-c", "deep-c-c")] == [None] * 3
        with pytest.raises(grpc.RpcError) as running:  # its children still run
            c.purge_orchestration("shallow")
        assert running.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert c.purge_orchestration("shallow", recursive=False).deleted_instance_count == 1


def _status_becomes(
    c: client.TaskHubGrpcClient, instance_id: str, status: client.OrchestrationStatus
) -> client.OrchestrationState:
    state = eventually_blocking(
        lambda: c.get_orchestration_state(instance_id),
        lambda s: s is not None and s.runtime_status == status,
        timeout=30,
    )
    assert state is not None
    return state


def test_a_failed_instance_is_rewound(served: ServeProcess) -> None:
    c = client.TaskHubGrpcClient(host_address=served.address)
    with sdk_worker(served.address) as w:
        w.start()  # type: ignore[no-untyped-call]
        job = f"job-{uuid.uuid4().hex}"  # fails once per test process
        instance_id = c.schedule_new_orchestration(rewindable, input=job)
        failed = c.wait_for_orchestration_completion(instance_id, timeout=30)
        assert failed is not None
        assert failed.runtime_status == client.OrchestrationStatus.FAILED
        c.rewind_orchestration(instance_id, reason="try again")
        state = eventually_blocking(
            lambda: c.get_orchestration_state(instance_id),
            lambda s: s is not None and s.runtime_status == client.OrchestrationStatus.COMPLETED,
            timeout=30,
        )
    assert state is not None and state.serialized_output == json.dumps(f"{job} done")
