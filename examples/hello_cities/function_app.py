"""Hello cities: function chaining and fan-out/fan-in (v2 programming model).

All functions are declared with decorators on one app object; there are no function.json
files. Function names default to the Python def names.
"""

import logging

import azure.durable_functions as df
import azure.functions as func

# ANONYMOUS: no function key needed to call the HTTP starter (fine for local development).
app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

DEFAULT_CITIES = [
    "Tokyo",
    "Seattle",
    "London",
    "Cairo",
    "Lima",
    "Oslo",
    "Delhi",
    "Sydney",
    "Nairobi",
    "Quito",
]


@app.route(route="orchestrators/{functionName}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client: df.DurableOrchestrationClient):
    """POST /api/orchestrators/<name> starts orchestrator <name>; a JSON body is its input."""
    function_name = req.route_params["functionName"]
    payload = None
    if req.get_body():
        try:
            payload = req.get_json()
        except ValueError:
            return func.HttpResponse("the body must be JSON", status_code=400)

    instance_id = await client.start_new(function_name, None, payload)
    logging.info("Started %s with instance id %s", function_name, instance_id)
    # 202 Accepted with the status-query, raise-event and terminate URLs for the instance.
    return client.create_check_status_response(req, instance_id)


@app.orchestration_trigger(context_name="context")
def hello_cities(context: df.DurableOrchestrationContext):
    """Function chaining: one activity after the other, each waiting for the previous."""
    results = []
    for city in ["Tokyo", "Seattle", "London"]:
        # Passing the function object sends its def name, "say_hello".
        results.append((yield context.call_activity(say_hello, city)))
    return results


@app.orchestration_trigger(context_name="context")
def hello_fanout(context: df.DurableOrchestrationContext):
    """Fan-out/fan-in: start one activity per city at once, then wait for all of them."""
    cities = context.get_input() or DEFAULT_CITIES
    tasks = [context.call_activity(say_hello, city) for city in cities]
    # task_all completes when every activity has; results keep the order of `tasks`.
    return (yield context.task_all(tasks))


@app.activity_trigger(input_name="city")
def say_hello(city: str) -> str:
    """An activity: ordinary code that may do I/O. Its return value must be JSON-serialisable."""
    return f"Hello {city}!"
