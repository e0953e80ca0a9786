from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from azure.durable_functions.models.utils import http_utils

from tests.e2e.harness import APPS, HostProcess


@pytest.fixture
async def sdk_session() -> AsyncIterator[None]:
    # The SDK keeps one module-level aiohttp session, bound to the loop that created it;
    # each test has its own loop, so close it before the loop goes away.
    yield
    await http_utils._close_session()


@pytest.fixture
def e2e_host(tmp_path: Path, sdk_session: None) -> Iterator[HostProcess]:
    state = tmp_path / "state"
    state.mkdir()
    host = HostProcess(
        APPS / "e2e_v2",
        f"sqlite:///{tmp_path / 'hub.sqlite3'}",
        env={"DFHOST_E2E_STATE": str(state)},
    ).start()
    yield host
    host.stop()
