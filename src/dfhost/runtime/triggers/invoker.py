"""One invocation of a message-triggered function, the same for every source: the trigger value
decoded as the Python worker decodes it, input bindings read, the function called through
`app/invoke.py` under `functionTimeout`, output bindings sent, and the Executing/Executed lines
with the reason the Functions host gives (`New queue message detected on 'items'.`).

`invoke` raises when the invocation failed (the function raised, timed out, or an input or
output could not be moved): the runner then leaves its message unacknowledged, so that it is
tried again, or given up on after its last try.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from dfhost import telemetry
from dfhost.app.bindings import TriggerData, decode_input, invocation_arguments
from dfhost.app.functions import Function, FunctionApp
from dfhost.app.invoke import call_function, within
from dfhost.config import describe_exception
from dfhost.logs import Invocation, log_invocation
from dfhost.orchestration.failures import python_traceback
from dfhost.runtime.triggers.bindings_io import BindingIO
from dfhost.runtime.triggers.stats import TRIGGER_STATS
from dfhost.wire import client_binding

__all__ = ["TriggerInvoker", "log_function_exception"]

log = logging.getLogger("dfhost")


def log_function_exception(name: str, exc: BaseException) -> None:
    """The host's line for a function that raised, with a traceback of the user's frames only:
    dfhost's, the SDK's and asyncio's would bury the one that matters."""
    log.error(
        "Exception while executing function: Functions.%s",
        name,
        extra={"dfhost_exception": python_traceback(exc)},
    )


class TriggerInvoker:
    """Invokes the app's triggered functions; `rpc_base_url` is what durableClient bindings
    get (see wire.py)."""

    def __init__(self, app: FunctionApp, io: BindingIO, rpc_base_url: str) -> None:
        self.app = app
        self.io = io
        self.rpc_base_url = rpc_base_url

    def starter(self) -> str:
        parts = urlsplit(self.rpc_base_url)
        return json.dumps(
            client_binding(
                origin=f"{parts.scheme}://{parts.netloc}",
                hub_name=self.app.settings.hub_name,
                rpc_base_url=self.rpc_base_url,
            )
        )

    async def invoke(
        self,
        function: Function,
        data: TriggerData,
        reason: str,
        *,
        binding_data: Mapping[str, Any] | None = None,
    ) -> None:
        """Run `function` once for `data`; raises if it failed (already logged)."""
        inv = Invocation(function=function.name)
        trigger = function.trigger.type
        bound = data.metadata if binding_data is None else binding_data
        TRIGGER_STATS.started(function.name, trigger)
        started = time.perf_counter()
        error: str | None = None
        try:
            with (
                telemetry.run_span(f"{trigger}:{function.name}", {"faas.trigger": "pubsub"}),
                log_invocation(inv, reason),
            ):
                try:
                    await self._call(function, data, bound, inv)
                except Exception as exc:
                    error = describe_exception(exc)
                    log_function_exception(function.name, exc)
                    raise
        finally:
            TRIGGER_STATS.finished(function.name, trigger, time.perf_counter() - started, error)

    async def _call(
        self, function: Function, data: TriggerData, bound: Mapping[str, Any], inv: Invocation
    ) -> None:
        value = decode_input(function, function.trigger, data)
        inputs = await self.io.fetch_inputs(function, bound)
        kwargs, outputs = invocation_arguments(
            function,
            invocation_id=inv.id,
            trigger_value=value,
            client_starter=self.starter(),
            inputs=inputs,
        )
        result = await within(
            self.app.settings.limits.function_timeout,
            call_function(function, kwargs),
            f"function '{function.name}'",
        )
        await self.io.deliver(function, outputs, result, bound)
