"""Queue- and blob-triggered starters, and activities writing through queue and blob outputs.

Names come from app settings the tests set (IN_QUEUE, OUT_QUEUE, IN_CONTAINER, OUT_CONTAINER),
so parallel tests do not share queues. HOLD_DIR, when set, makes `from_queue` wait after
starting its orchestration until the file `release` appears there: a test kills the host
while messages are held.
"""

import asyncio
import os
import pathlib

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.queue_trigger(arg_name="msg", queue_name="%IN_QUEUE%", connection="AzureWebJobsStorage")
@app.durable_client_input(client_name="client")
async def from_queue(msg: func.QueueMessage, client) -> None:
    body = msg.get_body().decode("utf-8")
    if body.startswith("fail"):
        raise ValueError(f"refusing {body} (try {msg.dequeue_count})")
    await client.start_new("pipeline", None, {"sink": "queue", "payload": body})
    hold = os.environ.get("HOLD_DIR")
    if hold:
        folder = pathlib.Path(hold)
        (folder / f"started-{body}").write_text(str(os.getpid()))
        while not (folder / "release").exists():
            await asyncio.sleep(0.05)


@app.blob_trigger(arg_name="blob", path="%IN_CONTAINER%/{name}.txt", connection="AzureWebJobsStorage")
@app.durable_client_input(client_name="client")
async def from_blob(blob: func.InputStream, client) -> None:
    name = blob.name.rsplit("/", 1)[-1].removesuffix(".txt")
    text = blob.read().decode("utf-8")
    await client.start_new("pipeline", None, {"sink": "blob", "name": name, "payload": text})


@app.orchestration_trigger(context_name="context")
def pipeline(context: df.DurableOrchestrationContext):
    job = context.get_input()
    shouted = yield context.call_activity("shout", job["payload"])
    job = {**job, "result": shouted}
    yield context.call_activity("to_queue" if job["sink"] == "queue" else "to_blob", job)
    return shouted


@app.activity_trigger(input_name="text")
def shout(text: str) -> str:
    return text.upper()


@app.activity_trigger(input_name="job")
@app.queue_output(arg_name="out", queue_name="%OUT_QUEUE%", connection="AzureWebJobsStorage")
def to_queue(job: dict, out: func.Out[str]) -> None:
    out.set(job["result"])


@app.activity_trigger(input_name="job")
@app.blob_output(arg_name="out", path="%OUT_CONTAINER%/{name}.out", connection="AzureWebJobsStorage")
def to_blob(job: dict, out: func.Out[str]) -> None:
    out.set(job["result"])
