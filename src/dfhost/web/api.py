"""The Durable Functions management API, served at `/runtime/webhooks/durabletask`.

This one mount is both the public API (curl, dashboards) and the `rpcBaseUrl` the SDK's
`DurableOrchestrationClient` calls, so routes, status codes and bodies follow the extension
(sdk-protocol.md §5.3 and §6). Every body the SDK may read is JSON or empty: it parses all
responses with `response.json()`, and a text body would crash it.

Payload encodings (the Python client double-encodes its POST bodies):
- Start: the body's JSON value becomes the input. A string value holding JSON text (what the
  SDK sends: `"{\\"a\\": 1}"`) is stored as that text, so `get_input()` returns `{"a": 1}`;
  any other value (a curl body `{"a": 1}`) is stored as its JSON text, with the same result.
- Raise event: the body's JSON text is the event data unchanged, as the extension stores it.
  So `client.raise_event(id, "E", {"a": 1})` reaches the orchestrator as the *string*
  `'{"a": 1}'` (Azure/azure-functions-durable-python#295), while a curl body `{"a": 1}`
  arrives as a dict. dfhost reproduces this on purpose: code that works here works on Azure.
- Entity operations (`POST entities/{name}/{key}?op=`): a JSON body is read as for a start, so
  `client.signal_entity(eid, "add", 1)` and a curl body `1` both reach the entity as 1; other
  content types arrive as the body's text (a string). Entity names are case-insensitive, and a
  key of `$` means the empty key.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route

from dfhost import telemetry
from dfhost.client import (
    DurableClient,
    InstanceExistsError,
    InstanceNotFoundError,
    UnknownEntityError,
    UnknownOrchestratorError,
)
from dfhost.history import (
    TERMINAL_STATUSES,
    Instance,
    OrchestrationStatus,
    format_time,
    parse_statuses,
    parse_time,
)
from dfhost.ids import InvalidArgumentError, InvalidInstanceIdError
from dfhost.orchestration.entities import EntityStatus
from dfhost.orchestration.limits import PayloadTooLargeError
from dfhost.store import DeliveryResult, InstanceQuery, StoreError
from dfhost.web.common import (
    BadRequestError,
    BodyTooLargeError,
    json_bytes,
    log_has_it,
    logged_error,
    origin_of,
    read_body,
    url_of,
)
from dfhost.wire import (
    UnsafeJsonError,
    api_history,
    api_status,
    check_status_payload,
    json_too_deep,
    parse_json_input,
    stored_json_value,
)

__all__ = ["BASE_PATH", "MAX_TOP", "ManagementApi"]

BASE_PATH = "/runtime/webhooks/durabletask"
CONTINUATION_HEADER = "x-ms-continuation-token"

log = logging.getLogger("dfhost")

_IN_PROGRESS = frozenset(
    {
        OrchestrationStatus.PENDING,
        OrchestrationStatus.RUNNING,
        OrchestrationStatus.CONTINUED_AS_NEW,
        OrchestrationStatus.SUSPENDED,
    }
)
_ARGUMENT_ERROR = "One or more of the arguments submitted is incorrect"
_LEAP_SECOND = re.compile(r"(.*T\d\d:\d\d):60(\.\d*)?(.*)")
MAX_TOP = 2**31 - 1
"""The largest page size (`top`) the extension's int parameter takes."""

Endpoint = Callable[[Request], Awaitable[Response]]


