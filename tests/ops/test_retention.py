"""The retention policy: its host.json settings, and a purge of 20,000 instances in bounded
batches while the engine keeps running orchestrations."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dfhost.app.functions import FunctionApp
from dfhost.client import DurableClient
from dfhost.config import (
    EnsureSpec,
    RetentionPolicy,
    SettingsError,
    parse_ensure_flag,
    read_ops_settings,
)
from dfhost.history import EventType, HistoryEvent, OrchestrationStatus, format_time, utcnow
from dfhost.runtime.engine import Engine
from dfhost.runtime.retention import Retention
from dfhost.store import Store, open_store

from .conftest import SDK_ADVICE, wait_status

Status = OrchestrationStatus


def host_json(section: Any) -> dict[str, Any]:
    return {"version": "2.0", "extensions": {"durableTask": {"dfhost": section}}}


# --- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7.00:00:00", timedelta(days=7)),
        ("00:05:00", timedelta(minutes=5)),
        ("1.02:03:04.5", timedelta(days=1, hours=2, minutes=3, seconds=4.5)),
        ("1.12:00", timedelta(hours=36)),
        ("00:00:00", timedelta(0)),
    ],
)
def test_periods(text: str, expected: timedelta) -> None:
    """TimeSpans as `dfhost.config.parse_timespan` reads them (see tests/unit/test_config.py)."""
    policy = read_ops_settings(host_json({"retention": {"completed": text}})).retention
    assert policy is not None
    assert policy.periods == {Status.COMPLETED: expected}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("7d", "is not a duration like 7.00:00:00"),
        ("P7D", "is not a duration"),
        ("", "is not a duration"),
        ("1.2.3", "is not a duration"),
        ("00:60:00", "minutes and seconds 0-59"),
        ("36:00", "hours must be 0-23"),  # .NET reads it as 36 days
        ("-1.00:00:00", "'-1.00:00:00' must not be negative"),
    ],
)
def test_bad_periods(text: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        read_ops_settings(host_json({"retention": {"completed": text}}))
    assert str(caught.value).startswith(
        "host.json extensions.durableTask.dfhost.retention.completed"
    )


def test_retention_and_ensure_settings() -> None:
    settings = read_ops_settings(
        host_json(
            {
                "Retention": {"completed": "7.00:00:00", "FAILED": "30.00:00:00", "batchSize": 50},
                "ensure": {
                    "monitor": {"orchestrator": "eternal", "input": {"every": 60}},
                    "cleanup": "eternal",
                },
            }
        )
    )
    assert settings.retention == RetentionPolicy(
        {Status.COMPLETED: timedelta(days=7), Status.FAILED: timedelta(days=30)}, 50
    )
    assert settings.ensure == [
        EnsureSpec("monitor", "eternal", '{"every": 60}'),
        EnsureSpec("cleanup", "eternal", None),
    ]
    assert read_ops_settings({"version": "2.0"}).retention is None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"retention": {"running": "1.00:00:00"}}, "unknown key 'running'"),
        ({"retention": {"completed": 7}}, r"retention.completed: expected a duration"),
        ({"retention": {"completed": "7 days"}}, "is not a duration"),
        ({"retention": {"completed": "1:00", "batchSize": 0}}, "not a positive integer"),
        ({"retention": ["completed"]}, "retention must be an object"),
        ({"ensure": ["monitor"]}, "ensure must be an object"),
        ({"ensure": {"m": {"input": 1}}}, r"ensure.m: expected \"ORCHESTRATOR\""),
        ({"ensure": {"m": {"orchestrator": "x", "inputs": 1}}}, "unknown key 'inputs'"),
        ({"purge": {}}, "unknown key 'purge'"),
        ("on", "must be an object"),
    ],
)
def test_bad_settings_are_one_clear_line(section: Any, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        read_ops_settings(host_json(section))
    assert "\n" not in str(caught.value)
    assert "host.json extensions.durableTask.dfhost" in str(caught.value)


def test_ensure_flags() -> None:
    assert parse_ensure_flag("m=eternal") == EnsureSpec("m", "eternal")
    assert parse_ensure_flag('m=eternal:{"a": "b:c"}') == EnsureSpec("m", "eternal", '{"a": "b:c"}')
    for bad in ("m", "=eternal", "m=", "m=eternal:{nope"):
        with pytest.raises(SettingsError, match="--ensure"):
            parse_ensure_flag(bad)


# --- the big purge ---------------------------------------------------------------------------

EXPIRED = 20_000
RECENT = 200


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'big.sqlite3'}")
    await store.start()
    try:
        yield store
    finally:
        await store.close()


def insert_finished(path: Path, count: int, prefix: str, finished_days_ago: float) -> None:
    """`count` finished instances with 4 history events each, straight into SQLite: going
    through episodes would take minutes."""
    finished = format_time(utcnow() - timedelta(days=finished_days_ago))
    statuses = [Status.COMPLETED, Status.FAILED, Status.TERMINATED]
    event = HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=utcnow()).to_json()
    instances: list[tuple[str, ...]] = []
    history: list[tuple[str, str, int, str]] = []
    for i in range(count):
        instance_id = f"{prefix}-{i:06}"
        status = statuses[i % 3].value
        instances.append(
            (instance_id, "steps", f"x{i}", status, "{}", finished, finished, '"input"', '"out"')
        )
        history.extend((instance_id, f"x{i}", seq, event) for seq in range(4))
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO instances (instance_id, name, execution_id, status, tags, created_at, "
            "last_updated_at, input, output) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            instances,
        )
        conn.executemany("INSERT INTO history VALUES (?, ?, ?, ?)", history)
    conn.close()


def count_rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        (count,) = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
    conn.close()
    return int(count)


@pytest.mark.slow
@pytest.mark.filterwarnings(SDK_ADVICE)
async def test_retention_purges_20000_instances_while_work_runs(
    sqlite_store: Store, ops_app: FunctionApp, capsys: pytest.CaptureFixture[str]
) -> None:
    path: Path = getattr(sqlite_store, "path")  # noqa: B009 - a SQLite store, on purpose
    insert_finished(path, EXPIRED, "old", finished_days_ago=30)
    insert_finished(path, RECENT, "new", finished_days_ago=1)
    week = timedelta(days=7)
    policy = RetentionPolicy(
        {Status.COMPLETED: week, Status.FAILED: week, Status.TERMINATED: week}, batch_size=500
    )
    client = DurableClient(sqlite_store, ops_app)
    # Queued before the host starts, so the episodes and the purge begin together.
    running = [await client.start_new("steps", f"live-{i}", '"live"') for i in range(3)]

    engine = Engine(ops_app, sqlite_store, retention=policy)
    began = time.monotonic()
    await engine.start()
    try:
        finished_after = []
        for instance_id in running:
            status = await wait_status(client, instance_id, within=60)
            finished_after.append(time.monotonic() - began)
            assert status.status is Status.COMPLETED, status.output
            assert json.loads(status.output or "") == [2, "live ok", 4]
        retention = engine.retention
        assert retention is not None
        # Instances an episode holds would be skipped, and purged by the next sweep.
        async with asyncio.timeout(120):
            while sum(s.purged for s in retention.sweeps) < EXPIRED:
                retention.swept.clear()
                await retention.swept.wait()
    finally:
        await engine.stop()

    sweep = retention.sweeps[0]
    assert sum(s.purged for s in retention.sweeps) == EXPIRED
    assert sweep.purged > EXPIRED * 0.9
    assert sweep.batches >= EXPIRED // 500
    assert count_rows(path, "instances") == RECENT + len(running)
    live_history = [len(await client.get_history(i)) for i in running]
    assert count_rows(path, "history") == 4 * RECENT + sum(live_history)
    with capsys.disabled():
        print(
            f"\nretention: first sweep purged {sweep.purged} of {EXPIRED} instances (with "
            f"4 history rows each) in {sweep.seconds:.2f} s, {sweep.batches} "
            f"batches; {len(retention.sweeps)} sweeps in all; orchestrations started with it "
            f"finished after {', '.join(f'{t:.2f}' for t in finished_after)} s"
        )
    # The engine was not starved: the orchestrations did not wait for the whole purge.
    assert max(finished_after) < sweep.seconds


async def test_retention_sleeps_until_the_oldest_kept_instance_expires(
    sqlite_store: Store,
) -> None:
    path: Path = getattr(sqlite_store, "path")  # noqa: B009
    insert_finished(path, 3, "old", finished_days_ago=2)  # Completed, Failed, Terminated
    now = utcnow()
    retention = Retention(
        sqlite_store,
        RetentionPolicy({Status.COMPLETED: timedelta(days=3), Status.FAILED: timedelta(days=1)}),
        clock=lambda: now,
    )
    assert (await retention.sweep()).purged == 1  # the Failed one
    # The Completed one expires in a day; nothing else is due before.
    seconds = await retention.seconds_until_next()
    assert abs(seconds - timedelta(days=1).total_seconds()) < 5
    assert await sqlite_store.get_instance("old-000002") is not None  # Terminated: kept
