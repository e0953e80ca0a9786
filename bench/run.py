"""dfhost side by side with DBOS: the workloads of issue 7, alternating runs, one command.

    .venv/bin/python bench/run.py [--quick] [--workloads W1,W3] [--runs 3]
                                  [--backends sqlite,postgres] [--peers dbos|none]

Each run of each side is its own process (bench/dfhost_side.py in this venv,
bench/dbos_side.py in bench/.venvs/dbos, which this installs on first use), on a fresh
database: a SQLite file in a temporary folder, or a throwaway PostgreSQL database
`dfhost_bench_<random>` (when one answers at $BENCH_PG_URL, default
postgresql://postgres@127.0.0.1:5432/postgres) dropped afterwards. dfhost and DBOS runs
alternate (and swap which goes first every run), so drift on the machine hits both. Prints the
median and min-max of each metric, the dfhost/DBOS ratio and issue 7's target, and writes
everything to bench/results/<timestamp>.json (and a Markdown table beside it).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
DBOS_VENV = BENCH / ".venvs" / "dbos"
DBOS_PACKAGES = ("dbos", "psycopg[binary]")
QUICK_TIMEOUT = 180.0
"""Seconds a --quick run may take before it is killed (a wedged side fails the smoke test)."""
PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@dataclass(frozen=True)
class Metric:
    key: str
    unit: str
    lower_is_better: bool = True
    target: float | None = None
    """Issue 7's target for dfhost on SQLite (full sizes only)."""
    headline: bool = True
    """Counts for the '3x better than DBOS' check."""


@dataclass(frozen=True)
class Workload:
    key: str
    kind: str
    """Which side function runs it: W1..W6."""
    title: str
    full: dict[str, Any]
    quick: dict[str, Any]
    metrics: tuple[Metric, ...]
    timeout: float = 900
    notes: str = ""


LATENESS = (
    Metric("p50_ms", "ms"),
    Metric("p99_ms", "ms", target=20),
    Metric("burst_p99_ms", "ms", headline=False),
    Metric("spread_p99_ms", "ms", headline=False),
    Metric("created_after_due", "timers", headline=False),
)
FOOTPRINT = (
    Metric("gens_per_s", "/s", lower_is_better=False),
    Metric("rss_start_mb", "MB", headline=False),
    Metric("rss_end_mb", "MB", headline=False),
    Metric("db_start_mb", "MB", headline=False),
    Metric("db_end_mb", "MB", headline=False),
)

WORKLOADS = (
    Workload(
        "W1",
        "W1",
        "latency: 3-activity chain, run one after another",
        {"count": 200},
        {"count": 20},
        (
            Metric("p50_ms", "ms", target=3),
            Metric("p99_ms", "ms", target=8),
            Metric("stored_p50_ms", "ms", headline=False),
            Metric("stored_p99_ms", "ms", headline=False),
            Metric("gap_created_to_first_episode_ms", "ms", headline=False),
            Metric("gap_episode_to_activity_done_ms", "ms", headline=False),
            Metric("gap_activity_done_to_episode_ms", "ms", headline=False),
        ),
        notes="start to completion seen by the caller; dfhost's client is woken by its "
        "store when the in-process engine commits the end (and polls every 0.5 ms), DBOS's "
        "awaits its handle; stored_* is the instance's own last_updated_at - created_at; gap_* "
        "split a dfhost chain's time by its history's timestamps (medians)",
    ),
    Workload(
        "W2",
        "W2",
        "throughput: 3-activity chains started at once, until all complete",
        {"count": 1000},
        {"count": 50},
        (
            Metric("seconds", "s", target=2),
            Metric("start_all_seconds", "s", headline=False),
        ),
    ),
    Workload(
        "W3-1k",
        "W3",
        "fan-out/fan-in of 1,000 activities in one orchestration",
        {"count": 1000},
        {"count": 100},
        (Metric("seconds", "s", target=1),),
    ),
    Workload(
        "W3-10k",
        "W3",
        "fan-out/fan-in of 10,000 activities in one orchestration",
        {"count": 10000},
        {"count": 200},
        (Metric("seconds", "s", target=10),),
        timeout=1200,
    ),
    Workload(
        "W4",
        "W4",
        "1,000 sequential activities in one orchestration",
        {"count": 1000},
        {"count": 100},
        (Metric("seconds", "s", target=1), Metric("ms_per_step", "ms", headline=False)),
    ),
    Workload(
        "W5",
        "W5",
        "timer lateness: 1,000 due in the same second + 100 spread over 10 s",
        {"burst": 1000, "spread": 100, "spread_seconds": 10, "lead": 20},
        {"burst": 50, "spread": 10, "spread_seconds": 2, "lead": 4},
        LATENESS,
        notes="dfhost: ORCHESTRATOR_STARTED of the episode that consumed TimerFired minus "
        "FireAt; DBOS: wake-up of DBOS.sleep minus its due time. lead = seconds between the "
        "start of the run and the first due time (created_after_due counts timers that were "
        "only created after they were due)",
    ),
    Workload(
        "W6",
        "W6",
        "eternal loop: continue-as-new generations, one activity each",
        {"count": 10000},
        {"count": 200},
        FOOTPRINT,
        timeout=1800,
        notes="DBOS has no continue-as-new: its run is a workflow that starts its successor "
        "(a new workflow row per generation). start = first sample past 5% of the generations",
    ),
)


