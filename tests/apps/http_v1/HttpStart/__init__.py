import logging

import azure.functions as func
from azure.durable_functions import DurableOrchestrationClient


async def main(req: func.HttpRequest, starter: str, message):
    logging.info("starting %s", req.route_params["functionName"])
    client = DurableOrchestrationClient(starter)
    body = req.get_body()
    client_input = req.get_json() if body else None
    instance_id = await client.start_new(req.route_params["functionName"], None, client_input)
    message.set(client.create_check_status_response(req, instance_id))
