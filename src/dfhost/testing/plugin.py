"""The pytest plugin (entry point `pytest11`): the `dfhost_host` fixture. Loaded by every pytest
run where dfhost is installed, so it imports next to nothing until a test uses it."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


from dfhost.testing.host import TestHost

# --- the pytest plugin --------------------------------------------------------------------------

HostFactory = Callable[..., Awaitable[TestHost]]

if "pytest" in sys.modules:  # loaded as a pytest plugin (or from a test): offer the fixture
    import pytest

    _async_fixture: Any
    try:  # runs in pytest-asyncio's strict mode too
        import pytest_asyncio

        _async_fixture = pytest_asyncio.fixture
    except ImportError:  # pragma: no cover - then the project's async plugin must run it
        _async_fixture = pytest.fixture

    @_async_fixture  # type: ignore[untyped-decorator]
    async def dfhost_host() -> AsyncIterator[HostFactory]:
        """`host = await dfhost_host("path/to/app", **TestHost options)`: a running TestHost,
        stopped after the test."""
        hosts: list[TestHost] = []

        async def start(app_dir: str | Path, **options: Any) -> TestHost:
            host = TestHost(app_dir, **options)
            await host.__aenter__()
            hosts.append(host)
            return host

        try:
            yield start
        finally:
            for host in reversed(hosts):
                await host.__aexit__(None, None, None)
