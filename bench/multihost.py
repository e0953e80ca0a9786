"""Throughput of 1, 2 and 3 `dfhost start` hosts sharing one PostgreSQL task hub.

    .venv/bin/python bench/multihost.py [--hosts 1,2,3] [--runs 3] [--chains 1000]
                                        [--fanouts 10] [--width 100]

Each run starts N host processes (`dfhost start bench/apps/bench_app --store URL`) on a fresh
throwaway database (`dfhost_bench_<random>` on $BENCH_PG_URL, default
postgresql://postgres@127.0.0.1:5432/postgres, dropped afterwards), waits until every host
listens, then starts the workload from this process through the store, as `dfhost instances`
or another app's client would: `--chains` 3-activity chains and `--fanouts` fan-outs of
`--width` activities each, all at once. The clock runs from the first start to the moment the
store counts every instance Completed (polled every 0.1 s). Host counts alternate within a run
(the order rotates every run) so drift on a shared machine hits each alike.

Prints, per host count, the median and min-max of orchestrations/s and activities/s, with the
hosts' CPU seconds and the load average around each run, and writes every run to
bench/results/multihost-<timestamp>.json. The database keeps the server's own settings
(`synchronous_commit` is recorded): the tests turn it off, a user's server would not.

The hosts run the dfhost this process imports, fingerprinted per run. To measure a fixed tree
while others edit the checkout, put a snapshot first on the path:

    git archive HEAD src | tar -x -C /tmp/snap
    PYTHONPATH=/tmp/snap/src .venv/bin/python bench/multihost.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from database_stats import cpu_seconds, database_cpu_seconds
from run import PG_URL, RESULTS, Postgres, machine

import dfhost
from dfhost.app.functions import FunctionApp
from dfhost.app.loader import load_app
from dfhost.client import DurableClient
from dfhost.history import OrchestrationStatus
from dfhost.store import InstanceQuery, Store, open_store

BENCH = Path(__file__).resolve().parent
APP = BENCH / "apps" / "bench_app"
HUB = "BenchHub"
LISTENING = re.compile(r"listening on (http://\S+)")
EXECUTED_ACTIVITY = "Executed 'Functions.inc'"
START_BATCH = 50
"""Instances started concurrently by the client (as tests/multihost does)."""


SOURCE = Path(dfhost.__file__).resolve().parent
"""The dfhost the hosts run: this checkout's, or another tree put first on PYTHONPATH (a
snapshot, so that edits made while the benchmark runs don't mix code versions)."""


