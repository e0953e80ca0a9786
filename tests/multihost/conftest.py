"""Fixtures for tests that run several hosts on one PostgreSQL task hub (a fresh hub each)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dfhost.app.functions import FunctionApp
from dfhost.app.loader import load_app
from dfhost.store import Store, open_store
from tests.conftest import selected_backends

APP = Path(__file__).resolve().parent / "app"


@pytest.fixture
def hub_url(request: pytest.FixtureRequest) -> str:
    """A fresh task hub in this run's PostgreSQL database."""
    if "postgres" not in selected_backends(request.config):
        pytest.skip("multi-host tests run on PostgreSQL, which --backend did not select")
    database: str = request.getfixturevalue("postgres_database")
    return f"{database}&hub=M{uuid.uuid4().hex[:16]}"


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the app's activities record their runs (see app/function_app.py)."""
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("DFHOST_MH_STATE", str(state))
    return state


@pytest.fixture(scope="module")
def app() -> FunctionApp:
    loaded = load_app(APP)
    assert loaded.errors == []
    return loaded


@pytest.fixture
async def client_store(hub_url: str) -> AsyncIterator[Store]:
    """The test's own connection to the hub, as a client in another process would have."""
    store = open_store(hub_url)
    await store.start()
    yield store
    await store.close()
