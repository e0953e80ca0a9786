"""The app's HTTP-triggered functions, served at `/{routePrefix}/{route}` as the Functions host
serves them.

Bindings are passed the way the Python worker passes them: every binding by its name as a
keyword argument (the trigger gets a `func.HttpRequest`, a `durableClient` binding the starter
JSON string, an output binding an `Out` holder), plus `context` only when the function declares
it; v2 client wrappers need exactly this (sdk-protocol.md §1).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import azure.functions as func
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from dfhost import telemetry
from dfhost.app.bindings import invocation_arguments
from dfhost.app.functions import Binding, Function, FunctionApp
from dfhost.app.invoke import call_function, within
from dfhost.logs import Invocation, log_invocation
from dfhost.runtime.triggers.bindings_io import has_io, shared_io
from dfhost.runtime.triggers.invoker import log_function_exception
from dfhost.web.common import (
    BadRequestError,
    BodyTooLargeError,
    origin_of,
    raw_path,
    read_body,
    url_of,
)
from dfhost.web.route_templates import RouteTemplate, RouteTemplateError, parse_template
from dfhost.wire import client_binding

if TYPE_CHECKING:
    from dfhost.web.auth import Access

__all__ = ["HttpTriggers", "RpcBaseUrlSource"]

log = logging.getLogger("dfhost")

# What Core Tools prints as the reason of HTTP-triggered invocations.
INVOCATION_REASON = "This function was programmatically called via the host APIs."


class RpcBaseUrlSource(Protocol):
    rpc_base_url: str


class _UnsupportedOutputError(TypeError):
    pass


@dataclass(frozen=True, slots=True)
class _HttpFunction:
    function: Function
    template: RouteTemplate
    methods: frozenset[str] | None
    http_output: str | None
    """Name of the `http` output binding; "$return" or None means the return value."""


def _methods(trigger: Binding) -> frozenset[str] | None:
    methods = trigger.settings.get("methods")
    if not methods:
        return None
    if isinstance(methods, str):
        methods = [methods]
    return frozenset(str(m).upper() for m in methods)


class HttpTriggers:
    """An ASGI app dispatching requests to the app's HTTP-triggered functions."""

    def __init__(
        self,
        app: FunctionApp,
        *,
        rpc_base_url: str | RpcBaseUrlSource,
        max_body_bytes: int,
        access: Access | None = None,
        stopping: Callable[[], bool] | None = None,
    ) -> None:
        """`rpc_base_url` may be an object whose `rpc_base_url` is read per request: a server
        started on port 0 learns its URL only after binding. `access` checks each function's
        `authLevel` (none: every function is anonymous). While `stopping()` holds, requests
        for a function are refused with 503, as Azure's front end answers for a host that is
        shutting down: a load balancer sends them to another host."""
        self.access = access
        self.stopping = stopping
        self._rpc = rpc_base_url
        self.max_body_bytes = max_body_bytes
        self.use_app(app)

    def use_app(self, app: FunctionApp) -> None:
        """Serve `app`'s HTTP functions from now on (`dfhost start --reload`); a request
        already running finishes on the function it started with."""
        self.app = app
        self.limits = app.settings.limits
        self.functions = self._compile(app)

    @property
    def rpc_base_url(self) -> str:
        if isinstance(self._rpc, str):
            return self._rpc
        return str(self._rpc.rpc_base_url)

    @staticmethod
    def _compile(app: FunctionApp) -> list[_HttpFunction]:
        prefix = app.settings.route_prefix.strip().strip("/")
        compiled: list[tuple[int, _HttpFunction]] = []
        for index, function in enumerate(app.of_kind("http")):
            trigger = function.trigger
            route = str(trigger.settings.get("route") or function.name)
            try:
                template = parse_template(f"{prefix}/{route.strip().lstrip('~').strip('/')}")
            except RouteTemplateError as exc:
                log.error(
                    "function %r: invalid route %r: %s; it cannot be called over HTTP",
                    function.name,
                    route,
                    exc,
                )
                continue
            http_output = next(
                (b.name for b in function.bindings if b.type == "http" and b.direction == "out"),
                None,
            )
            entry = _HttpFunction(function, template, _methods(trigger), http_output)
            compiled.append((index, entry))
        compiled.sort(key=lambda item: (item[1].template.precedence, item[0]))
        return [entry for _, entry in compiled]

    def match(self, method: str, path: str) -> tuple[_HttpFunction, dict[str, str]] | None:
        """The function for a request (`path` still percent-encoded) and its route values, or
        None (answer 404)."""
        method = method.upper()
        for entry in self.functions:
            if entry.methods is not None and method not in entry.methods:
                continue
            values = entry.template.match(path)
            if values is not None:
                return entry, values
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = await self.handle(request)
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        found = self.match(request.method, raw_path(request))
        if found is None:
            return Response(status_code=404)
        entry, route_values = found
        if self.stopping is not None and self.stopping():
            return Response("Function host is shutting down.", 503, media_type="text/plain")
        if self.access is not None:
            refused = self.access.check_function(request, entry.function)
            if refused is not None:
                return refused  # before the body: an unauthorized caller costs no upload
        try:
            body = await read_body(request, self.max_body_bytes)
        except BodyTooLargeError as exc:
            return Response(str(exc), 413, media_type="text/plain")
        except BadRequestError as exc:
            return Response(str(exc), 400, media_type="text/plain")
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening; not worth a traceback
        # Current while the function runs, so the instances it starts join the caller's trace.
        route = f"/{entry.template.text}"
        with telemetry.request_span(request.method, route, request.headers) as record:
            response = await self.invoke(entry, request, route_values, body)
            record(response.status_code)
        return response

    def _http_request(
        self, request: Request, route_values: Mapping[str, str], body: bytes
    ) -> func.HttpRequest:
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        params: dict[str, str] = {}
        for key, value in request.query_params.multi_items():
            # ASP.NET joins repeated query keys with commas before the worker sees them.
            params[key] = f"{params[key]},{value}" if key in params else value
        return func.HttpRequest(
            method=request.method,
            url=url_of(request),
            headers=headers,
            params=params,
            route_params=dict(route_values),
            body=body,
        )

    async def invoke(
        self,
        entry: _HttpFunction,
        request: Request,
        route_values: Mapping[str, str],
        body: bytes,
    ) -> Response:
        function = entry.function
        inv = Invocation(function=function.name)
        starter = json.dumps(
            client_binding(
                origin=origin_of(request),
                hub_name=self.app.settings.hub_name,
                rpc_base_url=self.rpc_base_url,
            )
        )
        kwargs, outputs = invocation_arguments(
            function,
            invocation_id=inv.id,
            trigger_value=self._http_request(request, route_values, body),
            client_starter=starter,
        )
        try:
            with log_invocation(inv, INVOCATION_REASON):
                try:
                    result = await within(
                        self.limits.function_timeout,
                        call_function(function, kwargs),
                        f"function '{function.name}'",
                    )
                    output = outputs.get(entry.http_output or "")
                    value = output.get() if output is not None else None
                    if has_io(function):  # queue, blob, ... outputs: sent before answering
                        io = shared_io(self.app.settings.triggers)
                        sent = None if entry.http_output == "$return" else result
                        await io.deliver(function, outputs, sent, route_values)
                    return _to_response(value if value is not None else result)
                except Exception as exc:
                    log_function_exception(function.name, exc)
                    raise
        except Exception:
            return Response(
                f"Exception while executing function: Functions.{function.name}",
                500,
                media_type="text/plain",
            )


