"""How long does the dashboard's instance list take with 100,000 instances in the task hub?

    .venv/bin/python bench/dashboard_list.py [--instances 100000] [--runs 7]

Fills a fresh SQLite task hub (rows written straight into its `instances` table, in one
transaction: creating them one by one through the client would take minutes and measure
something else), then times `GET /dashboard/...` in process through httpx's ASGI transport:
the default page (50 rows, counts per status), filters, and the second page. Prints the
median and the slowest of `--runs` requests per page; the goal is under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx

from dfhost.app.loader import load_app
from dfhost.client import DurableClient
from dfhost.history import OrchestrationStatus, format_time
from dfhost.store import open_store
from dfhost.web import build_app

APP = Path(__file__).resolve().parents[1] / "tests" / "apps" / "e2e_v2"
NAMES = ("chain", "fanout", "approval", "parent", "counter", "sleeper")
# Roughly a busy hub: mostly finished, some running or failed.
STATUS_WEIGHTS = {
    OrchestrationStatus.COMPLETED: 80,
    OrchestrationStatus.RUNNING: 8,
    OrchestrationStatus.FAILED: 6,
    OrchestrationStatus.TERMINATED: 3,
    OrchestrationStatus.PENDING: 2,
    OrchestrationStatus.SUSPENDED: 1,
}


def fill(path: Path, count: int) -> str:
    """Insert `count` instances; returns the id of one of them."""
    rng = random.Random(7)
    now = datetime.now(UTC)
    statuses = list(STATUS_WEIGHTS)
    weights = list(STATUS_WEIGHTS.values())
    rows = []
    for n in range(count):
        created = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
        status = rng.choices(statuses, weights)[0]
        rows.append(
            (
                f"{uuid.UUID(int=rng.getrandbits(128)).hex}",
                rng.choice(NAMES),
                uuid.uuid4().hex,
                status.value,
                json.dumps({"n": n}),
                '"done"' if status is OrchestrationStatus.COMPLETED else None,
                "{}",
                format_time(created),
                format_time(created + timedelta(seconds=rng.uniform(0, 60))),
            )
        )
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO instances (instance_id, name, execution_id, status, input, output, "
            "tags, created_at, last_updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    conn.close()
    return rows[count // 2][0]


async def measure(count: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hub.sqlite3"
        store = open_store(f"sqlite:///{path}")
        await store.start()  # creates the schema
        await store.close()
        started = time.perf_counter()
        some_id = fill(path, count)
        print(f"inserted {count:,} instances in {time.perf_counter() - started:.1f} s")
        store = open_store(f"sqlite:///{path}")
        await store.start()
        app = load_app(APP)
        web_app = build_app(DurableClient(store, app), app, rpc_base_url="http://127.0.0.1:1/")
        transport = httpx.ASGITransport(app=web_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            first = await http.get("/dashboard/")
            token = first.text.split("after=", 1)[1].split("&", 1)[0].split('"', 1)[0]
            pages = {
                "list, no filter": "/dashboard/",
                "list, status=Failed": "/dashboard/?status=Failed",
                "list, name=approval + Running": "/dashboard/?name=approval&status=Running",
                "list, created 15-30 days ago": "/dashboard/?from=2000-01-01T00:00&to="
                + quote(format_time(datetime.now(UTC) - timedelta(days=15))[:16]),
                "list, id prefix 'ab'": "/dashboard/?prefix=ab",
                "list, 200 rows": "/dashboard/?top=200",
                "list, page 2": f"/dashboard/?after={token}&page=2",
                "instance page": f"/dashboard/instance?id={some_id}",
            }
            print(f"{'page':34} {'median':>9} {'max':>9}  ({runs} runs)")
            for label, url in pages.items():
                times = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    response = await http.get(url)
                    times.append(time.perf_counter() - t0)
                    assert response.status_code == 200, (url, response.status_code)
                print(
                    f"{label:34} {statistics.median(times) * 1000:7.1f}ms "
                    f"{max(times) * 1000:7.1f}ms"
                )
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(measure(args.instances, args.runs))


if __name__ == "__main__":
    main()