class _Query:
    """Query parameters with case-insensitive keys, as the extension reads them."""

    def __init__(self, request: Request) -> None:
        self._values: dict[str, str] = {}
        for key, value in request.query_params.multi_items():
            self._values.setdefault(key.lower(), value)

    def get(self, name: str) -> str | None:
        return self._values.get(name.lower())

    def flag(self, name: str, default: bool) -> bool:
        # .NET bool.TryParse: "true"/"false" in any case; anything else keeps the default.
        value = (self.get(name) or "").strip().lower()
        if value == "true":
            return True
        if value == "false":
            return False
        return default

    def time(self, name: str) -> datetime | None:
        value = self.get(name)
        if value is None or not value.strip():
            return None
        text = value.strip()
        # A "+" offset arrives as a space when the caller did not encode it; RFC 3339 allows
        # a lower-case "t" and "z", and a leap second, which Python's parser does not.
        leap = _LEAP_SECOND.fullmatch(text.upper())
        if leap is not None:
            text = leap.expand(r"\1:59\2\3")
        for candidate in (text, text.replace(" ", "+"), text.upper()):
            try:
                moment = parse_time(candidate) + timedelta(seconds=1 if leap else 0)
                return moment.astimezone(UTC)
            except (ValueError, OverflowError):
                continue
        raise BadRequestError(f"{name} '{value}' is not a valid ISO 8601 date and time.")

    def statuses(self) -> tuple[OrchestrationStatus, ...]:
        try:
            return parse_statuses([self.get("runtimeStatus") or ""], "runtimeStatus")
        except ValueError as exc:
            raise BadRequestError(f"{exc}.") from None

    def top(self) -> int:
        value = self.get("top")
        if value is None or not value.strip():
            return 100
        try:
            top = int(value)
        except ValueError:
            top = 0
        if not 0 < top <= MAX_TOP:
            raise BadRequestError(f"top '{value}' is not an integer from 1 to {MAX_TOP}.")
        return top

    def number(self, name: str) -> float | None:
        value = self.get(name)
        if value is None or not value.strip():
            return None
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number < 0:
            raise BadRequestError(f"{name} '{value}' is not a non-negative number of seconds.")
        return number


def _error(status: int, message: str, detail: str | None = None) -> JsonResponse:
    return JsonResponse({"Message": message, "ExceptionMessage": detail or message}, status)


def _delivery(result: DeliveryResult, instance_id: str) -> Response:
    if result == "not_found":
        return _error(404, f"No instance with ID '{instance_id}' found.")
    if result == "gone":
        return _error(410, f"Instance with ID '{instance_id}' is gone: it has already finished.")
    return Response(status_code=202)


def _json_text(text: str, what: str = "The request body") -> Any:
    """Parse JSON as the SDK's own `json.loads` does (NaN and Infinity included: `df_dumps`
    writes them for float values, and Newtonsoft reads them too), refusing what could not be
    shown again (`parse_json_input`)."""
    try:
        return parse_json_input(text, what)
    except UnsafeJsonError as exc:
        raise BadRequestError(str(exc)) from None


class JsonResponse(JSONResponse):
    """Starlette's JSONResponse refuses NaN; a stored output holding one must still be shown
    (the SDK parses it back with `json.loads`)."""

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


