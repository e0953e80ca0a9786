"""The app's message triggers: Azure Queue Storage, Blob Storage, RabbitMQ, Redis (one listener
per function, one module per source) and Event Grid (delivered over HTTP by `web/eventgrid.py`),
with the bindings they and every other function use (`bindings_io.py`).

`TriggerHost` is what `dfhost start` runs next to the engine: it builds a listener per
triggered function (a function whose settings cannot be used is listed in `problems`, one line
each, and does not run; the others do), starts them with the web server and stops them with it,
letting invocations in progress finish; `use_app` swaps them for a reloaded app's.
"""

from __future__ import annotations

import asyncio
import logging

from dfhost.app.bindings import BindingValueError
from dfhost.app.functions import Function, FunctionApp
from dfhost.runtime.triggers.bindings_io import close_shared_io, shared_io
from dfhost.runtime.triggers.connections import ConnectionSettingError
from dfhost.runtime.triggers.eventgrid import EventGridFunctions
from dfhost.runtime.triggers.invoker import TriggerInvoker
from dfhost.runtime.triggers.listener import Listener
from dfhost.runtime.triggers.stats import TRIGGER_STATS, FunctionStats

__all__ = ["TRIGGER_STATS", "EventGridFunctions", "FunctionStats", "TriggerHost"]

log = logging.getLogger("dfhost.triggers")


class TriggerHost:
    """Runs one host's queue, blob, RabbitMQ and Redis listeners; serves Event Grid events."""

    def __init__(self, app: FunctionApp, *, owner: str, rpc_base_url: str) -> None:
        """`owner` names this host (the engine's owner: Redis stream consumers);
        `rpc_base_url` is what durableClient bindings get."""
        self.app = app
        self.owner = owner
        self.rpc_base_url = rpc_base_url
        self.problems: list[str] = []
        self.listeners: list[Listener] = []
        self.event_grid: EventGridFunctions | None = None
        self._started = False
        self._stopped = False

    async def start(self) -> None:
        """Build and start the listeners (on the server's event loop: clients belong to it)."""
        self._started = True
        io = shared_io(self.app.settings.triggers)
        invoker = TriggerInvoker(self.app, io, self.rpc_base_url)
        self.event_grid = EventGridFunctions(self.app, invoker)
        for function in self.app.functions.values():
            listener = self._listener(function, invoker)
            if listener is not None:
                self.listeners.append(listener)
                listener.start()
        for problem in self.problems:
            log.error("dfhost: %s", problem)

    async def stop(self, grace: float = 10.0, *, close_io: bool = True) -> None:
        """Stop every listener, letting what runs finish for up to `grace` seconds (what is
        cut short was not acknowledged: it runs again later). `close_io` False keeps the
        shared binding connections open, for activities still running (a draining host)."""
        self._stopped = True
        await self._stop_listeners(grace)
        if close_io:
            await close_shared_io()

    async def use_app(self, app: FunctionApp, grace: float = 10.0) -> None:
        """Listen for `app`'s functions instead (`dfhost start --reload`): the old listeners
        stop as in `stop` (what they run may finish for up to `grace` seconds), new ones
        start; the binding connections stay open."""
        self.app = app
        self.problems = []
        await self._stop_listeners(grace)
        if self._started and not self._stopped:
            await self.start()

    async def _stop_listeners(self, grace: float) -> None:
        listeners, self.listeners = self.listeners, []
        await asyncio.gather(*(listener.stop(grace) for listener in listeners))

    def _listener(self, function: Function, invoker: TriggerInvoker) -> Listener | None:
        try:
            return _make_listener(self.app, function, invoker, self.owner)
        except (ValueError, ConnectionSettingError, BindingValueError) as exc:
            self.problems.append(
                f"{function.trigger.type} function '{function.name}': {exc}; it does not run"
            )
            return None


def _make_listener(
    app: FunctionApp, function: Function, invoker: TriggerInvoker, owner: str
) -> Listener | None:
    settings = app.settings.triggers
    connections = invoker.io.connections
    if function.kind == "queue":
        from dfhost.runtime.triggers.queues import QueueListener

        return QueueListener(function, invoker, connections, settings.queues)
    if function.kind == "blob":
        from dfhost.runtime.triggers.blobs import BlobListener

        host_id = app.settings.hub_name.lower()
        return BlobListener(
            function, invoker, connections, settings.blobs, settings.queues, host_id
        )
    if function.kind == "rabbitmq":
        from dfhost.runtime.triggers.rabbitmq import RabbitMQListener

        return RabbitMQListener(function, invoker, connections, settings.rabbitmq)
    if function.kind == "redis":
        from dfhost.runtime.triggers.redis import RedisListener

        return RedisListener(function, invoker, connections, owner)
    return None
