"""Fixtures for the HTTP surface: the test apps, an in-process ASGI client, a live uvicorn
server, and a helper that finishes instances through the store without an engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from azure.durable_functions.models.utils import http_utils
from starlette.applications import Starlette

from dfhost.app.functions import FunctionApp
from dfhost.app.loader import load_app
from dfhost.client import DurableClient
from dfhost.history import EventType, HistoryEvent, OrchestrationStatus, utcnow
from dfhost.store import Claim, Store
from dfhost.web import build_app
from dfhost.work import EpisodeOutcome, Message
from tests.waiting import eventually

APPS = Path(__file__).resolve().parents[1] / "apps"
BASE = "/runtime/webhooks/durabletask"


def load(name: str) -> FunctionApp:
    app = load_app(APPS / name)
    assert app.errors == [], app.errors
    return app


@pytest.fixture
def v1_app() -> FunctionApp:
    return load("http_v1")


@pytest.fixture
def v2_app() -> FunctionApp:
    return load("http_v2")


@pytest.fixture
def client(store: Store, v1_app: FunctionApp) -> DurableClient:
    return DurableClient(store, v1_app)


@asynccontextmanager
async def asgi(
    web_app: Starlette, base_url: str = "http://testhost"
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=web_app)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
        yield http


@pytest.fixture
async def http(client: DurableClient, v1_app: FunctionApp) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client for the v1 app's server (no lifespan, no engine)."""
    web_app = build_app(client, v1_app, rpc_base_url="http://127.0.0.1:1/unused/")
    async with asgi(web_app) as h:
        yield h


@asynccontextmanager
async def live_server(web_app: Starlette) -> AsyncIterator[str]:
    """Serve `web_app` with uvicorn on 127.0.0.1 and an ephemeral port; yields the origin.

    The port is known only after binding, so the app's rpc_base_url is set afterwards (HTTP
    functions read it per request)."""
    config = uvicorn.Config(
        web_app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started or task.done(), timeout=10, interval=0.01)
        if not server.started:
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        port = server.servers[0].sockets[0].getsockname()[1]
        origin = f"http://127.0.0.1:{port}"
        web_app.state.dfhost.rpc_base_url = f"{origin}{BASE}/"
        yield origin
    finally:
        server.should_exit = True
        await task
        # The SDK keeps one module-level aiohttp session bound to the loop that created it;
        # every test has its own loop, so close it before this one goes away.
        await http_utils._close_session()


async def finish(
    store: Store,
    instance_id: str,
    status: OrchestrationStatus = OrchestrationStatus.COMPLETED,
    output: str | None = '"done"',
    events: Sequence[HistoryEvent] = (),
) -> None:
    """Play the engine for one episode: consume the instance's messages and end it."""
    now = utcnow()
    works = await store.claim_episodes(
        Claim(owner="tests", now=now, lease_until=now + timedelta(minutes=1)), 100
    )
    work = None
    for w in works:
        if w.instance.instance_id == instance_id:
            work = w
        else:
            await store.abandon_episode("tests", w)
    assert work is not None, f"{instance_id} has no pending messages"
    started = HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=now)
    completed = HistoryEvent(
        type=EventType.EXECUTION_COMPLETED, timestamp=now, status=status, result=output
    )
    new_events = [started, *(m.event for m in work.messages), *events, completed]
    outcome = EpisodeOutcome(
        instance=replace(work.instance, status=status, output=output, last_updated_at=now),
        new_events=new_events,
        drop_pending_work=True,
    )
    await store.commit_episode("tests", work, outcome)


async def pending(store: Store, instance_id: str) -> list[Message]:
    """The instance's undelivered messages (claimed and released again)."""
    now = utcnow()
    works = await store.claim_episodes(
        Claim(owner="peek", now=now, lease_until=now + timedelta(minutes=1)), 100
    )
    found: list[Message] = []
    for w in works:
        if w.instance.instance_id == instance_id:
            found = w.messages
        await store.abandon_episode("peek", w)
    return found
