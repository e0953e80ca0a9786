"""Counts per status, as the instance list shows them: on every backend, and on SQLite from the
index alone (a list of 100,000 instances filtered by time must not read every row)."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dfhost.client import DurableClient
from dfhost.history import OrchestrationStatus
from dfhost.store import InstanceQuery, Store, open_store
from tests.builders import fixed_clock
from tests.web.conftest import finish

Status = OrchestrationStatus
T0 = datetime(2026, 3, 1, tzinfo=UTC)


async def test_counts_per_status_follow_the_other_filters(store: Store) -> None:
    for n, (iid, name) in enumerate(
        (("a1", "alpha"), ("a2", "alpha"), ("a3", "alpha"), ("b1", "beta"), ("b2", "beta"))
    ):
        client = DurableClient(store, clock=fixed_clock(T0 + timedelta(minutes=n)))
        await client.start_new(name, iid)
    await finish(store, "a1", Status.COMPLETED)
    await finish(store, "b1", Status.FAILED)
    client = DurableClient(store)

    counts = await client.count_by_status(InstanceQuery())
    assert set(counts) == set(Status)
    assert {s: n for s, n in counts.items() if n} == {
        Status.PENDING: 3,
        Status.COMPLETED: 1,
        Status.FAILED: 1,
    }
    # The query's own statuses do not matter: every status is counted.
    query = InstanceQuery(name="alpha", statuses=[Status.FAILED])
    assert {s: n for s, n in (await client.count_by_status(query)).items() if n} == {
        Status.PENDING: 2,
        Status.COMPLETED: 1,
    }
    since = InstanceQuery(created_from=T0 + timedelta(minutes=2), instance_id_prefix="a")
    assert sum((await client.count_by_status(since)).values()) == 1
    assert sum((await client.count_by_status(replace(since, instance_id_prefix="b"))).values()) == 2


async def test_sqlite_counts_a_status_in_a_time_range_from_the_index(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite3"
    store = open_store(f"sqlite:///{path}")
    await store.start()
    await store.close()
    with sqlite3.connect(path) as db:
        plan = " ".join(
            row[3]
            for row in db.execute(
                "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM instances WHERE created_at >= ? "
                "AND created_at <= ? AND status IN (?)",
                ("2026", "2027", "Running"),
            )
        )
        indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    db.close()
    assert "COVERING INDEX instances_status_created" in plan
    assert "instances_status" not in indexes  # replaced, not kept as well
