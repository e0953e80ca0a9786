"""Version 1 of an app whose orchestrators replay_v2 changes, one kind of change each.

Every orchestrator calls A and B, then waits for the event "go": instances started on this
version wait with both calls in their history, ready to be replayed by the next version.
"""

from datetime import datetime, timedelta

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.activity_trigger(input_name="value")
def A(value):
    return f"A({value})"


@app.activity_trigger(input_name="value")
def B(value):
    return f"B({value})"


# The same code under every name: replay_v2 changes each one differently.

@app.orchestration_trigger(context_name="context")
def steady(context: df.DurableOrchestrationContext):
    a = yield context.call_activity("A", "x")
    b = yield context.call_activity("B", "y")
    yield context.wait_for_external_event("go")
    return [a, b]


@app.orchestration_trigger(context_name="context")
def renamed(context: df.DurableOrchestrationContext):
    a = yield context.call_activity("A", "x")
    b = yield context.call_activity("B", "y")
    yield context.wait_for_external_event("go")
    return [a, b]


@app.orchestration_trigger(context_name="context")
def timer_instead(context: df.DurableOrchestrationContext):
    a = yield context.call_activity("A", "x")
    b = yield context.call_activity("B", "y")
    yield context.wait_for_external_event("go")
    return [a, b]


@app.orchestration_trigger(context_name="context")
def input_kind(context: df.DurableOrchestrationContext):
    a = yield context.call_activity("A", "x")
    b = yield context.call_activity("B", "y")
    yield context.wait_for_external_event("go")
    return [a, b]


@app.orchestration_trigger(context_name="context")
def fewer_tasks(context: df.DurableOrchestrationContext):
    a = yield context.call_activity("A", "x")
    b = yield context.call_activity("B", "y")
    yield context.wait_for_external_event("go")
    return [a, b]


@app.orchestration_trigger(context_name="context")
def input_value(context: df.DurableOrchestrationContext):
    a = yield context.call_activity("A", "x")
    b = yield context.call_activity("B", "y")
    yield context.wait_for_external_event("go")
    return [a, b]


@app.orchestration_trigger(context_name="context")
def timer_then_wait(context: df.DurableOrchestrationContext):
    a = yield context.call_activity("A", "x")
    yield context.create_timer(context.current_utc_datetime + timedelta(hours=1))
    yield context.wait_for_external_event("go")
    return a


@app.orchestration_trigger(context_name="context")
def wall_clock(context: df.DurableOrchestrationContext):
    # A bug on purpose: datetime.now() differs on every replay (use current_utc_datetime).
    yield context.call_activity("A", datetime.now().isoformat())
    yield context.call_activity("B", "y")
    return "done"
