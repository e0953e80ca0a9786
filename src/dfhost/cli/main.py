"""The `dfhost` command: load an app, open its task hub, run the engine and the HTTP server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import math
import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from dfhost import __version__, telemetry
from dfhost.app.functions import FunctionApp
from dfhost.app.loader import load_app
from dfhost.cli.common import add_key_options, command_store_url, sqlite_file
from dfhost.cli.durabletask import GrpcSide, add_grpc_arguments, add_serve_command, serve_app
from dfhost.cli.instances import (
    add_instances_command,
    ensure_instances,
    operations_settings,
    run_instances_command,
)
from dfhost.cli.replay import add_replay_commands, run_replay_command
from dfhost.cli.status import add_status_command, run_status_command
from dfhost.client import DurableClient
from dfhost.config import AppLoadError, LoadError, SettingsError, parse_drain_flag
from dfhost.logs import announce, configure_console, set_host_id
from dfhost.store import StoreError, open_store

if TYPE_CHECKING:
    import uvicorn

    from dfhost.runtime.engine import Engine
    from dfhost.runtime.workers import WorkerPool
    from dfhost.runtime.workers.reload import OnReload
    from dfhost.web import WebState
    from dfhost.web.auth import Access

log = logging.getLogger("dfhost")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `dfhost` console script."""
    parser = argparse.ArgumentParser(prog="dfhost", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dfhost {__version__}")
    commands = parser.add_subparsers(dest="command")
    start = commands.add_parser("start", help="run a function app")
    start.add_argument("app_dir", nargs="?", default=".", help="the function app folder")
    start.add_argument("--port", type=int, help="HTTP port (default: LocalHttpPort or 7071)")
    start.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    start.add_argument(
        "--store",
        help="task hub: sqlite:///PATH, postgresql://..., azure[:SETTING] "
        "(default sqlite:///APP_DIR/.dfhost/..., or Azure Storage if host.json says so)",
    )
    add_key_options(start)
    start.add_argument(
        "--ensure",
        action="append",
        default=[],
        metavar="ID=ORCHESTRATOR[:JSON]",
        help="keep this instance running: start it unless it is already (repeatable)",
    )
    start.add_argument(
        "--drain",
        metavar="SECONDS",
        help="on SIGTERM or Ctrl-C, let running activities and episodes finish for up to this "
        "long, then hand the rest over (default: host.json "
        "extensions.durableTask.dfhost.shutdownTimeout, else 30)",
    )
    start.add_argument(
        "--log-format",
        choices=["console", "json"],
        default="console",
        help="console: readable lines, as Core Tools prints them (default); json: one JSON "
        "object per line",
    )
    start.add_argument(
        "--in-process",
        action="store_true",
        help="run the app's functions in the host's process, not in worker processes "
        "(FUNCTIONS_WORKER_PROCESS_COUNT=0): for a debugger's breakpoints",
    )
    start.add_argument(
        "--reload",
        action="store_true",
        help="when a .py or .json file of the app changes, load the new code and switch to "
        "it (new worker processes take over; a load error keeps the previous code running)",
    )
    add_grpc_arguments(start)
    add_serve_command(commands)
    add_instances_command(commands)
    add_replay_commands(commands)
    add_status_command(commands)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "instances":
        return run_instances_command(args)
    if args.command in ("replay", "history"):
        return run_replay_command(args)
    if args.command == "status":
        return run_status_command(args)
    configure_console(log_format=args.log_format)
    try:
        exporters = telemetry.configure_from_env()
    except telemetry.TelemetryConfigError as exc:
        log.error("dfhost: %s", exc)
        return 2
    if exporters:
        log.info("dfhost: sending traces to OpenTelemetry (%s)", exporters)
    try:
        return asyncio.run(_start(args))
    except KeyboardInterrupt:
        return 130
    finally:
        telemetry.shutdown()  # flushes the spans still buffered


async def _start(args: argparse.Namespace) -> int:
    app_dir = Path(args.app_dir)
    serving = args.command == "serve"  # no app: Durable Task workers run everything
    try:
        app = serve_app(app_dir) if serving else load_app(app_dir)
    except AppLoadError as exc:
        log.error("dfhost: %s", exc)
        return 2
    grpc_side = GrpcSide(args, app)
    if problem := grpc_side.problem():
        log.error("dfhost: %s", problem)
        return 2
    if not serving and not any(f.kind != "other" for f in app.functions.values()):
        # Listening with nothing to run only hides the error a few screens up.
        for error in app.errors:
            log.error("dfhost: %s: %s%s", error.source, error.message, _detail(error))
        log.error("dfhost: no function to run in %s; not starting", app.root)
        return 2
    for error in app.errors:
        log.error("dfhost: %s: %s", error.source, error.message)
    if any(error.fatal for error in app.errors):
        return 2  # a limit, retention or ensure setting, logged above: no guessing at those
    try:
        operations = operations_settings(app, args.ensure)
        grace = operations.shutdown_timeout if args.drain is None else parse_drain_flag(args.drain)
    except SettingsError as exc:
        log.error("dfhost: %s", exc)
        return 2
    port = args.port if args.port is not None else (app.settings.local_http_port or 7071)
    try:
        sock = _bind(args.host, port)
    except OSError as exc:
        log.error("dfhost: cannot listen on %s:%s: %s", args.host, port, exc.strerror or exc)
        return 2
    try:
        url = command_store_url(app_dir, args.store, app.settings)
        store = open_store(url)
        await store.start()
    except StoreError as exc:
        sock.close()
        log.error("dfhost: %s", exc)
        return 2
    access = _access(args, app_dir, url)
    if access is None:
        sock.close()
        await store.close()
        return 2
    _warn_if_readable(sqlite_file(url), _hub_folder(app_dir, url) / "keys.json")
    # Imported here, as in _serve: `dfhost instances` needs neither the SDK nor the web stack,
    # and starts in a fraction of the time without them.
    from dfhost.orchestration.sdk import sdk_version_problem
    from dfhost.runtime.engine import Engine

    if problem := sdk_version_problem():
        log.warning("dfhost: WARNING: %s", problem)
    from dfhost.runtime.workers import WorkerStartError

    try:
        workers = await _start_workers(app, args)
    except WorkerStartError as exc:
        log.error("dfhost: a worker process could not load the app: %s", exc)
        sock.close()
        await store.close()
        return 2
    engine = Engine(
        app, store, retention=operations.retention, workers=workers, remote=grpc_side.hub
    )
    set_host_id(engine.owner)
    shutdown = _Shutdown(engine, grace)
    try:
        await engine.start()
    except StoreError as exc:
        sock.close()
        log.error("dfhost: %s", exc)
        if workers is not None:
            await workers.close()
        await store.close()
        return 2
    # Filled by _serve with what switches its parts (HTTP, timer and message triggers) to a
    # reloaded app: they exist only once the server is built.
    on_reload: list[OnReload] = []
    reloading = (
        asyncio.create_task(_reload_on_change(engine, workers, on_reload)) if args.reload else None
    )
    try:
        client = DurableClient(store, app, default_version=app.settings.default_version)
        await ensure_instances(client, operations.ensure)
        if problem := await grpc_side.start(store, args.host, access):
            log.error("dfhost: %s", problem)
            return 2
        if not shutdown.requested:
            await _serve(app, store, sock, args.host, engine.owner, access, shutdown, on_reload)
        await shutdown.drained()
    finally:
        if reloading is not None:
            reloading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reloading
        await grpc_side.stop()
        cut_short = shutdown.forced.is_set() or shutdown.handed_over
        await engine.stop(grace=0 if cut_short else grace)
        if workers is not None:
            await workers.close()
        # Closing the store hands over what was cut short: on PostgreSQL and Azure Storage
        # it releases this host's leases for another host to take now; on SQLite it runs
        # at the next start (or when another host on the file sees this one gone).
        await store.close()
        await _close_sdk_session()
    if shutdown.forced.is_set() or shutdown.handed_over:
        # Threads may still run user code whose work was handed over: end them with the
        # process now (asyncio.run would wait for them; they must not outlive the handover).
        telemetry.shutdown()
        logging.shutdown()
        os._exit(128 + shutdown.signal if shutdown.forced.is_set() else 0)
    return 0


async def _start_workers(app: FunctionApp, args: argparse.Namespace) -> WorkerPool | None:
    """The worker processes that run the app's activities and entities (None: in this
    process)."""
    count = 0 if args.in_process else app.settings.worker_processes
    if count == 0:
        return None
    from dfhost.runtime.workers import WorkerPool

    threads = app.settings.worker_threads or app.settings.max_concurrent_activities
    pool = WorkerPool(app.root, count, threads, log_format=args.log_format)
    await pool.start()
    return pool


async def _reload_on_change(
    engine: Engine, workers: WorkerPool | None, on_reload: list[OnReload]
) -> None:
    from dfhost.runtime.workers.reload import reload_on_change

    try:
        await reload_on_change(engine, workers, on_reload)
    except asyncio.CancelledError:
        raise
    except Exception:  # a bug of the watcher must not take the host down with it
        log.exception("dfhost: --reload stopped watching the app")


class _Shutdown:
    """The first SIGINT (Ctrl-C) or SIGTERM drains the host: it stops taking work at once
    (claims, timer and message triggers; HTTP functions answer 503 while the management API
    keeps answering), lets what runs finish for up to `grace` seconds with its results
    recorded, then stops. What still runs then is handed over: its leases are released as
    the store closes. A second signal stops at once: what was running runs again after a
    restart (at least once, as after a crash)."""

    def __init__(self, engine: Engine, grace: float) -> None:
        self.engine = engine
        self.grace = grace
        self.requested = False
        self.forced = asyncio.Event()
        self.handed_over = False
        """The grace ran out with work still running."""
        self.signal = 0
        self.server: uvicorn.Server | None = None
        self.web_state: WebState | None = None
        self.listeners: list[Callable[[float], Awaitable[None]]] = []
        """Stops of the timer and message triggers, given the grace."""
        self._drain: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._received, sig)

    def attach(
        self,
        server: uvicorn.Server,
        web_state: WebState,
        listeners: list[Callable[[float], Awaitable[None]]],
    ) -> None:
        """The HTTP server, its state and the triggers' stops, once they exist; a signal that
        came while they were being built applies to them too."""
        self.server, self.web_state, self.listeners = server, web_state, listeners
        if self.requested:
            web_state.state = "Stopping"
            if self._drain is not None and self._drain.done():
                server.should_exit = True

    def _received(self, sig: int) -> None:
        self.signal = sig
        if self.requested:
            self.forced.set()
            if self.server is not None:
                self.server.force_exit = True
                self.server.should_exit = True
            return
        self.requested = True
        if self.web_state is not None:
            self.web_state.state = "Stopping"
        running = self.engine.running_activities()
        if running:
            log.info(
                "dfhost: waiting up to %s for %s, Ctrl-C again to stop now",
                _seconds(self.grace),
                _running(running),
            )
        self._drain = asyncio.create_task(self._drain_host())

    async def _drain_host(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace
        finished, *stopped = await asyncio.gather(
            self.engine.drain(self.grace),
            *(stop(self.grace) for stop in self.listeners),
            return_exceptions=True,
        )
        for outcome in (finished, *stopped):
            if isinstance(outcome, Exception):
                log.error("dfhost: while stopping: %s", outcome, exc_info=outcome)
        if finished is not True:
            self.handed_over = True
            running = self.engine.running_activities()
            episodes = self.engine.running_episodes()
            what = [_running(running)] if running else []
            if episodes:
                what.append(f"{episodes} episode{'s' if episodes > 1 else ''}")
            log.warning(
                "dfhost: still running after %s: %s; handing over (it runs again on another "
                "host, or at the next start)",
                _seconds(self.grace),
                " and ".join(what) or "nothing",
            )
        if self.server is not None:
            # HTTP requests in flight (functions, start-and-wait) get what is left of it.
            left = math.floor(max(0.0, deadline - loop.time()))
            self.server.config.timeout_graceful_shutdown = left
            self.server.should_exit = True

    async def drained(self) -> None:
        """Once the server has stopped: until the drain ends or a second signal cuts it."""
        if self._drain is None:  # the server stopped by itself
            return
        forced = asyncio.create_task(self.forced.wait())
        await asyncio.wait({self._drain, forced}, return_when=asyncio.FIRST_COMPLETED)
        forced.cancel()
        if not self._drain.done():
            self._drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._drain


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _running(names: list[str]) -> str:
    """ "1 running activity: a" / "3 running activities: a (2), b"."""
    counts = Counter(names)
    listed = ", ".join(f"{n} ({c})" if c > 1 else n for n, c in sorted(counts.items()))
    noun = "activity" if len(names) == 1 else "activities"
    return f"{len(names)} running {noun}: {listed}"


async def _close_sdk_session() -> None:
    """The SDK's client keeps one aiohttp session for the process; unclosed, it prints
    warnings on the way out."""
    http_utils = sys.modules.get("azure.durable_functions.models.utils.http_utils")
    if http_utils is not None:
        with contextlib.suppress(Exception):
            await http_utils._close_session()


def _detail(error: LoadError) -> str:
    return f"\n{error.detail}" if error.detail else ""


def _access(args: argparse.Namespace, app_dir: Path, store_url: str) -> Access | None:
    """Who may call this host (web/auth.py); None after logging why it cannot start."""
    from dfhost.web.auth import Access, is_loopback_host
    from dfhost.web.keys import KeysError, load_keys

    loopback = is_loopback_host(args.host)
    if not args.require_keys and (loopback or args.allow_anonymous):
        if not loopback:
            log.warning(
                "dfhost: WARNING: %s is served without keys (--allow-anonymous): anyone who "
                "can reach it can start, terminate and purge orchestrations",
                args.host,
            )
        return Access(loopback_only=loopback)
    try:
        loaded = load_keys(_hub_folder(app_dir, store_url))
    except KeysError as exc:
        log.error("dfhost: %s", exc)
        return None
    if loaded.created is not None and loaded.shown:
        # The one time the keys appear anywhere but the file.
        lines = [f"Keys created in {loaded.created} (shown this once):"]
        lines += [f"        {name}: {value}" for name, value in loaded.shown.items()]
        announce("\n".join(lines), keysFile=str(loaded.created), keys=dict(loaded.shown))
    log.info(
        "dfhost: keys are enforced: functions by authLevel, the management API with the "
        "system key or the master key, /admin and the dashboard with the master key"
    )
    return Access(keys=loaded.keys, enforce=True)


def _hub_folder(app_dir: Path, store_url: str) -> Path:
    """The task hub's folder, where its keys are: the SQLite file's, else the app's .dfhost."""
    hub_file = sqlite_file(store_url)
    return app_dir / ".dfhost" if hub_file is None else hub_file.parent


def _warn_if_readable(*paths: Path | None) -> None:
    """One warning for each file other users can read: the SQLite hub holds every input and
    output, keys.json the keys. dfhost creates both private; older or copied ones may not be."""
    for path in paths:
        try:
            mode = path.stat().st_mode if path is not None else 0
        except OSError:
            continue
        if mode & 0o044:
            log.warning(
                "dfhost: WARNING: %s is readable by other users (mode %s): chmod 600 it",
                path,
                oct(mode & 0o777)[2:],
            )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, so that asyncio sets TCP_NODELAY on each connection (it checks the
    # protocol): without it a response's second write waited for the client's delayed ACK,
    # 40 ms per request on a keep-alive connection.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def _serve(
    app: FunctionApp,
    store: object,
    sock: socket.socket,
    host: str,
    owner: str,
    access: Access,
    shutdown: _Shutdown,
    on_reload: list[OnReload],
) -> None:
    """Serve until shut down; adds to `on_reload` what switches the server's parts to a
    reloaded app (`--reload`)."""
    import uvicorn

    from dfhost.runtime.timer_triggers import TimerRunner
    from dfhost.runtime.triggers import TriggerHost
    from dfhost.web import build_app

    port = sock.getsockname()[1]
    # The app's own client bindings call the management API over loopback, whatever the
    # public bind address is.
    rpc_host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)
    if ":" in rpc_host and not rpc_host.startswith("["):
        rpc_host = f"[{rpc_host}]"
    rpc_base_url = access.rpc_base_url(f"http://{rpc_host}:{port}")
    client = DurableClient(store, app, default_version=app.settings.default_version)  # type: ignore[arg-type]
    # Timers share the engine's owner: a host's death frees its timer runs with its leases.
    timers = TimerRunner(app, store, owner=owner, rpc_base_url=rpc_base_url)  # type: ignore[arg-type]
    for problem in timers.problems:
        log.error("dfhost: %s", problem)
    triggers = TriggerHost(app, owner=owner, rpc_base_url=rpc_base_url)
    web_app = build_app(
        client,
        app,
        rpc_base_url=rpc_base_url,
        on_startup=[timers.start, triggers.start],
        on_shutdown=[timers.stop, triggers.stop],
        run_function=timers.run_now,
        access=access,
        trigger_host=triggers,
    )
    config = uvicorn.Config(web_app, log_config=None, access_log=False, lifespan="on")

    class Server(uvicorn.Server):
        """Uvicorn without its own signal handling: `_Shutdown` has it, for the engine too."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    server = Server(config)
    shutdown.attach(
        server,
        web_app.state.dfhost,
        [timers.stop, functools.partial(triggers.stop, close_io=False)],
    )

    async def use_app(new: FunctionApp) -> None:
        web_app.state.dfhost.use_app(new)  # HTTP functions, the client, the dashboard
        await timers.use_app(new)
        await triggers.use_app(new)
        _print_functions(new, f"http://{rpc_host}:{port}")

    on_reload.append(use_app)
    _print_functions(app, f"http://{rpc_host}:{port}")
    log.info("dfhost %s: listening on http://%s:%d", __version__, rpc_host, port)
    await server.serve(sockets=[sock])


def _print_functions(app: FunctionApp, origin: str) -> None:
    lines = ["", "Functions:", ""]
    listed: list[dict[str, object]] = []
    prefix = app.settings.route_prefix.strip("/")
    for function in app.functions.values():
        trigger = function.trigger
        if function.kind == "http":
            methods = trigger.settings.get("methods") or ["GET", "POST", "PUT", "DELETE"]
            route = str(trigger.settings.get("route") or function.name).lstrip("/")
            path = f"{prefix}/{route}" if prefix else route
            verbs = [str(m).upper() for m in methods]
            lines.append(f"        {function.name}: [{','.join(verbs)}] {origin}/{path}")
            listed.append(
                {
                    "name": function.name,
                    "trigger": trigger.type,
                    "methods": verbs,
                    "url": f"{origin}/{path}",
                }
            )
        else:
            lines.append(f"        {function.name}: {trigger.type}")
            listed.append({"name": function.name, "trigger": trigger.type})
        lines.append("")
    announce("\n".join(lines), functions=listed)
