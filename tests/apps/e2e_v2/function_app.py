"""Every Durable Functions pattern the end-to-end tests drive over HTTP."""

import json
import logging
import os
import time
from datetime import timedelta
from pathlib import Path

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="orchestrators/{functionName}/{instanceId?}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client) -> func.HttpResponse:
    body = req.get_body()
    payload = json.loads(body) if body else None
    instance_id = await client.start_new(
        req.route_params["functionName"], req.route_params.get("instanceId"), payload
    )
    return client.create_check_status_response(req, instance_id)


@app.activity_trigger(input_name="city")
def say_hello(city: str) -> str:
    logging.info("saying hello to %s", city)
    return f"Hello {city}!"


@app.activity_trigger(input_name="value")
async def double(value: int) -> int:
    return value * 2


@app.activity_trigger(input_name="message")
def boom(message: str) -> str:
    raise ValueError(message)


@app.activity_trigger(input_name="key")
def flaky(key: str) -> str:
    # Fails until it has been called 3 times for this key (state in a file: activities may
    # run in any thread, and the count must survive the test's view of the process).
    marker = Path(os.environ["DFHOST_E2E_STATE"]) / f"flaky-{key}"
    calls = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(calls))
    if calls < 3:
        raise RuntimeError(f"attempt {calls} failed")
    return f"ok after {calls}"


@app.activity_trigger(input_name="name")
def wait_for_file(name: str) -> str:
    # Blocks until the test creates the file: lets a test kill the host mid-activity.
    path = Path(os.environ["DFHOST_E2E_STATE"]) / name
    # Renamed into place whole: tests read the pid as soon as the file exists.
    marker = path.parent / f"{name}.started"
    partial = path.parent / f"{name}.starting"
    # The host's pid, also when the activity runs in one of its worker processes.
    partial.write_text(os.environ.get("DFHOST_HOST_PID", str(os.getpid())))
    partial.replace(marker)
    while not path.exists():
        time.sleep(0.05)
    return path.read_text()


@app.orchestration_trigger(context_name="context")
def chain(context: df.DurableOrchestrationContext):
    results = []
    for city in ("Tokyo", "Seattle", "London"):
        results.append((yield context.call_activity(say_hello, city)))
    return results


@app.orchestration_trigger(context_name="context")
def fanout(context: df.DurableOrchestrationContext):
    n = context.get_input() or 10
    values = yield context.task_all([context.call_activity("double", i) for i in range(n)])
    return sum(values)


@app.orchestration_trigger(context_name="context")
def approval(context: df.DurableOrchestrationContext):
    timeout_s = (context.get_input() or {}).get("timeout", 30)
    deadline = context.current_utc_datetime + timedelta(seconds=timeout_s)
    timer = context.create_timer(deadline)
    event = context.wait_for_external_event("Approval")
    winner = yield context.task_any([event, timer])
    if winner == event:
        timer.cancel()
        return {"approved": event.result}
    return "timeout"


@app.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):
    child = yield context.call_sub_orchestrator("chain")
    doubled = yield context.call_sub_orchestrator("fanout", 4, instance_id=f"{context.instance_id}-kid")
    return {"child": child, "doubled": doubled}


@app.orchestration_trigger(context_name="context")
def retrying(context: df.DurableOrchestrationContext):
    options = df.RetryOptions(first_retry_interval_in_milliseconds=100, max_number_of_attempts=3)
    return (yield context.call_activity_with_retry("flaky", options, context.instance_id))


@app.orchestration_trigger(context_name="context")
def failing(context: df.DurableOrchestrationContext):
    yield context.call_activity("boom", "kaboom")
    return "unreachable"


@app.orchestration_trigger(context_name="context")
def catching(context: df.DurableOrchestrationContext):
    try:
        yield context.call_activity("boom", "kaboom")
    except Exception as exc:
        return f"caught: {exc}"
    return "unreachable"


@app.orchestration_trigger(context_name="context")
def sleeper(context: df.DurableOrchestrationContext):
    seconds = context.get_input() or 1
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=seconds))
    return "woke"


@app.orchestration_trigger(context_name="context")
def counter(context: df.DurableOrchestrationContext):
    state = context.get_input() or {"n": 0, "until": 3}
    yield context.call_activity("double", state["n"])
    if state["n"] + 1 >= state["until"]:
        return state["n"] + 1
    context.continue_as_new({"n": state["n"] + 1, "until": state["until"]})


@app.orchestration_trigger(context_name="context")
def blocked(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("wait_for_file", context.get_input()))


@app.orchestration_trigger(context_name="context")
def event_or_activity(context: df.DurableOrchestrationContext):
    activity = context.call_activity("wait_for_file", context.get_input())
    event = context.wait_for_external_event("Go")
    winner = yield context.task_any([activity, event])
    return "event" if winner == event else "activity"


@app.orchestration_trigger(context_name="context")
def waiter(context: df.DurableOrchestrationContext):
    return (yield context.wait_for_external_event("Go"))


@app.activity_trigger(input_name="ignored")
def unserializable(ignored: None) -> object:
    return {1, 2, 3}


@app.orchestration_trigger(context_name="context")
def calls_unknown(context: df.DurableOrchestrationContext):
    try:
        yield context.call_activity("no_such_activity", 1)
    except Exception as exc:
        return str(exc)


@app.orchestration_trigger(context_name="context")
def calls_unserializable(context: df.DurableOrchestrationContext):
    try:
        yield context.call_activity("unserializable")
    except Exception as exc:
        return str(exc)


@app.orchestration_trigger(context_name="context")
def timers_in_order(context: df.DurableOrchestrationContext):
    # Three timers, created out of order, raced one at a time: each must fire, in due order.
    start = context.current_utc_datetime
    timers = {
        name: context.create_timer(start + timedelta(milliseconds=ms))
        for name, ms in (("third", 600), ("first", 200), ("second", 400))
    }
    order = []
    while timers:
        winner = yield context.task_any(list(timers.values()))
        name = next(n for n, t in timers.items() if t is winner)
        order.append(name)
        del timers[name]
    return order


@app.orchestration_trigger(context_name="context")
def chatty(context: df.DurableOrchestrationContext):
    logging.info("chatty starts")
    yield context.call_activity("double", 1)
    logging.info("chatty after first")
    yield context.call_activity("double", 2)
    logging.info("chatty done")
    return "ok"
