"""Durable HTTP (`context.call_http`) against a local server: plain answers, the 202 + Location
polling pattern, token sources and calls that get no answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dfhost.app.functions import FunctionApp
from dfhost.client import DurableClient
from dfhost.history import EventType, HistoryEvent, OrchestrationStatus
from dfhost.runtime import durable_http
from dfhost.runtime.engine import Engine
from dfhost.store import open_store
from dfhost.work import ActivityTask
from tests.waiting import eventually

from .conftest import pytestmark  # noqa: F401 - the module's warning filter


@dataclass
class Remote:
    """The server call_http talks to, and the requests it got."""

    origin: str
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)
    """(method, path, X-Token header) of every request."""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    """Lets requests to /stall answer."""


def remote_app(remote: Remote) -> Starlette:
    polls: dict[str, int] = {}

    async def record(request: Request) -> None:
        remote.seen.append((request.method, request.url.path, request.headers.get("x-token")))

    async def plain(request: Request) -> Response:
        await record(request)
        body = {
            "method": request.method,
            "body": (await request.body()).decode(),
            "x-a": request.headers.get("x-a"),
            "content-type": request.headers.get("content-type"),
        }
        return JSONResponse(body, headers={"X-Multi": "1"})

    def accepted(job: str) -> Response:
        headers = {"Location": f"/status/{job}"}
        if job == "quick":
            headers["Retry-After"] = "0"
        return Response(status_code=202, headers=headers)

    async def start(request: Request) -> Response:
        await record(request)
        return accepted(request.path_params["job"])

    async def status(request: Request) -> Response:
        await record(request)
        job = request.path_params["job"]
        polls[job] = polls.get(job, 0) + 1
        if polls[job] < 2:  # still running once, then done
            return accepted(job)
        return Response("done", status_code=200, media_type="text/plain")

    async def stall(request: Request) -> Response:
        await remote.release.wait()  # set when the server stops
        return Response("late")

    return Starlette(
        routes=[
            Route("/plain", plain, methods=["GET", "POST"]),
            Route("/stall", stall, methods=["GET"]),
            Route("/start/{job}", start, methods=["POST"]),
            Route("/status/{job}", status, methods=["GET"]),
        ]
    )


@pytest.fixture
async def remote() -> AsyncIterator[Remote]:
    found = Remote(origin="")
    config = uvicorn.Config(
        remote_app(found), host="127.0.0.1", port=0, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started)
        found.origin = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        yield found
    finally:
        found.release.set()
        server.should_exit = True
        await task


@pytest.fixture
async def client(tmp_path: Path, apps: dict[str, FunctionApp]) -> AsyncIterator[DurableClient]:
    store = open_store(f"sqlite:///{tmp_path / 'hub.db'}")
    await store.start()
    app = apps["entities_v2"]
    engine = Engine(app, store)
    await engine.start()
    try:
        yield DurableClient(store, app)
    finally:
        await engine.stop()
        await store.close()


async def call_http(client: DurableClient, request: dict[str, Any]) -> tuple[str, Any]:
    """Run the HttpCaller orchestrator; (its status, its output)."""
    instance_id = await client.start_new("HttpCaller", input_text=json.dumps(request))
    finished = await client.wait_for_completion(instance_id, timeout=20, interval=0.02)
    assert finished is not None and finished.output is not None
    return finished.status.value, json.loads(finished.output)


async def test_a_plain_answer_is_the_result(client: DurableClient, remote: Remote) -> None:
    request = {
        "method": "POST",
        "uri": f"{remote.origin}/plain",
        "content": {"a": 1},
        "headers": {"X-A": "1"},
    }
    status, response = await call_http(client, request)
    assert status == "Completed"
    assert response["statusCode"] == 200
    assert response["headers"]["x-multi"] == "1"
    assert json.loads(response["content"]) == {
        "method": "POST",
        "body": '{"a": 1}',
        "x-a": "1",
        "content-type": "text/plain; charset=utf-8",  # .NET StringContent's, as on Azure
    }


async def test_202_with_a_location_is_polled_until_done(
    client: DurableClient, remote: Remote
) -> None:
    request = {"method": "POST", "uri": f"{remote.origin}/start/quick", "headers": {"X-Token": "t"}}
    status, response = await call_http(client, request)
    assert status == "Completed"
    assert (response["statusCode"], response["content"]) == (200, "done")
    # Polled with GET at the relative Location, the original headers included.
    assert remote.seen == [
        ("POST", "/start/quick", "t"),
        ("GET", "/status/quick", "t"),
        ("GET", "/status/quick", "t"),
    ]


def http_task(request: dict[str, Any]) -> ActivityTask:
    return ActivityTask(
        instance_id="i",
        execution_id="e",
        task_scheduled_id=3,
        name=durable_http.ACTIVITY_NAME,
        input=json.dumps(request),
        scheduled_at=datetime.now(UTC),
    )


async def run(request: dict[str, Any], **settings: float) -> tuple[Any, list[float]]:
    """Run the activity alone; (its completion event, the poll delays it waited)."""
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    event = await durable_http.run(
        http_task(request), lambda: datetime.now(UTC), durable_http.HttpSettings(**settings), sleep
    )
    assert event.task_scheduled_id == 3
    return event, delays


async def test_without_retry_after_polls_wait_the_default_interval(remote: Remote) -> None:
    event, delays = await run(
        {"method": "POST", "uri": f"{remote.origin}/start/slow"}, poll_interval=7
    )
    assert event.type is EventType.TASK_COMPLETED
    assert json.loads(event.result or "")["statusCode"] == 200
    assert delays == [7, 7]
    settings: dict[str, Any] = {"extensions": {"durableTask": {"httpSettings": {}}}}
    assert durable_http.HttpSettings.from_host_json(settings).poll_interval == 30
    settings["extensions"]["durableTask"]["httpSettings"] = {
        "defaultAsyncRequestSleepTimeMilliseconds": 1500
    }
    assert durable_http.HttpSettings.from_host_json(settings).poll_interval == 1.5


def test_the_poll_interval_setting_is_read_in_any_casing() -> None:
    """host.json keys are case-insensitive (this one was read in its documented casing only)."""
    http = {"DefaultAsyncRequestSleepTimeMilliseconds": 1500}
    host_json = {"Extensions": {"DurableTask": {"HttpSettings": http}}}
    assert durable_http.HttpSettings.from_host_json(host_json).poll_interval == 1.5


async def test_polling_gives_up_at_its_limit(remote: Remote) -> None:
    event, delays = await run(
        {"method": "POST", "uri": f"{remote.origin}/start/slow"}, polling_limit=5
    )
    assert event.type is EventType.TASK_FAILED
    assert "was still 202 Accepted after polling" in (event.reason or "")
    assert delays == []


def sdk_exception_text(event: HistoryEvent) -> str:
    """What the orchestrator's caught exception says (the SDK's TaskFailed handling)."""
    return f"{event.reason} \n {event.details}"


async def test_a_call_without_an_answer_fails_the_task_as_on_azure(remote: Remote) -> None:
    closed = "http://127.0.0.1:9/"  # the discard port: nothing listens on loopback
    event, _ = await run({"method": "GET", "uri": closed})
    assert event.type is EventType.TASK_FAILED
    # The extension's TaskHttpActivityShim: the HttpRequestException's message is the reason
    # (no "Activity function ... failed:"), its JSON the details.
    reason = event.reason or ""
    assert reason.endswith(" (127.0.0.1:9)") and not reason.startswith("Activity function")
    details = json.loads(sdk_exception_text(event).split("\n")[1])
    assert details["$type"] == "System.Net.Http.HttpRequestException, System.Net.Http"
    assert details["Message"] == reason
    event, _ = await run({"method": "GET", "uri": "ftp://example.com/x"})
    assert "not an absolute http:// or https:// URL" in (event.reason or "")
    assert json.loads(event.details or "")["Message"] == event.reason


async def test_a_call_over_the_request_timeout_fails_as_httpclient_does(remote: Remote) -> None:
    event, _ = await run({"method": "GET", "uri": f"{remote.origin}/stall"}, request_timeout=0.2)
    assert event.type is EventType.TASK_FAILED
    reason = (
        "The request was canceled due to the configured HttpClient.Timeout of 0.2 seconds elapsing."
    )
    assert event.reason == reason
    canceled = "System.Threading.Tasks.TaskCanceledException"
    assert event.details == f"Unhandled exception while executing task: {canceled}: {reason}"


async def test_a_managed_identity_token_source_fails_clearly(
    client: DurableClient, remote: Remote
) -> None:
    request = {"method": "GET", "uri": f"{remote.origin}/plain", "token": True}
    status, output = await call_http(client, request)
    assert status == OrchestrationStatus.FAILED.value
    assert "managed identity token source" in output
    assert "pass it in an Authorization header" in output
    assert remote.seen == []  # nothing was sent
