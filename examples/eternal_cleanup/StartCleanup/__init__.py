"""HTTP starter: POST /api/cleanup/start[?interval=SECONDS] starts the cleanup loop.

The loop is a singleton: it always runs under the fixed instance id below, so pressing the
button twice (or two deployments racing) can never start two overlapping loops, which is
what a plain timer trigger with a long-running body would do.
"""

import logging

import azure.durable_functions as df
import azure.functions as func

INSTANCE_ID = "cleanup-singleton"
DEFAULT_INTERVAL_SECONDS = 10

# Statuses in which the loop still owns the instance id. (ContinuedAsNew is transient: the
# next generation is about to start.)
ACTIVE = {
    df.OrchestrationRuntimeStatus.Pending,
    df.OrchestrationRuntimeStatus.Running,
    df.OrchestrationRuntimeStatus.ContinuedAsNew,
    df.OrchestrationRuntimeStatus.Suspended,
}


async def main(req: func.HttpRequest, starter: str) -> func.HttpResponse:
    client = df.DurableOrchestrationClient(starter)

    # Check first, so the common case gets a friendly answer...
    status = await client.get_status(INSTANCE_ID)
    if status is not None and status.runtime_status in ACTIVE:
        return _already_running(status.runtime_status.value)

    try:
        interval = int(req.params.get("interval", DEFAULT_INTERVAL_SECONDS))
    except ValueError:
        interval = 0
    if interval < 1:
        return func.HttpResponse(
            "interval must be a whole number of seconds >= 1\n", status_code=400
        )

    try:
        await client.start_new(
            "CleanupLoop", INSTANCE_ID, {"interval_seconds": interval, "cycle": 0}
        )
    except Exception as e:
        # ...and still handle the race where another request started it in between:
        # start_new refuses an instance id that is already running.
        logging.warning("StartCleanup: could not start %s: %s", INSTANCE_ID, e)
        return _already_running("Running")

    logging.info("StartCleanup: started %s (every %s s)", INSTANCE_ID, interval)
    # 202 with the statusQueryGetUri / terminatePostUri / ... links for this instance.
    return client.create_check_status_response(req, INSTANCE_ID)


def _already_running(status: str) -> func.HttpResponse:
    return func.HttpResponse(
        f"{INSTANCE_ID} is already {status}; terminate it first to restart it.\n",
        status_code=409,
    )
