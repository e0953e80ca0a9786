import json

import azure.durable_functions as df


async def main(entry: str, starter: str) -> None:
    payload = entry
    if entry.startswith("{"):  # a stream entry: {"Id": ..., "Values": {...}}
        payload = json.loads(entry)["Values"]["text"]
    client = df.DurableOrchestrationClient(starter)
    await client.start_new("Pipeline", None, {"sink": "ToRedis", "payload": f"pubsub:{payload}"})
