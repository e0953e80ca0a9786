"""Test orchestrations in-process on virtual time, and check changed code against histories.

`TestHost` runs an app folder on a throwaway task hub with the real engine, the management API
on loopback (so `host.client` is the SDK's own `DurableOrchestrationClient`) and a virtual
clock: time stands still while anything can run, and jumps to the next durable timer when
nothing can, so an hour-long timer or a month of an eternal loop takes milliseconds. Every
episode replays the whole history, as after a restart, so code that changes between replays
fails the instance with `NonDeterministicOrchestrationError` in the test rather than in
production. Timer-triggered functions do not run in a TestHost (call them directly).

`replay_history` and `replay_instances` replay recorded histories against the current code
(golden-history tests, `dfhost replay` before a deploy); `export_history` writes the document
they read (`dfhost history export`). Loaded by pytest (entry point `pytest11`), this module
provides the `dfhost_host` fixture. Heavy imports (the SDK, the engine, the web stack) happen
when used, so that loading the plugin costs every pytest run next to nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import io
import json
import logging
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from dfhost.history import (
    TERMINAL_STATUSES,
    EventType,
    HistoryEvent,
    Instance,
    OrchestrationStatus,
    parse_time,
    utcnow,
)
from dfhost.logs import HOST_LOGGER
from dfhost.store import InstanceQuery, Store, StoreError, open_store

if TYPE_CHECKING:
    import uvicorn
    from azure.durable_functions import DurableOrchestrationClient
    from azure.durable_functions.models.DurableOrchestrationStatus import (
        DurableOrchestrationStatus,
    )

    from dfhost.client import DurableClient
    from dfhost.engine import Engine
    from dfhost.functions import FunctionApp
    from dfhost.replay import EpisodeResult, Pitfall

__all__ = [
    "HISTORY_FORMAT",
    "ReplayReport",
    "TestHost",
    "VirtualClock",
    "add_replay_commands",
    "export_history",
    "replay_history",
    "replay_instances",
    "run_replay_command",
]

log = logging.getLogger("dfhost.testing")

HISTORY_FORMAT = "dfhost-history/1"
"""The `format` of an exported history document."""

_MANAGEMENT_PATH = "/runtime/webhooks/durabletask"


# --- the virtual clock --------------------------------------------------------------------------


class VirtualClock:
    """A TestHost's time: it stands still while work runs and moves only when the engine is
    idle, to the next due timer (never past `horizon`).

    The engine calls `wait(due, idle)` between claims (`Engine(wait=...)`). `auto_advance`
    leaves the horizon open, so timers fire as soon as nothing else can run; otherwise time
    moves only inside `advance`.
    """

    def __init__(self, start: datetime, *, auto_advance: bool) -> None:
        self._now = start
        self.auto_advance = auto_advance
        self.horizon: datetime | None = None if auto_advance else start
        self.store: Store | None = None
        self._moved = asyncio.Event()
        self.settled = asyncio.Event()
        """Set while the engine waits with nothing to run up to the horizon."""
        self.progress = asyncio.Event()
        """Set whenever the engine finished a round of claims (instances may have changed)."""

    def __call__(self) -> datetime:
        return self._now

    async def wait(self, due: datetime | None, idle: bool) -> None:
        store = self.store
        assert store is not None, "VirtualClock.store is set before the engine starts"
        self._moved.clear()
        self.progress.set()
        if idle:
            if await _notified(store):
                return  # work arrived since the claim: it runs before time moves
            if due is not None and (self.horizon is None or due <= self.horizon):
                self._now = max(self._now, due)
                return
            self.settled.set()
        waits = [
            asyncio.ensure_future(store.wait_for_work(None)),
            asyncio.ensure_future(self._moved.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.settled.clear()
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def advance(self, delta: timedelta, timeout: float) -> None:  # noqa: ASYNC109
        """Run everything due up to now + `delta`, in due order; then the clock reads exactly
        that time. Raises TimeoutError if the work doesn't settle within `timeout` seconds."""
        if delta < timedelta(0):
            raise ValueError(f"time only moves forward (delta {delta})")
        target = self._now + delta
        self.horizon = target
        await self._settle(timeout)
        self._now = max(self._now, target)
        self.horizon = None if self.auto_advance else self._now
        self._moved.set()

    async def _settle(self, timeout: float) -> None:  # noqa: ASYNC109
        self.settled.clear()
        self._moved.set()
        try:
            async with asyncio.timeout(timeout):
                await self.settled.wait()
        except TimeoutError:
            raise TimeoutError(
                f"the app still had work to run at {self._now.isoformat()} after {timeout} s "
                "(an activity that never returns, or an orchestration that never waits?)"
            ) from None


