"""The app's HTTP-triggered functions: routing, bindings, calling conventions and responses."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import pytest

from dfhost.app.functions import Binding, Function, FunctionApp
from dfhost.app.loader import load_app
from dfhost.client import DurableClient
from dfhost.config import AppSettings
from dfhost.store import Store
from dfhost.web import build_app
from dfhost.web.openapi import OPENAPI_PATH

from .conftest import BASE, asgi, live_server

EXAMPLE_APP = Path(__file__).resolve().parents[2] / "examples" / "eternal_timer"


@pytest.fixture
async def v2_http(store: Store, v2_app: FunctionApp) -> AsyncIterator[httpx.AsyncClient]:
    web_app = build_app(DurableClient(store, v2_app), v2_app, rpc_base_url="http://x/")
    async with asgi(web_app) as h:
        yield h


def http_function(name: str, handler: Any, **settings: Any) -> Function:
    trigger = Binding("httpTrigger", "req", "in", MappingProxyType(settings))
    output = Binding("http", "$return", "out", MappingProxyType({}))
    return Function(name, "http", trigger, (trigger, output), handler, __file__)


def make_app(*functions: Function, prefix: str = "api") -> FunctionApp:
    return FunctionApp(
        Path(__file__).parent,
        {f.name: f for f in functions},
        AppSettings(route_prefix=prefix),
        [],
    )


# --- v1 --------------------------------------------------------------------------------------


async def test_return_binding_http_response_passes_status_headers_and_body(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/api/greet/Bob")
    assert response.status_code == 200
    assert response.text == "Hello Bob"
    assert response.headers["x-greeting"] == "yes"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


async def test_constraints_methods_and_prefix_decide_the_route(http: httpx.AsyncClient) -> None:
    assert (await http.get("/api/greet/B0b")).status_code == 404  # {name:alpha}
    assert (await http.post("/api/greet/Bob")).status_code == 404  # GET only
    assert (await http.get("/greet/Bob")).status_code == 404  # routePrefix is "api"
    assert (await http.get("/API/GREET/bob")).status_code == 200
    assert (await http.get("/api/nothing")).status_code == 404


async def test_the_request_carries_url_headers_params_route_values_and_body(
    http: httpx.AsyncClient,
) -> None:
    response = await http.put(
        "/api/inspect/7/extra%20bit?q=1&q=2&other=x",
        content=b"payload",
        headers={"X-Thing": "abc"},
    )
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    seen = response.json()
    assert seen["method"] == "PUT"
    assert seen["url"] == "http://testhost/api/inspect/7/extra%20bit?q=1&q=2&other=x"
    assert seen["params"] == {"q": "1,2", "other": "x"}
    assert seen["route_params"] == {"id": "7", "rest": "extra bit"}
    assert seen["headers"]["x-thing"] == "abc"
    assert seen["body"] == "payload"

    optional = await http.get("/api/inspect/8")
    assert optional.json()["route_params"] == {"id": "8"}
    assert (await http.get("/api/inspect/eight")).status_code == 404


async def test_seed_shaped_client_function_starts_an_orchestration(
    store: Store, v1_app: FunctionApp, caplog: pytest.LogCaptureFixture
) -> None:
    """The seed app's durable-client: named `http` out binding set with message.set(...),
    `durableClient` starter string, DurableOrchestrationClient built by the function."""
    client = DurableClient(store, v1_app)
    web_app = build_app(client, v1_app, rpc_base_url="http://placeholder/")
    caplog.set_level(logging.INFO)
    async with live_server(web_app) as origin, httpx.AsyncClient() as http:
        response = await http.post(f"{origin}/api/orchestrators/Echo", json={"city": "Tokyo"})
        assert response.status_code == 202, response.text
        body = response.json()
        assert response.headers["location"] == body["statusQueryGetUri"]
        assert body["statusQueryGetUri"].startswith(f"{origin}{BASE}/instances/{body['id']}")
        assert body["rewindPostUri"]  # the SDK's own helper includes it
        instance = await client.get_status(body["id"])
        assert instance is not None
        assert (instance.name, instance.input) == ("Echo", '{"city": "Tokyo"}')

        status = await http.get(body["statusQueryGetUri"])
        assert status.status_code == 202
        assert status.json()["input"] == {"city": "Tokyo"}

        unknown = await http.post(f"{origin}/api/orchestrators/Nope")
        assert unknown.status_code == 500
        assert unknown.text == "Exception while executing function: Functions.HttpStart"
    assert "Executing 'Functions.HttpStart' (Reason='This function was programmatically" in (
        caplog.text
    )
    assert "Executed 'Functions.HttpStart' (Succeeded" in caplog.text
    assert "Executed 'Functions.HttpStart' (Failed" in caplog.text
    assert "The function 'Nope' doesn't exist" in logged_tracebacks(caplog)


def logged_tracebacks(caplog: pytest.LogCaptureFixture) -> str:
    """The tracebacks logged for functions that raised (cut to the user's frames)."""
    return "\n".join(getattr(r, "dfhost_exception", "") for r in caplog.records)


@pytest.fixture
def restore_environ() -> Iterator[None]:
    """load_app copies local.settings.json Values into os.environ; undo that afterwards."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


async def test_the_example_app_starts_its_orchestrator_over_http(
    store: Store, restore_environ: None
) -> None:
    example = load_app(EXAMPLE_APP)
    assert example.errors == []
    client = DurableClient(store, example)
    web_app = build_app(client, example, rpc_base_url="http://placeholder/")
    async with live_server(web_app) as origin, httpx.AsyncClient() as http:
        response = await http.post(f"{origin}/api/orchestrators/durable-orchestrator")
        assert response.status_code == 202, response.text
        body = response.json()
        assert set(body) >= {"id", "statusQueryGetUri", "sendEventPostUri", "terminatePostUri"}
        status = await http.get(body["statusQueryGetUri"])
        assert status.status_code == 202
        assert status.json()["name"] == "durable-orchestrator"
        assert status.json()["runtimeStatus"] == "Pending"


# --- v2 --------------------------------------------------------------------------------------


async def test_sync_functions_run_in_a_thread_and_async_ones_on_the_loop(
    v2_http: httpx.AsyncClient,
) -> None:
    sync = await v2_http.get("/sync/12")
    assert sync.status_code == 200
    assert sync.json()["id"] == "12"
    assert sync.json()["thread"] != "MainThread"
    assert (await v2_http.get("/sync/twelve")).status_code == 404

    text = await v2_http.get("/async/a/b%20c")
    assert text.status_code == 200
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert text.text == "rest=a/b c thread=MainThread"
    assert (await v2_http.delete("/async")).text == "rest= thread=MainThread"


async def test_none_is_204(v2_http: httpx.AsyncClient) -> None:
    response = await v2_http.get("/nothing")
    assert response.status_code == 204
    assert response.content == b""


async def test_an_exception_is_a_500_and_the_server_keeps_serving(
    v2_http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = await v2_http.get("/boom")
    assert response.status_code == 500
    assert response.text == "Exception while executing function: Functions.boom"
    failure = next(r for r in caplog.records if "Exception while executing" in r.getMessage())
    assert failure.name == "dfhost"
    trace: str = failure.dfhost_exception  # type: ignore[attr-defined]
    # The user's frame and exception, none of the host's frames around the call.
    assert trace.startswith("Traceback (most recent call last):\n"), trace
    assert 'function_app.py", line' in trace and 'raise ValueError("kaboom")' in trace, trace
    assert trace.endswith("ValueError: kaboom"), trace
    files = re.findall(r'^  File "([^"]+)"', trace, re.MULTILINE)
    assert files and all(f.endswith("http_v2/function_app.py") for f in files), trace
    assert "Executed 'Functions.boom' (Failed" in caplog.text
    assert (await v2_http.get("/sync/1")).status_code == 200


async def test_an_unsupported_return_type_is_a_500(
    v2_http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = await v2_http.get("/bad_output")
    assert response.status_code == 500
    assert "an HTTP output must be func.HttpResponse or str" in logged_tracebacks(caplog)


async def test_empty_route_prefix_serves_at_the_root_without_shadowing_the_api(
    v2_http: httpx.AsyncClient,
) -> None:
    assert (await v2_http.get("/sync/1")).status_code == 200
    assert (await v2_http.get(f"{BASE}/instances/x")).status_code == 404
    assert (await v2_http.get("/")).status_code == 404


async def test_v2_client_functions_get_keyword_args_and_context_only_when_declared(
    store: Store, v2_app: FunctionApp
) -> None:
    client = DurableClient(store, v2_app)
    web_app = build_app(client, v2_app, rpc_base_url="http://placeholder/")
    async with live_server(web_app) as origin, httpx.AsyncClient() as http:
        started = await http.post(f"{origin}/start/echo", json=[1, 2])
        assert started.status_code == 202, started.text
        instance = await client.get_status(started.json()["id"])
        assert instance is not None
        assert instance.input == "[1, 2]"

        with_context = await http.post(f"{origin}/start_ctx/echo")
        assert with_context.status_code == 200, with_context.text
        seen = with_context.json()
        assert seen["function_name"] == "start_with_context"
        assert seen["invocation_id"]
        # The SDK builds its client with the invocation id when `context` is passed.
        assert seen["client_invocation_id"] == seen["invocation_id"]
        assert Path(seen["function_directory"]) == v2_app.root
        assert await client.get_status(seen["id"]) is not None


# --- edge cases ------------------------------------------------------------------------------


async def test_body_over_the_limit_is_413(store: Store, v2_app: FunctionApp) -> None:
    web_app = build_app(
        DurableClient(store, v2_app), v2_app, rpc_base_url="http://x/", max_body_bytes=4
    )
    async with asgi(web_app) as http:
        assert (await http.post("/async/x", content=b"12345")).status_code == 413
        assert (await http.post("/async/x", content=b"1234")).status_code == 200


async def test_a_function_with_an_invalid_route_is_skipped_with_an_error(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(
        http_function("broken", lambda req: "never", route="x/{id:nope}"),
        http_function("fine", lambda req: "ok", route="y/{id}"),
    )
    async with asgi(build_app(DurableClient(store, app), app, rpc_base_url="http://x/")) as http:
        assert (await http.get("/api/x/1")).status_code == 404
        assert (await http.get("/api/y/1")).text == "ok"
    assert "function 'broken': invalid route 'x/{id:nope}'" in caplog.text


async def test_use_app_switches_the_functions_served_and_the_names_known(
    store: Store, v1_app: FunctionApp
) -> None:
    first = make_app(http_function("old", lambda req: "old", route="a"))
    client = DurableClient(store, first)
    web_app = build_app(client, first, rpc_base_url="http://x/")
    async with asgi(web_app) as http:
        assert (await http.get("/api/a")).text == "old"
        assert "Echo" not in (await http.get(OPENAPI_PATH)).text
        web_app.state.dfhost.use_app(v1_app)  # dfhost start --reload
        assert (await http.get("/api/a")).status_code == 404
        assert (await http.get("/api/greet/Bob")).text == "Hello Bob"
        assert "Echo" in (await http.get(OPENAPI_PATH)).text
        started = await http.post(f"{BASE}/orchestrators/Echo", json="hi")
        assert started.status_code == 202, started.text
    assert client.app is v1_app


async def test_specific_routes_win_over_general_ones(store: Store) -> None:
    app = make_app(
        http_function("catch_all", lambda req: "catch-all", route="items/{*rest}"),
        http_function("by_name", lambda req: "name", route="items/{name}"),
        http_function("by_id", lambda req: "id", route="items/{id:int}"),
        http_function("literal", lambda req: "literal", route="items/special"),
        http_function("posted", lambda req: "posted", route="items/{name}", methods=["post"]),
        http_function("default_route", lambda req: "default"),
        prefix="",
    )
    async with asgi(build_app(DurableClient(store, app), app, rpc_base_url="http://x/")) as http:
        assert (await http.get("/items/special")).text == "literal"
        assert (await http.get("/items/42")).text == "id"
        assert (await http.get("/items/abc")).text == "name"
        assert (await http.get("/items/a/b")).text == "catch-all"
        assert (await http.get("/default_route")).text == "default"


async def test_output_bindings_response_headers_and_bodiless_statuses(store: Store) -> None:
    import azure.functions as func

    def with_cookies(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(
            json.dumps({"ok": True}),
            status_code=200,
            headers={"Set-Cookie": "a=1", "Content-Type": "application/json"},
        )

    def not_modified(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("ignored", status_code=304)

    def out_binding(req: func.HttpRequest, res: func.Out[func.HttpResponse]) -> None:
        assert res.get() is None
        res.set(func.HttpResponse(b"\x00\x01", mimetype="application/octet-stream"))

    trigger = Binding("httpTrigger", "req", "in", MappingProxyType({"route": "out"}))
    output = Binding("http", "res", "out", MappingProxyType({}))
    app = make_app(
        http_function("cookies", with_cookies, route="cookies"),
        http_function("cached", not_modified, route="cached"),
        Function("out", "http", trigger, (trigger, output), out_binding, __file__),
    )
    async with asgi(build_app(DurableClient(store, app), app, rpc_base_url="http://x/")) as http:
        cookies = await http.get("/api/cookies")
        assert cookies.json() == {"ok": True}
        assert cookies.headers["content-type"] == "application/json"
        assert cookies.cookies["a"] == "1"
        cached = await http.get("/api/cached")
        assert (cached.status_code, cached.content) == (304, b"")
        out = await http.get("/api/out")
        assert (out.status_code, out.content) == (200, b"\x00\x01")
        assert out.headers["content-type"] == "application/octet-stream"
