import azure.functions as func


def main(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        f"Hello {req.route_params['name']}",
        status_code=200,
        headers={"X-Greeting": "yes"},
    )
