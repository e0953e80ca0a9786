"""Version 2 of replay_v1: each orchestrator name has one kind of change (see replay_v1)."""

from datetime import timedelta

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.activity_trigger(input_name="value")
def A(value):
    return f"A({value})"


@app.activity_trigger(input_name="value")
def B(value):
    return f"B({value})"


@app.activity_trigger(input_name="value")
def B2(value):
    return f"B2({value})"


@app.orchestration_trigger(context_name="context")
def steady(context: df.DurableOrchestrationContext):
    a = yield context.call_activity("A", "x")
    b = yield context.call_activity("B", "y")
    yield context.wait_for_external_event("go")
    return [a, b]


@app.orchestration_trigger(context_name="context")
def renamed(context: df.DurableOrchestrationContext):
    a = yield context.call_activity("A", "x")
    b = yield context.call_activity("B2", "y")
    yield context.wait_for_external_event("go")
    return [a, b]


@app.orchestration_trigger(context_name="context")
def timer_instead(context: df.DurableOrchestrationContext):
    a = yield context.call_activity("A", "x")
    yield context.create_timer(context.current_utc_datetime + timedelta(minutes=5))
    yield context.wait_for_external_event("go")
    return [a, None]


@app.orchestration_trigger(context_name="context")
def input_kind(context: df.DurableOrchestrationContext):
    a = yield context.call_activity("A", "x")
    b = yield context.call_activity("B", {"y": 1})
    yield context.wait_for_external_event("go")
    return [a, b]


@app.orchestration_trigger(context_name="context")
def fewer_tasks(context: df.DurableOrchestrationContext):
    a = yield context.call_activity("A", "x")
    yield context.wait_for_external_event("go")
    return [a]


@app.orchestration_trigger(context_name="context")
def input_value(context: df.DurableOrchestrationContext):
    # The same calls with another value of the same kind: replays, with a warning.
    a = yield context.call_activity("A", "x")
    b = yield context.call_activity("B", "z")
    yield context.wait_for_external_event("go")
    return [a, b]


@app.orchestration_trigger(context_name="context")
def timer_then_wait(context: df.DurableOrchestrationContext):
    # An activity where version 1 had its timer.
    a = yield context.call_activity("A", "x")
    yield context.call_activity("B", "y")
    yield context.wait_for_external_event("go")
    return a


@app.orchestration_trigger(context_name="context")
def wall_clock(context: df.DurableOrchestrationContext):
    yield context.call_activity("A", context.current_utc_datetime.isoformat())
    yield context.call_activity("B", "y")
    return "done"
