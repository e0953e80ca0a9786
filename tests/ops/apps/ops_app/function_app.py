"""Orchestrations the operations tests pause, break, fix, rewind, restart and purge.

Activities read switches from the folder named by DFHOST_OPS_STATE, so a test can break an
activity, let an orchestration fail, "deploy a fix" by removing the switch, and rewind.
"""

import os
import time
from datetime import timedelta
from pathlib import Path

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def _state(name: str) -> Path:
    return Path(os.environ["DFHOST_OPS_STATE"]) / name


def _count_call(name: str) -> None:
    # One byte per call, appended: safe when activities run in parallel threads.
    with _state(f"calls-{name}").open("a") as counter:
        counter.write(".")


@app.activity_trigger(input_name="key")
def fragile(key: str) -> str:
    """Fails while the switch `broken-<key>` exists."""
    _count_call(key)
    if _state(f"broken-{key}").exists():
        raise RuntimeError(f"{key} is broken")
    return f"{key} ok"


@app.activity_trigger(input_name="key")
def gate(key: str) -> str:
    """Waits (up to 20 s) for the switch `open-<key>` (or `open-all`), so a test controls when
    it ends."""
    _count_call(key)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (
        _state(f"open-{key}").exists() or _state("open-all").exists()
    ):
        time.sleep(0.02)
    return f"{key} passed"


@app.activity_trigger(input_name="value")
def double(value: int) -> int:
    return value * 2


@app.orchestration_trigger(context_name="context")
def steps(context: df.DurableOrchestrationContext):
    key = context.get_input() or "step"
    first = yield context.call_activity("double", 1)
    middle = yield context.call_activity("fragile", key)
    last = yield context.call_activity("double", 2)
    return [first, middle, last]


@app.orchestration_trigger(context_name="context")
def fan(context: df.DurableOrchestrationContext):
    # fragile fails fast while gate is still running: both must run again on rewind.
    return (
        yield context.task_all(
            [
                context.call_activity("fragile", "fan"),
                context.call_activity("gate", "fan-gate"),
                context.call_activity("double", 3),
            ]
        )
    )


@app.orchestration_trigger(context_name="context")
def retrying(context: df.DurableOrchestrationContext):
    options = df.RetryOptions(first_retry_interval_in_milliseconds=50, max_number_of_attempts=2)
    value = yield context.call_activity_with_retry("fragile", options, "retry")
    return value


@app.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):
    child = yield context.call_sub_orchestrator(
        "steps", "child", instance_id=f"{context.instance_id}-child"
    )
    doubled = yield context.call_activity("double", 5)
    return {"child": child, "doubled": doubled}


@app.orchestration_trigger(context_name="context")
def buggy(context: df.DurableOrchestrationContext):
    value = yield context.call_activity("double", 4)
    if _state("bug").exists():  # the "deployed code" has a bug until the switch goes
        raise ValueError("a bug in the orchestrator")
    return value


@app.orchestration_trigger(context_name="context")
def waiter(context: df.DurableOrchestrationContext):
    return (yield context.wait_for_external_event("Go"))


@app.orchestration_trigger(context_name="context")
def nap_then_wait(context: df.DurableOrchestrationContext):
    seconds = context.get_input() or 1
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=seconds))
    event = yield context.wait_for_external_event("Go")
    return {"timer": "fired", "event": event}


@app.orchestration_trigger(context_name="context")
def echo(context: df.DurableOrchestrationContext):
    return context.get_input()


@app.orchestration_trigger(context_name="context")
def eternal(context: df.DurableOrchestrationContext):
    generation = context.get_input() or 0
    yield context.create_timer(context.current_utc_datetime + timedelta(hours=1))
    context.continue_as_new(generation + 1)
