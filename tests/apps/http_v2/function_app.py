"""A v2 (decorator) app for the HTTP surface tests (`tests/web`). Route prefix is empty."""

import asyncio
import json
import logging
import threading

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="start/{name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start(req: func.HttpRequest, client) -> func.HttpResponse:
    body = req.get_body()
    instance_id = await client.start_new(
        req.route_params["name"], None, req.get_json() if body else None
    )
    return client.create_check_status_response(req, instance_id)


@app.route(route="start_ctx/{name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start_with_context(
    req: func.HttpRequest, client, context: func.Context
) -> func.HttpResponse:
    instance_id = await client.start_new(req.route_params["name"])
    seen = {
        "id": instance_id,
        "invocation_id": context.invocation_id,
        "function_name": context.function_name,
        "function_directory": context.function_directory,
        "client_invocation_id": client._function_invocation_id,
    }
    return func.HttpResponse(json.dumps(seen), mimetype="application/json")


@app.route(route="sync/{id:int}", methods=["GET"])
def sync_fn(req: func.HttpRequest) -> func.HttpResponse:
    logging.info("sync %s", req.route_params["id"])
    return func.HttpResponse(
        json.dumps({"thread": threading.current_thread().name, "id": req.route_params["id"]}),
        mimetype="application/json",
    )


@app.route(route="async/{*rest}")
async def async_fn(req: func.HttpRequest) -> str:
    await asyncio.sleep(0)
    return f"rest={req.route_params.get('rest', '')} thread={threading.current_thread().name}"


@app.route(route="boom")
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise ValueError("kaboom")


@app.route(route="nothing")
def nothing(req: func.HttpRequest) -> None:
    return None


@app.route(route="bad_output")
def bad_output(req: func.HttpRequest):
    return {"not": "allowed"}


@app.orchestration_trigger(context_name="context")
def echo(context: df.DurableOrchestrationContext):
    return context.get_input()
