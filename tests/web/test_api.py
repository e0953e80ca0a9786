"""The management API at /runtime/webhooks/durabletask, in process (no engine): routes, status
codes, bodies and headers as the extension answers them."""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from azure.durable_functions import DurableOrchestrationContext

from dfhost.app.functions import FunctionApp
from dfhost.client import DurableClient
from dfhost.history import EventType, HistoryEvent, OrchestrationStatus
from dfhost.store import InstanceQuery, Store
from dfhost.web import build_app
from dfhost.wire import orchestration_context
from tests.waiting import eventually

from .conftest import BASE, asgi, finish, pending

Status = OrchestrationStatus


def get_input(input_text: str | None) -> object:
    """What the orchestrator's `context.get_input()` returns for a stored input."""
    ctx = orchestration_context(
        instance_id="i",
        past=[],
        new=[
            HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=datetime.now(UTC)),
            HistoryEvent(
                type=EventType.EXECUTION_STARTED, timestamp=datetime.now(UTC), name="Echo"
            ),
        ],
        input_text=input_text,
        parent_instance_id=None,
    )
    with warnings.catch_warnings():
        # The SDK's one-time advice to pass expected_type; irrelevant to this check.
        warnings.filterwarnings(
            "ignore", "azure.functions df_loads was called without", DeprecationWarning
        )
        return DurableOrchestrationContext.from_json(json.dumps(ctx)).get_input()


