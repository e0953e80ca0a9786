import azure.durable_functions as df


def orchestrator_function(context: df.DurableOrchestrationContext):
    data = yield context.wait_for_external_event("Go")
    return {"got": data, "type": type(data).__name__}


main = df.Orchestrator.create(orchestrator_function)
