"""The apps these tests run, and a task hub with instances recorded on tests/apps/replay_v1
for replaying on replay_v2."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from dfhost.testing import TestHost

APPS = Path(__file__).resolve().parents[1] / "apps"
EXAMPLE_APP = Path(__file__).resolve().parents[2] / "examples" / "eternal_timer"
"""The article's scenario: an eternal loop of an activity, a 1-minute timer, continue_as_new."""
AFTER_CONTINUE = APPS / "after_continue_v1"
"""A loop whose code goes on after continue_as_new."""
V1, V2 = APPS / "replay_v1", APPS / "replay_v2"
WAITING = (
    "steady",
    "renamed",
    "timer_instead",
    "input_kind",
    "fewer_tasks",
    "input_value",
    "timer_then_wait",
)
"""Version 1 orchestrators that wait for the event "go" with their calls recorded."""


@pytest.fixture(scope="session")
def recorded_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite task hub file where one instance of each of `WAITING` (its id is its name)
    ran on version 1 and now waits for "go"; recorded once, copied by `hub`."""
    path = tmp_path_factory.mktemp("replay_v1") / "hub.sqlite3"

    async def record() -> None:
        async with TestHost(V1, store_url=f"sqlite:///{path}?synchronous=normal") as host:
            for name in WAITING:
                await host.client.start_new(name, name)
            await host.advance()  # run all there is to run: each instance waits for "go"
            for name in WAITING:
                status = await host.client.get_status(name)
                assert status.runtime_status is OrchestrationRuntimeStatus.Running

    asyncio.run(record())  # a sync fixture: no event loop is running here
    return path


@pytest.fixture
def hub(recorded_hub: Path, tmp_path: Path) -> str:
    """The URL of a fresh copy of `recorded_hub`."""
    copy = tmp_path / "hub.sqlite3"
    shutil.copyfile(recorded_hub, copy)
    return f"sqlite:///{copy}?synchronous=normal"
