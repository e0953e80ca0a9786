"""What only the SQLite backend has: its URLs, its schema versions and its host lock files."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dfhost.history import format_time
from dfhost.store import Claim, StoreError, TimerStatus, open_store
from dfhost.store.sqlite.store import SCHEMA_VERSION
from dfhost.work import StartRequest

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///hub.db?synchronous=sometimes", "synchronous must be full or normal"),
        ("sqlite:///hub.db?colour=blue", "unsupported option 'colour'"),
        ("redis://localhost/0", "scheme 'redis' is not available"),
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


async def test_hosts_share_a_file_and_leave_each_others_live_work_alone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    first, second, client = open_store(url), open_store(url), open_store(url)
    for store in (first, second, client):
        await store.start()
    try:
        await first.open_host("a", T0)
        await client.create_instance(_start("x"))
        await client.create_instance(_start("y"))
        [held] = await first.claim_episodes(_claim("a"), 1)

        await second.open_host("b", T0)  # "a" is alive: its lease stays
        [other] = await second.claim_episodes(_claim("b"), 10)
        assert {held.instance.instance_id, other.instance.instance_id} == {"x", "y"}
        assert await first.claim_episodes(_claim("a"), 10) == []
        assert await client.get_instance("nothing") is None
    finally:
        for store in (first, second, client):
            await store.close()


async def test_a_running_host_takes_over_a_dead_hosts_work_at_its_next_claim(
    tmp_path: Path,
) -> None:
    db = tmp_path / "hub.sqlite3"
    url = f"sqlite:///{db}"
    first, second = open_store(url), open_store(url)
    for store in (first, second):
        await store.start()
    try:
        await first.open_host("a", T0)
        await second.open_host("b", T0)
        await first.create_instance(_start("x"))
        [claimed] = await first.claim_episodes(_claim("a"), 1)
        assert await first.claim_timer_run("tick", T0, _claim("a"))
        assert await second.claim_episodes(_claim("b"), 10) == []
        lock_files = sorted(p.name for p in db.with_name(db.name + ".hosts").iterdir())
        assert lock_files == ["a.lock", "b.lock"]

        await first.close()  # the kernel unlocks the file, as when the process dies

        # Long before the lease expires:
        [taken] = await second.claim_episodes(_claim("b"), 10)
        assert taken.instance.instance_id == claimed.instance.instance_id
        assert await second.claim_timer_run("tick", None, _claim("b"))
        assert [p.name for p in db.with_name(db.name + ".hosts").iterdir()] == ["b.lock"]
    finally:
        for store in (first, second):
            await store.close()


async def test_schema_1_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite3"
    with sqlite3.connect(path) as db:
        for statement in V1_SCHEMA:
            db.execute(statement)
        db.execute(
            "INSERT INTO instances (instance_id, name, execution_id, status, tags, created_at, "
            "last_updated_at) VALUES ('old', 'Orch', 'e1', 'Running', '{}', ?, ?)",
            (format_time(T0), format_time(T0)),
        )
        db.execute("PRAGMA user_version = 1")
    db.close()
    store = open_store(f"sqlite:///{path}")
    await store.start()
    try:
        instance = await store.get_instance("old")
        assert instance is not None and instance.name == "Orch"
        status = TimerStatus(last=None, next=T0, last_updated=T0)
        await store.set_timer_status("tick", status)
        assert await store.get_timer_status("tick") == status
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    db.close()


def _start(instance_id: str) -> StartRequest:
    return StartRequest(instance_id=instance_id, name="Orch", execution_id="e1", created_at=T0)


def _claim(owner: str) -> Claim:
    return Claim(owner=owner, now=T0, lease_until=T0 + timedelta(hours=1))


# Schema version 1 as dfhost 0.1 created it: the migration's starting point, frozen here.
V1_SCHEMA = (
    """CREATE TABLE instances (
        instance_id TEXT PRIMARY KEY, name TEXT NOT NULL, execution_id TEXT NOT NULL,
        status TEXT NOT NULL, version TEXT, input TEXT, output TEXT, custom_status TEXT,
        parent_instance_id TEXT, failure_details TEXT, tags TEXT NOT NULL,
        created_at TEXT NOT NULL, last_updated_at TEXT NOT NULL,
        lock_owner TEXT, lock_token INTEGER NOT NULL DEFAULT 0, lock_until TEXT)""",
    "CREATE INDEX instances_created ON instances (created_at DESC, instance_id)",
    "CREATE INDEX instances_status ON instances (status)",
    "CREATE INDEX instances_lock_until ON instances (lock_until)",
    """CREATE TABLE history (
        instance_id TEXT NOT NULL, execution_id TEXT NOT NULL, seq INTEGER NOT NULL,
        event TEXT NOT NULL, PRIMARY KEY (instance_id, execution_id, seq)) WITHOUT ROWID""",
    """CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT, instance_id TEXT NOT NULL, execution_id TEXT,
        event_type INTEGER NOT NULL, timer_id INTEGER, event TEXT NOT NULL, visible_at TEXT)""",
    "CREATE INDEX messages_instance ON messages (instance_id, id)",
    "CREATE INDEX messages_visible ON messages (visible_at)",
    """CREATE TABLE activity_tasks (
        id INTEGER PRIMARY KEY AUTOINCREMENT, instance_id TEXT NOT NULL,
        execution_id TEXT NOT NULL, task_scheduled_id INTEGER NOT NULL, name TEXT NOT NULL,
        input TEXT, scheduled_at TEXT NOT NULL, lease_owner TEXT,
        lease_token INTEGER NOT NULL DEFAULT 0, lease_until TEXT)""",
    "CREATE INDEX activity_tasks_lease ON activity_tasks (lease_until)",
    "CREATE INDEX activity_tasks_instance ON activity_tasks (instance_id)",
    "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT INTO counters (name, value) VALUES ('lock_token', 0)",
)
