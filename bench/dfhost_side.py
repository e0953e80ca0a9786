"""One benchmark workload on dfhost, in this process: prints one JSON line of metrics.

    .venv/bin/python bench/dfhost_side.py --workload W1 --store URL --params '{"count": 200}'
    .venv/bin/python bench/dfhost_side.py --probe --store URL

Run by bench/run.py (one process per run, so its CPU and memory are dfhost's alone). The
engine and the client share this process and its event loop, as in tests/engine; the
orchestrations live in bench/apps/bench_app.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from database_stats import count_statements, per_unit, usage
from process_stats import emit, percentile, rss_bytes, sqlite_files_bytes

from dfhost.app.functions import FunctionApp
from dfhost.app.loader import load_app
from dfhost.client import DurableClient
from dfhost.history import TERMINAL_STATUSES, EventType, Instance, OrchestrationStatus
from dfhost.logs import configure_console
from dfhost.runtime.engine import Engine
from dfhost.runtime.workers import WorkerPool
from dfhost.store import Store, open_store

APP = Path(__file__).resolve().parent / "apps" / "bench_app"
POLL = 0.1
"""wait_for_completion's polling interval in W1. The engine runs in this process, so its
commit of the end wakes the client at once (`Store.watch_finish`); polling would only matter
for an end committed elsewhere. (It was 0.5 ms until issue 19: on PostgreSQL every poll is a
round trip competing with the engine for the one event loop, ~9 reads per chain that a caller
of the HTTP API, polling every second by default, never makes.) The stored timestamps give
the figure without the client."""


STALL = 60.0
"""W6 gives up when no generation completed for this many seconds (a wedged run)."""


class Hub:
    def __init__(self, app: FunctionApp, store: Store, engine: Engine, url: str) -> None:
        self.app = app
        self.store = store
        self.engine = engine
        self.client = DurableClient(store, app)
        self.url = url
        self.measured: dict[str, float] | None = None
        """The database counters when the timed part ended, if reads followed it."""

    def db_bytes(self) -> int:
        if self.url.startswith("sqlite:///"):
            return sqlite_files_bytes(Path(self.url[len("sqlite:///") :].split("?")[0]))
        import psycopg

        with psycopg.connect(self.url) as conn:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            return int(row[0]) if row else 0


async def finish(hub: Hub, iid: str, within: float, interval: float = POLL) -> Instance:
    status = await hub.client.wait_for_completion(iid, timeout=within, interval=interval)
    if status is None or status.status not in TERMINAL_STATUSES:
        raise TimeoutError(f"{iid} not finished after {within}s")
    if status.status is not OrchestrationStatus.COMPLETED:
        raise RuntimeError(f"{iid} ended {status.status.value}: {status.output}")
    return status


def stored_ms(status: Instance) -> float:
    return (status.last_updated_at - status.created_at) / timedelta(milliseconds=1)


async def w1_latency(hub: Hub, p: dict[str, Any]) -> dict[str, Any]:
    observed, stored = [], []
    ids: list[str] = []
    cpu_began = time.process_time()
    for i in range(p["count"]):
        started = time.perf_counter()
        iid = await hub.client.start_new("chain3", input_text=json.dumps(i))
        status = await finish(hub, iid, 60, POLL)
        observed.append((time.perf_counter() - started) * 1000)
        assert status.output == str(i + 3), status.output
        stored.append(stored_ms(status))
        ids.append(iid)
    cpu_ms = (time.process_time() - cpu_began) * 1000 / p["count"]
    hub.measured = usage(hub.url)
    return {
        "cpu_ms_per_chain": cpu_ms,
        "p50_ms": percentile(observed, 50),
        "p99_ms": percentile(observed, 99),
        "stored_p50_ms": percentile(stored, 50),
        "stored_p99_ms": percentile(stored, 99),
        **await chain_gaps(hub, ids),
    }


async def chain_gaps(hub: Hub, ids: list[str]) -> dict[str, float]:
    """Where a chain's time goes, from its history's timestamps (medians over the chains):
    creation to the first episode, an activity's scheduling (its episode's start) to its
    TaskCompleted, and TaskCompleted to the episode that consumed it."""
    first, activity, resume = [], [], []
    ms = timedelta(milliseconds=1)
    for iid in ids:
        status = await hub.client.get_status(iid)
        history = await hub.client.get_history(iid)
        episodes = [e.timestamp for e in history if e.type is EventType.ORCHESTRATOR_STARTED]
        completed = [e.timestamp for e in history if e.type is EventType.TASK_COMPLETED]
        if status is None or len(episodes) != len(completed) + 1:
            continue
        first.append((episodes[0] - status.created_at) / ms)
        activity += [(c - e) / ms for e, c in zip(episodes, completed, strict=False)]
        resume += [(e - c) / ms for c, e in zip(completed, episodes[1:], strict=True)]
    return {
        "gap_created_to_first_episode_ms": percentile(first, 50),
        "gap_episode_to_activity_done_ms": percentile(activity, 50),
        "gap_activity_done_to_episode_ms": percentile(resume, 50),
    }


async def w2_throughput(hub: Hub, p: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    ids = await asyncio.gather(
        *(hub.client.start_new("chain3", input_text=json.dumps(i)) for i in range(p["count"]))
    )
    all_started = time.perf_counter() - started
    for i, iid in enumerate(ids):
        status = await finish(hub, iid, 600)
        assert status.output == str(i + 3), status.output
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "per_s": p["count"] / seconds,
        "start_all_seconds": all_started,
    }


async def w3_fanout(hub: Hub, p: dict[str, Any]) -> dict[str, Any]:
    n = p["count"]
    started = time.perf_counter()
    iid = await hub.client.start_new("fanout", input_text=json.dumps(n))
    status = await finish(hub, iid, p.get("timeout", 900))
    seconds = time.perf_counter() - started
    assert status.output == str(sum(i + 1 for i in range(n))), status.output
    return {"seconds": seconds, "per_s": n / seconds}


async def w4_sequence(hub: Hub, p: dict[str, Any]) -> dict[str, Any]:
    n = p["count"]
    started = time.perf_counter()
    iid = await hub.client.start_new("sequence", input_text=json.dumps(n))
    status = await finish(hub, iid, p.get("timeout", 900))
    seconds = time.perf_counter() - started
    assert status.output == str(n), status.output
    return {"seconds": seconds, "ms_per_step": seconds * 1000 / n}


async def w5_timers(hub: Hub, p: dict[str, Any]) -> dict[str, Any]:
    base = datetime.now(UTC) + timedelta(seconds=p["lead"])
    burst = [base + timedelta(seconds=i / p["burst"]) for i in range(p["burst"])]
    spread = [
        base + timedelta(seconds=p["spread_seconds"] * i / p["spread"]) for i in range(p["spread"])
    ]
    dues = burst + spread
    ids = await asyncio.gather(
        *(hub.client.start_new("sleep_until", input_text=json.dumps(d.isoformat())) for d in dues)
    )
    wait = p["lead"] + p["spread_seconds"] + 120
    for iid in ids:
        await finish(hub, iid, wait, 0.05)
    lateness: list[float] = []
    created_late = 0
    for iid in ids:
        history = await hub.client.get_history(iid)
        created = next(e for e in history if e.type is EventType.TIMER_CREATED)
        fired = next(e for e in history if e.type is EventType.TIMER_FIRED)
        assert fired.fire_at is not None
        if created.timestamp > fired.fire_at:
            created_late += 1
        episode = next(
            e
            for e in history
            if e.type is EventType.ORCHESTRATOR_STARTED and e.timestamp >= fired.fire_at
        )
        lateness.append((episode.timestamp - fired.fire_at) / timedelta(milliseconds=1))
    return lateness_metrics(lateness, p["burst"], created_late)


def lateness_metrics(lateness: list[float], burst: int, created_late: int) -> dict[str, Any]:
    return {
        "p50_ms": percentile(lateness, 50),
        "p99_ms": percentile(lateness, 99),
        "max_ms": max(lateness),
        "burst_p99_ms": percentile(lateness[:burst], 99),
        "spread_p99_ms": percentile(lateness[burst:], 99),
        "created_after_due": created_late,
    }


async def w6_eternal(hub: Hub, p: dict[str, Any]) -> dict[str, Any]:
    until = p["count"]
    samples: list[tuple[float, int, int, int]] = []
    started = time.perf_counter()
    iid = await hub.client.start_new("eternal", input_text=json.dumps({"n": 0, "until": until}))
    while True:
        status = await hub.client.get_status(iid)
        assert status is not None
        done = status.status in TERMINAL_STATUSES
        generation = until if done else json.loads(status.input or "{}").get("n", 0)
        samples.append((time.perf_counter() - started, generation, rss_bytes(), hub.db_bytes()))
        if done:
            break
        stalled = [g for _, g, _, _ in samples[-int(STALL / p.get("sample_every", 0.5)) :]]
        if len(stalled) > 2 and len(set(stalled)) == 1 and samples[-1][0] > STALL:
            raise RuntimeError(f"stalled: no new generation for {STALL:.0f} s at {generation}")
        await asyncio.sleep(p.get("sample_every", 0.5))
    seconds = time.perf_counter() - started
    if status.status is not OrchestrationStatus.COMPLETED or status.output != str(until):
        raise RuntimeError(f"eternal ended {status.status.value}: {status.output}")
    return eternal_metrics(samples, until, seconds)


def eternal_metrics(
    samples: list[tuple[float, int, int, int]], until: int, seconds: float
) -> dict[str, Any]:
    """Start = the first sample past 5% of the generations (caches warm), end = the last."""
    first = next((s for s in samples if s[1] >= until // 20), samples[0])
    last = samples[-1]
    mb = 1024 * 1024
    return {
        "gens_per_s": until / seconds,
        "seconds": seconds,
        "rss_start_mb": first[2] / mb,
        "rss_end_mb": last[2] / mb,
        "db_start_mb": first[3] / mb,
        "db_end_mb": last[3] / mb,
        "start_generation": first[1],
        "samples": [[round(t, 2), g, r, d] for t, g, r, d in samples],
    }


WORKLOADS: dict[str, Callable[[Hub, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "W1": w1_latency,
    "W2": w2_throughput,
    "W3": w3_fanout,
    "W4": w4_sequence,
    "W5": w5_timers,
    "W6": w6_eternal,
}


async def open_hub(url: str) -> Hub:
    app = load_app(APP)
    if app.errors:
        raise RuntimeError(f"bench app does not load: {app.errors}")
    store = open_store(url)
    await store.start()
    # As `dfhost start` does: FUNCTIONS_WORKER_PROCESS_COUNT=0 runs the functions in this process.
    workers = None
    if app.settings.worker_processes:
        threads = app.settings.worker_threads or app.settings.max_concurrent_activities
        workers = WorkerPool(app.root, app.settings.worker_processes, threads)
        await workers.start()
    engine = Engine(app, store, workers=workers)
    await engine.start()
    return Hub(app, store, engine, url)


async def run(workload: str, url: str, params: dict[str, Any]) -> dict[str, Any]:
    count_statements()
    hub = await open_hub(url)
    try:
        before = usage(url)
        metrics = await WORKLOADS[workload](hub, params)
        # Per orchestration (W1, W2), per activity (W3, W4), per timer or generation (W5, W6).
        units = params.get("count", params.get("burst", 0) + params.get("spread", 0))
        return metrics | per_unit(before, hub.measured or usage(url), units)
    finally:
        await hub.engine.stop()
        if hub.engine.workers is not None:
            await hub.engine.workers.close()
        await hub.store.close()


async def probe(url: str) -> None:
    """Raises if dfhost cannot open a store at `url` (a backend not there yet, no driver)."""
    store = open_store(url)
    await store.start()
    await store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", choices=sorted(WORKLOADS))
    parser.add_argument("--store", required=True)
    parser.add_argument("--params", default="{}")
    parser.add_argument("--probe", action="store_true")
    parser.add_argument(
        "--console-log",
        metavar="FILE",
        help="log to FILE as `dfhost start` logs to its console (INFO: a line per function "
        "run), to measure what that costs (bench/http_overhead.py)",
    )
    args = parser.parse_args()
    if args.console_log:
        configure_console(stream=open(args.console_log, "a"))  # noqa: SIM115 - for the process
    else:
        # The SDK's DFApp warns about HTTP auth on import; function logs are not measured.
        logging.basicConfig(level=logging.ERROR)
    if args.probe:
        try:
            asyncio.run(probe(args.store))
        except Exception as exc:  # any failure means "not available"; the message says why
            print(f"{type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
            sys.exit(3)
        return
    if args.workload is None:
        parser.error("--workload is required")
    metrics = asyncio.run(run(args.workload, args.store, json.loads(args.params)))
    emit(metrics, pid=os.getpid())


if __name__ == "__main__":
    main()