async def _notified(store: Store) -> bool:
    """Whether the store has a wake-up pending (consuming it), without waiting for one."""
    waiter = asyncio.ensure_future(store.wait_for_work(None))
    await asyncio.sleep(0)  # the waiter's first step runs now; a pending wake-up ends it
    if waiter.done():
        return True
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    return False


# --- TestHost -----------------------------------------------------------------------------------


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
        from dfhost.client import DurableClient
        from dfhost.engine import Engine
        from dfhost.functions import load_app

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

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
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


# --- replaying recorded histories -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """What replaying one instance's recorded history against the current code showed."""

    instance_id: str
    name: str
    status: str
    """Its runtime status when recorded."""
    error: str | None = None
    """Why the current code would break it (non-determinism, a crash), or None."""
    result: EpisodeResult | None = None
    pitfalls: list[Pitfall] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


def replay_events(
    app: FunctionApp, instance: Instance, history: Sequence[HistoryEvent]
) -> ReplayReport:
    """Replay one execution's recorded `history` through `app`'s orchestrator."""
    from dfhost import replay
    from dfhost.logs import Invocation, invocation

    status = instance.status.value
    if not history:  # not started yet: nothing recorded to contradict
        return ReplayReport(instance.instance_id, instance.name, status)
    function = app.orchestrator(instance.name)
    if function is None:
        missing = f"its orchestrator '{instance.name}' is not in this app (renamed or removed?)"
        return ReplayReport(instance.instance_id, instance.name, status, missing)
    # One episode with nothing new: every recorded event is replayed and checked, and the
    # replay is deterministic (its time is the last recorded one).
    started = HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=history[-1].timestamp)
    episode = replay.EpisodeInput(
        instance_id=instance.instance_id,
        execution_id=instance.execution_id,
        name=instance.name,
        input=instance.input,
        parent_instance_id=instance.parent_instance_id,
        past=list(history),
        new=[started],
    )
    generator = function.handler.orchestrator_function  # type: ignore[attr-defined]
    input_type = getattr(function.handler, "_df_input_type", None)
    inv = Invocation(function.name, instance_id=instance.instance_id, replaying=replay.is_replaying)
    # What replayed code prints is not news (and would garble `dfhost replay`'s report).
    with invocation(inv), contextlib.redirect_stdout(io.StringIO()):
        result = replay.run_episode(generator, episode, input_type)
    error: str | None = None
    outcome = result.outcome
    recorded_failure = any(e.status is OrchestrationStatus.FAILED for e in history)
    if isinstance(outcome, replay.Failed) and not recorded_failure:
        error = outcome.message.split("\n", 1)[0]
    return ReplayReport(
        instance.instance_id, instance.name, status, error, result, list(result.pitfalls)
    )


def replay_history(app_dir: str | Path, file: str | Path) -> ReplayReport:
    """Replay an exported history (`dfhost history export`) against the app in `app_dir`.

    For golden-history tests: `assert replay_history(APP, "golden/order.json").ok`.
    """
    from dfhost.functions import load_app

    instance, history = read_history(file)
    return replay_events(load_app(app_dir), instance, history)


