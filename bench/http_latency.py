"""W1 over HTTP: a 3-activity chain started and awaited with one request to `dfhost start`.

    .venv/bin/python bench/http_latency.py [--count 100] [--backends sqlite,postgres]

Starts `dfhost start bench/apps/bench_app --port=0` on a fresh task hub (a SQLite file, or a
throwaway PostgreSQL database as bench/run.py makes them), then sends `--count` requests one
after another on one keep-alive connection:
`POST /runtime/webhooks/durabletask/orchestrators/chain3/ID?timeout=10` with the input, which
answers 200 with the output once the orchestration completed (the start-and-wait of the
management API, as `client.start_new` plus `wait_for_completion`). Prints the p50 and p99 of
the request's latency per backend. Compare with W1 in process (`bench/run.py --workloads W1`):
the same chain without HTTP and the host's console.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from process_stats import percentile
from run import PG_URL, Postgres, sqlite_database

BENCH = Path(__file__).resolve().parent
APP = BENCH / "apps" / "bench_app"
LISTENING = re.compile(r"listening on (http://\S+)")


@contextlib.contextmanager
def host(url: str) -> Iterator[str]:
    """A `dfhost start` process on the task hub `url`; yields its base URL."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dfhost", "start", str(APP), "--port=0", f"--store={url}"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while (found := LISTENING.search(_read(out))) is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the host did not start:\n{_read(out)[-2000:]}")
                time.sleep(0.05)
            yield found.group(1)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _read(out: object) -> str:
    assert hasattr(out, "seek") and hasattr(out, "read")
    out.seek(0)
    text: str = out.read()
    return text


def measure(base: str, count: int) -> list[float]:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80)
    conn.connect()
    # http.client writes a request's headers and body separately: without this, Nagle's
    # algorithm holds the body until the server's delayed ACK (40 ms). Clients like urllib3
    # and httpx set it too.
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    latencies = []
    for i in range(count + 5):  # the first few warm up the host (imports, connections)
        path = f"/runtime/webhooks/durabletask/orchestrators/chain3/http-{i}?timeout=10"
        body = json.dumps(i)
        began = time.perf_counter()
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        answer = response.read()
        elapsed = (time.perf_counter() - began) * 1000
        if response.status != 200 or json.loads(answer) != i + 3:
            raise RuntimeError(f"request {i}: {response.status} {answer[:200]!r}")
        if i >= 5:
            latencies.append(elapsed)
    conn.close()
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    for backend in args.backends.split(","):
        if backend == "postgres":
            postgres = Postgres(PG_URL)
            why = postgres.reachable()
            if why is not None:
                print(f"postgres: not available ({why})")
                continue
            database = postgres.database()
        else:
            database = sqlite_database("dfhost")
        with database as url, host(url) as base:
            latencies = measure(base, args.count)
        print(
            f"{backend}: start-and-wait over HTTP, {args.count} chains: "
            f"p50 {percentile(latencies, 50):.2f} ms, p99 {percentile(latencies, 99):.2f} ms",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
