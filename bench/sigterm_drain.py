"""Stopping a busy host: SIGTERM with 20 activities of 2 s in flight, then a restart.

    .venv/bin/python bench/sigterm_drain.py [--runs 3] [--count 20] [--seconds 2]
                                           [--backend sqlite|postgres] [-- START_ARGS...]

Each run starts `dfhost start tests/apps/drain_v2` on a fresh task hub, starts one `fan_out`
orchestration of `--count` activities that each sleep `--seconds` (they append to
RUNS_DIR/started and RUNS_DIR/finished), waits until every activity has started, sends
SIGTERM and times the exit. Then it starts the host again, waits for the orchestration to
complete and counts the activities that ran twice (started lines beyond `--count`). Arguments
after `--` go to both `dfhost start`s (`--drain 1`, for instance).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from run import throwaway_database

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "tests" / "apps" / "drain_v2"
LISTENING = re.compile(r"listening on (http://\S+)")
API = "/runtime/webhooks/durabletask"


class Host:
    """One `dfhost start` process; its output goes to a temporary file."""

    def __init__(self, url: str, runs: Path, extra: list[str]) -> None:
        self.out = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in close()
        command = [sys.executable, "-m", "dfhost", "start", str(APP), "--port=0", f"--store={url}"]
        self.proc = subprocess.Popen(
            [*command, *extra],
            stdout=self.out,
            stderr=subprocess.STDOUT,
            env={**_environ(), "RUNS_DIR": str(runs)},
        )
        self.base = _until(lambda: self._listening(), 60, "the host to listen")

    def _listening(self) -> str | None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the host exited:\n{self.output()[-2000:]}")
        found = LISTENING.search(self.output())
        return found.group(1) if found else None

    def output(self) -> str:
        self.out.seek(0)
        return self.out.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.out.close()


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


def _until(probe: object, timeout: float, what: str) -> object:
    assert callable(probe)
    deadline = time.monotonic() + timeout
    while (value := probe()) is None or value is False:
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _request(method: str, url: str, body: object = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def one_run(backend: str, count: int, seconds: float, extra: list[str]) -> dict[str, object]:
    with throwaway_database(backend, "drain") as url, tempfile.TemporaryDirectory() as folder:
        runs = Path(folder)
        first = Host(url, runs, extra)
        try:
            status, _ = _request(
                "POST",
                f"{first.base}{API}/orchestrators/fan_out/drain-bench",
                {"count": count, "seconds": seconds},
            )
            assert status == 202, status
            _until(lambda: _lines(runs / "started") >= count, 60, "every activity to start")
            began = time.monotonic()
            first.proc.send_signal(signal.SIGTERM)
            code = first.proc.wait(600)
            exit_seconds = time.monotonic() - began
            finished_before = _lines(runs / "finished")
        finally:
            first.close()
        second = Host(url, runs, extra)
        try:
            instance = f"{second.base}{API}/instances/drain-bench"

            def completed() -> bool:
                status, body = _request("GET", instance)
                return (
                    status == 200
                    and isinstance(body, dict)
                    and body["runtimeStatus"]
                    in (
                        "Completed",
                        "Failed",
                    )
                )

            _until(completed, 120, "the orchestration to complete after the restart")
            _, body = _request("GET", instance)
        finally:
            second.proc.send_signal(signal.SIGTERM)
            second.proc.wait(60)
            second.close()
        assert isinstance(body, dict)
        return {
            "exit_code": code,
            "exit_seconds": exit_seconds,
            "finished_before_exit": finished_before,
            "reran": _lines(runs / "started") - count,
            "status": body["runtimeStatus"],
            "output": body.get("output"),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("start_args", nargs="*", help="more `dfhost start` arguments, after --")
    args = parser.parse_args()
    for run in range(args.runs):
        result = one_run(args.backend, args.count, args.seconds, args.start_args)
        print(
            f"run {run + 1}: exit {result['exit_code']} after {result['exit_seconds']:.2f} s, "
            f"{result['finished_before_exit']}/{args.count} finished before the exit, "
            f"{result['reran']} re-ran after the restart; {result['status']} "
            f"(output {result['output']})",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
