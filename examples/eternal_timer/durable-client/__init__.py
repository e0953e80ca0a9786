"""HTTP starter: POST /api/orchestrators/{functionName} starts that orchestrator.

An optional JSON body becomes the orchestration's input, e.g. {"interval_seconds": 10}.
`?instance_id=NAME` names the instance: while it runs, another start under that name answers
409, so an eternal loop started that way never runs twice."""

import logging

import azure.durable_functions as df
import azure.functions as func

UNFINISHED = {
    df.OrchestrationRuntimeStatus.Pending,
    df.OrchestrationRuntimeStatus.Running,
    df.OrchestrationRuntimeStatus.Suspended,
}


async def main(req: func.HttpRequest, starter: str) -> func.HttpResponse:
    client = df.DurableOrchestrationClient(starter)
    try:
        payload = req.get_json() if req.get_body() else None
    except ValueError:
        return func.HttpResponse("the body must be JSON\n", status_code=400)
    instance_id = req.params.get("instance_id")  # None: a new random id
    if instance_id:
        existing = await client.get_status(instance_id)
        if existing is not None and existing.runtime_status in UNFINISHED:
            state = existing.runtime_status.value
            return func.HttpResponse(f"{instance_id} is already {state}\n", status_code=409)
    instance_id = await client.start_new(req.route_params["functionName"], instance_id, payload)
    logging.info("Started orchestration with ID = '%s'.", instance_id)
    # 202 with statusQueryGetUri, sendEventPostUri, terminatePostUri, ... for this instance.
    return client.create_check_status_response(req, instance_id)
