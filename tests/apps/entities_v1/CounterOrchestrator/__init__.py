import azure.durable_functions as df


def orchestrator_function(context: df.DurableOrchestrationContext):
    counter = df.EntityId("Counter", context.get_input())
    context.signal_entity(counter, "add", 5)
    first = yield context.call_entity(counter, "get")
    context.signal_entity(counter, "add", 2)
    second = yield context.call_entity(counter, "get")
    try:
        yield context.call_entity(counter, "fail")
        error = None
    except Exception as exc:
        error = str(exc)
    third = yield context.call_entity(counter, "get")
    return [first, second, error, third]


main = df.Orchestrator.create(orchestrator_function)
