import json

import azure.durable_functions as df
import azure.functions as func


async def main(req: func.HttpRequest, starter: str) -> func.HttpResponse:
    client = df.DurableOrchestrationClient(starter)
    counter = df.EntityId("Counter", req.route_params["key"])
    if req.method == "POST":
        body = req.get_body()
        await client.signal_entity(counter, req.route_params["op"], req.get_json() if body else None)
        return func.HttpResponse(status_code=202)
    state = await client.read_entity_state(counter)
    body = {"exists": state.entity_exists, "state": state.entity_state}
    return func.HttpResponse(json.dumps(body), mimetype="application/json")
