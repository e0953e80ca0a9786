"""One benchmark workload on DBOS Transact (the peer), in this process: prints one JSON line.

    bench/.venvs/dbos/bin/python bench/dbos_side.py --workload W1 --db URL --params '{"count": 200}'

Run by bench/run.py in the DBOS venv it installs (bench/.venvs/dbos). The same logical work as
bench/apps/bench_app: steps return x + 1. DBOS's ordinary synchronous API: workflows started
with DBOS.start_workflow run on DBOS's thread pool and their handles resolve in-process; the
fan-out enqueues its steps on a queue (DBOS's documented way to run steps concurrently).
DBOS has no continue-as-new: W6's closest equivalent is a workflow that starts its successor.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from database_stats import count_statements, per_unit, usage
from dbos import DBOS, DBOSConfig, SetWorkflowID
from process_stats import emit, percentile, rss_bytes, sqlite_files_bytes

QUEUE_POLL = 1.0
"""Seconds between the fan-out queue's polls: DBOS's default (0.05 s measured no faster here:
a 1,000-step fan-out on PostgreSQL took 57 s against 50 s)."""

generations = 0
generations_done = threading.Event()


@DBOS.step()
def inc(x: int) -> int:
    return x + 1


@DBOS.workflow()
def chain3(x: int) -> int:
    for _ in range(3):
        x = inc(x)
    return x


@DBOS.workflow()
def fanout(n: int) -> int:
    queue = DBOS.retrieve_queue("fanout")
    assert queue is not None
    handles = [queue.enqueue(inc, i) for i in range(n)]
    return sum(h.get_result() for h in handles)


@DBOS.workflow()
def sequence(n: int) -> int:
    x = 0
    for _ in range(n):
        x = inc(x)
    return x


@DBOS.workflow()
def sleep_until(due: float) -> tuple[float, bool]:
    """(lateness in seconds, whether the sleep began after its due time)."""
    remaining = due - time.time()
    DBOS.sleep(remaining)
    return time.time() - due, remaining <= 0


@DBOS.workflow()
def eternal(n: int, until: int, prefix: str) -> int:
    global generations
    n = inc(n)
    generations = n
    if n >= until:
        generations_done.set()
        return n
    with SetWorkflowID(f"{prefix}-{n}"):
        DBOS.start_workflow(eternal, n, until, prefix)
    return n


def db_bytes(url: str) -> int:
    if url.startswith("sqlite:///"):
        return sqlite_files_bytes(Path(url[len("sqlite:///") :]))
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        return int(row[0]) if row else 0


def w1_latency(p: dict[str, Any], url: str) -> dict[str, Any]:
    observed = []
    for i in range(p["count"]):
        started = time.perf_counter()
        result = DBOS.start_workflow(chain3, i).get_result()
        observed.append((time.perf_counter() - started) * 1000)
        assert result == i + 3, result
    return {"p50_ms": percentile(observed, 50), "p99_ms": percentile(observed, 99)}


def w2_throughput(p: dict[str, Any], url: str) -> dict[str, Any]:
    started = time.perf_counter()
    handles = [DBOS.start_workflow(chain3, i) for i in range(p["count"])]
    all_started = time.perf_counter() - started
    for i, handle in enumerate(handles):
        assert handle.get_result() == i + 3
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "per_s": p["count"] / seconds, "start_all_seconds": all_started}


def w3_fanout(p: dict[str, Any], url: str) -> dict[str, Any]:
    n = p["count"]
    started = time.perf_counter()
    result = DBOS.start_workflow(fanout, n).get_result()
    seconds = time.perf_counter() - started
    assert result == sum(i + 1 for i in range(n)), result
    return {"seconds": seconds, "per_s": n / seconds}


def w4_sequence(p: dict[str, Any], url: str) -> dict[str, Any]:
    n = p["count"]
    started = time.perf_counter()
    result = DBOS.start_workflow(sequence, n).get_result()
    seconds = time.perf_counter() - started
    assert result == n, result
    return {"seconds": seconds, "ms_per_step": seconds * 1000 / n}


def w5_timers(p: dict[str, Any], url: str) -> dict[str, Any]:
    base = time.time() + p["lead"]
    dues = [base + i / p["burst"] for i in range(p["burst"])]
    dues += [base + p["spread_seconds"] * i / p["spread"] for i in range(p["spread"])]
    handles = [DBOS.start_workflow(sleep_until, due) for due in dues]
    results = [h.get_result() for h in handles]
    lateness = [late * 1000 for late, _ in results]
    burst = p["burst"]
    return {
        "p50_ms": percentile(lateness, 50),
        "p99_ms": percentile(lateness, 99),
        "max_ms": max(lateness),
        "burst_p99_ms": percentile(lateness[:burst], 99),
        "spread_p99_ms": percentile(lateness[burst:], 99),
        "created_after_due": sum(1 for _, after in results if after),
    }


def w6_eternal(p: dict[str, Any], url: str) -> dict[str, Any]:
    until = p["count"]
    samples: list[tuple[float, int, int, int]] = []
    started = time.perf_counter()
    prefix = f"eternal-{os.getpid()}"
    with SetWorkflowID(f"{prefix}-0"):
        DBOS.start_workflow(eternal, 0, until, prefix)
    while True:
        done = generations_done.wait(p.get("sample_every", 0.5))
        samples.append((time.perf_counter() - started, generations, rss_bytes(), db_bytes(url)))
        if done:
            break
    seconds = time.perf_counter() - started
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


WORKLOADS = {
    "W1": w1_latency,
    "W2": w2_throughput,
    "W3": w3_fanout,
    "W4": w4_sequence,
    "W5": w5_timers,
    "W6": w6_eternal,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    parser.add_argument("--db", required=True, help="sqlite:///PATH or postgresql://...")
    parser.add_argument("--params", default="{}")
    args = parser.parse_args()
    params = json.loads(args.params)
    count_statements()
    config: DBOSConfig = {
        "name": "dfhost-bench",
        "system_database_url": args.db,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    DBOS.register_queue("fanout", polling_interval_sec=QUEUE_POLL)
    logging.getLogger("dbos").setLevel(logging.WARNING)
    try:
        before = usage(args.db)
        metrics = WORKLOADS[args.workload](params, args.db)
        # Per workflow (W1, W2), per step (W3, W4), per timer or generation (W5, W6).
        units = params.get("count", params.get("burst", 0) + params.get("spread", 0))
        metrics.update(per_unit(before, usage(args.db), units))
    finally:
        DBOS.destroy()
    emit(metrics, pid=os.getpid(), version=_dbos_version())


def _dbos_version() -> str:
    from importlib.metadata import version

    return version("dbos")


if __name__ == "__main__":
    main()
