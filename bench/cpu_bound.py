"""Where worker processes pay: activities that compute. Interleaved runs of each
FUNCTIONS_WORKER_PROCESS_COUNT given, on a fresh SQLite hub each:

    .venv/bin/python bench/cpu_bound.py [--workers 0,2] [--rounds 2] [--count 40] [--ms 50]

A fan-out of `count` activities that each burn `ms` of CPU time in pure Python (holding the
GIL while they run), and meanwhile one-activity `ping` orchestrations one after another: how
long the fan-out takes, and the ping's p50/p99 (what every other instance, timer and HTTP call
of the host waits while user code computes). Engine and client in this process, as in
bench/dfhost_side.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from process_stats import percentile

from dfhost.app.loader import load_app
from dfhost.client import DurableClient
from dfhost.history import TERMINAL_STATUSES, Instance
from dfhost.runtime.engine import Engine
from dfhost.runtime.workers import WorkerPool
from dfhost.store import open_store

APP = Path(__file__).resolve().parent / "apps" / "burn_app"


async def wait(client: DurableClient, iid: str) -> Instance:
    status = await client.wait_for_completion(iid, timeout=300, interval=0.1)
    assert status is not None and status.status in TERMINAL_STATUSES, iid
    return status


async def one_run(workers: int, count: int, ms: int) -> dict[str, float]:
    app = load_app(APP)
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(f"sqlite:///{folder}/hub.sqlite3")
        await store.start()
        pool = None
        if workers:
            pool = WorkerPool(app.root, workers, app.settings.max_concurrent_activities)
            await pool.start()
        engine = Engine(app, store, workers=pool)
        await engine.start()
        client = DurableClient(store, app)
        try:
            await wait(client, await client.start_new("ping", input_text="0"))  # warm
            started = time.perf_counter()
            fan = await client.start_new("burn_many", input_text=json.dumps([count, ms]))
            fan_done = asyncio.create_task(wait(client, fan))
            pings: list[float] = []
            while not fan_done.done():
                began = time.perf_counter()
                await wait(client, await client.start_new("ping", input_text="1"))
                pings.append((time.perf_counter() - began) * 1000)
            status = await fan_done
            assert status.output == str(count), status
            stored = (status.last_updated_at - status.created_at).total_seconds()
            return {
                "fanout_s": round(time.perf_counter() - started, 3),
                "fanout_stored_s": round(stored, 3),
                "pings": len(pings),
                "ping_p50_ms": round(percentile(pings, 50), 2),
                "ping_p99_ms": round(percentile(pings, 99), 2),
            }
        finally:
            await engine.stop()
            if pool is not None:
                await pool.close()
            await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="0,2", help="comma-separated worker counts")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--ms", type=int, default=50)
    args = parser.parse_args()
    # The SDK's DFApp warns about HTTP auth on import; function logs are not what we measure.
    logging.basicConfig(level=logging.ERROR)
    for round_ in range(1, args.rounds + 1):
        for workers in [int(w) for w in args.workers.split(",")]:
            load = os.getloadavg()[0]
            result = asyncio.run(one_run(workers, args.count, args.ms))
            print(json.dumps({"round": round_, "workers": workers, "load_1min": load, **result}))


if __name__ == "__main__":
    main()
