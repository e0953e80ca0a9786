"""Fixtures for the Azure Storage task hub's own tests, on the run's Azurite (`tests.azurite`).

They run when `--backend` selects azure; otherwise they are skipped, saying so. Each test gets
a task hub of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from azure.durable_functions.models.utils import http_utils

from tests.conftest import selected_backends

HUB_OVERRIDE = "AzureFunctionsJobHost__extensions__durableTask__hubName"
PROVIDER_OVERRIDE = "AzureFunctionsJobHost__extensions__durableTask__storageProvider__"


@pytest.fixture
def connection(request: pytest.FixtureRequest) -> str:
    """Azurite's connection string (failing the test if Azurite cannot be had)."""
    if "azure" not in selected_backends(request.config):
        pytest.skip("the Azure Storage tests run on Azurite, which --backend did not select")
    value: str = request.getfixturevalue("azurite")
    return value


@pytest.fixture
def hub() -> str:
    return f"H{uuid.uuid4().hex[:12]}"


@pytest.fixture
def host_env(connection: str, hub: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a `dfhost start --store azure` on this test's hub: the connection
    string as AzureWebJobsStorage, the hub name as a host.json override, and short
    visibility timeouts so that a killed host's messages come back within seconds."""
    state = tmp_path / "state"
    state.mkdir()
    return {
        "AzureWebJobsStorage": connection,
        HUB_OVERRIDE: hub,
        f"{PROVIDER_OVERRIDE}controlQueueVisibilityTimeout": "00:00:05",
        f"{PROVIDER_OVERRIDE}workItemQueueVisibilityTimeout": "00:00:05",
        "DFHOST_E2E_STATE": str(state),
        "DFHOST_MH_STATE": str(state),
    }


@pytest.fixture
async def sdk_session() -> AsyncIterator[None]:
    # The SDK keeps one module-level aiohttp session, bound to the loop that created it;
    # each test has its own loop, so close it before the loop goes away.
    yield
    await http_utils._close_session()
