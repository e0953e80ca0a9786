"""The eternal loop that replaces an overlapping CRON job: run the work, wait a minute after
it ends, start over. One run at a time, however long the work takes; the wait is a durable
timer, so it survives restarts; `continue_as_new` keeps the history to one cycle."""

import logging
from datetime import timedelta

import azure.durable_functions as df

DEFAULT_INTERVAL_SECONDS = 60


def orchestrator_function(context: df.DurableOrchestrationContext):
    settings = context.get_input() or {}
    interval = timedelta(seconds=settings.get("interval_seconds", DEFAULT_INTERVAL_SECONDS))
    if not context.is_replaying:
        # Orchestrator code runs again on every replay; log only on the first pass.
        logging.info("Cycle starts at %s", context.current_utc_datetime.isoformat())

    result = yield context.call_activity("durable-activity", "cleanup")
    context.set_custom_status({"last_result": result})

    yield context.create_timer(context.current_utc_datetime + interval)
    context.continue_as_new(settings)


main = df.Orchestrator.create(orchestrator_function)
