"""Fixtures for the operations tests: the ops app with its switch folder, a task hub with an
engine running it, the management API in-process, and `dfhost start` with extra arguments."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from dfhost.app.functions import FunctionApp
from dfhost.app.loader import load_app
from dfhost.client import DurableClient
from dfhost.history import TERMINAL_STATUSES, Instance, OrchestrationStatus
from dfhost.runtime.engine import Engine
from dfhost.store import Store
from dfhost.web import build_app
from tests.e2e.harness import HostProcess
from tests.waiting import eventually, eventually_blocking
from tests.web.conftest import asgi

OPS_APP = Path(__file__).resolve().parent / "apps" / "ops_app"
BASE = "/runtime/webhooks/durabletask"
Status = OrchestrationStatus

# The engine replays orchestrators in its own threads, where pytest's `error` filter would turn
# the SDK's one-time df_loads advice into a failed orchestration.
SDK_ADVICE = "ignore:azure.functions df_loads was called without expected_type:DeprecationWarning"


def load_ops_app(root: Path = OPS_APP) -> FunctionApp:
    app = load_app(root)
    assert app.errors == [], app.errors
    return app


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The app's switch folder (DFHOST_OPS_STATE); every gate opens at teardown."""
    folder = tmp_path / "state"
    folder.mkdir()
    monkeypatch.setenv("DFHOST_OPS_STATE", str(folder))
    yield folder
    (folder / "open-all").touch()


@pytest.fixture
def ops_app(state: Path) -> FunctionApp:
    return load_ops_app()


@dataclass
class Hub:
    store: Store
    client: DurableClient
    engine: Engine
    app: FunctionApp
    state: Path

    def calls(self, key: str) -> int:
        counter = self.state / f"calls-{key}"
        return len(counter.read_text()) if counter.exists() else 0


@pytest.fixture
async def hub(store: Store, ops_app: FunctionApp, state: Path) -> AsyncIterator[Hub]:
    engine = Engine(ops_app, store)
    await engine.start()
    try:
        yield Hub(store, DurableClient(store, ops_app), engine, ops_app, state)
    finally:
        (state / "open-all").touch()
        await engine.stop()


@pytest.fixture
async def http(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    """The management API of `hub`, in-process."""
    web_app = build_app(hub.client, hub.app, rpc_base_url="http://127.0.0.1:1/unused/")
    async with asgi(web_app) as client:
        yield client


async def wait_status(
    client: DurableClient, instance_id: str, *statuses: Status, within: float = 15.0
) -> Instance:
    """The instance once it is in one of `statuses` (any finished one, if none are given)."""
    wanted = set(statuses) or set(TERMINAL_STATUSES)
    found = await eventually(
        lambda: client.get_status(instance_id),
        lambda seen: seen is not None and seen.status in wanted,
        timeout=within,
        interval=0.02,
        what=f"{instance_id} in {sorted(wanted)}",
    )
    assert found is not None
    return found


def copy_ops_app(target: Path) -> Path:
    """A private copy of the ops app (tests that edit the app's code or host.json)."""
    shutil.copytree(OPS_APP, target, ignore=shutil.ignore_patterns("__pycache__", ".dfhost"))
    return target


class OpsHost(HostProcess):
    """`dfhost start` with extra arguments (e.g. --ensure); refused starts are reported, not
    raised, so two hosts can race."""

    def __init__(self, app_dir: Path, store_url: str, state: Path, *extra: str) -> None:
        super().__init__(app_dir, store_url, env={"DFHOST_OPS_STATE": str(state)}, extra=extra)

    def launch(self) -> OpsHost:
        super().launch()
        return self

    def start(self, timeout: float = 30.0) -> OpsHost:
        super().start(timeout)
        return self


def status_of(host: OpsHost, instance_id: str, *, query: str = "") -> dict[str, Any]:
    """The management API's status of `instance_id` from `host` ({} when there is none)."""
    response = httpx.get(f"{host.origin}{BASE}/instances/{instance_id}{query}")
    return response.json() if response.content else {}


def wait_http(host: OpsHost, instance_id: str, status: str, within: float = 15.0) -> dict[str, Any]:
    """`status_of` once its runtimeStatus is `status`."""
    return eventually_blocking(
        lambda: status_of(host, instance_id),
        lambda body: body.get("runtimeStatus") == status,
        timeout=within,
        interval=0.02,
        what=f"{instance_id} {status}",
    )


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`python -m dfhost ...` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "dfhost", *args],
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
        env={**os.environ},
    )
