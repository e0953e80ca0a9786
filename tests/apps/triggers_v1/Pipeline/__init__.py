import azure.durable_functions as df


def orchestrator(context: df.DurableOrchestrationContext):
    job = context.get_input()
    shouted = yield context.call_activity("Shout", job["payload"])
    yield context.call_activity(job["sink"], shouted)
    return shouted


main = df.Orchestrator.create(orchestrator)