async def replay_instances(
    app_dir: str | Path,
    store_url: str | None = None,
    *,
    instance_id: str | None = None,
    name: str | None = None,
    everything: bool = False,
) -> list[ReplayReport]:
    """Replay the current execution of stored instances against the app in `app_dir`:
    unfinished ones (Pending, Running, Suspended) unless `everything`. Entities are skipped.
    `store_url` defaults to the hub `dfhost start APP_DIR` uses."""
    from dfhost.admin import default_store_url
    from dfhost.functions import load_app
    from dfhost.store import app_store_url

    app = load_app(app_dir)
    settings = app.settings
    store_url = app_store_url(
        store_url, default_store_url(Path(app_dir)), settings.hub_name, settings.host_json
    )
    store = open_store(store_url)
    await store.start()
    try:
        if instance_id is not None:
            found = await store.get_instance(instance_id)
            if found is None:
                raise LookupError(f"no instance '{instance_id}' in {_safe_url(store_url)}")
            instances = [found]
        else:
            instances = await _query_all(store, name, everything)
        reports = []
        for instance in instances:
            if instance.instance_id.startswith("@"):
                continue  # an entity: it has no orchestrator code to replay
            try:
                history = await store.get_history(instance.instance_id)
            except (StoreError, ValueError) as exc:
                reports.append(
                    ReplayReport(
                        instance.instance_id,
                        instance.name,
                        instance.status.value,
                        f"its history cannot be read: {exc}",
                    )
                )
                continue
            reports.append(replay_events(app, instance, history))
        return reports
    finally:
        await store.close()


async def _query_all(store: Store, name: str | None, everything: bool) -> list[Instance]:
    statuses = () if everything else _UNFINISHED
    query = InstanceQuery(statuses=statuses, name=name, top=1000)
    found: list[Instance] = []
    while True:
        page = await store.query_instances(query)
        found.extend(page.instances)
        if page.continuation is None:
            return found
        query = replace(query, continuation=page.continuation)


_UNFINISHED = (
    OrchestrationStatus.PENDING,
    OrchestrationStatus.RUNNING,
    OrchestrationStatus.SUSPENDED,
    OrchestrationStatus.CONTINUED_AS_NEW,
)


# --- the exported history document ------------------------------------------------------------


def history_document(instance: Instance, history: Sequence[HistoryEvent]) -> dict[str, Any]:
    """An instance's current execution as `dfhost history export` writes it (dfhost's own
    storage form, so that it replays exactly)."""
    return {
        "format": HISTORY_FORMAT,
        "instanceId": instance.instance_id,
        "executionId": instance.execution_id,
        "name": instance.name,
        "version": instance.version,
        "runtimeStatus": instance.status.value,
        "input": instance.input,
        "parentInstanceId": instance.parent_instance_id,
        "createdTime": instance.created_at.isoformat(),
        "lastUpdatedTime": instance.last_updated_at.isoformat(),
        "history": [e.to_dict() for e in history],
    }


