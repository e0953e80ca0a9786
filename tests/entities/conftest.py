"""Fixtures for entities and durable HTTP: the entity test apps served by a live uvicorn server
with the engine running, and the SDK's client pointed at it."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import azure.durable_functions as df
import httpx
import pytest
from starlette.applications import Starlette

from dfhost.app.functions import FunctionApp
from dfhost.app.loader import load_app
from dfhost.client import DurableClient
from dfhost.history import Instance
from dfhost.runtime.engine import Engine
from dfhost.store import Store, open_store
from dfhost.web import build_app
from dfhost.wire import client_binding
from tests.web.conftest import BASE, live_server

APPS = Path(__file__).resolve().parents[1] / "apps"

# The engine runs orchestrators and entities in its own threads, where pytest's per-test
# `error` filter would turn the SDK's one-time "df_loads was called without expected_type"
# advice into a failure of the user code.
pytestmark = pytest.mark.filterwarnings(
    "ignore:azure.functions df_loads was called without expected_type:DeprecationWarning"
)


def load(name: str) -> FunctionApp:
    app = load_app(APPS / name)
    assert app.errors == [], app.errors
    return app


@dataclass
class Live:
    """A running host: the store, dfhost's client, the SDK's client, an HTTP client."""

    store: Store
    client: DurableClient
    sdk: df.DurableOrchestrationClient
    http: httpx.AsyncClient
    origin: str
    web_app: Starlette

    @property
    def api(self) -> str:
        return f"{self.origin}{BASE}"

    async def run(self, name: str, input_value: object = None) -> Instance:
        instance_id = await self.client.start_new(name, input_text=json.dumps(input_value))
        finished = await self.client.wait_for_completion(instance_id, timeout=20, interval=0.02)
        assert finished is not None and finished.output is not None, f"{name} did not finish"
        return finished


async def serve(store: Store, app: FunctionApp) -> AsyncIterator[Live]:
    client = DurableClient(store, app)
    web_app = build_app(client, app, rpc_base_url="http://placeholder/")
    engine = Engine(app, store)
    await engine.start()
    try:
        async with live_server(web_app) as origin, httpx.AsyncClient(timeout=20) as http:
            starter = client_binding(origin=origin, hub_name="Hub", rpc_base_url=f"{origin}{BASE}/")
            sdk = df.DurableOrchestrationClient(json.dumps(starter))
            yield Live(store, client, sdk, http, origin, web_app)
    finally:
        await engine.stop()


@pytest.fixture(scope="session")
def apps() -> dict[str, FunctionApp]:
    return {name: load(name) for name in ("entities_v1", "entities_v2")}


@pytest.fixture(params=["entities_v1", "entities_v2"])
async def live(
    request: pytest.FixtureRequest, store: Store, apps: dict[str, FunctionApp]
) -> AsyncIterator[Live]:
    """The entity app in both programming models, on every selected backend."""
    async for running in serve(store, apps[request.param]):
        yield running


@pytest.fixture
async def live_v2(store: Store, apps: dict[str, FunctionApp]) -> AsyncIterator[Live]:
    """The v2 app only, for what does not depend on the programming model."""
    async for running in serve(store, apps["entities_v2"]):
        yield running


@pytest.fixture
async def busy_live(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, apps: dict[str, FunctionApp]
) -> AsyncIterator[Live]:
    """`live_v2` for many small writes: on SQLite, commits skip the fsync (synchronous=normal,
    as the PostgreSQL test hubs skip it), which would otherwise be nearly all of the time."""
    if backend == "sqlite":
        store = open_store(f"sqlite:///{tmp_path / 'busy.db'}?synchronous=normal")
    else:  # a hub of its own in the run's throwaway database
        database = request.getfixturevalue("postgres_database")
        store = open_store(f"{database}&hub=busy{uuid.uuid4().hex[:12]}")
    await store.start()
    try:
        async for running in serve(store, apps["entities_v2"]):
            yield running
    finally:
        await store.close()
