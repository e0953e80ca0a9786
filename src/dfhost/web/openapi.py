"""The management API's OpenAPI 3.0 document, at `/runtime/webhooks/durabletask/openapi.json`.

Built from the same facts as api.py and client.py (paths, parameters, the patterns ids and
names must match, status codes, bodies) and from the app (its orchestrator and entity names),
so that it says exactly what the API accepts and answers: tests/security fuzzes a live host
against it with schemathesis and every check, positive and negative, so a route or a rule
missing here is a test failure.

Some rules cannot be said in JSON Schema and are in descriptions: payload limits are in bytes
(413), the query flags read as .NET reads booleans (any other value keeps the default), times
are also read in other ISO 8601 forms, and an entity key's limit depends on its name's length.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dfhost import __version__
from dfhost.app.functions import FunctionApp
from dfhost.history import OrchestrationStatus
from dfhost.ids import (
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    entity_key_pattern,
    instance_id_pattern,
    lookup_id_pattern,
    text_pattern,
)
from dfhost.web.api import BASE_PATH, CONTINUATION_HEADER, MAX_TOP
from dfhost.wire import MAX_JSON_DEPTH, check_status_payload

__all__ = ["CONTINUATION_FORMAT", "OPENAPI_PATH", "document", "openapi_endpoint"]

OPENAPI_PATH = f"{BASE_PATH}/openapi.json"
CONTINUATION_FORMAT = "dfhost-continuation-token"
"""The format of continuation tokens: opaque, from a previous page's response header."""

