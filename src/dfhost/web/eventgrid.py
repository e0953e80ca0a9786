"""The Event Grid webhook, as the Functions host serves it:
`/runtime/webhooks/EventGrid?functionName=NAME`.

- Event Grid schema: `POST` with `aeg-event-type: SubscriptionValidation` answers
  `{"validationResponse": code}` (the subscription handshake); `Notification` runs the function
  once per event in the array; `Unsubscribe` is acknowledged.
- CloudEvents 1.0: the `OPTIONS` abuse-protection handshake answers `WebHook-Allowed-Origin`;
  events arrive structured (`application/cloudevents+json`, or a `-batch` array) or binary
  (`ce-*` headers, the body being the data).

Success is 202 Accepted; when an event's function failed, 500, so that Event Grid delivers it
again (at least once). With keys enforced, a caller needs the system key `eventgrid_extension`
or the master key (`code` query parameter or `x-functions-key`), as in Azure.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from dfhost.web.auth import KEY_HEADER, Access, presented_key
from dfhost.web.auth import _matches as matches_key  # the constant-time key check
from dfhost.web.common import BadRequestError, BodyTooLargeError, read_body

if TYPE_CHECKING:
    from dfhost.runtime.triggers import TriggerHost

__all__ = ["PATH", "SYSTEM_KEY", "event_grid_routes"]

PATH = "/runtime/webhooks/EventGrid"
SYSTEM_KEY = "eventgrid_extension"
_VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"


def event_grid_routes(
    triggers: TriggerHost | None, access: Access, max_body_bytes: int
) -> list[Route]:
    """The webhook's routes (the host's own path and its lower-case spelling)."""

    async def webhook(request: Request) -> Response:
        event_grid = triggers.event_grid if triggers is not None else None
        # ASP.NET reads query names case-insensitively.
        name = next(
            (v for k, v in request.query_params.multi_items() if k.lower() == "functionname"), ""
        )
        if not name:
            return _text(400, "The functionName query parameter is required.")
        function = event_grid.find(name) if event_grid is not None else None
        if event_grid is None or function is None:
            return _text(404, f"No Event Grid-triggered function named '{name}'.")
        if access.enforce and access.keys is not None:
            allowed = access.keys.system_keys(SYSTEM_KEY)
            if not matches_key(presented_key(request), allowed):
                return _text(
                    401,
                    f"Unauthorized: the Event Grid webhook needs the system key '{SYSTEM_KEY}' "
                    f"or the master key, as the code query parameter or {KEY_HEADER} header.",
                )
        if request.method == "OPTIONS":
            origin = request.headers.get("webhook-request-origin", "")
            headers = {"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*"}
            return Response(status_code=200, headers=headers)
        kind = request.headers.get("aeg-event-type", "").strip().lower()
        if kind == "unsubscribe":
            return Response(status_code=202)
        try:
            body = await read_body(request, max_body_bytes)
            events = _events(request, body)
            validation = _validation_code(kind, events)
        except BodyTooLargeError as exc:
            return _text(413, str(exc))
        except BadRequestError as exc:
            return _text(400, str(exc))
        if validation is not None:
            return JSONResponse({"validationResponse": validation})
        failed = await event_grid.deliver(function, events)
        if failed:
            return _text(500, f"{failed} of {len(events)} events failed in function '{name}'.")
        return Response(status_code=202)

    methods = ["POST", "OPTIONS"]
    return [Route(PATH, webhook, methods=methods), Route(PATH.lower(), webhook, methods=methods)]


def _events(request: Request, body: bytes) -> list[dict[str, Any]]:
    if "ce-specversion" in request.headers:
        return [_binary_cloud_event(request, body)]
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequestError("The body is not JSON: expected an array of events.") from None
    events = parsed if isinstance(parsed, list) else [parsed]
    if not events or not all(isinstance(e, dict) for e in events):
        raise BadRequestError("Expected an event object or an array of event objects.")
    return events


def _binary_cloud_event(request: Request, body: bytes) -> dict[str, Any]:
    event: dict[str, Any] = {
        key[3:]: value for key, value in request.headers.items() if key.startswith("ce-")
    }
    content_type = request.headers.get("content-type", "")
    event["datacontenttype"] = content_type or None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestError("A binary-mode CloudEvent's data must be UTF-8 text.") from None
    if "json" in content_type:
        try:
            event["data"] = json.loads(text) if text else None
        except ValueError:
            raise BadRequestError("The CloudEvent's data is not the JSON it says.") from None
    else:
        event["data"] = text
    return event


def _validation_code(kind: str, events: list[dict[str, Any]]) -> str | None:
    first = events[0]
    if kind != "subscriptionvalidation" and first.get("eventType") != _VALIDATION_EVENT:
        return None
    data = first.get("data")
    code = data.get("validationCode") if isinstance(data, dict) else None
    if not isinstance(code, str):
        raise BadRequestError("A SubscriptionValidation event needs data.validationCode.")
    return code


def _text(status: int, message: str) -> Response:
    return PlainTextResponse(message, status)
