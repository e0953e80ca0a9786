"""The eternal orchestration: run Cleanup, sleep on a durable timer, start over.

Each cycle ends with continue_as_new, which restarts the orchestration with a fresh, empty
history. That keeps the history (and each replay) small however long the loop runs. A
`while True:` loop would instead grow the history forever.

Orchestrator code is replayed from the start every time it wakes up, so it must be
deterministic: take the time from context.current_utc_datetime (never datetime.now()) and do
I/O only in activities.
"""

import logging
from datetime import timedelta

import azure.durable_functions as df

DEFAULT_INTERVAL_SECONDS = 10


def orchestrator_function(context: df.DurableOrchestrationContext):
    settings = context.get_input() or {}
    interval = int(settings.get("interval_seconds", DEFAULT_INTERVAL_SECONDS))
    cycle = int(settings.get("cycle", 0))

    # Replays re-run this code; log only on the first, real execution. (dfhost drops log
    # lines from replays anyway, but Azure does not.)
    if not context.is_replaying:
        logging.info("CleanupLoop: cycle %d starting", cycle)

    result = yield context.call_activity("Cleanup", cycle)

    # Shows up as customStatus in the status query and the dashboard.
    context.set_custom_status({"cycle": cycle, "last": result})

    # A durable timer: the orchestration is unloaded while it waits, and the wait survives
    # host restarts. The interval counts from the end of the activity, so runs never overlap.
    next_run = context.current_utc_datetime + timedelta(seconds=interval)
    yield context.create_timer(next_run)

    # Start the next generation. Nothing may follow this call: the generation is over.
    context.continue_as_new({"interval_seconds": interval, "cycle": cycle + 1})


main = df.Orchestrator.create(orchestrator_function)
