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

Prints, per variant, the median over rounds of each round's p50 and p99 (ms) and of the CPU
the process running the engine spent per chain (in process: engine and client; over HTTP: the
`dfhost start` process alone), which a busy machine disturbs far less than latency, and the
load; and for each HTTP variant the p50 of the cheapest request, `GET /admin/host/ping`
(500 on one connection after the chains): the floor every HTTP call pays.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from http_latency import APP, LISTENING, measure
from process_stats import percentile
from run import sqlite_database

BENCH = Path(__file__).resolve().parent
HIDE_HTTPTOOLS = """raise ImportError("hidden by bench/http_overhead.py --before-no-httptools")\n"""


def in_process(count: int, console: bool) -> tuple[float, float, float]:
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
    return metrics["p50_ms"], metrics["p99_ms"], metrics["cpu_ms_per_chain"]


def over_http(count: int, pythonpath: str | None) -> tuple[float, float, float]:
    """p50, p99 and the host process's CPU milliseconds per chain (user + system)."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    with sqlite_database("http") as url, tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dfhost", "start", str(APP), "--port=0", f"--store={url}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            base = _listening(proc, out)
            measure(base, 1)  # imports and caches, outside the figures (ids reused: replaced)
            cpu_before = _cpu_seconds(proc.pid)
            latencies = measure(base, count)
            cpu = (_cpu_seconds(proc.pid) - cpu_before) * 1000 / (count + 5)
            pings = ping(base, 500)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    PINGS.setdefault(pythonpath, []).append(percentile(pings, 50))
    return percentile(latencies, 50), percentile(latencies, 99), cpu


PINGS: dict[str | None, list[float]] = {}
"""p50 of `GET /admin/host/ping` per HTTP variant (by its PYTHONPATH), one per round."""


def ping(base: str, count: int) -> list[float]:
    """Latencies of the cheapest request (`/admin/host/ping`: the access check, routing, an
    empty 200) on one keep-alive connection: the floor any HTTP call pays."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80)
    conn.connect()
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    latencies = []
    for _ in range(count):
        began = time.perf_counter()
        conn.request("GET", "/admin/host/ping")
        response = conn.getresponse()
        response.read()
        latencies.append((time.perf_counter() - began) * 1000)
    conn.close()
    return latencies


def _listening(proc: subprocess.Popen[bytes], out: Any) -> str:
    deadline = time.monotonic() + 60
    while True:
        out.seek(0)
        found = LISTENING.search(out.read())
        if found:
            return found.group(1)
        if proc.poll() is not None or time.monotonic() > deadline:
            out.seek(0)
            raise RuntimeError(f"the host did not start:\n{out.read()[-2000:]}")
        time.sleep(0.05)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    results: dict[str, list[tuple[float, float, float]]] = {}
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
            paths = {"http": None, "http-h11": hidden, "http-before": before_path}
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
    for name, runs in results.items():
        p50 = statistics.median(r[0] for r in runs)
        p99 = statistics.median(r[1] for r in runs)
        cpu = statistics.median(r[2] for r in runs)
        print(f"  {name:15} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  CPU {cpu:5.2f} ms per chain")
    for name, path in paths.items():
        if path in PINGS:
            floor = statistics.median(PINGS[path])
            print(f"  {name:15} GET /admin/host/ping p50 {floor:5.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
