"""W1 and W2 with a Durable Task SDK worker and client (`durabletask`) over gRPC, against
`dfhost serve` on SQLite or against the SDK's own in-memory backend (`durabletask.testing`).

    .venv/bin/python bench/durabletask_side.py --rounds 3 [--w1 200] [--w2 1000]

Each backend runs in a process of its own (the in-memory one too, so that neither shares the
GIL with the worker and client, which run in this process with the SDK's default
concurrency). Rounds alternate the backends. W1: a 3-activity chain started and awaited, one
after another (`wait_for_orchestration_completion`), latency per chain; W2: that many chains
started at once, seconds until every one completed. dfhost's hub is a fresh SQLite file per
round, committed with the disk flushes dfhost makes by default; the in-memory backend keeps
nothing across a restart.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from durabletask import client, task, worker

REPO = Path(__file__).resolve().parents[1]
MEMORY_BACKEND = """
import sys, threading
from durabletask.testing import create_test_backend
create_test_backend(port=int(sys.argv[1]), max_history_size=100000)
print("ready", flush=True)
threading.Event().wait()
"""


def step(ctx: task.ActivityContext, value: int) -> int:
    return value + 1


def chain(ctx: task.OrchestrationContext, value: int) -> Any:
    value = yield ctx.call_activity(step, input=value)
    value = yield ctx.call_activity(step, input=value)
    value = yield ctx.call_activity(step, input=value)
    return value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def backend(kind: str) -> Iterator[str]:
    """A running backend of `kind` ("dfhost", "dfhost-normal" or "memory"); yields its gRPC
    address."""
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="dt-bench-") as folder:
        if kind.startswith("dfhost"):
            # dfhost-normal: SQLite's synchronous=NORMAL (a SIGKILL loses nothing, a power
            # cut may lose the last commits); dfhost: FULL, dfhost's default.
            options = "?synchronous=normal" if kind == "dfhost-normal" else ""
            command = [
                str(REPO / ".venv" / "bin" / "dfhost"), "serve",
                "--store", f"sqlite:///{folder}/hub.sqlite3{options}",
                "--grpc-port", str(port), "--port", "0",
            ]  # fmt: skip
            ready = "listening on"
        else:
            command = [sys.executable, "-c", MEMORY_BACKEND, str(port)]
            ready = "ready"
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=folder
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if ready in line:
                    break
            else:
                raise RuntimeError(f"{kind} backend did not start")
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(30)


def w1(c: client.TaskHubGrpcClient, count: int) -> dict[str, float]:
    latencies = []
    for i in range(count):
        started = time.perf_counter()
        instance_id = c.schedule_new_orchestration(chain, input=i)
        state = c.wait_for_orchestration_completion(instance_id, timeout=60)
        latencies.append((time.perf_counter() - started) * 1000)
        assert state is not None and state.serialized_output == str(i + 3), state
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
    }


def w2(c: client.TaskHubGrpcClient, count: int) -> dict[str, float]:
    started = time.perf_counter()
    ids = [c.schedule_new_orchestration(chain, input=i) for i in range(count)]
    start_all = time.perf_counter() - started
    for i, instance_id in enumerate(ids):
        state = c.wait_for_orchestration_completion(instance_id, timeout=600)
        assert state is not None and state.serialized_output == str(i + 3), state
    return {"seconds": time.perf_counter() - started, "start_all_seconds": start_all}


def run(kind: str, w1_count: int, w2_count: int) -> dict[str, Any]:
    with backend(kind) as address:
        w = worker.TaskHubGrpcWorker(host_address=address)
        w.add_orchestrator(chain)
        w.add_activity(step)
        with w:
            w.start()
            c = client.TaskHubGrpcClient(host_address=address)
            w1(c, 10)  # warm-up: connections, imports, the hub's first pages
            result: dict[str, Any] = {"backend": kind, "load_1m": os.getloadavg()[0]}
            result["W1"] = w1(c, w1_count)
            result["W2"] = w2(c, w2_count)
            result["load_1m_after"] = os.getloadavg()[0]
            return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--w1", type=int, default=200, help="W1 chains (default 200)")
    parser.add_argument("--w2", type=int, default=1000, help="W2 chains (default 1000)")
    parser.add_argument("--backends", default="dfhost,memory")
    args = parser.parse_args()
    import logging

    logging.disable(logging.INFO)  # the SDK logs every step at INFO
    for round_number in range(args.rounds):
        for kind in args.backends.split(","):
            result = run(kind, args.w1, args.w2)
            result["round"] = round_number + 1
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