async def start(http: httpx.AsyncClient, path: str = "Echo", **kwargs: object) -> str:
    response = await http.post(f"{BASE}/orchestrators/{path}", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 202, response.text
    instance_id: str = response.json()["id"]
    return instance_id


# --- start -----------------------------------------------------------------------------------


async def test_start_answers_202_with_the_check_status_payload(http: httpx.AsyncClient) -> None:
    response = await http.post(f"{BASE}/orchestrators/Echo/my-id")
    assert response.status_code == 202
    body = response.json()
    instance = f"http://testhost{BASE}/instances/my-id"
    hub = "taskHub=WebHub&connection=Storage"
    assert body == {
        "id": "my-id",
        "statusQueryGetUri": f"{instance}?{hub}",
        "sendEventPostUri": f"{instance}/raiseEvent/{{eventName}}?{hub}",
        "terminatePostUri": f"{instance}/terminate?reason={{text}}&{hub}",
        "purgeHistoryDeleteUri": f"{instance}?{hub}",
        "restartPostUri": f"{instance}/restart?{hub}",
        "suspendPostUri": f"{instance}/suspend?reason={{text}}&{hub}",
        "resumePostUri": f"{instance}/resume?reason={{text}}&{hub}",
    }
    assert response.headers["location"] == body["statusQueryGetUri"]
    assert response.headers["retry-after"] == "10"
    assert response.headers["content-type"] == "application/json"


async def test_management_urls_use_the_origin_of_the_request(http: httpx.AsyncClient) -> None:
    response = await http.post(f"{BASE}/orchestrators/Echo", headers={"Host": "example.org:8443"})
    assert response.json()["statusQueryGetUri"].startswith(
        f"http://example.org:8443{BASE}/instances/"
    )


async def test_generated_ids_are_uuid_hex(http: httpx.AsyncClient) -> None:
    instance_id = await start(http)
    assert len(instance_id) == 32
    int(instance_id, 16)


@pytest.mark.parametrize(
    ("body", "stored", "value"),
    [
        # What the Python SDK sends: df_dumps text inside a JSON string (double-encoded).
        (json.dumps(json.dumps({"a": 1})), '{"a": 1}', {"a": 1}),
        (json.dumps(json.dumps("Tokyo")), '"Tokyo"', "Tokyo"),
        (json.dumps(json.dumps(None)), "null", None),
        # What curl sends: a plain JSON value.
        ('{"a": 1}', '{"a": 1}', {"a": 1}),
        ("[1, 2]", "[1, 2]", [1, 2]),
        ("42", "42", 42),
        ('"hello"', '"hello"', "hello"),
        ("null", None, None),
        ("", None, None),
        ("  \n", None, None),
    ],
)
async def test_start_input_reaches_get_input_as_sent(
    http: httpx.AsyncClient, client: DurableClient, body: str, stored: str | None, value: object
) -> None:
    instance_id = await start(http, content=body.encode())
    instance = await client.get_status(instance_id)
    assert instance is not None
    assert instance.input == stored
    assert get_input(instance.input) == value


async def test_start_with_version_and_default_version(store: Store, v1_app: FunctionApp) -> None:
    client = DurableClient(store, v1_app, default_version="1.0")
    async with asgi(build_app(client, v1_app, rpc_base_url="http://x/")) as http:
        versioned = await start(http, "Echo?version=2.0%20beta")
        default = await start(http)
    assert (await client.get_status(versioned)).version == "2.0 beta"  # type: ignore[union-attr]
    assert (await client.get_status(default)).version == "1.0"  # type: ignore[union-attr]


@pytest.mark.parametrize("body", [b"{not json", b'{"a": 1} trailing', b"\xff\xfe\x00"])
async def test_start_with_a_bad_body_is_400(http: httpx.AsyncClient, body: bytes) -> None:
    response = await http.post(f"{BASE}/orchestrators/Echo", content=body)
    assert response.status_code == 400
    assert response.json()["Message"]


async def test_start_of_an_unknown_orchestrator_is_400(http: httpx.AsyncClient) -> None:
    for name in ("Nope", "Greet"):  # Greet exists, but is not an orchestrator
        response = await http.post(f"{BASE}/orchestrators/{name}")
        assert response.status_code == 400
        body = response.json()
        assert body["Message"] == "One or more of the arguments submitted is incorrect"
        assert body["ExceptionMessage"].startswith(
            f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator "
            "function. Additional info: "
        )
        assert "Echo, WaitEvent" in body["ExceptionMessage"]


@pytest.mark.parametrize("instance_id", ["a%23b", "a%3Fb", "a%5Cb", "x" * 300])
async def test_start_with_an_invalid_instance_id_is_400(
    http: httpx.AsyncClient, instance_id: str
) -> None:
    response = await http.post(f"{BASE}/orchestrators/Echo/{instance_id}")
    assert response.status_code == 400
    assert "Instance ID" in response.json()["ExceptionMessage"]


async def test_start_of_a_running_singleton_is_409_and_a_finished_one_is_replaced(
    http: httpx.AsyncClient, store: Store, client: DurableClient
) -> None:
    await start(http, "Echo/single")
    response = await http.post(f"{BASE}/orchestrators/Echo/single")
    assert response.status_code == 409
    message = response.json()["ExceptionMessage"]
    assert "'single'" in message
    assert "already exists" in message
    assert "Pending" in message

    await finish(store, "single")
    assert await start(http, "Echo/single", content=b'"again"') == "single"
    instance = await client.get_status("single")
    assert instance is not None
    assert (instance.status, instance.input) == (Status.PENDING, '"again"')


async def test_start_body_over_the_limit_is_413(store: Store, v1_app: FunctionApp) -> None:
    client = DurableClient(store, v1_app)
    web_app = build_app(client, v1_app, rpc_base_url="http://x/", max_body_bytes=16)
    async with asgi(web_app) as http:
        declared = await http.post(f"{BASE}/orchestrators/Echo", content=b"1" * 17)
        assert declared.status_code == 413

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: caught while reading
            for _ in range(4):
                yield b"11111"

        streamed = await http.post(f"{BASE}/orchestrators/Echo", content=chunks())
        assert streamed.status_code == 413
        fits = await http.post(f"{BASE}/orchestrators/Echo", content=b"1" * 16)
        assert fits.status_code == 202
    page = await client.query(InstanceQuery())
    assert len(page.instances) == 1


async def test_start_and_wait_times_out_with_the_check_status_response(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post(f"{BASE}/orchestrators/Echo?timeout=0.1&pollingInterval=0.02")
    assert response.status_code == 202
    assert "statusQueryGetUri" in response.json()


async def test_start_and_wait_returns_the_output_once_completed(
    http: httpx.AsyncClient, store: Store, client: DurableClient
) -> None:
    async def complete_soon() -> None:
        await eventually(lambda: client.get_status("waited"))
        await finish(store, "waited", output='{"result": 42}')

    finisher = asyncio.create_task(complete_soon())
    response = await http.post(f"{BASE}/orchestrators/Echo/waited?TIMEOUT=5&pollingInterval=0.02")
    await finisher
    assert response.status_code == 200
    assert response.json() == {"result": 42}


async def test_start_and_wait_on_a_failure_answers_with_the_status(
    http: httpx.AsyncClient, store: Store, client: DurableClient
) -> None:
    async def fail_soon() -> None:
        await eventually(lambda: client.get_status("failing"))
        await finish(store, "failing", Status.FAILED, output='"boom"')

    failer = asyncio.create_task(fail_soon())
    response = await http.post(f"{BASE}/orchestrators/Echo/failing?timeout=5&pollingInterval=0.02")
    await failer
    assert response.status_code == 200
    assert response.json()["runtimeStatus"] == "Failed"


@pytest.mark.parametrize("query", ["timeout=abc", "timeout=-1", "timeout=inf", "pollingInterval=x"])
async def test_start_with_bad_wait_parameters_is_400(http: httpx.AsyncClient, query: str) -> None:
    response = await http.post(f"{BASE}/orchestrators/Echo?{query}")
    assert response.status_code == 400


# --- status ----------------------------------------------------------------------------------


async def test_status_of_an_unknown_instance_is_404_with_an_empty_body(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get(f"{BASE}/instances/nope")
    assert response.status_code == 404
    assert response.content == b""


async def test_status_in_progress_is_202_with_location(http: httpx.AsyncClient) -> None:
    instance_id = await start(http, content=b'{"city": "Tokyo"}')
    url = f"{BASE}/instances/{instance_id}?taskHub=WebHub"
    response = await http.get(url)
    assert response.status_code == 202
    assert response.headers["location"] == f"http://testhost{url}"
    assert response.headers["retry-after"] == "5"
    body = response.json()
    assert body["name"] == "Echo"
    assert body["instanceId"] == instance_id
    assert body["runtimeStatus"] == "Pending"
    assert body["input"] == {"city": "Tokyo"}
    assert body["output"] is None
    assert body["createdTime"].endswith("Z") and len(body["createdTime"]) == 20
    assert "historyEvents" not in body


async def test_status_query_keys_and_booleans_are_case_insensitive(
    http: httpx.AsyncClient,
) -> None:
    instance_id = await start(http, content=b'{"city": "Tokyo"}')
    response = await http.get(f"{BASE}/instances/{instance_id}?SHOWINPUT=False")
    assert response.json()["input"] is None
    response = await http.get(f"{BASE}/instances/{instance_id}?showInput=maybe")
    assert response.json()["input"] == {"city": "Tokyo"}  # unparsable: the default


async def test_status_of_finished_instances(http: httpx.AsyncClient, store: Store) -> None:
    await start(http, "Echo/ok")
    await finish(store, "ok", output='{"x": 1}')
    response = await http.get(f"{BASE}/instances/ok")
    assert response.status_code == 200
    assert response.json()["output"] == {"x": 1}
    assert response.json()["runtimeStatus"] == "Completed"

    await start(http, "Echo/bad")
    await finish(store, "bad", Status.FAILED, output='"it broke"')
    plain = await http.get(f"{BASE}/instances/bad")
    assert (plain.status_code, plain.json()["output"]) == (200, "it broke")
    strict = await http.get(f"{BASE}/instances/bad?returnInternalServerErrorOnFailure=TRUE")
    assert strict.status_code == 500
    assert strict.json()["runtimeStatus"] == "Failed"

    await start(http, "Echo/term")
    await finish(store, "term", Status.TERMINATED, output='"stop"')
    assert (await http.get(f"{BASE}/instances/term")).status_code == 200


async def test_status_shows_non_finite_numbers_instead_of_failing(
    http: httpx.AsyncClient, store: Store
) -> None:
    # df_dumps writes NaN for float("nan"); the SDK's json.loads reads it back.
    await start(http, "Echo/nan", content=json.dumps(json.dumps(float("nan"))).encode())
    await finish(store, "nan", output='{"x": NaN}')
    response = await http.get(f"{BASE}/instances/nan")
    assert response.status_code == 200
    assert '"output":{"x":NaN}' in response.text
    assert '"input":NaN' in response.text


async def test_status_with_history(http: httpx.AsyncClient, store: Store) -> None:
    await start(http, "Echo/hist", content=b'"in"')
    t = datetime.now(UTC)
    events = [
        HistoryEvent(
            type=EventType.TASK_SCHEDULED, timestamp=t, event_id=0, name="Hello", input='"Tokyo"'
        ),
        HistoryEvent(type=EventType.ORCHESTRATOR_COMPLETED, timestamp=t),
        HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=t),
        HistoryEvent(
            type=EventType.TASK_COMPLETED, timestamp=t, task_scheduled_id=0, result='"Hello Tokyo!"'
        ),
    ]
    await finish(store, "hist", output='"Hello Tokyo!"', events=events)

    response = await http.get(f"{BASE}/instances/hist?showHistory=true")
    history = response.json()["historyEvents"]
    assert [e["EventType"] for e in history] == [
        "ExecutionStarted",
        "TaskCompleted",
        "ExecutionCompleted",
    ]
    started, completed_task, completed = history
    assert started["FunctionName"] == "Echo"
    assert started["Input"] == "in"
    assert completed_task["FunctionName"] == "Hello"
    assert completed_task["Input"] == "Tokyo"
    assert "ScheduledTime" in completed_task
    assert "Result" not in completed_task and "Result" not in completed
    assert "EventId" not in completed_task and "IsPlayed" not in completed_task

    with_output = await http.get(
        f"{BASE}/instances/hist?showHistory=true&showHistoryOutput=true&showInput=false"
    )
    body = with_output.json()
    assert body["input"] is None
    _, task, done = body["historyEvents"]
    assert task["Result"] == "Hello Tokyo!"
    assert "Input" not in task
    assert (done["OrchestrationStatus"], done["Result"]) == ("Completed", "Hello Tokyo!")


# --- list ------------------------------------------------------------------------------------


async def test_list_pages_with_continuation_tokens(store: Store, v1_app: FunctionApp) -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    times = iter(t0 + timedelta(minutes=i) for i in range(100))
    client = DurableClient(store, v1_app, clock=lambda: next(times))
    async with asgi(build_app(client, v1_app, rpc_base_url="http://x/")) as http:
        ids = [await start(http, f"Echo/inst-{i}") for i in range(5)]
        for path in (f"{BASE}/instances", f"{BASE}/instances/"):
            seen: list[str] = []
            token: str | None = None
            pages = 0
            while True:
                headers = {"x-ms-continuation-token": token} if token else {}
                response = await http.get(f"{path}?top=2", headers=headers)
                assert response.status_code == 200
                pages += 1
                seen += [s["instanceId"] for s in response.json()]
                token = response.headers.get("x-ms-continuation-token")
                if token is None:
                    break
            assert pages == 3
            assert seen == list(reversed(ids))  # newest first

        everything = await http.get(f"{BASE}/instances")
        assert len(everything.json()) == 5
        assert "x-ms-continuation-token" not in everything.headers


async def test_list_filters(store: Store, v1_app: FunctionApp) -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    times = iter(t0 + timedelta(hours=i) for i in range(100))
    client = DurableClient(store, v1_app, clock=lambda: next(times))
    async with asgi(build_app(client, v1_app, rpc_base_url="http://x/")) as http:
        for i in range(4):
            await start(http, f"Echo/{'ab' if i % 2 else 'cd'}-{i}", content=b'{"n": 1}')
        await finish(store, "cd-0")
        await finish(store, "ab-1", Status.FAILED)

        async def ids(query: str) -> list[str]:
            response = await http.get(f"{BASE}/instances/?{query}")
            assert response.status_code == 200, response.text
            return sorted(s["instanceId"] for s in response.json())

        assert await ids("runtimeStatus=completed,FAILED") == ["ab-1", "cd-0"]
        assert await ids("runtimeStatus=Pending") == ["ab-3", "cd-2"]
        assert await ids("instanceIdPrefix=ab") == ["ab-1", "ab-3"]
        assert await ids("createdTimeFrom=2024-01-01T01:00:00.000000Z") == ["ab-1", "ab-3", "cd-2"]
        assert await ids(
            "createdTimeFrom=2024-01-01T01:00:00Z&createdTimeTo=2024-01-01T02:00:00Z"
        ) == ["ab-1", "cd-2"]
        assert await ids("createdTimeTo=2024-01-01T00:30:00+00:00") == ["cd-0"]  # '+' as ' '
        listed = (await http.get(f"{BASE}/instances?showInput=false")).json()
        assert all(s["input"] is None for s in listed)


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("runtimeStatus=Sleeping", {}),
        ("createdTimeFrom=yesterday", {}),
        ("top=0", {}),
        ("top=many", {}),
        ("", {"x-ms-continuation-token": "garbage!"}),
    ],
)
async def test_list_with_bad_parameters_is_400(
    http: httpx.AsyncClient, query: str, headers: dict[str, str]
) -> None:
    response = await http.get(f"{BASE}/instances?{query}", headers=headers)
    assert response.status_code == 400
    assert response.json()["ExceptionMessage"]


