"""HTTP starter: POST /api/orchestrators/{functionName} starts that orchestrator.

An optional JSON body becomes the orchestration's input, e.g. {"interval_seconds": 10}."""

import logging

import azure.durable_functions as df
import azure.functions as func


async def main(req: func.HttpRequest, starter: str) -> func.HttpResponse:
    client = df.DurableOrchestrationClient(starter)
    try:
        payload = req.get_json() if req.get_body() else None
    except ValueError:
        return func.HttpResponse("the body must be JSON\n", status_code=400)
    instance_id = await client.start_new(req.route_params["functionName"], None, payload)
    logging.info("Started orchestration with ID = '%s'.", instance_id)
    # 202 with statusQueryGetUri, sendEventPostUri, terminatePostUri, ... for this instance.
    return client.create_check_status_response(req, instance_id)
