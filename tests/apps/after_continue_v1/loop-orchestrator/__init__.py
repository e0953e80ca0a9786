"""An eternal loop whose code goes on after continue_as_new, as some users write it: a
deadline timer and a task_any that must never run (the generation ends at continue_as_new)."""

from datetime import timedelta

import azure.durable_functions as df


def orchestrator_function(context: df.DurableOrchestrationContext):
    work = context.call_activity("loop-activity")
    yield work
    yield context.create_timer(context.current_utc_datetime + timedelta(minutes=1))
    context.continue_as_new(None)

    deadline = context.create_timer(context.current_utc_datetime + timedelta(minutes=10))
    winner = yield context.task_any([work, deadline])
    if winner == work:
        deadline.cancel()
        return True
    return False


main = df.Orchestrator.create(orchestrator_function)