# --- raise event -----------------------------------------------------------------------------


async def test_raise_event_stores_the_body_text_as_the_event_data(
    http: httpx.AsyncClient, store: Store
) -> None:
    instance_id = await start(http)
    sdk_body = json.dumps(json.dumps({"a": 1}))  # the SDK's double-encoded body
    for body in (sdk_body, '{"b": 2}', ""):
        response = await http.post(
            f"{BASE}/instances/{instance_id}/raiseEvent/Go",
            content=body.encode(),
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        assert response.status_code == 202
        assert response.content == b""
    events = [m.event for m in await pending(store, instance_id)]
    raised = [(e.name, e.input) for e in events if e.type is EventType.EVENT_RAISED]
    assert raised == [("Go", sdk_body), ("Go", '{"b": 2}'), ("Go", None)]


async def test_raise_event_error_codes(http: httpx.AsyncClient, store: Store) -> None:
    headers = {"Content-Type": "application/json"}
    unknown = await http.post(f"{BASE}/instances/nope/raiseEvent/Go", content=b"1", headers=headers)
    assert unknown.status_code == 404

    instance_id = await start(http)
    url = f"{BASE}/instances/{instance_id}/raiseEvent/Go"
    wrong_type = await http.post(url, content=b"1", headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 400
    assert wrong_type.json()["Message"] == "Only application/json request content is supported"
    no_type = await http.post(url, content=b"1")
    assert no_type.status_code == 400
    bad_json = await http.post(url, content=b"{oops", headers=headers)
    assert bad_json.status_code == 400

    await finish(store, instance_id)
    gone = await http.post(url, content=b"1", headers=headers)
    assert gone.status_code == 410


# --- terminate, suspend, resume --------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "event_type"),
    [
        ("terminate", EventType.EXECUTION_TERMINATED),
        ("suspend", EventType.EXECUTION_SUSPENDED),
        ("resume", EventType.EXECUTION_RESUMED),
    ],
)
async def test_control_operations(
    http: httpx.AsyncClient, store: Store, operation: str, event_type: EventType
) -> None:
    assert (await http.post(f"{BASE}/instances/nope/{operation}")).status_code == 404

    instance_id = await start(http)
    response = await http.post(
        f"{BASE}/instances/{instance_id}/{operation}?reason=because%20I%20said"
    )
    assert response.status_code == 202
    assert response.content == b""
    [control] = [m.event for m in await pending(store, instance_id) if m.event.type is event_type]
    if event_type is EventType.EXECUTION_TERMINATED:
        assert control.input == '"because I said"'
    else:
        assert control.reason == "because I said"

    await finish(store, instance_id)
    assert (await http.post(f"{BASE}/instances/{instance_id}/{operation}")).status_code == 410


async def test_terminate_without_a_reason(http: httpx.AsyncClient, store: Store) -> None:
    instance_id = await start(http)
    assert (await http.post(f"{BASE}/instances/{instance_id}/terminate")).status_code == 202
    [control] = [
        m.event
        for m in await pending(store, instance_id)
        if m.event.type is EventType.EXECUTION_TERMINATED
    ]
    assert control.input == "null"


# --- purge -----------------------------------------------------------------------------------


async def test_purge_one(http: httpx.AsyncClient, store: Store) -> None:
    instance_id = await start(http)
    await finish(store, instance_id)
    response = await http.delete(f"{BASE}/instances/{instance_id}")
    assert response.status_code == 200
    assert response.json() == {"instancesDeleted": 1}
    assert (await http.get(f"{BASE}/instances/{instance_id}")).status_code == 404
    again = await http.delete(f"{BASE}/instances/{instance_id}")
    assert again.status_code == 404


async def test_purge_many(http: httpx.AsyncClient, store: Store) -> None:
    for path in (f"{BASE}/instances", f"{BASE}/instances/"):
        missing = await http.delete(path)
        assert missing.status_code == 400
        assert "createdTimeFrom" in missing.json()["ExceptionMessage"]

    done = await start(http)
    await finish(store, done)
    running = await start(http)
    since = "createdTimeFrom=2000-01-01T00:00:00.000000Z"
    response = await http.delete(f"{BASE}/instances?{since}&runtimeStatus=Completed")
    assert response.status_code == 200
    assert response.json() == {"instancesDeleted": 1}
    assert (
        await http.delete(f"{BASE}/instances/?{since}&runtimeStatus=Completed")
    ).status_code == 404
    future = await http.delete(f"{BASE}/instances/?createdTimeFrom=2999-01-01T00:00:00Z")
    assert future.status_code == 404
    everything = await http.delete(f"{BASE}/instances/?{since}&createdTimeTo=2999-01-01T00:00:00Z")
    assert everything.json() == {"instancesDeleted": 1}
    assert (await http.get(f"{BASE}/instances/{running}")).status_code == 404


# --- the rest --------------------------------------------------------------------------------


async def test_entity_routes_in_an_app_without_entities(http: httpx.AsyncClient) -> None:
    # Entities themselves: tests/entities.
    signal = await http.post(f"{BASE}/entities/Counter/k?op=add", json=1)
    assert signal.status_code == 400
    assert "not an entity function" in signal.json()["ExceptionMessage"]
    assert (await http.get(f"{BASE}/entities/Counter/k")).status_code == 404
    listed = await http.get(f"{BASE}/entities")
    assert (listed.status_code, listed.json()) == (200, [])


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/nothing/here"), ("POST", "/instances/x/unknown")]
)
async def test_no_route_is_404_with_an_empty_body(
    http: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await http.request(method, f"{BASE}{path}")
    assert response.status_code == 404
    assert response.content == b""


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/orchestrators/Echo", "POST"),
        ("PUT", "/instances/x", "DELETE, GET, HEAD"),
        ("GET", "/instances/x/raiseEvent/E", "POST"),
        ("TRACE", "/entities", "GET, HEAD"),
    ],
)
async def test_a_known_path_with_another_method_is_405_saying_which(
    http: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    response = await http.request(method, f"{BASE}{path}")
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert method in response.json()["Message"]


async def test_host_status_reports_starting_until_the_lifespan_ran(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/admin/host/status")
    assert response.status_code == 503
    assert response.json()["state"] == "Starting"


async def test_a_store_failure_is_a_500_with_a_message(
    http: httpx.AsyncClient, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    await store.close()
    response = await http.get(f"{BASE}/instances/x")
    assert response.status_code == 500
    assert response.json()["Message"] == "Something went wrong while processing your request"
    assert "management API GET" in caplog.text
