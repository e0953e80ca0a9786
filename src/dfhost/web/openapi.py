"""The management API's OpenAPI 3.0 document, at `/runtime/webhooks/durabletask/openapi.json`.

Built from the same facts as api.py (paths, parameters, status codes); tests/security fuzzes a
live host against it with schemathesis, so a route missing here is a route nobody fuzzes.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dfhost import __version__
from dfhost.web.api import BASE_PATH, CONTINUATION_HEADER

__all__ = ["OPENAPI_PATH", "document", "openapi_endpoint"]

OPENAPI_PATH = f"{BASE_PATH}/openapi.json"

_STATUSES = [
    "Pending",
    "Running",
    "Completed",
    "ContinuedAsNew",
    "Failed",
    "Canceled",
    "Terminated",
    "Suspended",
]


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _responses(*codes: int) -> dict[str, Any]:
    text = {
        200: "OK",
        202: "Accepted",
        400: "Bad request (the message says why)",
        404: "Not found",
        409: "An unfinished instance already has this ID",
        410: "Gone: the instance already finished",
        413: "Body or payload too large",
        500: "The instance failed (only with returnInternalServerErrorOnFailure=true)",
    }
    return {str(code): {"description": text[code]} for code in codes}


_TIME = {"type": "string", "format": "date-time"}
_BOOL = {"type": "boolean"}
_REASON = _query("reason", {"type": "string"}, "Recorded with the operation.")
_TOKEN = {
    "name": CONTINUATION_HEADER,
    "in": "header",
    "schema": {"type": "string"},
    "description": "The previous page's token.",
}
_FILTERS = [
    _query("createdTimeFrom", _TIME),
    _query("createdTimeTo", _TIME),
    _query(
        "runtimeStatus",
        {"type": "string"},
        f"Comma-separated statuses: {', '.join(_STATUSES)}.",
    ),
    _query("instanceIdPrefix", {"type": "string"}),
    _query("name", {"type": "string"}, "Orchestrator name."),
]
_JSON_BODY = {
    "required": False,
    "content": {"application/json": {"schema": {}}},
}


def _control(summary: str, *codes: int) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": [_path("instanceId"), _REASON],
            "responses": _responses(*codes),
        }
    }


def document() -> dict[str, Any]:
    start = {
        "summary": "Start an orchestration",
        "parameters": [
            _path("functionName"),
            _query("timeout", {"type": "number", "minimum": 0, "maximum": 5}),
            _query("pollingInterval", {"type": "number", "minimum": 0.1, "maximum": 5}),
            _query("version", {"type": "string"}),
        ],
        "requestBody": _JSON_BODY,
        "responses": _responses(200, 202, 400, 409, 413),
    }
    start_with_id = {**start, "parameters": [*start["parameters"], _path("instanceId")]}
    entity = [_path("entityName"), _path("entityKey")]
    entity_list = [
        _query("top", {"type": "integer", "minimum": 1}),
        _query("fetchState", _BOOL),
        _query("lastOperationTimeFrom", _TIME),
        _query("lastOperationTimeTo", _TIME),
        _TOKEN,
    ]
    paths: dict[str, Any] = {
        "/orchestrators/{functionName}": {"post": start},
        "/orchestrators/{functionName}/{instanceId}": {"post": start_with_id},
        "/instances": {
            "get": {
                "summary": "List instances",
                "parameters": [
                    *_FILTERS,
                    _query("showInput", _BOOL),
                    _query("top", {"type": "integer", "minimum": 1}),
                    _TOKEN,
                ],
                "responses": _responses(200, 400),
            },
            "delete": {
                "summary": "Purge the instances matching the filters",
                "parameters": [
                    {**_FILTERS[0], "required": True},
                    *_FILTERS[1:],
                ],
                "responses": _responses(200, 400, 404),
            },
        },
        "/instances/{instanceId}": {
            "get": {
                "summary": "An instance's status",
                "parameters": [
                    _path("instanceId"),
                    _query("showInput", _BOOL),
                    _query("showHistory", _BOOL),
                    _query("showHistoryOutput", _BOOL),
                    _query("returnInternalServerErrorOnFailure", _BOOL),
                ],
                "responses": _responses(200, 202, 404, 500),
            },
            "delete": {
                "summary": "Purge an instance",
                "parameters": [_path("instanceId")],
                "responses": _responses(200, 404),
            },
        },
        "/instances/{instanceId}/raiseEvent/{eventName}": {
            "post": {
                "summary": "Raise an event",
                "parameters": [_path("instanceId"), _path("eventName")],
                "requestBody": _JSON_BODY,
                "responses": _responses(202, 400, 404, 410, 413),
            }
        },
        "/instances/{instanceId}/terminate": _control("Terminate", 202, 404, 410),
        "/instances/{instanceId}/suspend": _control("Suspend", 202, 404, 410),
        "/instances/{instanceId}/resume": _control("Resume", 202, 404, 410),
        "/instances/{instanceId}/rewind": _control("Rewind a failed instance", 202, 400, 404, 410),
        "/instances/{instanceId}/restart": {
            "post": {
                "summary": "Start the instance's orchestrator again with its input",
                "parameters": [
                    _path("instanceId"),
                    _query("restartWithNewInstanceId", _BOOL),
                ],
                "responses": _responses(202, 400, 404, 409),
            }
        },
        "/entities": {
            "get": {
                "summary": "List entities",
                "parameters": entity_list,
                "responses": _responses(200, 400),
            }
        },
        "/entities/{entityName}": {
            "get": {
                "summary": "List the entities of one name",
                "parameters": [_path("entityName"), *entity_list],
                "responses": _responses(200, 400),
            }
        },
        "/entities/{entityName}/{entityKey}": {
            "get": {
                "summary": "An entity's state",
                "parameters": entity,
                "responses": _responses(200, 400, 404),
            },
            "post": {
                "summary": "Signal an entity operation",
                "parameters": [*entity, {**_query("op", {"type": "string"}), "required": True}],
                "requestBody": _JSON_BODY,
                "responses": _responses(202, 400, 413),
            },
            "delete": {
                "summary": "Delete an entity",
                "parameters": entity,
                "responses": _responses(202, 400),
            },
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Durable Functions management API (dfhost)",
            "version": __version__,
            "description": (
                "Keys: when enforced, send the system key 'durabletask_extension' or the "
                "master key as the x-functions-key header or the code query parameter."
            ),
        },
        "servers": [{"url": BASE_PATH}],
        "components": {
            "securitySchemes": {
                "functionsKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "code": {"type": "apiKey", "in": "query", "name": "code"},
            }
        },
        "security": [{"functionsKey": []}, {"code": []}, {}],
        "paths": paths,
    }


async def openapi_endpoint(request: Request) -> Response:
    return JSONResponse(document())
