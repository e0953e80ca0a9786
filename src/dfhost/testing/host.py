"""`TestHost`: orchestrations tested in-process on virtual time.

It runs an app folder on a throwaway task hub with the real engine, the management API on
loopback (so `host.client` is the SDK's own `DurableOrchestrationClient`) and a virtual clock
(`dfhost.testing.clock`): time stands still while anything can run, and jumps to the next
durable timer when nothing can, so an hour-long timer or a month of an eternal loop takes
milliseconds. Every episode replays the whole history, as after a restart, so code that
changes between replays fails the instance with `NonDeterministicOrchestrationError` in the
test rather than in production. Timer-triggered functions do not run in a TestHost (call them
directly). Heavy imports (the SDK, the engine, the web stack) happen when used.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import socket
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from dfhost.history import (
    TERMINAL_STATUSES,
    HistoryEvent,
    utcnow,
)
from dfhost.logs import HOST_LOGGER
from dfhost.store import Store, open_store
from dfhost.testing.clock import VirtualClock

if TYPE_CHECKING:
    import uvicorn
    from azure.durable_functions import DurableOrchestrationClient
    from azure.durable_functions.models.DurableOrchestrationStatus import (
        DurableOrchestrationStatus,
    )

    from dfhost.app.functions import FunctionApp
    from dfhost.client import DurableClient
    from dfhost.runtime.engine import Engine

__all__ = ["TestHost"]

log = logging.getLogger("dfhost.testing")

_MANAGEMENT_PATH = "/runtime/webhooks/durabletask"


class _FunctionLogs(logging.Handler):
    """Keeps the records user code logs, by instance id; replayed orchestrator lines are
    dropped, as on the console."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.by_instance: dict[str, list[logging.LogRecord]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        from dfhost.logs import current_invocation

        inv = current_invocation()
        if inv is None or inv.instance_id is None or inv.is_replaying():
            return
        if record.name == "dfhost" or record.name.startswith("dfhost."):
            return
        self.by_instance.setdefault(inv.instance_id, []).append(record)


class _LogLevel:
    """Functions' INFO records exist only if the root logger lets them through: running hosts
    hold it at INFO at least, and the last one to stop puts the old level back."""

    holders = 0
    saved = logging.WARNING
    quieted = False

    @classmethod
    def capture(cls) -> None:
        root = logging.getLogger()
        if cls.holders == 0:
            cls.saved = root.level
            if root.level > logging.INFO:
                root.setLevel(logging.INFO)
            # The host's own Executing/Executed lines are not the app's logs, and creating
            # them for every episode of a virtual month costs more than the episodes' SQL.
            if HOST_LOGGER.level == logging.NOTSET:
                HOST_LOGGER.setLevel(logging.WARNING)
                cls.quieted = True
        cls.holders += 1

    @classmethod
    def release(cls) -> None:
        cls.holders -= 1
        if cls.holders == 0:
            logging.getLogger().setLevel(cls.saved)
            if cls.quieted:
                HOST_LOGGER.setLevel(logging.NOTSET)
                cls.quieted = False


