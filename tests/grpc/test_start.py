"""`dfhost start APP --grpc-port`: the app's functions and a durabletask worker's on one task
hub; what the app has runs in the app, the rest in the worker, and each may call the other's
activities by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from durabletask import client, task

from tests.e2e.harness import APPS, HostProcess
from tests.grpc.conftest import grpc_address
from tests.grpc.test_sdk import sdk_worker

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def mixed(ctx: task.OrchestrationContext, city: str) -> Any:
    own = yield ctx.call_activity("plus_one", input=1)  # the worker's
    apps = yield ctx.call_activity("SayHelloFn", input=city)  # the function app's
    return [own, apps]


def test_an_app_and_a_worker_share_the_hub(tmp_path: Path) -> None:
    host = HostProcess(
        APPS / "v2_basic", f"sqlite:///{tmp_path / 'hub.sqlite3'}", extra=("--grpc-port", "0")
    )
    host.start()
    try:
        address = grpc_address(host)
        c = client.TaskHubGrpcClient(host_address=address)
        w = sdk_worker(address)
        w.add_orchestrator(mixed)
        with w:
            w.start()  # type: ignore[no-untyped-call]
            from_worker = c.schedule_new_orchestration(mixed, input="Lima")
            from_app = c.schedule_new_orchestration("hello_orchestrator")
            worker_state = c.wait_for_orchestration_completion(from_worker, timeout=60)
            app_state = c.wait_for_orchestration_completion(from_app, timeout=60)
    finally:
        host.stop()
    assert worker_state is not None and app_state is not None
    assert json.loads(worker_state.serialized_output or "") == [2, "Hello Lima!"]
    assert json.loads(app_state.serialized_output or "") == ["Hello Tokyo!", "Hello Seattle!"]