_ERROR = {
    "type": "object",
    "required": ["Message", "ExceptionMessage"],
    "properties": {"Message": {"type": "string"}, "ExceptionMessage": {"type": "string"}},
}
_TIME_TEXT = {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"}
_STATUS = {
    "type": "object",
    "required": [
        "name",
        "instanceId",
        "runtimeStatus",
        "input",
        "customStatus",
        "output",
        "createdTime",
        "lastUpdatedTime",
    ],
    "properties": {
        "name": {"type": "string"},
        "instanceId": {"type": "string"},
        "runtimeStatus": {"type": "string", "enum": [s.value for s in OrchestrationStatus]},
        "input": {"nullable": True},
        "customStatus": {"nullable": True},
        "output": {"nullable": True},
        "createdTime": _TIME_TEXT,
        "lastUpdatedTime": _TIME_TEXT,
        "historyEvents": {"type": "array", "items": {"type": "object"}},
    },
}
_CHECK_STATUS_KEYS = list(check_status_payload(origin="http://h", hub_name="h", instance_id="i"))
_CHECK_STATUS = {
    "type": "object",
    "required": _CHECK_STATUS_KEYS,
    "properties": {name: {"type": "string"} for name in _CHECK_STATUS_KEYS},
}
_ENTITY = {
    "type": "object",
    "required": ["entityId", "lastOperationTime", "state"],
    "properties": {
        "entityId": {
            "type": "object",
            "required": ["name", "key"],
            "properties": {"name": {"type": "string"}, "key": {"type": "string"}},
        },
        "lastOperationTime": {"type": "string"},
        "state": {"nullable": True},
    },
}
_PURGED = {
    "type": "object",
    "required": ["instancesDeleted"],
    "properties": {"instancesDeleted": {"type": "integer", "minimum": 1}},
}
_TOKEN_HEADER = {
    CONTINUATION_HEADER: {
        "description": "Present when there is a next page: send it back to get that page.",
        "schema": {"type": "string", "format": CONTINUATION_FORMAT},
    }
}


def _json(schema: dict[str, Any], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


_RESPONSES: dict[int, dict[str, Any]] = {
    400: {"description": "Bad request: the message says why", **_json(_ERROR)},
    404: {
        "description": (
            "Not found: no such instance, or no route (a path segment that is empty, '.', "
            "'..' or holds a control character or '/')"
        )
    },
    409: {"description": "An unfinished instance already has this ID", **_json(_ERROR)},
    410: {"description": "Gone: the action does not apply to the instance now", **_json(_ERROR)},
    413: {
        "description": "The body, the input or the reason is larger than payloadBytes",
        **_json(_ERROR),
    },
}


def _responses(ok: dict[str, dict[str, Any]], *codes: int) -> dict[str, Any]:
    return {**ok, **{str(code): _RESPONSES[code] for code in codes}}


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


def _path(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
    }


def _pattern(pattern: str) -> dict[str, Any]:
    return {"type": "string", "pattern": pattern}


def _any_case(names: list[str]) -> str:
    """A pattern matching any of `names` in any case (ECMAScript has no case flag to set)."""

    def letters(name: str) -> str:
        return "".join(
            f"[{c.lower()}{c.upper()}]" if c.lower() != c.upper() else re.escape(c) for c in name
        )

    return f"^(?:{'|'.join(letters(n) for n in names)})$"


def _one_of(names: list[str]) -> dict[str, Any]:
    # No name at all: no value is valid (a function of that kind does not exist).
    return {"type": "string", "enum": names} if names else {"type": "string", "not": {}}


def _or_empty(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema`, or an empty value: the API reads an empty parameter as one not given."""
    return {"anyOf": [schema, {"type": "string", "maxLength": 0}]}


_FLAG = {"type": "string", "example": "true"}
_FLAG_TEXT = "true or false in any case; any other value keeps the default (as .NET reads it)."
_TIME = _or_empty({"type": "string", "format": "date-time"})
_TIME_DESCRIPTION = (
    "An ISO 8601 date and time (RFC 3339, or any other form Python reads; without an offset: "
    "UTC); empty: no bound."
)
_STATUS_NAMES = "|".join(
    "".join(f"[{c.lower()}{c.upper()}]" for c in s.value) for s in OrchestrationStatus
)
_RUNTIME_STATUS = _pattern(rf"^\s*(?:{_STATUS_NAMES})?\s*(?:,\s*(?:{_STATUS_NAMES})?\s*)*$")
_TEXT = _pattern(text_pattern(0, MAX_NAME_LENGTH))
_LOOKUP_ID = _pattern(lookup_id_pattern(orchestration=False))
_LOOKUP_ID_TEXT = (
    "Any text without control characters (an ID longer than "
    f"{MAX_ID_LENGTH} characters is no instance's: 404)."
)
_REASON = _query(
    "reason",
    _pattern(r"^[^\x00]*$"),
    "Recorded with the operation (no NUL); within the payload limit (413).",
)
_TOKEN = {
    "name": CONTINUATION_HEADER,
    "in": "header",
    "schema": {"type": "string", "format": CONTINUATION_FORMAT},
    "description": (
        "The token a previous page's response carried in this header, to get the next page; "
        "anything else is refused (400)."
    ),
}
_TOP = _query(
    "top",
    _or_empty({"type": "integer", "minimum": 1, "maximum": MAX_TOP}),
    "The most items on a page (100 when not given or empty).",
)


def _json_body(required: bool = False) -> dict[str, Any]:
    return {
        "required": required,
        "description": (
            f"Any JSON value, nested at most {MAX_JSON_DEPTH} levels deep (a JSON string "
            "holding JSON text, as the SDK sends it, is that text), within the payload "
            "limit (413)."
        ),
        "content": {"application/json": {"schema": {}}},
    }


def _control(summary: str, lookup: dict[str, Any], *codes: int) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": [lookup, _REASON],
            "responses": _responses({"202": {"description": "Accepted"}}, *codes),
        }
    }


def document(app: FunctionApp | None = None) -> dict[str, Any]:
    """The document for an app (its orchestrator and entity names are the only ones accepted
    where a function is named); without one, any name."""
    if app is not None:
        orchestrators = sorted(
            name for f in app.of_kind("orchestrator") for name in (f.name, *f.aliases)
        )
        entity_names = sorted(
            {name.lower() for f in app.of_kind("entity") for name in (f.name, *f.aliases)}
        )
        orchestrator = _one_of(orchestrators)
        entity_name = _pattern(_any_case(entity_names)) if entity_names else _one_of([])
        longest = max((len(n) for n in entity_names), default=0)
    else:
        orchestrator = entity_name = _pattern(text_pattern(1, MAX_NAME_LENGTH))
        longest = MAX_NAME_LENGTH
    lookup = _path("instanceId", _LOOKUP_ID, _LOOKUP_ID_TEXT)
    orchestration = _path(
        "instanceId",
        _pattern(lookup_id_pattern(orchestration=True)),
        f"{_LOOKUP_ID_TEXT} Not an entity's (starting with '@'): orchestration operations "
        "do not apply to entities (400).",
    )
    new_id = _path(
        "instanceId",
        _pattern(instance_id_pattern()),
        f"At most {MAX_ID_LENGTH} characters; no control characters nor / \\ # ?; not "
        "starting with '@' (entities') nor with or ending with white space; not '.' or '..'.",
    )
    start: dict[str, Any] = {
        "summary": "Start an orchestration",
        "parameters": [
            _path("functionName", orchestrator, "One of the app's orchestrators."),
            _query(
                "timeout",
                _or_empty({"type": "number", "minimum": 0}),
                "Seconds to wait for the instance to finish before answering 202.",
            ),
            _query(
                "pollingInterval",
                _or_empty({"type": "number", "minimum": 0}),
                "Seconds between looks at the instance while waiting (0 or empty: 1 s).",
            ),
            _query("version", _TEXT),
        ],
        "requestBody": _json_body(),
        "responses": _responses(
            {
                "200": {"description": "Completed within the timeout: its output", **_json({})},
                "202": {"description": "Started", **_json(_CHECK_STATUS)},
            },
            400,
            404,
            409,
            413,
        ),
    }
    start_with_id = {**start, "parameters": [*start["parameters"], new_id]}
    entity_lookup = [
        _path("entityName", _pattern(text_pattern(1, None)), "No '@'."),
        _path("entityKey", _pattern(text_pattern(0, None)), "'$' means the empty key."),
    ]
    entity_signal = [
        _path("entityName", entity_name, "One of the app's entities, in any case."),
        _path(
            "entityKey",
            _pattern(entity_key_pattern(longest)),
            "'$' means the empty key. With the name, @name@key must fit "
            f"{MAX_ID_LENGTH} characters; no control characters nor / \\ # ?; not "
            "starting or ending with white space; not '.' or '..'.",
        ),
    ]
    entity_list = [
        _TOP,
        _query("fetchState", _FLAG, _FLAG_TEXT),
        _query("lastOperationTimeFrom", _TIME, _TIME_DESCRIPTION),
        _query("lastOperationTimeTo", _TIME, _TIME_DESCRIPTION),
        _TOKEN,
    ]
    entities_ok = {
        "200": {"description": "OK", **_json({"type": "array", "items": _ENTITY}, _TOKEN_HEADER)}
    }
    filters = [
        _query("createdTimeFrom", _TIME, _TIME_DESCRIPTION),
        _query("createdTimeTo", _TIME, _TIME_DESCRIPTION),
        _query(
            "runtimeStatus",
            _RUNTIME_STATUS,
            "Comma-separated statuses, in any case: "
            f"{', '.join(s.value for s in OrchestrationStatus)}.",
        ),
        _query("instanceIdPrefix", _TEXT),
        _query("name", _TEXT, "Orchestrator name."),
    ]
    accepted = {"202": {"description": "Accepted"}}
    status_ok = {
        "200": {"description": "Finished", **_json(_STATUS)},
        "202": {"description": "Not finished yet", **_json(_STATUS)},
    }
    paths: dict[str, Any] = {
        "/orchestrators/{functionName}": {"post": start},
        "/orchestrators/{functionName}/{instanceId}": {"post": start_with_id},
        "/instances": {
            "get": {
                "summary": "List instances, newest first",
                "parameters": [
                    *filters,
                    _query("showInput", _FLAG, _FLAG_TEXT),
                    _TOP,
                    _TOKEN,
                ],
                "responses": _responses(
                    {
                        "200": {
                            "description": "OK",
                            **_json({"type": "array", "items": _STATUS}, _TOKEN_HEADER),
                        }
                    },
                    400,
                ),
            },
            "delete": {
                "summary": "Purge the finished instances matching the filters",
                "parameters": [
                    _query(
                        "createdTimeFrom",
                        {"type": "string", "format": "date-time"},
                        "Required: an ISO 8601 date and time (RFC 3339, or any other form "
                        "Python reads; without an offset: UTC).",
                    )
                    | {"required": True},
                    *filters[1:],
                ],
                "responses": _responses(
                    {"200": {"description": "Purged", **_json(_PURGED)}}, 400, 404
                ),
            },
        },
        "/instances/{instanceId}": {
            "get": {
                "summary": "An instance's status",
                "parameters": [
                    lookup,
                    _query("showInput", _FLAG, _FLAG_TEXT),
                    _query("showHistory", _FLAG, _FLAG_TEXT),
                    _query("showHistoryOutput", _FLAG, _FLAG_TEXT),
                    _query(
                        "returnInternalServerErrorOnFailure",
                        _FLAG,
                        f"{_FLAG_TEXT} With true, a Failed instance answers 500.",
                    ),
                ],
                "responses": _responses(
                    {
                        **status_ok,
                        "500": {
                            "description": "Failed (returnInternalServerErrorOnFailure=true)",
                            **_json(_STATUS),
                        },
                    },
                    400,
                    404,
                ),
            },
            "delete": {
                "summary": "Purge an instance and its history",
                "parameters": [lookup],
                "responses": _responses(
                    {"200": {"description": "Purged", **_json(_PURGED)}}, 400, 404
                ),
            },
        },
        "/instances/{instanceId}/raiseEvent/{eventName}": {
            "post": {
                "summary": "Raise an event",
                "parameters": [
                    orchestration,
                    _path("eventName", _pattern(text_pattern(1, MAX_NAME_LENGTH))),
                ],
                "requestBody": _json_body(),
                "responses": _responses(accepted, 400, 404, 410, 413),
            }
        },
        "/instances/{instanceId}/terminate": _control(
            "Terminate", orchestration, 400, 404, 410, 413
        ),
        "/instances/{instanceId}/suspend": _control("Suspend", orchestration, 400, 404, 410, 413),
        "/instances/{instanceId}/resume": _control("Resume", orchestration, 400, 404, 410, 413),
        "/instances/{instanceId}/rewind": _control(
            "Rewind a failed instance", orchestration, 400, 404, 410, 413
        ),
        "/instances/{instanceId}/restart": {
            "post": {
                "summary": "Start the instance's orchestrator again with its input",
                "parameters": [
                    orchestration,
                    _query("restartWithNewInstanceId", _FLAG, _FLAG_TEXT),
                ],
                "responses": _responses(
                    {"202": {"description": "Started", **_json(_CHECK_STATUS)}}, 400, 404, 409
                ),
            }
        },
        "/entities": {
            "get": {
                "summary": "List entities",
                "parameters": entity_list,
                "responses": _responses(entities_ok, 400),
            }
        },
        "/entities/{entityName}": {
            "get": {
                "summary": "List the entities of one name",
                "parameters": [entity_lookup[0], *entity_list],
                "responses": _responses(entities_ok, 400, 404),
            }
        },
        "/entities/{entityName}/{entityKey}": {
            "get": {
                "summary": "An entity's state",
                "parameters": entity_lookup,
                "responses": _responses(
                    {"200": {"description": "Its state", **_json({})}}, 400, 404
                ),
            },
            "post": {
                "summary": "Signal an entity operation",
                "parameters": [
                    *entity_signal,
                    {
                        **_query("op", _pattern(text_pattern(1, MAX_NAME_LENGTH))),
                        "required": True,
                    },
                ],
                "requestBody": {
                    **_json_body(),
                    "content": {
                        "application/json": {"schema": {}},
                        "text/plain": {"schema": {"type": "string"}},
                    },
                },
                "responses": _responses(accepted, 400, 404, 413),
            },
            "delete": {
                "summary": "Delete an entity",
                "parameters": entity_signal,
                "responses": _responses(accepted, 400, 404),
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
                "master key as the x-functions-key header or the code query parameter (401 "
                "without; 403 for a cross-site request from a browser)."
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


def openapi_endpoint(
    current: Callable[[], FunctionApp | None] = lambda: None,
) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint serving `document(current())`, built again only when the app changed
    (`dfhost start --reload`)."""
    built: tuple[FunctionApp | None, dict[str, Any]] | None = None

    async def endpoint(request: Request) -> Response:
        nonlocal built
        app = current()
        if built is None or built[0] is not app:
            built = (app, document(app))
        return JSONResponse(built[1])

    return endpoint
