"""bench/cpu_bound.py's app: activities that compute (pure Python, holding the GIL) and a
trivial chain to time beside them."""

import time

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.activity_trigger(input_name="ms")
def burn(ms: int) -> int:
    # CPU time, not wall time: the same work whoever else runs.
    end = time.thread_time() + ms / 1000
    spins = 0
    while time.thread_time() < end:
        spins += 1
    return spins


@app.activity_trigger(input_name="value")
def plus_one(value: int) -> int:
    return value + 1


@app.orchestration_trigger(context_name="context")
def burn_many(context: df.DurableOrchestrationContext):
    count, ms = context.get_input()
    results = yield context.task_all([context.call_activity("burn", ms) for _ in range(count)])
    return len(results)


@app.orchestration_trigger(context_name="context")
def ping(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("plus_one", context.get_input()))
