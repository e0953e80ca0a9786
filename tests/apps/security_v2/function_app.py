import asyncio
import time

import azure.durable_functions as df
import azure.functions as func

# The app's default level is "function", as Azure's.
app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="open", auth_level=func.AuthLevel.ANONYMOUS)
def open_door(req: func.HttpRequest) -> str:
    return "open"


@app.route(route="member")
def member(req: func.HttpRequest) -> str:
    return "member"


@app.route(route="boss", auth_level=func.AuthLevel.ADMIN)
def boss(req: func.HttpRequest) -> str:
    return "boss"


@app.route(route="slow", auth_level=func.AuthLevel.ANONYMOUS)
async def slow(req: func.HttpRequest) -> str:
    await asyncio.sleep(5)
    return "late"


@app.route(route="start/{name}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@app.durable_client_input(client_name="client")
async def start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    body = req.get_body()
    instance_id = await client.start_new(req.route_params["name"], None, req.get_json() if body else None)
    return client.create_check_status_response(req, instance_id)


@app.orchestration_trigger(context_name="context")
def hello(context: df.DurableOrchestrationContext):
    result = yield context.call_activity("echo", context.get_input())
    return result


@app.activity_trigger(input_name="value")
def echo(value):
    return value


@app.orchestration_trigger(context_name="context")
def fan(context: df.DurableOrchestrationContext):
    tasks = [context.call_activity("echo", i) for i in range(context.get_input())]
    results = yield context.task_all(tasks)
    return len(results)


@app.orchestration_trigger(context_name="context")
def chain(context: df.DurableOrchestrationContext):
    for i in range(context.get_input()):
        yield context.call_activity("echo", i)
    return "done"


@app.orchestration_trigger(context_name="context")
def ticks(context: df.DurableOrchestrationContext):
    """Waits for n "tick" events: a history that grows without actions."""
    for _ in range(context.get_input()):
        yield context.wait_for_external_event("tick")
    return "done"


@app.orchestration_trigger(context_name="context")
def inflate(context: df.DurableOrchestrationContext):
    return "y" * context.get_input()


@app.activity_trigger(input_name="size")
def big(size):
    return "x" * size


@app.activity_trigger(input_name="seconds")
def hang(seconds):
    time.sleep(seconds)
    return "finished"


@app.orchestration_trigger(context_name="context")
def call_and_report(context: df.DurableOrchestrationContext):
    """Calls activity name with input and returns its result, or its failure's message."""
    name, value = context.get_input()
    try:
        result = yield context.call_activity(name, value)
    except Exception as exc:
        return f"failed: {str(exc).splitlines()[0]}"  # the reason, without the details
    return f"ok: {result}"


@app.orchestration_trigger(context_name="context")
def waiter(context: df.DurableOrchestrationContext):
    value = yield context.wait_for_external_event("go")
    return value


@app.orchestration_trigger(context_name="context")
def send_big(context: df.DurableOrchestrationContext):
    result = yield context.call_activity("echo", "w" * context.get_input())
    return len(result)


@app.entity_trigger(context_name="context")
def counter(context: df.DurableEntityContext):
    value = context.get_state(lambda: 0)
    if context.operation_name == "add":
        value += context.get_input()
    context.set_state(value)
