"""The benchmark workloads as a Durable Functions app (bench/dbos_side.py has the DBOS twin).

Activities do trivial work (x + 1) so the runtime's own cost is what gets measured.
"""

from datetime import datetime

import azure.durable_functions as df

app = df.DFApp()


@app.activity_trigger(input_name="x")
def inc(x: int) -> int:
    return x + 1


@app.orchestration_trigger(context_name="context")
def chain3(context: df.DurableOrchestrationContext):
    x = context.get_input() or 0
    for _ in range(3):
        x = yield context.call_activity("inc", x)
    return x


@app.orchestration_trigger(context_name="context")
def fanout(context: df.DurableOrchestrationContext):
    n = context.get_input()
    values = yield context.task_all([context.call_activity("inc", i) for i in range(n)])
    return sum(values)


@app.orchestration_trigger(context_name="context")
def sequence(context: df.DurableOrchestrationContext):
    n = context.get_input()
    x = 0
    for _ in range(n):
        x = yield context.call_activity("inc", x)
    return x


@app.orchestration_trigger(context_name="context")
def sleep_until(context: df.DurableOrchestrationContext):
    fire_at = datetime.fromisoformat(context.get_input())
    yield context.create_timer(fire_at)
    return context.current_utc_datetime.isoformat()


@app.orchestration_trigger(context_name="context")
def eternal(context: df.DurableOrchestrationContext):
    state = context.get_input()
    n = yield context.call_activity("inc", state["n"])
    if n >= state["until"]:
        return n
    context.continue_as_new({"n": n, "until": state["until"]})
