"""The `entities_v1` app in the v2 (decorator) model; see ../entities_v1/README.md."""

import json

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.entity_trigger(context_name="context", entity_name="Counter")
def counter(context: df.DurableEntityContext):
    value = context.get_state(lambda: 0)
    operation = context.operation_name
    if operation == "add":
        value += context.get_input()
    elif operation == "reset":
        value = 0
    elif operation == "get":
        context.set_result(value)
    elif operation == "fail":
        context.set_state(value + 1000)
        raise ValueError("nope")
    elif operation == "delete":
        context.destruct_on_exit()
        return
    context.set_state(value)


@app.entity_trigger(context_name="context")
def Ledger(context: df.DurableEntityContext):
    entries = context.get_state(list)
    context.set_state(entries)  # from here on, `entries` is the live state
    entries.append(context.get_input())
    if context.operation_name == "push_then_fail":
        raise RuntimeError("refused after changing the state in place")
    context.set_result(len(entries))


@app.orchestration_trigger(context_name="context")
def CounterOrchestrator(context: df.DurableOrchestrationContext):
    counter = df.EntityId("Counter", context.get_input())
    context.signal_entity(counter, "add", 5)
    first = yield context.call_entity(counter, "get")
    context.signal_entity(counter, "add", 2)
    second = yield context.call_entity(counter, "get")
    try:
        yield context.call_entity(counter, "fail")
        error = None
    except Exception as exc:
        error = str(exc)
    third = yield context.call_entity(counter, "get")
    return [first, second, error, third]


@app.route(route="entity/{key}/{op?}", methods=["POST", "GET"])
@app.durable_client_input(client_name="client")
async def EntityHttp(req: func.HttpRequest, client) -> func.HttpResponse:
    counter = df.EntityId("Counter", req.route_params["key"])
    if req.method == "POST":
        body = req.get_body()
        await client.signal_entity(counter, req.route_params["op"], req.get_json() if body else None)
        return func.HttpResponse(status_code=202)
    state = await client.read_entity_state(counter)
    body = {"exists": state.entity_exists, "state": state.entity_state}
    return func.HttpResponse(json.dumps(body), mimetype="application/json")


@app.orchestration_trigger(context_name="context")
def HttpCaller(context: df.DurableOrchestrationContext):
    request = context.get_input()
    token = df.ManagedIdentityTokenSource("https://management.core.windows.net/")
    response = yield context.call_http(
        request["method"],
        request["uri"],
        content=request.get("content"),
        headers=request.get("headers"),
        token_source=token if request.get("token") else None,
    )
    return response
