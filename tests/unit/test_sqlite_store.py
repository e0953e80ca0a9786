"""What only the SQLite backend has: its URLs, its schema version and its single-host lock."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dfhost.history import utcnow
from dfhost.store import StoreError, open_store


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///hub.db?synchronous=sometimes", "synchronous must be full or normal"),
        ("sqlite:///hub.db?colour=blue", "unsupported option 'colour'"),
        ("postgresql://localhost/db", "scheme 'postgresql' is not available"),
    ],
)
def test_bad_urls_are_clear_errors(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        open_store(url)


async def test_a_directory_is_not_a_task_hub(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}")
    with pytest.raises(StoreError, match=str(tmp_path)):
        await store.start()
    await store.close()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    store = open_store(f"sqlite:///{path}")
    with pytest.raises(StoreError, match="newer than this dfhost supports"):
        await store.start()
    await store.close()


async def test_one_host_per_file_but_clients_share_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    first, second, client = open_store(url), open_store(url), open_store(url)
    for store in (first, second, client):
        await store.start()
    await first.open_host("a", utcnow())
    with pytest.raises(StoreError, match="in use by another dfhost host"):
        await second.open_host("b", utcnow())
    assert await client.get_instance("nothing") is None
    await first.close()
    await second.open_host("b", utcnow())  # the lock is free once its host closed
    for store in (second, client):
        await store.close()