def read_history(file: str | Path) -> tuple[Instance, list[HistoryEvent]]:
    """Read an exported history; raises ValueError naming the file and what is wrong."""
    path = Path(file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != HISTORY_FORMAT:
        raise ValueError(
            f"{path} is not a history exported by `dfhost history export` "
            f"(expected format {HISTORY_FORMAT!r})"
        )
    try:
        history = [HistoryEvent.from_dict(e) for e in data["history"]]
        instance = Instance(
            instance_id=str(data["instanceId"]),
            name=str(data["name"]),
            execution_id=str(data["executionId"]),
            status=OrchestrationStatus(data["runtimeStatus"]),
            created_at=parse_time(data["createdTime"]),
            last_updated_at=parse_time(data["lastUpdatedTime"]),
            version=data.get("version"),
            input=data.get("input"),
            parent_instance_id=data.get("parentInstanceId"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: malformed history document: {exc}") from None
    return instance, history


async def export_history(store_url: str, instance_id: str) -> dict[str, Any]:
    """The history document of a stored instance's current execution."""
    store = open_store(store_url)
    await store.start()
    try:
        instance = await store.get_instance(instance_id)
        if instance is None:
            raise LookupError(f"no instance '{instance_id}' in {_safe_url(store_url)}")
        return history_document(instance, await store.get_history(instance_id))
    finally:
        await store.close()


def _safe_url(url: str) -> str:
    """The store URL without a password."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if at and ":" in credentials:
        return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"
    return url


# --- the commands -------------------------------------------------------------------------------


def add_replay_commands(commands: Any) -> None:
    """Add `dfhost replay` and `dfhost history export` to the CLI's subparsers."""
    replay = commands.add_parser(
        "replay",
        help="replay stored histories against the current code; exit 1 if any would break",
    )
    replay.add_argument("app_dir", help="the function app folder (the code to check)")
    replay.add_argument("--store", help="task hub URL (default: the app's own SQLite hub)")
    which = replay.add_mutually_exclusive_group()
    which.add_argument("--instance", metavar="ID", help="only this instance")
    which.add_argument("--name", help="only instances of this orchestrator")
    replay.add_argument(
        "--all", action="store_true", help="finished instances too (default: unfinished only)"
    )
    history = commands.add_parser("history", help="export an instance's history")
    actions = history.add_subparsers(dest="history_command", required=True)
    export = actions.add_parser(
        "export", help="write an instance's current history as JSON (for replay_history)"
    )
    export.add_argument("instance_id", metavar="ID")
    export.add_argument("app_dir", nargs="?", default=".", help="the app folder (default .)")
    export.add_argument("--store", help="task hub URL (default: the app's own SQLite hub)")


def run_replay_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run `dfhost replay` or `dfhost history export`; errors are one line on stderr."""
    from dfhost.admin import default_store_url
    from dfhost.functions import AppLoadError

    out = out or sys.stdout
    try:
        if args.command == "history":
            store_url = args.store or default_store_url(Path(args.app_dir))
            document = asyncio.run(export_history(store_url, args.instance_id))
            json.dump(document, out, indent=1, ensure_ascii=False)
            out.write("\n")
            return 0
        reports = asyncio.run(
            replay_instances(
                args.app_dir,
                args.store,
                instance_id=args.instance,
                name=args.name,
                everything=args.all,
            )
        )
    except (AppLoadError, StoreError, LookupError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, LookupError) and exc.args else exc
        print(f"dfhost: {message}", file=sys.stderr)
        return 2
    return _print_reports(reports, out)


def _print_reports(reports: list[ReplayReport], out: TextIO) -> int:
    broken = [r for r in reports if not r.ok]
    for report in reports:
        verdict = "ok    " if report.ok else "BREAKS"
        line = f"{verdict} {report.instance_id} ({report.name}, {report.status})"
        if report.error:
            line += f": {report.error}"
        print(line, file=out)
        for pitfall in report.pitfalls:
            print(f"       warning: {pitfall.message}", file=out)
    print(
        f"{len(reports)} instance(s) replayed, {len(broken)} would break"
        + (" with this code." if broken else "."),
        file=out,
    )
    return 1 if broken else 0


# --- the pytest plugin --------------------------------------------------------------------------

HostFactory = Callable[..., Awaitable[TestHost]]

if "pytest" in sys.modules:  # loaded as a pytest plugin (or from a test): offer the fixture
    import pytest

    _async_fixture: Any
    try:  # runs in pytest-asyncio's strict mode too
        import pytest_asyncio

        _async_fixture = pytest_asyncio.fixture
    except ImportError:  # pragma: no cover - then the project's async plugin must run it
        _async_fixture = pytest.fixture

    @_async_fixture  # type: ignore[untyped-decorator]
    async def dfhost_host() -> AsyncIterator[HostFactory]:
        """`host = await dfhost_host("path/to/app", **TestHost options)`: a running TestHost,
        stopped after the test."""
        hosts: list[TestHost] = []

        async def start(app_dir: str | Path, **options: Any) -> TestHost:
            host = TestHost(app_dir, **options)
            await host.__aenter__()
            hosts.append(host)
            return host

        try:
            yield start
        finally:
            for host in reversed(hosts):
                await host.__aexit__(None, None, None)
