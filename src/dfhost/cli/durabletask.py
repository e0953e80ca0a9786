"""`--grpc-port` of `dfhost start` and `dfhost serve`: the Durable Task gRPC protocol beside
the HTTP surface (`dfhost.grpc`), for Durable Task SDK workers and clients.

`dfhost serve` is `dfhost start` without a function app: a task hub (`--store`), its gRPC
endpoint for workers and clients, and the management API and dashboard over HTTP.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dfhost.app.functions import FunctionApp
from dfhost.cli.common import add_key_options
from dfhost.config import AppSettings

if TYPE_CHECKING:
    from dfhost.client import DurableClient
    from dfhost.grpc.workers import WorkerHub
    from dfhost.store import Store
    from dfhost.web.auth import Access

__all__ = ["GrpcSide", "add_grpc_arguments", "add_serve_command", "serve_app"]

log = logging.getLogger("dfhost")

_SERVE_CONCURRENCY = 200
"""Episodes and activities in flight in `dfhost serve`: they wait on workers, not on this
process's threads, so more of them than an app's default keeps workers busy."""


def add_grpc_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--grpc-port",
        type=int,
        help="serve the Durable Task gRPC protocol (TaskHubSidecarService) on this port, "
        "for Durable Task SDK workers and clients (needs dfhost[grpc])",
    )
    parser.add_argument(
        "--grpc-cert", type=Path, help="TLS certificate (PEM) for the gRPC port, with --grpc-key"
    )
    parser.add_argument("--grpc-key", type=Path, help="TLS private key (PEM) for the gRPC port")


def add_serve_command(commands: Any) -> None:
    """`dfhost serve`: `start`'s host options, a task hub and a gRPC port, no app."""
    serve = commands.add_parser(
        "serve",
        help="run a task hub for Durable Task SDK apps (gRPC), with no function app",
        description="Serve a task hub over the Durable Task gRPC protocol (--grpc-port) for "
        "Durable Task SDK workers and clients, with the management API and dashboard over "
        "HTTP (--port), and no function app of its own.",
    )
    # No app code: nothing for worker processes or a reload (`dfhost start` flags).
    serve.set_defaults(app_dir=".", ensure=[], in_process=True, reload=False)
    serve.add_argument(
        "--store", required=True, help="task hub: sqlite:///PATH or postgresql://..."
    )
    serve.add_argument("--port", type=int, help="HTTP port (default 7071)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind, both ports (default 127.0.0.1)"
    )
    add_key_options(serve)
    serve.add_argument(
        "--drain",
        metavar="SECONDS",
        help="on SIGTERM or Ctrl-C, let what workers hold finish for up to this long, then "
        "hand the rest over (default 30)",
    )
    serve.add_argument("--log-format", choices=["console", "json"], default="console")
    add_grpc_arguments(serve)


def serve_app(folder: Path) -> FunctionApp:
    """The function app of `dfhost serve`: none, every orchestration goes to workers."""
    settings = AppSettings(
        max_concurrent_orchestrators=_SERVE_CONCURRENCY,
        max_concurrent_activities=_SERVE_CONCURRENCY,
    )
    return FunctionApp(
        root=folder.resolve(), functions={}, settings=settings, errors=[], remote_workers=True
    )


class GrpcSide:
    """The gRPC endpoint of one host, when `--grpc-port` asks for it."""

    def __init__(self, args: argparse.Namespace, app: FunctionApp) -> None:
        self.port: int | None = getattr(args, "grpc_port", None)
        self.cert: Path | None = getattr(args, "grpc_cert", None)
        self.key: Path | None = getattr(args, "grpc_key", None)
        self.hub: WorkerHub | None = None
        self._server: Any = None
        self._app = app
        self._serving = args.command == "serve"

    def problem(self) -> str | None:
        """Why the options cannot work (one line), or None; makes the worker hub."""
        if self.port is None:
            if self._serving:
                return "dfhost serve needs --grpc-port: it has no function app, only workers"
            if self.cert or self.key:
                return "--grpc-cert and --grpc-key need --grpc-port"
            return None
        if (self.cert is None) != (self.key is None):
            return "--grpc-cert and --grpc-key go together"
        try:
            from dfhost.grpc.workers import WorkerHub
        except ImportError as exc:
            return f"the gRPC server needs durabletask ({exc}): pip install 'dfhost[grpc]'"
        self.hub = WorkerHub(payload_bytes=self._app.settings.limits.payload_bytes)
        self._app.remote_workers = True  # what it lacks is the workers'
        return None

    async def start(self, store: Store, host: str, access: Access) -> str | None:
        """Listen; returns why it cannot (one line), or None."""
        if self.port is None or self.hub is None:
            return None
        from dfhost.client import DurableClient
        from dfhost.grpc.server import GrpcOptions, GrpcServerError, start_grpc_server

        # No app here: a Durable Task client starts orchestrations the app does not have.
        client: DurableClient = DurableClient(
            store,
            None,
            default_version=self._app.settings.default_version,
            payload_bytes=self._app.settings.limits.payload_bytes,
        )
        keys = None if not access.enforce or access.keys is None else access.keys.system_keys()
        options = GrpcOptions(
            host=host, port=self.port, keys=keys, certificate=self.cert, private_key=self.key
        )
        try:
            self._server = await start_grpc_server(client, self.hub, options)
        except GrpcServerError as exc:
            return str(exc)
        return None

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(1.0)
            self._server = None
