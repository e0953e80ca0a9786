"""Fixtures for the parity tests: the parity app (tests/apps/parity_v2), loaded and served by
`dfhost start`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dfhost.app.functions import FunctionApp
from dfhost.app.loader import load_app
from tests.e2e.conftest import sdk_session  # noqa: F401 - used by `parity_host`
from tests.e2e.harness import APPS, HostProcess

APP_DIR = APPS / "parity_v2"
HUB = "ParityHub"

# Orchestrators run in the engine's threads, where pytest's per-test `error` filter would turn
# the SDK's one-time "df_loads was called without expected_type" advice into a failure.
pytestmark = pytest.mark.filterwarnings(
    "ignore:azure.functions df_loads was called without expected_type:DeprecationWarning"
)


@pytest.fixture(scope="session")
def parity_app() -> FunctionApp:
    app = load_app(APP_DIR)
    assert app.errors == [], app.errors
    return app


@pytest.fixture
def parity_host(tmp_path: Path, sdk_session: None) -> Iterator[HostProcess]:  # noqa: F811
    host = HostProcess(APP_DIR, f"sqlite:///{tmp_path / 'hub.sqlite3'}").start()
    yield host
    host.stop()