def _body_text(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequestError("The request body is not valid UTF-8 text.") from None


def start_input(body: bytes) -> str | None:
    """The orchestration input (JSON text) for a start request body; see the module notes."""
    text = _body_text(body).strip()
    if not text:
        return None
    value = _json_text(text)
    if value is None:
        return None
    if isinstance(value, str):
        if json_too_deep(value):  # the SDK's form of an input too deep: refused like one
            _json_text(value, "The input in the request body's JSON string")
        try:
            parse_json_input(value, "The input in the request body's JSON string")
        except UnsafeJsonError:
            # A plain string from curl: the extension would hand the orchestrator text that
            # get_input() cannot parse; keeping it a JSON string is the only useful reading.
            return json.dumps(value)
        return value
    return json.dumps(value)


def operation_input(body: bytes, media_type: str) -> str | None:
    """An entity operation's input (JSON text) for a signal request body: a JSON body as for
    a start request (so the SDK's double-encoded input arrives as the value it was given);
    any other content type as the text itself, a JSON string."""
    if not body:
        return None
    if media_type == "application/json":
        return start_input(body)
    return json.dumps(_body_text(body))


def _entity_body(status: EntityStatus, fetch_state: bool) -> dict[str, Any]:
    # The extension's DurableEntityStatus.
    return {
        "entityId": {"name": status.entity.name, "key": status.entity.key},
        "lastOperationTime": format_time(status.last_operation_at),
        "state": stored_json_value(status.state) if fetch_state else None,
    }


class ManagementApi:
    """The routes of the management API; mount them at `BASE_PATH`."""

    def __init__(self, client: DurableClient, *, hub_name: str, max_body_bytes: int) -> None:
        self.client = client
        self.hub_name = hub_name
        self.max_body_bytes = max_body_bytes

    def routes(self) -> list[BaseRoute]:
        def route(path: str, endpoint: Endpoint, methods: list[str]) -> Route:
            return Route(path, _guarded(endpoint), methods=methods)

        instance = "/instances/{instance_id}"
        routes = [
            route("/orchestrators/{function_name}", self.start, ["POST"]),
            route("/orchestrators/{function_name}/{instance_id}", self.start, ["POST"]),
            route("/instances", self.list_instances, ["GET"]),
            route("/instances/", self.list_instances, ["GET"]),
            route("/instances", self.purge_many, ["DELETE"]),
            route("/instances/", self.purge_many, ["DELETE"]),
            route(instance, self.get_status, ["GET"]),
            route(instance, self.purge, ["DELETE"]),
            route(instance + "/raiseEvent/{event_name}", self.raise_event, ["POST"]),
            route(instance + "/terminate", self.terminate, ["POST"]),
            route(instance + "/suspend", self.suspend, ["POST"]),
            route(instance + "/resume", self.resume, ["POST"]),
            route(instance + "/rewind", self.rewind, ["POST"]),
            route(instance + "/restart", self.restart, ["POST"]),
            route("/entities", self.list_entities, ["GET"]),
            route("/entities/", self.list_entities, ["GET"]),
            route("/entities/{entity_name}", self.list_entities, ["GET"]),
            route("/entities/{entity_name}/{entity_key}", self.get_entity, ["GET"]),
            route("/entities/{entity_name}/{entity_key}", self.signal_entity, ["POST"]),
            route("/entities/{entity_name}/{entity_key}", self.delete_entity, ["DELETE"]),
        ]
        # Last: everything else.
        return [*routes, Route("/{rest:path}", _NoRoute(routes))]

    # --- start ---------------------------------------------------------------------------
    async def start(self, request: Request) -> Response:
        # The span of the request that starts an instance is the root of its trace.
        route = f"{BASE_PATH}/orchestrators/{{functionName}}"
        with telemetry.request_span(request.method, route, request.headers) as record:
            response = await self._start(request)
            record(response.status_code)
        return response

    async def _start(self, request: Request) -> Response:
        name = request.path_params["function_name"]
        instance_id = request.path_params.get("instance_id")
        query = _Query(request)
        timeout = query.number("timeout")
        interval = query.number("pollingInterval")
        input_text = start_input(await read_body(request, self.max_body_bytes))
        version = query.get("version") or None
        try:
            instance_id = await self.client.start_new(name, instance_id, input_text, version)
        except (UnknownOrchestratorError, InvalidInstanceIdError) as exc:
            return _error(400, _ARGUMENT_ERROR, str(exc))
        except InstanceExistsError as exc:
            # The extension answers 500 here; 409 says what happened. The SDK's start_new
            # raises Exception(<this body>), whose text carries the message either way.
            return _error(409, str(exc))
        if timeout is not None:
            finished = await self.client.wait_for_completion(
                instance_id, timeout, interval if interval else 1.0
            )
            if finished is not None and finished.status is OrchestrationStatus.COMPLETED:
                return Response(
                    finished.output if finished.output is not None else "null",
                    200,
                    media_type="application/json",
                )
            if finished is not None and finished.status in TERMINAL_STATUSES:
                return await self._status_response(request, finished, _Query(request))
        return self._check_status(request, instance_id)

    def _check_status(self, request: Request, instance_id: str) -> Response:
        payload = check_status_payload(
            origin=origin_of(request),
            hub_name=self.hub_name,
            instance_id=quote(instance_id, safe=""),
        )
        payload["id"] = instance_id
        headers = {"Location": payload["statusQueryGetUri"], "Retry-After": "10"}
        return JsonResponse(payload, 202, headers=headers)

    # --- queries -------------------------------------------------------------------------
    async def get_status(self, request: Request) -> Response:
        instance_id = request.path_params["instance_id"]
        instance = await self.client.get_status(instance_id)
        if instance is None:
            return Response(status_code=404)
        return await self._status_response(request, instance, _Query(request))

    async def _status_response(
        self, request: Request, instance: Instance, query: _Query
    ) -> Response:
        show_input = query.flag("showInput", True)
        history = None
        if query.flag("showHistory", False):
            events = await self.client.get_history(instance.instance_id)
            history = api_history(
                events, show_input=show_input, show_output=query.flag("showHistoryOutput", False)
            )
        body = api_status(instance, show_input=show_input, history=history)
        if instance.status in _IN_PROGRESS:
            headers = {"Location": url_of(request), "Retry-After": "5"}
            return JsonResponse(body, 202, headers=headers)
        if instance.status is OrchestrationStatus.FAILED and query.flag(
            "returnInternalServerErrorOnFailure", False
        ):
            return JsonResponse(body, 500)
        return JsonResponse(body, 200)

    async def list_instances(self, request: Request) -> Response:
        query = _Query(request)
        token = request.headers.get(CONTINUATION_HEADER) or None
        q = InstanceQuery(
            created_from=query.time("createdTimeFrom"),
            created_to=query.time("createdTimeTo"),
            statuses=query.statuses(),
            instance_id_prefix=query.get("instanceIdPrefix") or None,
            name=query.get("name") or None,
            top=query.top(),
            continuation=token,
        )
        try:
            page = await self.client.query(q)
        except StoreError:
            if token is None:
                raise
            raise BadRequestError(f"Invalid {CONTINUATION_HEADER} header.") from None
        show_input = query.flag("showInput", True)
        body = [api_status(i, show_input=show_input) for i in page.instances]
        headers = {CONTINUATION_HEADER: page.continuation} if page.continuation else None
        return JsonResponse(body, 200, headers=headers)

    # --- events and control --------------------------------------------------------------
    async def raise_event(self, request: Request) -> Response:
        instance_id = request.path_params["instance_id"]
        instance = await self.client.get_status(instance_id)
        if instance is None:
            return _delivery("not_found", instance_id)
        if instance.status in TERMINAL_STATUSES:
            return _delivery("gone", instance_id)
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        text = _body_text(await read_body(request, self.max_body_bytes)).strip()
        # No body and no content type: an event without data.
        if media_type != "application/json" and (media_type or text):
            return _error(400, "Only application/json request content is supported")
        if text:
            try:
                parse_json_input(text, "The event data")
            except UnsafeJsonError as exc:
                return _error(400, "Invalid JSON content", str(exc))
        result = await self.client.raise_event(
            instance_id, request.path_params["event_name"], text or None
        )
        return _delivery(result, instance_id)

    async def terminate(self, request: Request) -> Response:
        instance_id = request.path_params["instance_id"]
        result = await self.client.terminate(instance_id, _Query(request).get("reason"))
        return _delivery(result, instance_id)

    async def suspend(self, request: Request) -> Response:
        instance_id = request.path_params["instance_id"]
        result = await self.client.suspend(instance_id, _Query(request).get("reason"))
        return _delivery(result, instance_id)

    async def resume(self, request: Request) -> Response:
        instance_id = request.path_params["instance_id"]
        result = await self.client.resume(instance_id, _Query(request).get("reason"))
        return _delivery(result, instance_id)

    async def rewind(self, request: Request) -> Response:
        instance_id = request.path_params["instance_id"]
        try:
            result = await self.client.rewind(instance_id, _Query(request).get("reason"))
        except UnknownOrchestratorError as exc:
            return _error(400, _ARGUMENT_ERROR, str(exc))
        if result == "gone":
            instance = await self.client.get_status(instance_id)
            status = instance.status.value if instance is not None else "purged"
            return _error(
                410,
                f"Instance with ID '{instance_id}' is {status}: only Failed instances can be "
                "rewound.",
            )
        return _delivery(result, instance_id)

    async def restart(self, request: Request) -> Response:
        instance_id = request.path_params["instance_id"]
        # The extension's default, and what the SDK's restart() sends unless told otherwise.
        new_id = _Query(request).flag("restartWithNewInstanceId", True)
        try:
            restarted = await self.client.restart(instance_id, new_id)
        except InstanceNotFoundError as exc:
            return _error(404, str(exc))
        except UnknownOrchestratorError as exc:
            return _error(400, _ARGUMENT_ERROR, str(exc))
        except InstanceExistsError as exc:
            return _error(409, f"{exc} Terminate it first, or restart with a new instance ID.")
        return self._check_status(request, restarted)

    # --- entities ------------------------------------------------------------------------
    @staticmethod
    def _entity_path(request: Request) -> tuple[str, str]:
        key = request.path_params["entity_key"]
        return request.path_params["entity_name"], "" if key == "$" else key

    async def get_entity(self, request: Request) -> Response:
        name, key = self._entity_path(request)
        try:
            status = await self.client.read_entity(name, key)
        except InvalidInstanceIdError as exc:
            return _error(400, _ARGUMENT_ERROR, str(exc))
        if status is None or status.state is None:
            return Response(status_code=404)
        return Response(status.state, 200, media_type="application/json")

    async def signal_entity(self, request: Request) -> Response:
        operation = _Query(request).get("op")
        if not operation:
            raise BadRequestError("The 'op' query parameter (the operation to run) is required.")
        body = await read_body(request, self.max_body_bytes)
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        return await self._signal(request, operation, operation_input(body, media_type))

    async def delete_entity(self, request: Request) -> Response:
        return await self._signal(request, "delete", None)

    async def _signal(self, request: Request, operation: str, input_text: str | None) -> Response:
        name, key = self._entity_path(request)
        try:
            await self.client.signal_entity(name, key, operation, input_text)
        except (InvalidInstanceIdError, UnknownEntityError) as exc:
            return _error(400, _ARGUMENT_ERROR, str(exc))
        return Response(status_code=202)

    async def list_entities(self, request: Request) -> Response:
        query = _Query(request)
        token = request.headers.get(CONTINUATION_HEADER) or None
        try:
            found, next_token = await self.client.list_entities(
                request.path_params.get("entity_name"),
                top=query.top(),
                continuation=token,
                operated_from=query.time("lastOperationTimeFrom"),
                operated_to=query.time("lastOperationTimeTo"),
            )
        except InvalidInstanceIdError as exc:
            return _error(400, _ARGUMENT_ERROR, str(exc))
        except StoreError:
            if token is None:
                raise
            raise BadRequestError(f"Invalid {CONTINUATION_HEADER} header.") from None
        fetch_state = query.flag("fetchState", False)
        body = [_entity_body(status, fetch_state) for status in found]
        headers = {CONTINUATION_HEADER: next_token} if next_token else None
        return JsonResponse(body, 200, headers=headers)

    # --- purge ---------------------------------------------------------------------------
    async def purge(self, request: Request) -> Response:
        deleted = await self.client.purge(request.path_params["instance_id"])
        if deleted == 0:
            return Response(status_code=404)
        return JsonResponse({"instancesDeleted": deleted}, 200)

    async def purge_many(self, request: Request) -> Response:
        query = _Query(request)
        created_from = query.time("createdTimeFrom")
        if created_from is None:
            raise BadRequestError("createdTimeFrom is required to purge instances.")
        q = InstanceQuery(
            created_from=created_from,
            created_to=query.time("createdTimeTo"),
            statuses=query.statuses(),
            instance_id_prefix=query.get("instanceIdPrefix") or None,
            name=query.get("name") or None,
        )
        deleted = await self.client.purge_many(q)
        if deleted == 0:
            return Response(status_code=404)
        return JsonResponse({"instancesDeleted": deleted}, 200)


class _NoRoute:
    """A request no route took: a known path asked with another method is a 405 saying which
    methods it takes; any other path a 404 with an empty body (the extension's answer, and
    one the SDK can parse)."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        allowed = sorted(
            {
                method
                for route in self.routes
                if route.matches(scope)[0] is Match.PARTIAL
                for method in route.methods or ()
            }
        )
        if not allowed:
            await Response(status_code=404)(scope, receive, send)
            return
        message = f"The method {scope['method']} is not allowed here: use {', '.join(allowed)}."
        response = _error(405, message)
        response.headers["Allow"] = ", ".join(allowed)
        await response(scope, receive, send)


def _guarded(endpoint: Endpoint) -> Endpoint:
    """Map bad input to 4xx and anything unexpected to a logged 500; never let one escape."""

    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except (BadRequestError, InvalidArgumentError) as exc:
            return _error(400, _ARGUMENT_ERROR, str(exc))
        except (BodyTooLargeError, PayloadTooLargeError) as exc:
            return _error(413, str(exc))
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening; not worth a traceback
        except Exception:
            incident = logged_error(
                log, "management API %s %s failed", request.method, request.url.path, trace=True
            )
            return _error(
                500,
                "Something went wrong while processing your request",
                f"An unexpected error occurred: {log_has_it(incident)}.",
            )

    return guarded
