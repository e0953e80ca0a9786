"""Fixtures for the engine tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dfhost.store import Store, open_store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh SQLite task hub, started."""
    opened = open_store(f"sqlite:///{tmp_path / 'hub.sqlite3'}")
    await opened.start()
    yield opened
    await opened.close()
