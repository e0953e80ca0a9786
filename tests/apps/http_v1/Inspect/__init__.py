import json

import azure.functions as func


def main(req: func.HttpRequest) -> func.HttpResponse:
    seen = {
        "method": req.method,
        "url": req.url,
        "params": dict(req.params),
        "route_params": dict(req.route_params),
        "headers": {k: req.headers[k] for k in req.headers},
        "body": req.get_body().decode(),
    }
    return func.HttpResponse(json.dumps(seen), status_code=201, mimetype="application/json")
