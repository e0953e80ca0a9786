"""tests/workers/test_reload.py copies this app and edits VERSION while `dfhost start --reload`
runs it."""

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
