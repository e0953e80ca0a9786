"""W7: CPU-bound activities next to a 100 ms timer loop and a client polling the status API.

    .venv/bin/python bench/w7_cpu.py [--activities 8] [--work-seconds 2] [--ticks 50]
                                     [--backend sqlite|postgres] [--worker-processes N]
                                     [--iterations N]

Starts `dfhost start bench/apps/cpu_app` on a fresh task hub. It calibrates, in this process,
how many iterations of `spin.py`'s loop take `--work-seconds` (pure Python, no I/O), then
starts one `burn_all` orchestration of `--activities` such activities, waits until they all
run, and starts `ticker`: durable timers of 100 ms one after another, each reporting
how late its episode started, until the activities are done (`--activities 0`: `--ticks`
timers, on an idle host). Meanwhile one client polls the
status API over HTTP (`GET /runtime/webhooks/durabletask/instances/ID`, one keep-alive
connection, a request every `--poll-ms`: the ticker's, and one in five the activities'
orchestration's) and times each request. Prints the timer lateness and status latency (p50,
p99, max) over that window, and how long the activities took.

`--worker-processes N` sets FUNCTIONS_WORKER_PROCESS_COUNT=N for the host (as Azure's
setting is named); the script only passes it through, so it measures whatever the host does
with it. `--activities 0` measures the same loop on an idle host.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from process_stats import percentile
from run import throwaway_database

BENCH = Path(__file__).resolve().parent
APP = BENCH / "apps" / "cpu_app"
API = "/runtime/webhooks/durabletask"
LISTENING = re.compile(r"listening on (http://\S+)")

sys.path.insert(0, str(APP))
from spin import spin  # noqa: E402 - the app's own loop, timed here


def calibrate(seconds: float) -> int:
    """Iterations of `spin` that take `seconds` in this process (the best of three samples)."""
    sample = 300_000
    best = min(_timed(sample) for _ in range(3))
    return int(sample * seconds / best)


def _timed(iterations: int) -> float:
    began = time.perf_counter()
    spin(iterations)
    return time.perf_counter() - began


class Api:
    """One keep-alive connection to the host."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80)
        self._connect()

    def _connect(self) -> None:
        self.conn.close()
        self.conn.connect()
        assert self.conn.sock is not None
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def call(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body)
        try:
            self.conn.request(method, path, data, {"Content-Type": "application/json"})
            response = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError):
            # The server closes a connection idle for its keep-alive timeout (5 s).
            self._connect()
            self.conn.request(method, path, data, {"Content-Type": "application/json"})
            response = self.conn.getresponse()
        text = response.read()
        return response.status, json.loads(text) if text else None

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def host(url: str, env: dict[str, str]) -> Iterator[tuple[str, Any]]:
    """A `dfhost start` process; yields its base URL and its output file."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dfhost", "start", str(APP), "--port=0", f"--store={url}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
        try:
            deadline = time.monotonic() + 60
            while (found := LISTENING.search(_read(out))) is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the host did not start:\n{_read(out)[-2000:]}")
                time.sleep(0.05)
            yield found.group(1), out
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _read(out: Any) -> str:
    out.seek(0)
    text: str = out.read()
    return text


def _until(probe: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value


def status_of(api: Api, instance_id: str) -> dict[str, Any]:
    code, body = api.call("GET", f"{API}/instances/{instance_id}")
    if code not in (200, 202):
        raise RuntimeError(f"status of {instance_id}: {code} {body}")
    assert isinstance(body, dict)
    return body


def run(args: argparse.Namespace, iterations: int) -> dict[str, Any]:
    env = {}
    if args.worker_processes is not None:
        env["FUNCTIONS_WORKER_PROCESS_COUNT"] = str(args.worker_processes)
    with throwaway_database(args.backend, "w7") as url, host(url, env) as (base, out):
        api = Api(base)
        # Warm up: the first activity and timer load the SDK and fill the caches.
        api.call(
            "POST", f"{API}/orchestrators/burn_all/warm?timeout=30", {"count": 1, "iterations": 1}
        )
        api.call("POST", f"{API}/orchestrators/ticker/warm-tick?timeout=30", _ticks(args, 2))
        began = time.monotonic()
        if args.activities:
            spec = {"count": args.activities, "iterations": iterations}
            api.call("POST", f"{API}/orchestrators/burn_all/burn", spec)
            executing = "Executing 'Functions.burn'"
            _until(lambda: _read(out).count(executing) >= args.activities + 1, 60, "the activities")
        # Enough timers to outlast the window; the ticker is terminated at its end.
        code, _ = api.call("POST", f"{API}/orchestrators/ticker/tick", _ticks(args, 100_000))
        assert code == 202, code
        # The window: until the activities are done (or, with none, `--ticks` timers fired).
        # Every status request is timed, the burn's (one in five) too.
        poller = Api(base)
        latencies: list[float] = []
        rounds = 0
        while True:
            rounds += 1
            watched = "burn" if args.activities and rounds % 5 == 0 else "tick"
            sent = time.perf_counter()
            state = status_of(poller, watched)
            latencies.append((time.perf_counter() - sent) * 1000)
            if watched == "burn" and state["runtimeStatus"] == "Completed":
                break
            if watched == "tick":
                lateness = state.get("customStatus") or []
                if state["runtimeStatus"] not in ("Pending", "Running"):
                    raise RuntimeError(f"the ticker ended: {state}")
                if not args.activities and len(lateness) >= args.ticks:
                    lateness = lateness[: args.ticks]
                    break
            time.sleep(args.poll_ms / 1000)
        burn_seconds = time.monotonic() - began if args.activities else None
        if args.activities:
            lateness = status_of(poller, "tick").get("customStatus") or []
        poller.call("POST", f"{API}/instances/tick/terminate?reason=done")
        poller.close()
        api.close()
    return {"lateness": lateness, "status": latencies, "burn_seconds": burn_seconds}


def _ticks(args: argparse.Namespace, ticks: int) -> dict[str, int]:
    return {"ticks": ticks, "period_ms": 100}


def _load() -> float:
    return os.getloadavg()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--activities", type=int, default=8)
    parser.add_argument("--work-seconds", type=float, default=2.0)
    parser.add_argument("--ticks", type=int, default=50, help="with --activities 0")
    parser.add_argument("--poll-ms", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--worker-processes", type=int)
    parser.add_argument("--iterations", type=int, help="the loop's work per activity, fixed")
    args = parser.parse_args()
    # Calibrating under a changing load gives each invocation different work: pass the
    # printed count to the next invocations with --iterations to compare them.
    iterations = args.iterations or calibrate(args.work_seconds)
    print(f"{iterations:,} iterations take ~{args.work_seconds:g} s here", flush=True)
    for number in range(args.runs):
        load = _load()
        result = run(args, iterations)
        late, status = result["lateness"], result["status"]
        burn = result["burn_seconds"]
        print(
            f"run {number + 1} ({args.backend}, {args.activities} activities, workers "
            f"{args.worker_processes or 'default'}, load {load:.2f}): "
            f"timer lateness p50 {percentile(late, 50):.1f} p99 {percentile(late, 99):.1f} "
            f"max {max(late):.1f} ms ({len(late)} timers); status p50 "
            f"{percentile(status, 50):.1f} p99 {percentile(status, 99):.1f} max "
            f"{max(status):.1f} ms ({len(status)} requests); activities "
            + (f"done after {burn:.1f} s" if burn is not None else "none"),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