def _to_response(value: Any) -> Response:
    if value is None:
        return Response(status_code=204)
    if isinstance(value, func.HttpResponse):
        return _from_http_response(value)
    if isinstance(value, str):
        return Response(value, 200, media_type="text/plain; charset=utf-8")
    if isinstance(value, (bytes, bytearray)):
        return Response(bytes(value), 200, media_type="application/octet-stream")
    raise _UnsupportedOutputError(
        f"the function returned {type(value).__name__}; an HTTP output must be "
        "func.HttpResponse or str"
    )


def _from_http_response(value: func.HttpResponse) -> Response:
    status = int(value.status_code)
    body = value.get_body()
    if status < 200 or status in (204, 304):
        body = b""  # these statuses carry no body; sending one breaks the HTTP connection
    response = Response(body, status)
    headers = [(k, v) for k, v in response.raw_headers if k == b"content-length"]
    has_type = False
    for key, item in value.headers.items():
        name = str(key).lower()
        if name == "content-length":
            continue
        has_type = has_type or name == "content-type"
        headers.append((name.encode("latin-1"), str(item).encode("latin-1")))
    if not has_type and body:
        mimetype = value.mimetype or "text/plain"
        if mimetype.startswith("text/"):
            mimetype = f"{mimetype}; charset={value.charset or 'utf-8'}"
        headers.append((b"content-type", mimetype.encode("latin-1")))
    response.raw_headers = headers
    return response
