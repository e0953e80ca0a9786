"""v2 test app: a DFApp with an HTTP starter, an orchestrator, a renamed activity and a timer,
plus a blueprint (durable_blueprints.py) with an entity, a second orchestrator and an async
activity."""

import logging

import azure.durable_functions as df
import azure.functions as func
from durable_blueprints import bp

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="orchestrators/{functionName}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client: df.DurableOrchestrationClient):
    instance_id = await client.start_new(req.route_params["functionName"])
    return client.create_check_status_response(req, instance_id)


@app.orchestration_trigger(context_name="context")
def hello_orchestrator(context: df.DurableOrchestrationContext):
    # By def object: the SDK sends the def name "say_hello", not "SayHelloFn".
    first = yield context.call_activity(say_hello, "Tokyo")
    second = yield context.call_activity("SayHelloFn", "Seattle")
    return [first, second]


@app.function_name("SayHelloFn")
@app.activity_trigger(input_name="city")
def say_hello(city: str) -> str:
    return f"Hello {city}!"


@app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer", run_on_startup=False)
def cleanup_timer(timer: func.TimerRequest) -> None:
    logging.info("cleanup timer fired (past due: %s)", timer.past_due)


app.register_functions(bp)
