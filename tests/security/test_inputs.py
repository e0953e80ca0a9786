"""Input that could be stored but not shown again, or not stored at all: JSON nested too deep,
NUL and other control characters in ids and names, oversized reasons. Each is refused with a
400 (or 413) and a message on every way in; what is stored already never breaks a list; and no
answer carries a store's URL or error text (issue 21, items 5 to 7)."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from dfhost.app.functions import FunctionApp
from dfhost.client import DurableClient
from dfhost.history import OrchestrationStatus, utcnow
from dfhost.ids import InvalidArgumentError, InvalidInstanceIdError
from dfhost.store import InstanceQuery, Store
from dfhost.testing import TestHost
from dfhost.web import build_app
from dfhost.web.auth import RPC_PATH, Access
from dfhost.work import StartRequest
from tests.security.conftest import APP_DIR, BASE
from tests.web.conftest import asgi, finish

JSON_FORM = {"content-type": "application/x-www-form-urlencoded", "accept": "application/json"}


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@asynccontextmanager
async def serving(
    store: Store, app: FunctionApp, access: Access | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    web_app = build_app(
        DurableClient(store, app), app, rpc_base_url="http://127.0.0.1:1/unused/", access=access
    )
    async with asgi(web_app, "http://127.0.0.1") as http:
        yield http


async def action(http: httpx.AsyncClient, expected: int, **fields: str) -> str:
    response = await http.post("/dashboard/actions", data=fields, headers=JSON_FORM)
    assert response.status_code == expected, response.text
    message: str = response.json()["message"]
    return message


# --- JSON nested too deep (item 5) -------------------------------------------------------------


@pytest.mark.parametrize("depth", [257, 1100])
async def test_json_nested_too_deep_is_a_400_on_every_way_in(
    hub: Store, sec_app: FunctionApp, depth: int
) -> None:
    # 1100 levels failed json.loads itself (a 500), 257 was stored and broke every list.
    deep = nested(depth)
    client = DurableClient(hub, sec_app)
    await client.start_new("waiter", "w")
    async with serving(hub, sec_app) as http:
        started = await http.post(f"{BASE}/orchestrators/hello/deep", content=deep)
        assert started.status_code == 400, started.text
        assert "nested more than 256 levels" in started.json()["ExceptionMessage"]
        # The SDK's double-encoded form: a JSON string holding the JSON text.
        sdk_form = await http.post(f"{BASE}/orchestrators/hello/deep", json=deep)
        assert sdk_form.status_code == 400, sdk_form.text
        raised = await http.post(
            f"{BASE}/instances/w/raiseEvent/go",
            content=deep,
            headers={"content-type": "application/json"},
        )
        assert raised.status_code == 400 and "nested more than" in raised.text
        signal = await http.post(
            f"{BASE}/entities/counter/k",
            params={"op": "add"},
            content=deep,
            headers={"content-type": "application/json"},
        )
        assert signal.status_code == 400 and "nested more than" in signal.text
        message = await action(http, 400, action="start", name="hello", input=deep)
        assert "nested more than 256 levels" in message
        message = await action(
            http, 400, action="raise", instance_id="w", event_name="go", event_data=deep
        )
        assert "nested more than 256 levels" in message
    with pytest.raises(InvalidArgumentError, match="nested more than"):
        await DurableClient(hub, sec_app, payload_bytes=10_000).start_new("hello", None, deep)
    assert await hub.count_instances(InstanceQuery()) == 1  # the waiter only
    assert await hub.get_instance("@counter@k") is None


async def test_json_nested_to_the_limit_is_accepted_and_shown(
    hub: Store, sec_app: FunctionApp
) -> None:
    async with serving(hub, sec_app) as http:
        started = await http.post(f"{BASE}/orchestrators/hello/ok", content=nested(256))
        assert started.status_code == 202, started.text
        listed = await http.get(f"{BASE}/instances")
        assert listed.status_code == 200 and listed.json()[0]["input"] == json.loads(nested(256))
        assert (await http.get("/dashboard/instance", params={"id": "ok"})).status_code == 200
        download = await http.get("/dashboard/instance/history.json", params={"id": "ok"})
        assert download.status_code == 200


async def test_deep_json_through_the_rpc_path_and_the_apps_own_client(
    enforced: httpx.AsyncClient, enforced_access: Access
) -> None:
    rpc = f"{RPC_PATH}{enforced_access.rpc_token}"
    refused = await enforced.post(f"{rpc}/orchestrators/hello", content=nested(300))
    assert refused.status_code == 400 and "nested more than" in refused.text
    async with TestHost(APP_DIR) as host, httpx.AsyncClient(base_url=host.origin) as http:
        with pytest.raises(Exception, match="nested more than 256 levels"):
            await host.client.start_new("hello", None, json.loads(nested(300)))
        # An HTTP starter passing a caller's body on: its client call is refused the same way.
        through_app = await http.post("/api/start/hello", content=nested(300))
        assert through_app.status_code == 500  # the function did not catch the SDK's exception
        assert (await http.get(f"{BASE}/instances")).json() == []


async def test_a_stored_document_that_cannot_be_shown_breaks_only_its_own_field(
    store: Store, sec_app: FunctionApp
) -> None:
    """Written before the limit (or by user code): the list, the status, the dashboard and the
    download all still answer, showing the stored text for that one field."""
    deep = nested(1000)
    now = utcnow()
    for instance_id, text in (("deep", deep), ("plain", '{"a": 1}'), ("lone", '"\\ud800"')):
        request = StartRequest(
            instance_id=instance_id,
            name="hello",
            execution_id=uuid.uuid4().hex,
            created_at=now,
            input=text,
        )
        assert await store.create_instance(request)
    await finish(store, "deep", output=deep)
    async with serving(store, sec_app) as http:
        listed = await http.get(f"{BASE}/instances")
        assert listed.status_code == 200, listed.text
        by_id = {item["instanceId"]: item for item in listed.json()}
        assert by_id["deep"]["input"] == deep and by_id["deep"]["output"] == deep
        assert by_id["plain"]["input"] == {"a": 1}
        assert by_id["lone"]["input"] == "\ud800"
        status = await http.get(f"{BASE}/instances/deep", params={"showHistory": "true"})
        assert status.status_code == 200, status.text
        assert (await http.get("/dashboard/")).status_code == 200
        page = await http.get("/dashboard/instance", params={"id": "deep"})
        assert page.status_code == 200 and "nested more than 256 levels deep" in page.text
        assert (await http.get("/dashboard/instance", params={"id": "lone"})).status_code == 200
        download = await http.get("/dashboard/instance/history.json", params={"id": "deep"})
        assert download.status_code == 200


# --- NUL and control characters, store errors (item 6) -----------------------------------------

# Each of these reached the store with a NUL: PostgreSQL answered 500 with its URL.
NUL_REQUESTS = [
    ("GET", f"{BASE}/instances/a%00b"),
    ("DELETE", f"{BASE}/instances/a%00b"),
    ("POST", f"{BASE}/instances/a%00b/terminate"),
    ("POST", f"{BASE}/instances/a%00b/suspend"),
    ("POST", f"{BASE}/instances/a%00b/resume"),
    ("POST", f"{BASE}/instances/a%00b/rewind"),
    ("POST", f"{BASE}/instances/a%00b/restart"),
    ("POST", f"{BASE}/instances/a%00b/raiseEvent/go"),
    ("POST", f"{BASE}/instances/w/raiseEvent/g%00o"),
    ("POST", f"{BASE}/instances/w/suspend?reason=a%00b"),
    ("GET", f"{BASE}/instances?instanceIdPrefix=a%00"),
    ("GET", f"{BASE}/instances?name=a%00"),
    ("DELETE", f"{BASE}/instances?createdTimeFrom=2020-01-01T00:00:00Z&instanceIdPrefix=%00"),
    ("DELETE", f"{BASE}/instances?createdTimeFrom=2020-01-01T00:00:00Z&name=%00"),
    ("POST", f"{BASE}/orchestrators/hello?version=a%00"),
    ("POST", f"{BASE}/orchestrators/hello/a%00b"),
    ("POST", f"{BASE}/orchestrators/hello/%20a"),
    ("POST", f"{BASE}/orchestrators/hello/a%C2%A0"),
    ("GET", f"{BASE}/entities/count%00er/k"),
    ("GET", f"{BASE}/entities/counter/k%00"),
    ("GET", f"{BASE}/entities/count%00er"),
    ("POST", f"{BASE}/entities/counter/k%00?op=add"),
    ("POST", f"{BASE}/entities/counter/k?op=a%00dd"),
    ("POST", f"{BASE}/entities/counter/%20k?op=add"),
    ("DELETE", f"{BASE}/entities/counter/k%00"),
    ("GET", "/dashboard/instance?id=a%00b"),
    ("GET", "/dashboard/instance/history.json?id=a%00b"),
    ("GET", "/dashboard/?prefix=a%00"),
    ("GET", "/dashboard/?name=a%00"),
]


async def test_nul_and_control_characters_are_a_400_on_every_backend(
    store: Store, sec_app: FunctionApp
) -> None:
    await DurableClient(store, sec_app).start_new("waiter", "w")
    async with serving(store, sec_app) as http:
        for method, url in NUL_REQUESTS:
            response = await http.request(method, url, json=1 if method == "POST" else None)
            assert response.status_code == 400, (method, url, response.text)
            assert "127.0.0.1" not in response.text and "sqlite" not in response.text, url
            if url.startswith(BASE):
                assert response.json()["ExceptionMessage"], url
        assert (await http.get("/dashboard/go", params={"id": "a\x00b"})).status_code == 400
        # An entity takes operations, not orchestration events: an event named "op" would
        # have run as one.
        await DurableClient(store, sec_app).signal_entity("counter", "k", "add", "1")
        for verb in ("terminate", "suspend", "resume", "rewind", "restart", "raiseEvent/op"):
            refused = await http.post(f"{BASE}/instances/@counter@k/{verb}", json=1)
            assert refused.status_code == 400 and "is an entity's" in refused.text, verb
        # Too long to be any instance's id: not found, without asking the store (Azure
        # Storage keys could not even hold it).
        long_id = "x" * 300
        assert (await http.get(f"{BASE}/instances/{long_id}")).status_code == 404
        assert (await http.post(f"{BASE}/instances/{long_id}/terminate")).status_code == 404
        assert (await http.delete(f"{BASE}/instances/{long_id}")).status_code == 404
        assert (await http.get(f"{BASE}/entities/counter/{long_id}")).status_code == 404
        assert (await http.get(f"{BASE}/entities/{long_id}")).json() == []
        for bad_id in ("..", ".", " a", "a\u2028"):
            message = await action(http, 400, action="start", name="hello", instance_id=bad_id)
            assert "Instance ID" in message
        message = await action(http, 400, action="raise", instance_id="w", event_name="a\nb")
        assert "control character" in message
        message = await action(http, 400, action="suspend", instance_id="w", reason="a\x00b")
        assert "NUL" in message
    client = DurableClient(store, sec_app)
    for key in (".", "..", " k", "k ", "k\x00"):
        with pytest.raises(InvalidInstanceIdError):
            await client.signal_entity("counter", key, "add", "1")
    with pytest.raises(InvalidInstanceIdError, match="longer than 256"):
        await client.signal_entity("counter", "k" * 250, "add", "1")
    listed = (await store.query_instances(InstanceQuery())).instances
    assert sorted(i.instance_id for i in listed) == ["@counter@k", "w"]
    # Ids that could be stored before stay reachable: only control characters are refused.
    assert (await client.get_status(" legacy")) is None


async def test_store_errors_answer_an_error_id_never_the_stores_url(
    store: Store, sec_app: FunctionApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(store, sec_app) as http:
        await store.close()
        caplog.set_level(logging.ERROR)
        api = await http.get(f"{BASE}/instances/x")
        assert api.status_code == 500
        detail = api.json()["ExceptionMessage"]
        found = re.search(r"error id ([0-9a-f]{12})", detail)
        assert found, detail
        scrape = await http.get("/admin/metrics")
        assert scrape.status_code == 503 and "error id" in scrape.text
        page = await http.get("/dashboard/")
        assert page.status_code in (500, 503)  # a closed Azure store raises no StoreError
        page_id = re.search(r"error id ([0-9a-f]{12})", page.text)
        assert page_id, page.text
        for text in (api.text, page.text, scrape.text):
            for leak in ("127.0.0.1", "postgres", "sqlite", str(tmp_path), "devstoreaccount"):
                assert leak not in text
        assert found.group(1) in caplog.text and page_id.group(1) in caplog.text


# --- reasons (item 7) --------------------------------------------------------------------------


async def test_reasons_obey_the_payload_limit_from_the_dashboard_too(
    hub: Store, sec_app: FunctionApp
) -> None:
    client = DurableClient(hub, sec_app)
    await client.start_new("waiter", "w")
    await client.start_new("waiter", "v")
    long = "r" * 2000  # the app's payloadBytes is 1000
    async with serving(hub, sec_app) as http:
        for verb in ("terminate", "suspend", "resume", "rewind"):
            message = await action(http, 413, action=verb, instance_id="w", reason=long)
            assert "payloadBytes" in message, verb
            api = await http.post(f"{BASE}/instances/w/{verb}", params={"reason": long})
            assert api.status_code == 413, (verb, api.text)
        bulk = await action(http, 413, action="bulk", bulk="terminate", reason=long)
        assert "payloadBytes" in bulk
        ok = await action(http, 200, action="terminate", instance_id="w", reason="r" * 100)
        assert "Terminate requested" in ok
    await finish(hub, "w", OrchestrationStatus.TERMINATED)
    instance = await hub.get_instance("v")
    assert instance is not None and instance.status is OrchestrationStatus.PENDING
    # Only the accepted terminate reached the store.
    history = await hub.get_history("w")
    assert [e.input for e in history if e.type.name == "EXECUTION_TERMINATED"] == [
        json.dumps("r" * 100)
    ]
