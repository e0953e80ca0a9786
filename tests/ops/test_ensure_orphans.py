"""Ensure-running at startup (atomic across hosts and restarts), and the startup report of
orphaned instances and overdue timers, with the orphans ended without replay."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from dfhost.client import DurableClient
from dfhost.history import EventType, OrchestrationStatus, utcnow
from dfhost.runtime.engine import Engine
from dfhost.store import InstanceQuery, Store, open_store
from dfhost.web import build_app
from tests.waiting import eventually
from tests.web.conftest import asgi

from .conftest import BASE, SDK_ADVICE, copy_ops_app, load_ops_app, wait_status

pytestmark = pytest.mark.filterwarnings(SDK_ADVICE)
Status = OrchestrationStatus


async def test_concurrent_ensure_creates_exactly_one_instance(store: Store, state: Path) -> None:
    app = load_ops_app()
    hosts = [store, *(open_store(store.url) for _ in range(3))]
    for other in hosts[1:]:
        await other.start()
    try:
        clients = [DurableClient(s, app) for s in hosts]
        started = await asyncio.gather(
            *(clients[i % 4].ensure_running("singleton", "eternal", "0") for i in range(16))
        )
        assert started.count(True) == 1
        assert (await store.count_instances(InstanceQuery())) == 1
        first = await store.get_instance("singleton")
        assert first is not None

        # A restart (or a late host) finds it unfinished and leaves it alone.
        engine = Engine(app, store)
        await engine.start()
        try:
            await wait_status(clients[0], "singleton", Status.RUNNING)
            assert await clients[1].ensure_running("singleton", "eternal", "0") is False
        finally:
            await engine.stop()
        again = await store.get_instance("singleton")
        assert again is not None and again.execution_id == first.execution_id
    finally:
        for other in hosts[1:]:
            await other.close()


async def test_orphans_are_reported_and_ended_without_replay(
    tmp_path: Path, store: Store, state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app_dir = copy_ops_app(tmp_path / "app")
    old_app = load_ops_app(app_dir)
    engine = Engine(old_app, store)
    await engine.start()
    client = DurableClient(store, old_app)
    try:
        for instance_id in ("orphan-1", "orphan-2"):
            await client.start_new("waiter", instance_id)
            await wait_status(client, instance_id, Status.RUNNING)
    finally:
        await engine.stop()

    # The orchestrator is renamed in the app's code.
    code = app_dir / "function_app.py"
    code.write_text(code.read_text().replace("def waiter(", "def waiter_v2("))
    new_app = load_ops_app(app_dir)
    assert new_app.orchestrator("waiter") is None
    caplog.set_level(logging.INFO, logger="dfhost")
    engine = Engine(new_app, store)
    await engine.start()
    try:
        lines = [r.getMessage() for r in caplog.records if "orphaned instance" in r.getMessage()]
        assert len(lines) == 2
        assert "'orphan-1' (Running): its orchestrator 'waiter' is not in this app" in lines[1]
        assert "`dfhost instances terminate orphan-1`" in lines[1]

        web_app = build_app(DurableClient(store, new_app), new_app, rpc_base_url="http://x/")
        async with asgi(web_app) as http:
            response = await http.post(f"{BASE}/instances/orphan-1/terminate?reason=renamed")
            assert response.status_code == 202
            ended = await wait_status(client, "orphan-1", Status.TERMINATED)
            assert ended.output == '"renamed"'
            history = await client.get_history("orphan-1")
            assert history[-2].type is EventType.EXECUTION_TERMINATED
            # Purge needs no replay either, terminated or not.
            assert (await http.delete(f"{BASE}/instances/orphan-1")).status_code == 200
            assert (await http.delete(f"{BASE}/instances/orphan-2")).status_code == 200
            assert (await http.get(f"{BASE}/instances/orphan-2")).status_code == 404
    finally:
        await engine.stop()


async def test_overdue_timers_are_reported_and_fire_at_startup(
    store: Store, state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = load_ops_app()
    client = DurableClient(store, app)
    engine = Engine(app, store)
    await engine.start()
    try:
        await client.start_new("nap_then_wait", "sleepy", "1")

        async def timer_created() -> bool:
            history = await client.get_history("sleepy")
            return any(e.type is EventType.TIMER_CREATED for e in history)

        await eventually(timer_created, timeout=15)
    finally:
        await engine.stop()
    # The host is down while the timer falls due.
    await eventually(lambda: store.overdue_timers(utcnow(), 10), timeout=15)

    caplog.set_level(logging.INFO, logger="dfhost")
    engine = Engine(app, store)
    await engine.start()
    try:
        [line] = [r.getMessage() for r in caplog.records if "fell due" in r.getMessage()]
        assert line.startswith("dfhost: instance 'sleepy' has 1 timer(s) that fell due")

        async def fired() -> bool:
            history = await client.get_history("sleepy")
            return any(e.type is EventType.TIMER_FIRED for e in history)

        await eventually(fired, timeout=15)
        await client.raise_event("sleepy", "Go", '"now"')
        done = await wait_status(client, "sleepy", Status.COMPLETED)
        assert done.output == '{"timer": "fired", "event": "now"}'
    finally:
        await engine.stop()


async def test_rewind_of_an_orphan_is_refused(
    store: Store, state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = load_ops_app()
    client = DurableClient(store, app)
    (state / "broken-lost").touch()
    engine = Engine(app, store)
    await engine.start()
    try:
        await client.start_new("steps", "lost", '"lost"')
        await wait_status(client, "lost", Status.FAILED)
    finally:
        await engine.stop()
    app.functions.pop("steps")
    web_app = build_app(client, app, rpc_base_url="http://x/")
    async with asgi(web_app) as http:
        response = await http.post(f"{BASE}/instances/lost/rewind")
    assert response.status_code == 400
    assert "The function 'steps' doesn't exist" in response.json()["ExceptionMessage"]

    # A client without the app (the CLI) can ask; the host refuses in its log.
    engine = Engine(app, store)
    await engine.start()
    try:
        assert await DurableClient(store).rewind("lost", "try") == "sent"
        await eventually(lambda: _logged(caplog, "cannot rewind lost"), timeout=15)
        status = await client.get_status("lost")
        assert status is not None and status.status is Status.FAILED
    finally:
        await engine.stop()


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records)


async def test_ensure_over_http_sees_the_same_singleton(store: Store, state: Path) -> None:
    # An instance ensured at startup refuses a second start of its id on the API (409).
    app = load_ops_app()
    client = DurableClient(store, app)
    assert await client.ensure_running("keeper", "waiter") is True
    web_app = build_app(client, app, rpc_base_url="http://x/")
    async with asgi(web_app) as http:
        response = await http.post(f"{BASE}/orchestrators/waiter/keeper")
    assert response.status_code == 409
