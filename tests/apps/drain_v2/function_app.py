"""Test app for stopping a host (tests/ops/test_drain.py, bench/sigterm_drain.py): an
orchestration fans out to activities that record each run in files of RUNS_DIR.

Each `work` run appends its number to RUNS_DIR/started when it begins and to RUNS_DIR/finished
when it returns. It holds for `seconds` (its input) or, when RUNS_DIR/release is named instead
(`seconds` null), until that file exists: a test decides when the work ends, without a timing
guess. A host started with WORK_NOW=1 does not hold at all."""

import os
import time
from pathlib import Path

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="ping", methods=["GET"])
def ping(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("pong")


def _append(name: str, line: str) -> None:
    # One short write per line in append mode: lines of concurrent runs never interleave.
    with open(Path(os.environ["RUNS_DIR"]) / name, "a") as file:
        file.write(line + "\n")


@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    jobs = [{"i": i, "seconds": spec.get("seconds")} for i in range(spec["count"])]
    results = yield context.task_all([context.call_activity("work", job) for job in jobs])
    return sum(results)


@app.activity_trigger(input_name="job")
def work(job: dict) -> int:
    _append("started", str(job["i"]))
    if os.environ.get("WORK_NOW") == "1":
        pass
    elif job["seconds"] is not None:
        time.sleep(job["seconds"])
    else:
        release = Path(os.environ["RUNS_DIR"]) / "release"
        while not release.exists():
            time.sleep(0.01)
    _append("finished", str(job["i"]))
    return 1
