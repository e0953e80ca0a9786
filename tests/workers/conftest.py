from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from azure.durable_functions.models.utils import http_utils

from tests.e2e.harness import APPS, HostProcess

WORKERS_APP = APPS / "workers_v2"

HostFactory = Callable[..., HostProcess]


@pytest.fixture
async def sdk_session() -> AsyncIterator[None]:
    # The SDK's module-level aiohttp session is bound to the loop of the test that made it.
    yield
    await http_utils._close_session()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    folder = tmp_path / "state"
    folder.mkdir()
    return folder


@pytest.fixture
def start_host(tmp_path: Path, state: Path, sdk_session: None) -> Iterator[HostFactory]:
    """Starts `dfhost start` on the workers app (or `app`), stopped after the test."""
    hosts: list[HostProcess] = []

    def start(
        *extra: str, workers: str | None = "2", app: Path = WORKERS_APP, **env: str
    ) -> HostProcess:
        environment = {"DFHOST_WORKERS_STATE": str(state), **env}
        if workers is not None:
            environment["FUNCTIONS_WORKER_PROCESS_COUNT"] = workers
        host = HostProcess(app, f"sqlite:///{tmp_path / 'hub.sqlite3'}", environment, extra)
        hosts.append(host)
        return host.start()

    yield start
    for host in hosts:
        host.stop()