# --- machine and databases ----------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "dfhost_commit": commit + ("+uncommitted src changes" if dirty else ""),
        "src_fingerprint": src_fingerprint(),
        "sdk": _version("azure-functions-durable"),
    }


def src_fingerprint() -> str:
    """A digest of dfhost's source as this run's process will load it: the tree may be edited
    while a long benchmark runs, and runs of different code must not be pooled unnoticed."""
    digest = hashlib.sha1()
    for path in sorted((ROOT / "src").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


class Postgres:
    """Throwaway databases on the server at `base_url` (a maintenance database URL)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.version = ""

    def reachable(self) -> str | None:
        """None if usable, else why not."""
        parts = urlsplit(self.base_url)
        try:
            with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 1):
                pass
        except OSError as exc:
            return f"nothing answers at {parts.hostname}:{parts.port or 5432} ({exc})"
        try:
            self.version = str(self._admin("SHOW server_version"))
        except Exception as exc:
            return f"cannot run SQL on {self.base_url}: {exc}"
        return None

    def _admin(self, sql: str) -> Any:
        try:
            import psycopg
        except ImportError:
            psql = shutil.which("psql")
            if psql is None:
                raise RuntimeError("neither psycopg nor psql is installed") from None
            out = subprocess.run(
                [psql, self.base_url, "-XAtqc", sql], capture_output=True, text=True, check=True
            )
            return out.stdout.strip()
        with psycopg.connect(self.base_url, autocommit=True) as conn:
            cursor = conn.execute(sql.encode())
            row = cursor.fetchone() if cursor.description else None
            return row[0] if row else None

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        name = f"dfhost_bench_{uuid.uuid4().hex[:12]}"
        self._admin(f"CREATE DATABASE {name}")
        try:
            yield urlunsplit(urlsplit(self.base_url)._replace(path=f"/{name}"))
        finally:
            self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def sqlite_database(side: str) -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix=f"dfhost_bench_{side}_")
    try:
        yield f"sqlite:///{folder}/{side}.sqlite3"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def throwaway_database(backend: str, side: str) -> Iterator[str]:
    """A fresh task hub for one run: a PostgreSQL database at PG_URL (exits with one line when
    none answers) or a SQLite file."""
    if backend == "postgres":
        postgres = Postgres(PG_URL)
        why = postgres.reachable()
        if why is not None:
            raise SystemExit(f"postgres: not available ({why})")
        with postgres.database() as url:
            yield url
    else:
        with sqlite_database(side) as url:
            yield url


# --- the sides ------------------------------------------------------------------------------


def ensure_dbos_venv() -> Path:
    python = DBOS_VENV / "bin" / "python"
    if python.exists() and _imports(python, "dbos"):
        return python
    print(f"installing DBOS into {DBOS_VENV.relative_to(ROOT)} ...", flush=True)
    DBOS_VENV.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", None) or shutil.which("python3") or sys.executable
    subprocess.run([base, "-m", "venv", "--clear", str(DBOS_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *DBOS_PACKAGES], check=True)
    return python


def _imports(python: Path, module: str) -> bool:
    return subprocess.run([str(python), "-c", f"import {module}"], check=False).returncode == 0


def dbos_version(python: Path) -> str:
    out = subprocess.run(
        [str(python), "-c", "from importlib.metadata import version; print(version('dbos'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "unknown"


@dataclass
class Side:
    name: str
    python: Path
    script: Path
    db_flag: str
    unavailable: dict[str, str] = field(default_factory=dict)
    """backend -> why this side cannot run on it."""

    def command(self, workload: Workload, url: str, params: dict[str, Any]) -> list[str]:
        return [
            str(self.python),
            str(self.script),
            "--workload",
            workload.kind,
            self.db_flag,
            url,
            "--params",
            json.dumps(params),
        ]


def run_side(side: Side, workload: Workload, url: str, params: dict[str, Any]) -> dict[str, Any]:
    """One run in its own process; its CPU time and peak RSS come from the kernel (wait4)."""
    command = side.command(workload, url, params)
    env = {**os.environ, "PYTHONPATH": str(BENCH), "PYTHONUNBUFFERED": "1"}
    # Other work on the machine skews every number: keep the 1-minute load beside each run.
    load_before = [round(x, 2) for x in os.getloadavg()]
    source = src_fingerprint()
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(
            command, stdout=out, stderr=err, env=env, cwd=ROOT, start_new_session=True
        )
        deadline = started + workload.timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                os.killpg(process.pid, 9)
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.05)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    record: dict[str, Any] = {
        "src": source,
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(wall, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "command": shlex.join(command),
    }
    if wall > workload.timeout:
        record["error"] = f"timed out after {workload.timeout:.0f} s"
        return record
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        tail = [line for line in stderr.strip().splitlines() if line.strip()][-1:] or ["?"]
        record["error"] = f"exit {process.returncode}: {tail[0][:300]}"
        return record
    result = json.loads(lines[-1])
    record["metrics"] = result["metrics"]
    return record


# --- reporting ------------------------------------------------------------------------------


def summarize(values: list[float]) -> dict[str, float] | None:
    values = [v for v in values if isinstance(v, int | float) and not math.isnan(v)]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"


def fmt_summary(s: dict[str, float] | None, errors: list[str]) -> str:
    if s is None:
        return errors[0][:90] if errors else "n/a"
    text = f"{fmt(s['median'])} [{fmt(s['min'])}-{fmt(s['max'])}]"
    return text + (f" ({len(errors)} failed)" if errors else "")


def table_rows(entry: dict[str, Any], workload: Workload, quick: bool) -> list[list[str]]:
    rows = []
    for metric in workload.metrics:
        ours = entry["summary"].get("dfhost", {}).get(metric.key)
        theirs = entry["summary"].get("dbos", {}).get(metric.key)
        ratio = "n/a"
        if ours and theirs and theirs["median"]:
            r = ours["median"] / theirs["median"]
            better = (r <= 1 / 3) if metric.lower_is_better else (r >= 3)
            ratio = f"{r:.2f}" + (" (>=3x better)" if metric.headline and better else "")
        target = "-"
        if metric.target is not None and entry["backend"] == "sqlite":
            if quick:
                target = f"<={fmt(metric.target)} (n/a: quick)"
            elif ours:
                met = ours["median"] <= metric.target
                target = f"<={fmt(metric.target)} {'met' if met else 'MISSED'}"
        rows.append(
            [
                f"{metric.key} ({metric.unit})",
                fmt_summary(ours, entry["errors"].get("dfhost", [])),
                fmt_summary(theirs, entry["errors"].get("dbos", [])),
                ratio,
                target,
            ]
        )
    for key, unit in (
        ("db_cpu_ms_per", "ms, database CPU per orchestration/activity"),
        ("statements_per", "per orchestration/activity"),
        ("transactions_per", "explicit, per orchestration/activity"),
        ("process_cpu_s", "s"),
        ("process_max_rss_mb", "MB"),
        ("load_1min", "after run"),
    ):
        ours = entry["summary"].get("dfhost", {}).get(key)
        theirs = entry["summary"].get("dbos", {}).get(key)
        ratio = f"{ours['median'] / theirs['median']:.2f}" if ours and theirs else "n/a"
        rows.append([f"{key} ({unit})", fmt_summary(ours, []), fmt_summary(theirs, []), ratio, "-"])
    return rows


HEADER = ["metric", "dfhost median [min-max]", "DBOS median [min-max]", "dfhost/DBOS", "target"]


def plain_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [HEADER, *rows]]
    return "\n".join("    " + line.rstrip() for line in lines)


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 run (smoke test)")
    parser.add_argument(
        "--workloads",
        default="W1,W2,W3,W4,W5,W6",
        help="comma-separated: W1..W6, or W3-1k / W3-10k",
    )
    parser.add_argument("--runs", type=int, help="runs per side (default 3; 1 with --quick)")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--peers", default="dbos", choices=["dbos", "none"])
    parser.add_argument("--timeout", type=float, help="seconds per run (default per workload)")
    args = parser.parse_args(argv)
    wanted = {w.strip().upper() for w in args.workloads.split(",") if w.strip()}
    known = {w.key.upper() for w in WORKLOADS} | {w.kind for w in WORKLOADS}
    if not wanted or wanted - known:
        parser.error(f"unknown workloads {sorted(wanted - known)}; known: {sorted(known)}")
    args.selected = [w for w in WORKLOADS if w.key.upper() in wanted or w.kind in wanted]
    args.backend_list = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not args.backend_list or set(args.backend_list) - {"sqlite", "postgres"}:
        parser.error("--backends takes sqlite and/or postgres")
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    info = machine()
    sides = [Side("dfhost", Path(sys.executable), BENCH / "dfhost_side.py", "--store")]
    if args.peers == "dbos":
        python = ensure_dbos_venv()
        info["dbos"] = dbos_version(python)
        sides.append(Side("dbos", python, BENCH / "dbos_side.py", "--db"))

    backends = []
    postgres = Postgres(PG_URL)
    for backend in args.backend_list:
        if backend == "sqlite":
            backends.append("sqlite")
            continue
        why = postgres.reachable()
        if why is not None:
            print(f"postgres: not available ({why})")
            continue
        info["postgres"] = postgres.version
        with postgres.database() as url:
            probe = subprocess.run(
                [sys.executable, str(BENCH / "dfhost_side.py"), "--probe", "--store", url],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(BENCH)},
                check=False,
            )
        if probe.returncode != 0:
            why = (probe.stderr.strip().splitlines() or ["?"])[-1]
            sides[0].unavailable["postgres"] = why
            print(f"postgres: not available for dfhost ({why}); DBOS still runs on it")
        backends.append("postgres")

    print(
        f"dfhost {info['dfhost_commit']} vs DBOS {info.get('dbos', '-')}; {info['nproc']} cores, "
        f"Python {info['python']}, SQLite {info['sqlite']}, PostgreSQL "
        f"{info.get('postgres', 'n/a')}; {args.runs} run(s) per side"
        + (" (quick sizes)" if args.quick else ""),
        flush=True,
    )
    report: dict[str, Any] = {
        "command": shlex.join([Path(sys.executable).name, "bench/run.py", *(argv or sys.argv[1:])]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "quick": args.quick,
        "runs_per_side": args.runs,
        "results": [],
    }
    markdown = [f"Command: `{report['command']}`  ", f"Started: {report['started']}  "]
    markdown.append(f"Machine: {json.dumps(info)}\n")
    RESULTS.mkdir(exist_ok=True)
    out_json = RESULTS / f"{stamp}.json"

    for workload in args.selected:
        params = workload.quick if args.quick else workload.full
        if args.timeout or args.quick:
            timeout = args.timeout or min(workload.timeout, QUICK_TIMEOUT)
            workload = Workload(**{**workload.__dict__, "timeout": timeout})
        for backend in backends:
            entry: dict[str, Any] = {
                "workload": workload.key,
                "title": workload.title,
                "backend": backend,
                "params": params,
                "notes": workload.notes,
                "runs": [],
                "errors": {},
                "summary": {},
            }
            print(
                f"\n{workload.key} {workload.title} {json.dumps(params)} on {backend}", flush=True
            )
            for run in range(args.runs):
                order = sides if run % 2 == 0 else sides[::-1]
                for side in order:
                    if backend in side.unavailable:
                        entry["errors"].setdefault(side.name, []).append(
                            f"not available: {side.unavailable[backend]}"
                        )
                        continue
                    database = (
                        postgres.database() if backend == "postgres" else sqlite_database(side.name)
                    )
                    with database as url:
                        record = run_side(side, workload, url, params)
                    record.update(side=side.name, run=run + 1)
                    entry["runs"].append(record)
                    shown = record.get("error") or ", ".join(
                        f"{k}={fmt(v)}"
                        for k, v in record["metrics"].items()
                        if isinstance(v, int | float)
                    )
                    if record["src"] != info["src_fingerprint"]:
                        shown += f" [dfhost src changed since the start: {record['src']}]"
                    print(f"  run {run + 1} {side.name:<6} {shown}", flush=True)
                    if "error" in record:
                        entry["errors"].setdefault(side.name, []).append(record["error"])
            for side in sides:
                runs = [r for r in entry["runs"] if r["side"] == side.name and "metrics" in r]
                values = {
                    m.key: [r["metrics"].get(m.key, math.nan) for r in runs]
                    for m in workload.metrics
                }
                for key in ("db_cpu_ms_per", "statements_per", "transactions_per"):
                    values[key] = [r["metrics"].get(key, math.nan) for r in runs]
                values["process_cpu_s"] = [r["cpu_s"] for r in runs]
                values["process_max_rss_mb"] = [r["max_rss_mb"] for r in runs]
                values["load_1min"] = [r["load_after"][0] for r in runs]
                entry["summary"][side.name] = {
                    key: s for key, v in values.items() if (s := summarize(v))
                }
            rows = table_rows(entry, workload, args.quick)
            print(plain_table(rows), flush=True)
            markdown += [
                f"### {workload.key} {workload.title} ({backend})",
                "",
                f"Parameters: `{json.dumps(params)}`"
                + (f". {workload.notes}." if workload.notes else ""),
                "",
                markdown_table(rows),
                "",
            ]
            report["results"].append(entry)
            report["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
            out_json.write_text(json.dumps(report, indent=1))
            out_json.with_suffix(".md").write_text("\n".join(markdown))
    report["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    out_json.write_text(json.dumps(report, indent=1))
    out_json.with_suffix(".md").write_text("\n".join(markdown))
    print(f"\nresults: {out_json.relative_to(ROOT)} (and {out_json.with_suffix('.md').name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
