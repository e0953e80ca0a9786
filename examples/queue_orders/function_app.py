"""Orders arrive as queue messages; each starts an orchestration that prices the order and
writes a receipt blob. Runs unchanged on Azure Functions and on dfhost."""

import json
import logging

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

PRICES = {"apple": 0.5, "bread": 2.25, "coffee": 7.0}


@app.queue_trigger(arg_name="msg", queue_name="orders", connection="AzureWebJobsStorage")
@app.durable_client_input(client_name="client")
async def order_received(msg: func.QueueMessage, client) -> None:
    """Starts one `process_order` per message; the order id is the instance id, so a message
    delivered twice (at least once) does not start a second orchestration."""
    order = json.loads(msg.get_body())
    instance_id = f"order-{order['orderId']}"
    existing = await client.get_status(instance_id)
    if existing and existing.runtime_status is not None:
        logging.info("order %s already started (try %d)", order["orderId"], msg.dequeue_count)
        return
    await client.start_new("process_order", instance_id, order)
    logging.info("order %s started as %s", order["orderId"], instance_id)


@app.orchestration_trigger(context_name="context")
def process_order(context: df.DurableOrchestrationContext):
    order = context.get_input()
    lines = yield context.task_all(
        [context.call_activity("price_line", line) for line in order["lines"]]
    )
    receipt = {"orderId": order["orderId"], "lines": lines, "total": sum(line["amount"] for line in lines)}
    yield context.call_activity("write_receipt", receipt)
    return receipt


@app.activity_trigger(input_name="line")
def price_line(line: dict) -> dict:
    amount = round(PRICES[line["item"]] * line["quantity"], 2)
    return {**line, "amount": amount}


@app.activity_trigger(input_name="receipt")
@app.blob_output(arg_name="blob", path="receipts/{orderId}.json", connection="AzureWebJobsStorage")
def write_receipt(receipt: dict, blob: func.Out[str]) -> None:
    """`{orderId}` in the path is the activity input's property, as in Azure."""
    blob.set(json.dumps(receipt, indent=2))