class TestHost:
    """An app running in-process on a throwaway task hub and a virtual clock.

        async with TestHost("path/to/app") as host:
            host.mock_activity("send_mail", lambda message: "sent")
            iid = await host.client.start_new("sleeper")
            status = await host.wait(iid, timeout=10)
            assert status.output == "woke"

    `store_url` picks the task hub (default: a fresh in-memory SQLite hub); give the same
    file to two hosts in turn to run an instance on one version of an app and continue it on
    another. Virtual time is exact on SQLite. `start` is the clock's first reading
    (default: now). With `auto_advance=False` time moves only in `advance` (use it for
    eternal orchestrations, which would otherwise run flat out).
    """

    __test__ = False  # a class named Test* that pytest must not collect

    def __init__(
        self,
        app_dir: str | Path,
        *,
        store_url: str | None = None,
        start: datetime | None = None,
        auto_advance: bool = True,
    ) -> None:
        self.app_dir = Path(app_dir)
        self.store_url = store_url
        self.clock = VirtualClock(start or utcnow(), auto_advance=auto_advance)
        self._app: FunctionApp | None = None
        self._store: Store | None = None
        self._client: DurableOrchestrationClient | None = None
        self.origin = ""
        """http://127.0.0.1:PORT of the host's HTTP server (management API, HTTP triggers)."""
        self._engine: Engine | None = None
        self._server: uvicorn.Server | None = None
        self._server_task: asyncio.Task[None] | None = None
        self._logs = _FunctionLogs()
        self._capturing = False

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> TestHost:
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _start(self) -> None:
        from dfhost.app.loader import load_app
        from dfhost.client import DurableClient
        from dfhost.runtime.engine import Engine

        app = load_app(self.app_dir)
        if app.errors:
            problems = "; ".join(f"{e.source}: {e.message}" for e in app.errors)
            raise ValueError(f"the app in {self.app_dir} has errors: {problems}")
        self._app = app
        self._store = store = open_store(self.store_url or "sqlite://:memory:")
        await store.start()
        self.clock.store = store
        logging.getLogger().addHandler(self._logs)
        _LogLevel.capture()
        self._capturing = True
        self._engine = Engine(
            app, store, clock=self.clock, wait=self.clock.wait, inline_orchestrators=True
        )
        # Every episode replays the whole history, as after a restart or on another host, so
        # that non-deterministic code fails here (cached sessions skip the replay).
        self._engine.sessions = None
        await self._engine.start()
        client = DurableClient(
            store, app, clock=self.clock, default_version=app.settings.default_version
        )
        await self._serve(client, app)

    async def _serve(self, client: DurableClient, app: FunctionApp) -> None:
        import uvicorn
        from azure.durable_functions import DurableOrchestrationClient

        from dfhost.web import build_app
        from dfhost.wire import client_binding

        # IPPROTO_TCP named so asyncio sets TCP_NODELAY on connections (see cli/main.py _bind).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        sock.setblocking(False)
        self.origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
        rpc_base_url = f"{self.origin}{_MANAGEMENT_PATH}/"
        web_app = build_app(client, app, rpc_base_url=rpc_base_url)
        config = uvicorn.Config(
            web_app, log_config=None, log_level="warning", access_log=False, lifespan="on"
        )
        self._server = server = uvicorn.Server(config)
        self._server_task = task = asyncio.create_task(server.serve(sockets=[sock]))
        # Its startup is quick; a server that failed to start would leave requests hanging.
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("the TestHost's HTTP server stopped as it started")
                await asyncio.sleep(0.001)
        starter = client_binding(
            origin=self.origin, hub_name=app.settings.hub_name, rpc_base_url=rpc_base_url
        )
        self._client = DurableOrchestrationClient(json.dumps(starter))

    async def _stop(self) -> None:
        if self._server is not None and self._server_task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):  # one that failed to start was reported
                await self._server_task
            self._server = self._server_task = None
            from azure.durable_functions.models.utils import http_utils

            # The SDK's one aiohttp session is bound to this event loop.
            await http_utils._close_session()
        if self._engine is not None:
            await self._engine.stop(grace=5.0)
            self._engine = None
        if self._store is not None:
            await self._store.close()
            self._store = None
        logging.getLogger().removeHandler(self._logs)
        if self._capturing:
            self._capturing = False
            _LogLevel.release()

    # -- what tests use ---------------------------------------------------------------------

    def _running(self) -> tuple[FunctionApp, Store, DurableOrchestrationClient]:
        if self._app is None or self._store is None or self._client is None:
            raise RuntimeError("the TestHost is not running: use `async with TestHost(...)`")
        return self._app, self._store, self._client

    @property
    def client(self) -> DurableOrchestrationClient:
        """The SDK's client, bound to this host (as a `durableClient` binding would be)."""
        return self._running()[2]

    @property
    def app(self) -> FunctionApp:
        return self._running()[0]

    @property
    def store(self) -> Store:
        return self._running()[1]

    @property
    def now(self) -> datetime:
        """The virtual time (UTC)."""
        return self.clock()

    async def advance(self, delta: timedelta = timedelta(0), *, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Move time forward by `delta`, running everything that falls due on the way, in
        order, and return once nothing more can run before `host.now + delta`. With no
        argument: run what can run now. `timeout` (wall-clock seconds) bounds the wait."""
        self._running()
        await self.clock.advance(delta, timeout)

    async def wait(
        self,
        instance_id: str,
        timeout: float = 30.0,  # noqa: ASYNC109 - a deadline for the instance, in wall seconds
        *,
        show_history: bool = False,
    ) -> DurableOrchestrationStatus:
        """Wait until the instance finished (Completed, Failed, Terminated, Canceled) and
        return its status as the SDK's client reads it."""
        store = self.store
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self.clock.progress.clear()
            instance = await store.get_instance(instance_id)
            if instance is None:
                raise LookupError(f"no instance '{instance_id}' in this task hub")
            if instance.status in TERMINAL_STATUSES:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                hint = ""
                if self.clock.settled.is_set():
                    hint = ": nothing is left to run, so it waits for an event" + (
                        "" if self.clock.auto_advance else " or for time (host.advance)"
                    )
                raise TimeoutError(
                    f"instance '{instance_id}' is still {instance.status.value} after "
                    f"{timeout} s{hint}"
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self.clock.progress.wait()
        return await self.client.get_status(
            instance_id, show_history=show_history, show_history_output=show_history
        )

    async def history(self, instance_id: str) -> list[HistoryEvent]:
        """The current execution's history events, in order."""
        return await self.store.get_history(instance_id)

    def logs(self, instance_id: str) -> list[logging.LogRecord]:
        """What the instance's functions (orchestrator and activities) logged, replays
        excluded, in order."""
        return list(self._logs.by_instance.get(instance_id, []))

    def mock_activity(self, name: str, fake: Callable[[Any], Any]) -> None:
        """Run `fake(input)` (sync or async) instead of the activity `name`, for this host."""
        app = self.app
        function = app.activity(name)
        if function is None:
            known = ", ".join(sorted(f.name for f in app.of_kind("activity"))) or "(none)"
            raise ValueError(f"'{name}' is not an activity of this app (activities: {known})")
        key = next(k for k, f in app.functions.items() if f is function)
        app.functions[key] = replace(function, handler=_fake_handler(function.trigger.name, fake))


def _fake_handler(input_name: str, fake: Callable[[Any], Any]) -> Callable[..., Any]:
    # **kwargs declares no parameter names, so the engine passes every binding by name.
    if inspect.iscoroutinefunction(fake):

        async def fake_async(**kwargs: Any) -> Any:
            return await fake(kwargs[input_name])

        return fake_async

    def fake_sync(**kwargs: Any) -> Any:
        return fake(kwargs[input_name])

    return fake_sync
