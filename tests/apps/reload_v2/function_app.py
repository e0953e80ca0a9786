"""tests/workers/test_reload.py copies this app and edits VERSION (and adds functions) while
`dfhost start --reload` runs it."""

import os
import time
from pathlib import Path

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

VERSION = "one"


@app.activity_trigger(input_name="gate")
def version(gate: str) -> dict:
    if gate:
        # Waits for the test, so that a reload happens while it runs.
        state = Path(os.environ["DFHOST_WORKERS_STATE"])
        (state / f"{gate}.pid").write_text(str(os.getpid()))
        while not (state / gate).exists():
            time.sleep(0.02)
    return {"activity": VERSION, "pid": os.getpid()}


@app.orchestration_trigger(context_name="context")
def versions(context: df.DurableOrchestrationContext):
    activity = yield context.call_activity("version", context.get_input() or "")
    return {"orchestrator": VERSION, **activity}


@app.route(route="version", methods=["GET"])
def http_version(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(VERSION)


# Once a year: the test runs it with POST /admin/functions/timer_version.
@app.timer_trigger(schedule="0 0 0 1 1 *", arg_name="timer", use_monitor=False)
def timer_version(timer: func.TimerRequest) -> None:
    (Path(os.environ["DFHOST_WORKERS_STATE"]) / "timer_version").write_text(VERSION)


@app.event_grid_trigger(arg_name="event")
def grid_version(event: func.EventGridEvent) -> None:
    (Path(os.environ["DFHOST_WORKERS_STATE"]) / "grid_version").write_text(VERSION)
