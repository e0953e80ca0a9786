"""W1 in process against W1 over HTTP, interleaved: what the start-and-wait request adds.

    .venv/bin/python bench/http_overhead.py [--rounds 5] [--count 300]
                                            [--h11-too] [--before-src /tmp/base/src
                                            [--before-no-httptools]]

Each round runs, one after the other on fresh SQLite hubs, `--count` 3-activity chains:

- `in-process`: bench/dfhost_side.py W1 (the client and the engine in one process, no console);
- `in-process+log`: the same, logging every function run as `dfhost start` does (INFO lines
  to a file), to tell the console's share;
- `http`: bench/http_latency.py (`dfhost start`, one keep-alive connection, start-and-wait);
- `http-h11` with `--h11-too`: the same without httptools;
- `http-before` with `--before-src`: the same with dfhost imported from another checkout
  (e.g. a worktree of main at the commit before a change), and with `--before-no-httptools`
  without httptools (uvicorn then parses HTTP with h11), as before dfhost depended on it.

Prints, per variant, the median over rounds of each round's p50 and p99 (ms), and the load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from http_latency import host, measure
from process_stats import percentile
from run import sqlite_database

BENCH = Path(__file__).resolve().parent
HIDE_HTTPTOOLS = """raise ImportError("hidden by bench/http_overhead.py --before-no-httptools")\n"""


def in_process(count: int, console: bool) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        command = [
            sys.executable,
            str(BENCH / "dfhost_side.py"),
            "--workload=W1",
            f"--store=sqlite:///{folder}/hub.sqlite3",
            f"--params={json.dumps({'count': count})}",
        ]
        if console:
            command.append(f"--console-log={folder}/console.txt")
        out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    metrics = json.loads(out.stdout.strip().splitlines()[-1])["metrics"]
    return metrics["p50_ms"], metrics["p99_ms"]


def over_http(count: int, pythonpath: str | None) -> tuple[float, float]:
    saved = os.environ.get("PYTHONPATH")
    if pythonpath is not None:
        os.environ["PYTHONPATH"] = pythonpath
    try:
        with sqlite_database("http") as url, host(url) as base:
            latencies = measure(base, count)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    return percentile(latencies, 50), percentile(latencies, 99)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--before-src", help="a src folder of dfhost to compare with")
    parser.add_argument("--before-no-httptools", action="store_true")
    parser.add_argument(
        "--h11-too", action="store_true", help="also `http-h11`: this code without httptools"
    )
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {}
    loads: list[float] = []
    with tempfile.TemporaryDirectory() as hidden:
        (Path(hidden) / "httptools").mkdir()
        (Path(hidden) / "httptools" / "__init__.py").write_text(HIDE_HTTPTOOLS)
        before_path = None
        if args.before_src:
            paths = [str(Path(args.before_src).resolve())]
            if args.before_no_httptools:
                paths.append(hidden)
            before_path = os.pathsep.join(paths)
        for number in range(args.rounds):
            loads.append(os.getloadavg()[0])
            variants = {
                "in-process": lambda: in_process(args.count, console=False),
                "in-process+log": lambda: in_process(args.count, console=True),
                "http": lambda: over_http(args.count, None),
            }
            if args.h11_too:
                variants["http-h11"] = lambda: over_http(args.count, hidden)
            if before_path is not None:
                variants["http-before"] = lambda: over_http(args.count, before_path)
            # Every round in another order, so drift on the machine hits each variant alike.
            order = list(variants)
            order = order[number % len(order) :] + order[: number % len(order)]
            for name in order:
                results.setdefault(name, []).append(variants[name]())
            print(
                f"round {number + 1}: "
                + ", ".join(f"{n} p50 {results[n][-1][0]:.2f}" for n in variants),
                flush=True,
            )
    print(f"load (1 min) {min(loads):.2f}-{max(loads):.2f}; medians over {args.rounds} rounds:")
    for name, pairs in results.items():
        p50 = statistics.median(p for p, _ in pairs)
        p99 = statistics.median(p for _, p in pairs)
        print(f"  {name:15} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