def source_fingerprint() -> str:
    """A digest of the dfhost package the hosts load (as bench/run.py's, for any tree)."""
    digest = hashlib.sha1()
    for path in sorted(SOURCE.rglob("*.py")):
        digest.update(str(path.relative_to(SOURCE.parent)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@dataclass
class Host:
    """One `dfhost start` process; its console goes to a file, read after the run."""

    log: Path
    proc: subprocess.Popen[bytes]
    cpu_seconds: float = 0.0
    activities: int = 0

    @classmethod
    def spawn(cls, url: str, folder: Path, index: int) -> Host:
        log = folder / f"host{index}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dfhost", "start", str(APP), "--port=0", f"--store={url}"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return cls(log, proc)

    def listening(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"a host exited at start:\n{self.log.read_text()[-2000:]}")
        return LISTENING.search(self.log.read_text(errors="replace")) is not None

    def stop(self) -> None:
        self.cpu_seconds = cpu_seconds(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.activities = self.log.read_text(errors="replace").count(EXECUTED_ACTIVITY)


@contextlib.contextmanager
def hosts(count: int, url: str) -> Iterator[list[Host]]:
    folder = Path(tempfile.mkdtemp(prefix="dfhost_bench_mh_"))
    started = [Host.spawn(url, folder, i) for i in range(count)]
    try:
        deadline = time.monotonic() + 60
        while not all(host.listening() for host in started):
            if time.monotonic() > deadline:
                raise RuntimeError("the hosts did not start within 60 s")
            time.sleep(0.05)
        yield started
    except BaseException:
        for host in started:
            host.stop()
        print(f"the hosts' logs are in {folder}", file=sys.stderr)
        raise
    for host in started:
        host.stop()
    shutil.rmtree(folder)


@dataclass
class Workload:
    chains: int
    fanouts: int
    width: int

    @property
    def orchestrations(self) -> int:
        return self.chains + self.fanouts

    @property
    def activities(self) -> int:
        return 3 * self.chains + self.width * self.fanouts

    def starts(self) -> list[tuple[str, str, Any]]:
        # Interleaved, so fan-outs run while chains do rather than after them.
        every = max(1, self.chains // max(1, self.fanouts))
        order: list[tuple[str, str, Any]] = []
        fanouts = iter(range(self.fanouts))
        for i in range(self.chains):
            order.append(("chain3", f"chain-{i}", i))
            if i % every == 0 and (f := next(fanouts, None)) is not None:
                order.append(("fanout", f"fan-{f}", self.width))
        order += [("fanout", f"fan-{f}", self.width) for f in fanouts]
        return order

    def expected(self, name: str, value: int) -> int:
        return value + 3 if name == "chain3" else sum(i + 1 for i in range(value))


async def drive(
    url: str, app: FunctionApp, workload: Workload, patience: float
) -> dict[str, float]:
    """Start the workload through the store, wait for it, check every output."""
    store: Store = open_store(url)
    await store.start()
    try:
        client = DurableClient(store, app)
        order = workload.starts()
        began = time.monotonic()
        for first in range(0, len(order), START_BATCH):
            await asyncio.gather(
                *(
                    client.start_new(name, instance_id, json.dumps(value))
                    for name, instance_id, value in order[first : first + START_BATCH]
                )
            )
        started = time.monotonic() - began
        done = InstanceQuery(statuses=[OrchestrationStatus.COMPLETED])
        failed = InstanceQuery(statuses=[OrchestrationStatus.FAILED])
        while await store.count_instances(done) < len(order):
            if await store.count_instances(failed):
                raise RuntimeError("an orchestration failed")
            if time.monotonic() - began > patience:
                raise TimeoutError(f"not finished within {patience} s")
            await asyncio.sleep(0.1)
        seconds = time.monotonic() - began
        # Read before anyone disconnects: a backend's CPU is gone with it.
        database_cpu = database_cpu_seconds(urlsplit(url).path.lstrip("/"))
        for name, instance_id, value in order:
            instance = await store.get_instance(instance_id)
            assert instance is not None and instance.output is not None, instance_id
            if json.loads(instance.output) != workload.expected(name, value):
                raise RuntimeError(f"{instance_id} returned {instance.output}")
        return {"seconds": seconds, "start_all_seconds": started, "database_cpu": database_cpu}
    finally:
        await store.close()


@dataclass
class Run:
    hosts: int
    seconds: float
    start_all_seconds: float
    orchestrations_per_s: float
    activities_per_s: float
    host_cpu_seconds: list[float]
    host_activities: list[int]
    database_cpu_seconds: float
    """CPU of the PostgreSQL backends serving the run's database (hosts' and client's)."""
    load_before: float
    load_after: float
    src: str
    """The source fingerprint when the run began (a tree may change during a benchmark)."""


def one_run(
    postgres: Postgres, count: int, app: FunctionApp, workload: Workload, timeout: float
) -> Run:
    with postgres.database() as database:
        url = f"{database}?hub={HUB}"
        load_before = os.getloadavg()[0]
        src = source_fingerprint()
        with hosts(count, url) as running:
            measured = asyncio.run(drive(url, app, workload, timeout))
        return Run(
            hosts=count,
            seconds=measured["seconds"],
            start_all_seconds=measured["start_all_seconds"],
            orchestrations_per_s=workload.orchestrations / measured["seconds"],
            activities_per_s=workload.activities / measured["seconds"],
            host_cpu_seconds=[round(host.cpu_seconds, 2) for host in running],
            host_activities=[host.activities for host in running],
            database_cpu_seconds=round(measured["database_cpu"], 2),
            load_before=load_before,
            load_after=os.getloadavg()[0],
            src=src,
        )


def shares(runs: list[Run]) -> str:
    """Each host's share of the activities, in %, min-max over the runs (even spread: 100/N)."""
    if not runs or len(runs[0].host_activities) < 2:
        return "-"
    parts = [
        100 * count / max(1, sum(run.host_activities))
        for run in runs
        for count in run.host_activities
    ]
    return f"{min(parts):.0f}-{max(parts):.0f}%"


def summary(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", default="1,2,3", help="host counts to compare (1,2,3)")
    parser.add_argument("--runs", type=int, default=3, help="runs per host count (3)")
    parser.add_argument("--chains", type=int, default=1000, help="3-activity chains (1000)")
    parser.add_argument("--fanouts", type=int, default=10, help="fan-out orchestrations (10)")
    parser.add_argument("--width", type=int, default=100, help="activities per fan-out (100)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run (600)")
    args = parser.parse_args(argv)
    try:
        args.counts = [int(part) for part in args.hosts.split(",")]
    except ValueError:
        parser.error("--hosts takes host counts such as 1,2,3")
    if not args.counts or min(args.counts) < 1 or args.runs < 1:
        parser.error("--hosts and --runs must be positive")
    if args.chains < 0 or args.fanouts < 0 or args.width < 1 or args.chains + args.fanouts < 1:
        parser.error("--chains and --fanouts must leave some work, --width must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Stopped by `timeout` or a supervisor: still stop the hosts and drop the database.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    postgres = Postgres(PG_URL)
    why = postgres.reachable()
    if why is not None:
        print(f"postgres: not available ({why})", file=sys.stderr)
        return 1
    workload = Workload(args.chains, args.fanouts, args.width)
    logging.disable(logging.WARNING)  # the SDK's note that auth levels don't apply here
    app = load_app(APP)
    logging.disable(logging.NOTSET)
    info = machine() | {
        "dfhost_source": str(SOURCE),
        "source_fingerprint": source_fingerprint(),
        "postgres": postgres.version,
        "synchronous_commit": str(postgres._admin("SHOW synchronous_commit")),
    }
    command = shlex.join([Path(sys.executable).name, "bench/multihost.py", *(argv or sys.argv[1:])])
    print(
        f"dfhost from {SOURCE} (fingerprint {info['source_fingerprint']}; checkout "
        f"{info['dfhost_commit']}), "
        f"{info['nproc']} cores, PostgreSQL {info['postgres']} "
        f"(synchronous_commit={info['synchronous_commit']}); {workload.orchestrations} "
        f"orchestrations ({workload.chains} chains of 3, {workload.fanouts} fan-outs of "
        f"{workload.width}) = {workload.activities} activities per run",
        flush=True,
    )
    runs: list[Run] = []
    for index in range(args.runs):
        shift = index % len(args.counts)
        for count in args.counts[shift:] + args.counts[:shift]:
            run = one_run(postgres, count, app, workload, args.timeout)
            runs.append(run)
            print(
                f"run {index + 1}, {count} host(s): {run.seconds:.1f} s, "
                f"{run.orchestrations_per_s:.1f} orchestrations/s, "
                f"{run.activities_per_s:.0f} activities/s; activities per host "
                f"{run.host_activities}, host CPU {run.host_cpu_seconds} s, database CPU "
                f"{run.database_cpu_seconds} s; load "
                f"{run.load_before:.2f} -> {run.load_after:.2f}",
                flush=True,
            )
    if {run.src for run in runs} != {info["source_fingerprint"]}:
        print(f"warning: {SOURCE} changed during the run; runs may mix code versions")
    print(
        "\nhosts | orchestrations/s median [min-max] | activities/s | host CPU s (sum) | "
        "database CPU s | database CPU ms per orchestration | shares of the activities | load"
    )
    for count in args.counts:
        mine = [run for run in runs if run.hosts == count]
        print(
            f"{count} | {summary([r.orchestrations_per_s for r in mine])} | "
            f"{summary([r.activities_per_s for r in mine])} | "
            f"{summary([sum(r.host_cpu_seconds) for r in mine])} | "
            f"{summary([r.database_cpu_seconds for r in mine])} | "
            f"{summary([r.database_cpu_seconds * 1000 / workload.orchestrations for r in mine])} | "
            f"{shares(mine)} | "
            f"{summary([r.load_before for r in mine])} -> "
            f"{summary([r.load_after for r in mine])}"
        )
    per = statistics.median(r.database_cpu_seconds / workload.orchestrations for r in runs)
    print(
        f"\nprojected ceiling of one hub: {16 / per:.0f} orchestrations/s per 16 database "
        f"cores ({per * 1000:.2f} ms of database CPU per orchestration, median of all runs; "
        "what the database does, whatever the number of hosts)"
    )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"multihost-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    report = {
        "command": command,
        "machine": info,
        "workload": workload.__dict__,
        "runs": [run.__dict__ for run in runs],
    }
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out.relative_to(BENCH.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
