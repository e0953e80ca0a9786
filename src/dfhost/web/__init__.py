"""dfhost's HTTP surface: the management API, the app's HTTP triggers and host status.

Route order matters: `/admin/host/status`, then the management API mount (which also answers
the SDK's `rpcBaseUrl` calls) and the dashboard (`/dashboard/`), then the HTTP triggers, which
see every other path. A route prefix of "" therefore cannot shadow the management API or the
dashboard, as in Azure.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from dfhost import __version__
from dfhost.app.functions import FunctionApp
from dfhost.client import DurableClient
from dfhost.web.api import BASE_PATH, ManagementApi
from dfhost.web.auth import Access, AccessGuard, login_routes
from dfhost.web.dashboard import BASE as DASHBOARD_PATH
from dfhost.web.dashboard import Dashboard
from dfhost.web.eventgrid import event_grid_routes
from dfhost.web.metrics import PATH as METRICS_PATH
from dfhost.web.metrics import metrics_endpoint
from dfhost.web.openapi import OPENAPI_PATH, openapi_endpoint
from dfhost.web.sessions import SessionBook
from dfhost.web.triggers import HttpTriggers

if TYPE_CHECKING:
    from dfhost.runtime.triggers import TriggerHost

__all__ = ["DEFAULT_MAX_BODY_BYTES", "RunFunction", "WebState", "build_app"]

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024

Hook = Callable[[], Awaitable[Any]]
RunFunction = Callable[[str], Awaitable[Literal["started", "not_found", "busy"]]]
"""Runs a timer-triggered function once, now, by name (`TimerRunner.run_now`)."""


@dataclass
class WebState:
    """Mutable server state, reachable as `web_app.state.dfhost`."""

    rpc_base_url: str
    """Where the app's client bindings send their SDK calls. Settable after the server bound
    its port (port 0), since HTTP functions read it per request."""
    app: FunctionApp
    """The app served; `use_app` switches to another."""
    state: str = "Starting"
    """The host state `/admin/host/status` reports: Starting, Running or Stopping. Stopping
    begins when the host drains (HTTP functions then answer 503), before the server stops."""
    started_at: float = field(default_factory=time.monotonic)
    switches: list[Callable[[FunctionApp], None]] = field(default_factory=list)
    """What `use_app` calls: the parts of build_app that hold the app (HTTP functions, client,
    dashboard)."""

    def use_app(self, app: FunctionApp) -> None:
        """Serve `app` from now on (`dfhost start --reload`): its HTTP functions, and its
        orchestrator and entity names in the management API (the client it was built with
        included), the dashboard, the OpenAPI document and the host status's load errors."""
        self.app = app
        for switch in self.switches:
            switch(app)


def build_app(
    client: DurableClient,
    app: FunctionApp,
    *,
    rpc_base_url: str,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    on_startup: Sequence[Hook] = (),
    on_shutdown: Sequence[Hook] = (),
    run_function: RunFunction | None = None,
    access: Access | None = None,
    trigger_host: TriggerHost | None = None,
) -> Starlette:
    """The ASGI app serving `app` with `client`'s task hub.

    `rpc_base_url` must end with `/` (the SDK appends paths to it) and point at this server's
    `/runtime/webhooks/durabletask/`, normally over loopback. `on_startup` hooks run in the
    server's lifespan before it reports Running; `on_shutdown` hooks run when it stops.
    `run_function` serves `POST /admin/functions/{name}` (Azure's "run a timer now").
    `access` is who may call what (web/auth.py); the default enforces no keys.
    """
    access = access if access is not None else Access()
    if not rpc_base_url.endswith("/"):
        rpc_base_url += "/"
    web_state = WebState(rpc_base_url=rpc_base_url, app=app)
    api = ManagementApi(client, hub_name=app.settings.hub_name, max_body_bytes=max_body_bytes)
    triggers = HttpTriggers(
        app,
        rpc_base_url=web_state,
        max_body_bytes=max_body_bytes,
        access=access,
        stopping=lambda: web_state.state == "Stopping",
    )
    dashboard = Dashboard(client, app, run_function=run_function, max_body_bytes=max_body_bytes)
    sessions = SessionBook(client.store)

    def switch(new: FunctionApp) -> None:
        client.app = dashboard.app = new
        triggers.use_app(new)

    web_state.switches.append(switch)

    async def host_status(request: Request) -> Response:
        running = web_state.state == "Running"
        body = {
            "id": app.settings.hub_name,
            "state": web_state.state,
            "version": __version__,
            "versionDetails": f"dfhost {__version__}",
            "processUptime": round((time.monotonic() - web_state.started_at) * 1000),
            "errors": [f"{e.source}: {e.message}" for e in web_state.app.errors],
        }
        return JSONResponse(body, 200 if running else 503)

    async def invoke_function(request: Request) -> Response:
        # The body ({"input": ""} in Azure's docs) carries nothing a timer uses.
        name = request.path_params["name"]
        result = "not_found" if run_function is None else await run_function(name)
        if result == "started":
            return Response(status_code=202)
        if result == "busy":
            message = f"function '{name}' is already running; it never runs twice at once"
            return Response(message, 409, media_type="text/plain")
        message = f"no timer-triggered function named '{name}'"
        return Response(message, 404, media_type="text/plain")

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        for hook in on_startup:
            await hook()
        web_state.state = "Running"
        try:
            yield
        finally:
            web_state.state = "Stopping"
            for hook in on_shutdown:
                await hook()

    web_app = Starlette(
        routes=[
            Route("/admin/host/status", host_status, methods=["GET"]),
            # Anonymous, as in Azure: for load balancers' health checks.
            Route("/admin/host/ping", lambda _: Response(), methods=["GET", "POST"]),
            Route("/admin/functions/{name}", invoke_function, methods=["POST"]),
            Route(METRICS_PATH, metrics_endpoint(client.store, client.clock), methods=["GET"]),
            Route(OPENAPI_PATH, openapi_endpoint(lambda: web_state.app), methods=["GET"]),
            Mount(BASE_PATH, routes=api.routes()),
            Route(DASHBOARD_PATH, lambda _: RedirectResponse(f"{DASHBOARD_PATH}/", 308)),
            *login_routes(access, sessions),
            Mount(DASHBOARD_PATH, routes=dashboard.routes()),
            *event_grid_routes(trigger_host, access, max_body_bytes),
            Route("/{path:path}", triggers),
        ],
        lifespan=lifespan,
        middleware=[Middleware(AccessGuard, access=access, sessions=sessions)],
    )
    web_app.state.dfhost = web_state
    return web_app
