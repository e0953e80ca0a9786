import asyncio
import os
import pathlib

import azure.durable_functions as df


async def main(message: str, starter: str) -> None:
    if message.startswith("fail"):
        raise ValueError(f"refusing {message}")
    client = df.DurableOrchestrationClient(starter)
    await client.start_new("Pipeline", None, {"sink": "ToRabbit", "payload": message})
    hold = os.environ.get("HOLD_DIR")
    if hold:
        folder = pathlib.Path(hold)
        (folder / f"started-{message}").write_text(str(os.getpid()))
        while not (folder / "release").exists():
            await asyncio.sleep(0.05)
