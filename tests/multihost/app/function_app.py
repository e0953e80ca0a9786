"""The app the multi-host tests run on several hosts at once.

Every activity run appends `start|end KEY PID TIME` to `$DFHOST_MH_STATE/runs.log` (one short
O_APPEND write per line, so lines from several processes never interleave)."""

import os
import time
from pathlib import Path

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def _record(kind: str, key: str) -> None:
    state = os.environ.get("DFHOST_MH_STATE")
    if state:
        # The host's pid, also when the activity runs in one of its worker processes.
        host = os.environ.get("DFHOST_HOST_PID", os.getpid())
        line = f"{kind} {key} {host} {time.time():.3f}\n"
        with open(Path(state) / "runs.log", "a") as log:
            log.write(line)


@app.activity_trigger(input_name="job")
def work(job: dict) -> int:
    _record("start", job["key"])
    time.sleep(job.get("sleep", 0))
    _record("end", job["key"])
    return job["value"] * 2


@app.orchestration_trigger(context_name="context")
def chain(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    total = spec["start"]
    for step in range(spec["steps"]):
        job = {
            "key": f"{context.instance_id}/{step}",
            "value": total,
            "sleep": spec.get("sleep", 0),
        }
        total = yield context.call_activity("work", job)
    return total


@app.orchestration_trigger(context_name="context")
def fanout(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    jobs = [
        {"key": f"{context.instance_id}/{i}", "value": i, "sleep": spec.get("sleep", 0)}
        for i in range(spec["width"])
    ]
    values = yield context.task_all([context.call_activity("work", job) for job in jobs])
    return sum(values)
