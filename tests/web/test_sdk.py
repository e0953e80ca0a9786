"""Compatibility proof: the real SDK's `DurableOrchestrationClient` (aiohttp, against a live
uvicorn server on loopback) driving the management API, with the engine running the app."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeAlias

import azure.durable_functions as df
import azure.functions as func
import httpx
import pytest
from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from dfhost import __version__
from dfhost.app.functions import FunctionApp
from dfhost.client import DurableClient
from dfhost.runtime.engine import Engine
from dfhost.store import Store
from dfhost.web import build_app
from dfhost.wire import client_binding
from tests.waiting import eventually

from .conftest import BASE, live_server

Runtime: TypeAlias = OrchestrationRuntimeStatus

# The engine replays orchestrators in its own threads, where pytest's per-test `error` filter
# would turn the SDK's one-time "df_loads was called without expected_type" advice into a
# failed orchestration. Only that warning is ignored.
pytestmark = pytest.mark.filterwarnings(
    "ignore:azure.functions df_loads was called without expected_type:DeprecationWarning"
)


@dataclass
class Live:
    sdk: df.DurableOrchestrationClient
    client: DurableClient
    store: Store
    origin: str


@pytest.fixture
async def live(store: Store, v1_app: FunctionApp) -> AsyncIterator[Live]:
    client = DurableClient(store, v1_app)
    web_app = build_app(client, v1_app, rpc_base_url="http://placeholder/")
    engine = Engine(v1_app, store)
    await engine.start()
    try:
        async with live_server(web_app) as origin:
            starter = client_binding(
                origin=origin, hub_name="WebHub", rpc_base_url=f"{origin}{BASE}/"
            )
            sdk = df.DurableOrchestrationClient(json.dumps(starter))
            yield Live(sdk, client, store, origin)
    finally:
        await engine.stop()


async def wait_for(live: Live, instance_id: str, *statuses: Runtime) -> DurableOrchestrationStatus:
    return await eventually(
        lambda: live.sdk.get_status(instance_id), lambda s: s.runtime_status in statuses
    )


async def test_start_new_and_get_status(live: Live) -> None:
    instance_id = await live.sdk.start_new("Echo", None, {"a": 1})
    assert isinstance(instance_id, str) and len(instance_id) == 32
    status = await wait_for(live, instance_id, Runtime.Completed)
    # The orchestrator's get_input() saw the dict the caller passed, and returned it.
    assert status.output == {"a": 1}
    assert status.name == "Echo"
    assert status.instance_id == instance_id
    assert status.input_ == {"a": 1}
    assert status.created_time is not None and status.created_time.tzinfo is not None
    assert status.history is None  # the SDK only maps `history=`, never `historyEvents`

    detailed = await live.sdk.get_status(
        instance_id, show_history=True, show_history_output=True, show_input=True
    )
    events = detailed.historyEvents
    assert [e["EventType"] for e in events] == ["ExecutionStarted", "ExecutionCompleted"]
    assert events[-1]["Result"] == {"a": 1}


async def test_start_new_with_an_id_a_version_and_a_plain_string(live: Live) -> None:
    instance_id = await live.sdk.start_new("Echo", "fixed-id", "Tokyo", version="2.0 beta")
    assert instance_id == "fixed-id"
    status = await wait_for(live, "fixed-id", Runtime.Completed)
    assert status.output == "Tokyo"
    instance = await live.client.get_status("fixed-id")
    assert instance is not None and instance.version == "2.0 beta"


async def test_start_new_errors(live: Live) -> None:
    with pytest.raises(Exception, match="The function 'Nope' doesn't exist, is disabled"):
        await live.sdk.start_new("Nope")

    await live.sdk.start_new("WaitEvent", "singleton")
    with pytest.raises(Exception, match="already exists") as caught:
        await live.sdk.start_new("WaitEvent", "singleton")
    # Not 400, so the SDK raises Exception(<the JSON body>): the dict's text names the id.
    assert isinstance(caught.value.args[0], dict)
    assert "'singleton'" in caught.value.args[0]["ExceptionMessage"]


async def test_get_status_of_an_unknown_instance_is_falsy(live: Live) -> None:
    status = await live.sdk.get_status("nope")
    assert not status
    assert status.runtime_status is None


async def test_get_status_all_and_by(live: Live) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    done = await live.sdk.start_new("Echo", "listed-done", 1)
    waiting = await live.sdk.start_new("WaitEvent", "listed-waiting")
    await wait_for(live, done, Runtime.Completed)
    await wait_for(live, waiting, Runtime.Running)

    everything = await live.sdk.get_status_all()
    assert {s.instance_id for s in everything} == {done, waiting}

    completed = await live.sdk.get_status_by(
        created_time_from=before,
        created_time_to=datetime.now(UTC) + timedelta(seconds=5),
        runtime_status=[Runtime.Completed],
    )
    assert [s.instance_id for s in completed] == [done]
    prefixed = await live.sdk.get_status_by(instance_id_prefix="listed-w")
    assert [s.instance_id for s in prefixed] == [waiting]
    running = await live.sdk.get_status_by(runtime_status=[Runtime.Running, Runtime.Pending])
    assert [s.runtime_status for s in running] == [Runtime.Running]


async def test_raise_event_is_double_encoded_as_on_azure(live: Live) -> None:
    instance_id = await live.sdk.start_new("WaitEvent")
    await wait_for(live, instance_id, Runtime.Running)
    await live.sdk.raise_event(instance_id, "Go", {"a": 1})
    status = await wait_for(live, instance_id, Runtime.Completed)
    # The extension stores the SDK's double-encoded body as the event data, so the
    # orchestrator receives the JSON text as a str (azure-functions-durable-python#295).
    assert status.output == {"got": '{"a": 1}', "type": "str"}

    with pytest.raises(Exception, match=f"Instance with ID {instance_id} is gone"):
        await live.sdk.raise_event(instance_id, "Go", 1)
    with pytest.raises(Exception, match=r"No instance with ID nope found\."):
        await live.sdk.raise_event("nope", "Go", 1)


async def test_terminate(live: Live) -> None:
    instance_id = await live.sdk.start_new("WaitEvent")
    await wait_for(live, instance_id, Runtime.Running)
    await live.sdk.terminate(instance_id, "enough / done")
    status = await wait_for(live, instance_id, Runtime.Terminated)
    assert status.output == "enough / done"
    await live.sdk.terminate(instance_id, "again")  # 410: the SDK treats it as success
    with pytest.raises(Exception, match=r"No instance with ID 'nope' found\."):
        await live.sdk.terminate("nope", "why")


async def test_suspend_and_resume(live: Live) -> None:
    instance_id = await live.sdk.start_new("WaitEvent")
    await wait_for(live, instance_id, Runtime.Running)
    await live.sdk.suspend(instance_id, "pause")
    await wait_for(live, instance_id, Runtime.Suspended)
    await live.sdk.resume(instance_id, "go on")
    await wait_for(live, instance_id, Runtime.Running)
    with pytest.raises(Exception, match=r"No instance with ID 'nope' found\."):
        await live.sdk.suspend("nope", "x")
    with pytest.raises(Exception, match=r"No instance with ID 'nope' found\."):
        await live.sdk.resume("nope", "x")


async def test_purge_instance_history_and_by(live: Live) -> None:
    since = datetime.now(UTC) - timedelta(minutes=1)
    first = await live.sdk.start_new("Echo", None, 1)
    second = await live.sdk.start_new("Echo", None, 2)
    await wait_for(live, first, Runtime.Completed)
    await wait_for(live, second, Runtime.Completed)

    purged = await live.sdk.purge_instance_history(first)
    assert purged.instances_deleted == 1
    assert (await live.sdk.purge_instance_history(first)).instances_deleted == 0

    many = await live.sdk.purge_instance_history_by(
        created_time_from=since, runtime_status=[Runtime.Completed]
    )
    assert many.instances_deleted == 1
    none_left = await live.sdk.purge_instance_history_by(created_time_from=since)
    assert none_left.instances_deleted == 0


async def test_an_entity_that_was_never_signalled_does_not_exist(live: Live) -> None:
    # Rewind and restart: tests/ops/test_sdk_ops.py. Entities: tests/entities.
    state = await live.sdk.read_entity_state(df.EntityId("Counter", "k"))
    assert (state.entity_exists, state.entity_state) == (False, None)


async def test_wait_for_completion_or_create_check_status_response(live: Live) -> None:
    request = func.HttpRequest("POST", f"{live.origin}/api/x", body=b"")
    instance_id = await live.sdk.start_new("Echo", None, {"b": 2})
    response = await live.sdk.wait_for_completion_or_create_check_status_response(
        request, instance_id, timeout_in_milliseconds=10_000, retry_interval_in_milliseconds=50
    )
    assert response.status_code == 200
    assert json.loads(response.get_body()) == {"b": 2}


async def test_host_status_is_running_once_served(live: Live) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{live.origin}/admin/host/status")
    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "Running"
    assert body["version"] == __version__


async def test_raise_event_without_data_arrives_as_the_text_null(live: Live) -> None:
    instance_id = await live.sdk.start_new("WaitEvent")
    await wait_for(live, instance_id, Runtime.Running)
    await live.sdk.raise_event(instance_id, "Go")  # the SDK posts json.dumps(None), encoded again
    status = await wait_for(live, instance_id, Runtime.Completed)
    assert status.output == {"got": "null", "type": "str"}
