"""An app that tells dfhost from Azure only where they differ (tests/parity).

Its orchestrators read failures the way apps on Azure read them: the activity's message is
the "Message" of the JSON on the second line of the exception's text, after the exception's
type (azure-functions-durable-extension#2990, azure-functions-durable-python#496).
"""

import json

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def activity_message(exc: Exception) -> dict:
    """What #2990's workaround reads from a failed activity's exception."""
    text = str(exc)
    escaped_json = text.split("\n")[1]
    message = json.loads(escaped_json)["Message"]
    return {
        "text": text,
        "reason": text.split("\n")[0],
        "message": message,
        "bare": message.split(":", 1)[1].lstrip(),
    }


def nested_raise(message: str) -> None:
    raise ValueError(message)


@app.activity_trigger(input_name="message")
def fail_sync(message: str) -> str:
    nested_raise(message)
    return "unreachable"


@app.activity_trigger(input_name="message")
async def fail_async(message: str) -> str:
    raise KeyError(message)


@app.orchestration_trigger(context_name="context")
def catch_activity(context: df.DurableOrchestrationContext):
    name, message = context.get_input()
    try:
        yield context.call_activity(name, message)
    except Exception as exc:
        return activity_message(exc)
    return None


@app.orchestration_trigger(context_name="context")
def uncaught(context: df.DurableOrchestrationContext):
    yield context.call_activity("fail_sync", context.get_input())
    return "unreachable"


@app.orchestration_trigger(context_name="context")
def child_raises(context: df.DurableOrchestrationContext):
    yield context.call_activity("echo", 1)
    raise RuntimeError(context.get_input())


@app.orchestration_trigger(context_name="context")
def catch_sub_orchestration(context: df.DurableOrchestrationContext):
    try:
        yield context.call_sub_orchestrator("child_raises", context.get_input())
    except Exception as exc:
        return str(exc)
    return None


@app.activity_trigger(input_name="value")
def echo(value):
    return value


@app.orchestration_trigger(context_name="context")
def custom_status(context: df.DurableOrchestrationContext):
    """Sets a custom status of n characters, then waits for an activity."""
    context.set_custom_status("s" * context.get_input())
    yield context.call_activity("echo", 1)
    return "done"


@app.orchestration_trigger(context_name="context")
def generations(context: df.DurableOrchestrationContext):
    """Waits for "go" and continues as new once; "stray" events are never waited for."""
    generation = context.get_input() or 0
    value = yield context.wait_for_external_event("go")
    if generation >= 1:
        return {"generation": generation, "value": value}
    context.continue_as_new(generation + 1)
    return None


@app.orchestration_trigger(context_name="context")
def calls_missing(context: df.DurableOrchestrationContext):
    try:
        yield context.call_activity("no_such_activity", 1)
    except Exception as exc:  # never reached: the extension refuses the call
        return str(exc)
    return None


@app.activity_trigger(input_name="seconds")
async def sleep_async(seconds: float) -> str:
    import asyncio

    await asyncio.sleep(seconds)
    return "woke"


@app.activity_trigger(input_name="ignored")
def returns_set(ignored) -> object:
    return {1, 2}
