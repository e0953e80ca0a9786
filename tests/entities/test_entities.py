"""Durable entities end to end: the counter entity (v1 and v2 models) driven through the
management API, the client binding, the SDK's client and an orchestrator, on every backend."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from typing import Any

import azure.durable_functions as df

from dfhost.history import EventType, OrchestrationStatus
from dfhost.logs import configure_console
from tests.waiting import eventually
from tests.web.conftest import BASE, asgi

from .conftest import Live, pytestmark  # noqa: F401 - the module's warning filter


async def entity_state(live: Live, path: str) -> tuple[int, Any]:
    response = await live.http.get(f"{live.api}/entities/{path}")
    return response.status_code, response.json() if response.status_code == 200 else None


async def state_becomes(live: Live, path: str, expected: Any) -> None:
    await eventually(lambda: entity_state(live, path), lambda found: found == (200, expected))


async def test_a_counter_through_the_management_api(live: Live) -> None:
    signal = f"{live.api}/entities/Counter/k1?op=add"
    assert (await live.http.post(signal, json=5)).status_code == 202
    # Names are case-insensitive; the SDK's double-encoded body means the same value.
    assert (await live.http.post(signal.replace("Counter", "COUNTER"), json="3")).status_code == 202
    await state_becomes(live, "counter/k1", 8)
    assert await entity_state(live, "counter/k2") == (404, None)
    assert (await live.client.get_status("@counter@k1")) is not None

    unknown = await live.http.post(f"{live.api}/entities/Nope/k?op=add", json=1)
    assert unknown.status_code == 400
    assert "'Nope' doesn't exist" in unknown.json()["ExceptionMessage"]
    no_op = await live.http.post(f"{live.api}/entities/Counter/k1", json=1)
    assert no_op.status_code == 400
    assert "'op'" in no_op.json()["ExceptionMessage"]


async def test_a_counter_through_the_sdk_client_and_the_client_binding(live: Live) -> None:
    for value in (4, 6):
        response = await live.http.post(f"{live.origin}/api/entity/k2/add", json=value)
        assert response.status_code == 202
    await state_becomes(live, "counter/k2", 10)
    response = await live.http.get(f"{live.origin}/api/entity/k2")
    assert response.json() == {"exists": True, "state": 10}
    response = await live.http.get(f"{live.origin}/api/entity/never")
    assert response.json() == {"exists": False, "state": None}

    # The same client, used directly.
    counter = df.EntityId("Counter", "k3")
    await live.sdk.signal_entity(counter, "add", 7)
    await live.sdk.signal_entity(counter, "add", 0)  # the SDK sends no body for falsy input
    await live.sdk.signal_entity(df.EntityId("counter", "k3"), "add", 1)

    await eventually(
        lambda: live.sdk.read_entity_state(counter),
        lambda state: state.entity_exists and state.entity_state == 8,
    )
    missing = await live.sdk.read_entity_state(df.EntityId("Counter", "none"))
    assert (missing.entity_exists, missing.entity_state) == (False, None)


async def test_an_orchestrator_signals_then_calls_in_order(live: Live) -> None:
    console = io.StringIO()
    configure_console(stream=console)
    try:
        finished = await live.run("CounterOrchestrator", "k4")
    finally:
        root = logging.getLogger()
        root.handlers[:] = [h for h in root.handlers if not getattr(h, "_dfhost", False)]
    assert finished.status is OrchestrationStatus.COMPLETED
    # The failing operation ("fail" adds 1000, then raises) left the state as it was, and
    # its caller got the error.
    assert json.loads(finished.output or "") == [5, 7, "nope", 7]
    await state_becomes(live, "counter/k4", 7)
    # The failure is logged as the entity's, with the user's traceback.
    logged = console.getvalue()
    assert re.search(
        r"(?i)counter \(@counter@k4\): Entity operation 'fail' failed: ValueError", logged
    )
    trace = logged.split("Traceback (most recent call last):")[1].split("ValueError: nope")[0]
    assert 'raise ValueError("nope")' in trace and "entities.py" not in trace
    history = await live.client.get_history(finished.instance_id)
    sent = [(e.event_id, e.name) for e in history if e.type is EventType.EVENT_SENT]
    assert sent == [(0, "add"), (1, "get"), (2, "add"), (3, "get"), (4, "fail"), (5, "get")]


async def test_deleting_an_entity(live_v2: Live) -> None:
    live = live_v2
    await live.http.post(f"{live.api}/entities/counter/gone?op=add", json=1)
    await state_becomes(live, "counter/gone", 1)
    assert (await live.http.delete(f"{live.api}/entities/counter/gone")).status_code == 202

    await eventually(lambda: entity_state(live, "counter/gone"), lambda found: found[0] == 404)
    assert (await live.http.get(f"{live.api}/entities/counter")).json() == []
    missing = await live.sdk.read_entity_state(df.EntityId("Counter", "gone"))
    assert missing.entity_exists is False
    # A later operation starts it afresh.
    await live.http.post(f"{live.api}/entities/counter/gone?op=add", json=2)
    await state_becomes(live, "counter/gone", 2)


async def test_listing_entities(live_v2: Live) -> None:
    live = live_v2
    for key in ("a", "b", "c"):
        await live.http.post(f"{live.api}/entities/counter/{key}?op=add", json=1)
    await live.http.post(f"{live.api}/entities/Ledger/x?op=push", json="entry")
    for path, expected in (("counter/a", 1), ("counter/b", 1), ("counter/c", 1)):
        await state_becomes(live, path, expected)
    await state_becomes(live, "ledger/x", ["entry"])

    everything = await live.http.get(f"{live.api}/entities?fetchState=true")
    assert everything.status_code == 200
    assert sorted(
        (e["entityId"]["name"], e["entityId"]["key"], e["state"]) for e in everything.json()
    ) == [
        ("counter", "a", 1),
        ("counter", "b", 1),
        ("counter", "c", 1),
        ("ledger", "x", ["entry"]),
    ]
    assert all(e["lastOperationTime"].endswith("Z") for e in everything.json())

    keys: list[str] = []
    headers: dict[str, str] = {}
    pages = 0
    while True:
        page = await live.http.get(f"{live.api}/entities/Counter?top=2", headers=headers)
        pages += 1
        assert all(e["state"] is None for e in page.json())  # fetchState defaults to false
        keys += [e["entityId"]["key"] for e in page.json()]
        token = page.headers.get("x-ms-continuation-token")
        if token is None:
            break
        headers = {"x-ms-continuation-token": token}
    assert (sorted(keys), pages) == (["a", "b", "c"], 2)

    # The empty key is spelled `$`.
    assert (
        await live.http.post(f"{live.api}/entities/ledger/$?op=push", json=1)
    ).status_code == 202
    await state_becomes(live, "ledger/$", [1])
    listed = await live.http.get(f"{live.api}/entities/LEDGER")
    assert sorted(e["entityId"]["key"] for e in listed.json()) == ["", "x"]

    later = await live.http.get(f"{live.api}/entities?lastOperationTimeFrom=2999-01-01T00:00:00Z")
    assert later.json() == []
    bad = await live.http.get(f"{live.api}/entities", headers={"x-ms-continuation-token": "x"})
    assert bad.status_code == 400


async def test_a_thousand_concurrent_signals_lose_no_update(busy_live: Live) -> None:
    # Ten clients of the management API, in-process (the HTTP stack of a live server adds
    # seconds and proves nothing more), each sending a hundred signals one after the other
    # while the engine runs batches.
    live = busy_live

    async def one_client() -> None:
        async with asgi(live.web_app) as http:
            for _ in range(100):
                response = await http.post(f"{BASE}/entities/Counter/busy?op=add", json=1)
                assert response.status_code == 202

    await asyncio.gather(*(one_client() for _ in range(10)))
    await state_becomes(live, "counter/busy", 1000)
