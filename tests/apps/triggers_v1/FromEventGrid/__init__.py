import azure.durable_functions as df
import azure.functions as func


async def main(event: func.EventGridEvent, starter: str) -> None:
    if isinstance(event, func.CloudEvent):
        text = f"cloud {event.type} {event.get_json()['text']}"
    else:
        text = f"grid {event.event_type} {event.subject} {event.get_json()['text']}"
    client = df.DurableOrchestrationClient(starter)
    await client.start_new("Pipeline", None, {"sink": "ToEventGrid", "payload": text})
