"""The app the observability tests trace: a chain, a fan-out, a sub-orchestration, a retried
activity, a durable timer and an entity. Every episode replays the whole history
(extendedSessionsEnabled false), so replays would show as duplicate spans."""

from datetime import timedelta

import azure.durable_functions as df
import azure.functions as func
from opentelemetry import trace

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

_failures: dict[str, int] = {}


@app.activity_trigger(input_name="n")
def double(n: int) -> int:
    return n * 2


@app.activity_trigger(input_name="key")
def flaky(key: str) -> str:
    """Fails the first time it is called for `key`."""
    _failures[key] = _failures.get(key, 0) + 1
    if _failures[key] == 1:
        raise RuntimeError(f"first try of {key} fails")
    return "ok"


@app.activity_trigger(input_name="unused")
def current_span(unused: None) -> str:
    """The span a span the user's code started here would be the child of."""
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}-{ctx.span_id:016x}"


@app.orchestration_trigger(context_name="context")
def whose_span(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("current_span", None))


@app.orchestration_trigger(context_name="context")
def chain(context: df.DurableOrchestrationContext):
    value = 1
    for _ in range(3):
        value = yield context.call_activity("double", value)
    return value


@app.orchestration_trigger(context_name="context")
def fanout(context: df.DurableOrchestrationContext):
    results = yield context.task_all([context.call_activity("double", i) for i in range(4)])
    return sum(results)


@app.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):
    child = yield context.call_sub_orchestrator("chain", instance_id=f"{context.instance_id}-c")
    return child + 1


@app.orchestration_trigger(context_name="context")
def retry(context: df.DurableOrchestrationContext):
    options = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=3)
    return (yield context.call_activity_with_retry("flaky", options, context.instance_id))


@app.orchestration_trigger(context_name="context")
def sleeper(context: df.DurableOrchestrationContext):
    seconds = context.get_input() or 60
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=seconds))
    return (yield context.call_activity("double", 21))


@app.orchestration_trigger(context_name="context")
def counting(context: df.DurableOrchestrationContext):
    entity = df.EntityId("counter", "one")
    context.signal_entity(entity, "add", 2)
    return (yield context.call_entity(entity, "get"))


@app.entity_trigger(context_name="context")
def counter(context: df.DurableEntityContext):
    value = context.get_state(lambda: 0)
    if context.operation_name == "add":
        value += context.get_input()
        context.set_state(value)
    context.set_result(value)
