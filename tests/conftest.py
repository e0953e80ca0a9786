"""Shared fixtures. `--backend` picks the store the contract suite runs against."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from dfhost.store import Store, open_store

BACKENDS = ("sqlite",)

CorruptHistory = Callable[[Store, str], Awaitable[None]]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        choices=BACKENDS,
        default="sqlite",
        help="task hub backend for the store tests (default: sqlite)",
    )


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    value: str = request.config.getoption("--backend")
    return value


@pytest.fixture
async def store(backend: str, tmp_path: Path) -> AsyncIterator[Store]:
    """A started store on a fresh, empty task hub; closed afterwards."""
    if backend == "sqlite":
        hub = open_store(f"sqlite:///{tmp_path / 'hub' / 'hub.db'}")
    else:  # pragma: no cover - --backend rejects anything else
        raise pytest.UsageError(f"unknown backend {backend!r}")
    await hub.start()
    try:
        yield hub
    finally:
        await hub.close()


@pytest.fixture
def corrupt_history(backend: str) -> CorruptHistory:
    """An async `(store, instance_id)` hook that appends an undecodable row to the instance's
    current history. Every backend must provide it: the test that uses it fails otherwise."""
    if backend == "sqlite":
        return _corrupt_sqlite_history
    pytest.fail(f"backend {backend!r} has no corrupt_history hook")


async def _corrupt_sqlite_history(store: Store, instance_id: str) -> None:
    path: Path | None = getattr(store, "path", None)
    assert path is not None, "corrupt_history needs a file-backed SQLite store"

    def corrupt() -> None:
        with sqlite3.connect(path, timeout=10) as conn:
            conn.execute(
                "INSERT INTO history (instance_id, execution_id, seq, event) "
                "SELECT instance_id, execution_id, "
                "(SELECT COALESCE(MAX(seq), -1) + 1 FROM history AS h "
                " WHERE h.instance_id = i.instance_id AND h.execution_id = i.execution_id), "
                "'{not json' FROM instances AS i WHERE instance_id = ?",
                (instance_id,),
            )
        conn.close()

    await asyncio.to_thread(corrupt)
