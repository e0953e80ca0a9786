"""Helpers for the timer tests: the timer test apps, their run logs, a store on a file."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest

from dfhost.app.functions import FunctionApp
from dfhost.app.loader import load_app
from dfhost.store import Store, open_store
from tests.e2e.conftest import sdk_session  # noqa: F401  (the e2e tests' fixture)

APPS = Path(__file__).resolve().parents[1] / "apps"
V2_TIMERS = ("slow", "every_minute", "tick", "starter")


def disabled_except(enabled: Iterable[str]) -> dict[str, str]:
    """App settings that switch off every timer of timers_v2 but `enabled`."""
    keep = set(enabled)
    return {f"AzureWebJobs.{name}.Disabled": "true" for name in V2_TIMERS if name not in keep}


def load_timers_app(
    monkeypatch: pytest.MonkeyPatch, runs: Path, enabled: Iterable[str], **settings: str
) -> FunctionApp:
    monkeypatch.setenv("DFHOST_TIMERS_LOG", str(runs))
    for key, value in {**disabled_except(enabled), **settings}.items():
        monkeypatch.setenv(key, value)
    app = load_app(APPS / "timers_v2")
    assert app.errors == [], app.errors
    return app


def read_runs(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.fixture
def hub_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hub.sqlite3'}"


@pytest.fixture
async def hub(hub_url: str) -> AsyncIterator[Store]:
    store = open_store(hub_url)
    await store.start()
    try:
        yield store
    finally:
        await store.close()
