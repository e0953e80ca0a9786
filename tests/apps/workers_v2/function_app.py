"""Activities and an entity that tell which process runs them, crash it, log, or block: what
tests/workers drives through `dfhost start` with worker processes."""

import ctypes
import logging
import os
import time
from pathlib import Path

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

STATE = Path(os.environ.get("DFHOST_WORKERS_STATE", "."))


@app.activity_trigger(input_name="tag")
def whoami(tag: str) -> dict:
    return {"pid": os.getpid(), "host": os.environ.get("DFHOST_HOST_PID")}


@app.activity_trigger(input_name="name")
def crash_once(name: str) -> int:
    # The first run ends its process as a crash would; the run after it succeeds. A name
    # ending in "segv" dies of a segmentation fault, any other of os._exit(3).
    marker = STATE / f"{name}.crashed"
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        if name.endswith("segv"):
            ctypes.string_at(0)  # reads address 0
        os._exit(3)
    return os.getpid()


@app.activity_trigger(input_name="code")
def always_crash(code: int) -> None:
    os._exit(code)


@app.activity_trigger(input_name="name")
def block_until_released(name: str) -> int:
    # Says which process runs it, then waits for the test: lets a test kill that process.
    (STATE / f"{name}.starting").write_text(str(os.getpid()))
    (STATE / f"{name}.starting").replace(STATE / f"{name}.pid")
    while not (STATE / name).exists():
        time.sleep(0.02)
    return os.getpid()


@app.activity_trigger(input_name="words")
def chatty(words: list) -> int:
    for word in words:
        logging.info("said %s", word)
    print("printed last")
    return len(words)


@app.orchestration_trigger(context_name="context")
def run_one(context: df.DurableOrchestrationContext):
    request = context.get_input()
    result = yield context.call_activity(request["activity"], request.get("input"))
    return result


@app.orchestration_trigger(context_name="context")
def survive(context: df.DurableOrchestrationContext):
    # A crashing activity's failure reaches the orchestrator as any activity's exception.
    try:
        yield context.call_activity("always_crash", 7)
    except Exception as exc:
        return str(exc).split("\n")[0]
    return "not failed"


@app.orchestration_trigger(context_name="context")
def count_with_entity(context: df.DurableOrchestrationContext):
    counter = df.EntityId("counter", "one")
    yield context.call_entity(counter, "add", 2)
    return (yield context.call_entity(counter, "get"))


@app.entity_trigger(context_name="context")
def counter(context: df.DurableEntityContext):
    state = context.get_state(lambda: {"value": 0, "pids": []})
    if context.operation_name == "add":
        state["value"] += context.get_input()
        state["pids"].append(os.getpid())
    context.set_state(state)
    context.set_result(state)
