"""The SQLite database thread's group commit: jobs queued together share one transaction, yet
each behaves as its own (a failing one changes nothing, the others commit)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from dfhost.store.sqlite.thread import DatabaseThread


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (v INTEGER UNIQUE)")
    return conn


def insert(value: int):  # type: ignore[no-untyped-def]
    def body(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (v) VALUES (?)", (value,))
        return value

    return body


def rows(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [v for (v,) in conn.execute("SELECT v FROM t ORDER BY v")]


async def started(path: Path) -> DatabaseThread:
    db = DatabaseThread("test-db", "FULL")
    await db.start(lambda: connect(path))
    return db


async def test_jobs_queued_together_commit_together_and_fail_alone(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    db = await started(path)
    gate = threading.Event()
    transactions: list[int] = []

    def blocked(conn: sqlite3.Connection) -> None:
        gate.wait(5)  # holds the thread while the next jobs queue up behind it

    def count_transaction(conn: sqlite3.Connection) -> None:
        # Inside the shared transaction the earlier jobs' rows are there; outside, not yet.
        (inside,) = conn.execute("SELECT count(*) FROM t").fetchone()
        transactions.append(inside)
        transactions.append(len(rows(path)))

    first = asyncio.ensure_future(db.call(blocked))
    await asyncio.sleep(0.01)
    jobs = [
        asyncio.ensure_future(db.run(insert(1), write=True, durable=True)),
        asyncio.ensure_future(db.run(insert(1), write=True, durable=True)),  # UNIQUE: fails
        asyncio.ensure_future(db.run(insert(2), write=True, durable=False)),
        asyncio.ensure_future(db.run(count_transaction, write=False, durable=False)),
    ]
    gate.set()
    await first
    results = await asyncio.gather(*jobs, return_exceptions=True)
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert transactions == [2, 0]
    assert rows(path) == [1, 2]
    await db.stop(lambda conn: conn.close() if conn else None)


async def test_a_lone_job_that_raises_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    db = await started(path)

    def half_done(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (v) VALUES (7)")
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await db.run(half_done, write=True, durable=True)
    assert await db.run(insert(8), write=True, durable=True) == 8
    assert rows(path) == [8]
    await db.stop(lambda conn: conn.close() if conn else None)


async def test_results_arrive_only_after_commit(tmp_path: Path) -> None:
    """What a caller is told is committed is visible to another connection at once."""
    path = tmp_path / "t.db"
    db = await started(path)
    for value in range(20):
        await db.run(insert(value), write=True, durable=value % 2 == 0)
        assert rows(path)[-1] == value
    await db.stop(lambda conn: conn.close() if conn else None)


async def test_jobs_after_stop_are_refused(tmp_path: Path) -> None:
    db = await started(tmp_path / "t.db")
    await db.stop(lambda conn: conn.close() if conn else None)
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        await asyncio.wait_for(db.run(insert(1), write=True, durable=True), 1)
