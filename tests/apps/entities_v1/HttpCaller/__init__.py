import azure.durable_functions as df


def orchestrator_function(context: df.DurableOrchestrationContext):
    request = context.get_input()
    token = df.ManagedIdentityTokenSource("https://management.core.windows.net/")
    response = yield context.call_http(
        request["method"],
        request["uri"],
        content=request.get("content"),
        headers=request.get("headers"),
        token_source=token if request.get("token") else None,
    )
    return response


main = df.Orchestrator.create(orchestrator_function)
