"""W7 (bench/w7_cpu.py): CPU-bound activities next to a 100 ms timer loop.

`burn_all` fans out to `burn` activities of pure-Python work (`spin.py`); `ticker` waits on a
100 ms durable timer `ticks` times and keeps in its custom status how late each one fired, in
milliseconds: the time between a timer's due time and the start of the episode that took it
(the episode's `current_utc_datetime`, recorded in its history, so replays agree). The bench
reads the list while it polls, and terminates the ticker when the activities are done."""

from datetime import timedelta

import azure.durable_functions as df
from spin import spin

app = df.DFApp()


@app.activity_trigger(input_name="iterations")
def burn(iterations: int) -> int:
    return spin(iterations)


@app.orchestration_trigger(context_name="context")
def burn_all(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    work = [context.call_activity("burn", spec["iterations"]) for _ in range(spec["count"])]
    yield context.task_all(work)
    return spec["count"]


@app.orchestration_trigger(context_name="context")
def ticker(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    period = timedelta(milliseconds=spec["period_ms"])
    lateness = []
    for _ in range(spec["ticks"]):
        due = context.current_utc_datetime + period
        yield context.create_timer(due)
        lateness.append((context.current_utc_datetime - due) / timedelta(milliseconds=1))
        context.set_custom_status(lateness)
    return lateness
