"""Event Grid triggers: the events Azure delivers to `/runtime/webhooks/EventGrid?functionName=
NAME` (`dfhost.web.eventgrid` serves that webhook), each run as one invocation, as the
extension does. Both schemas arrive here as event objects: Event Grid's (`eventType`,
`subject`, `data`, ...) become `func.EventGridEvent`, CloudEvents 1.0 (`specversion`) become
`func.CloudEvent`, through the SDK's converter."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from dfhost.app.bindings import TriggerData
from dfhost.app.functions import Function, FunctionApp
from dfhost.history import utcnow
from dfhost.runtime.triggers.invoker import TriggerInvoker

__all__ = ["EventGridFunctions"]


class EventGridFunctions:
    """The app's Event Grid-triggered functions, by name (case-insensitive, as Azure's)."""

    def __init__(self, app: FunctionApp, invoker: TriggerInvoker) -> None:
        self.invoker = invoker
        self.functions = {f.name.lower(): f for f in app.of_kind("eventgrid")}

    def find(self, name: str) -> Function | None:
        return self.functions.get(name.lower())

    async def deliver(self, function: Function, events: Sequence[Mapping[str, Any]]) -> int:
        """Run `function` once per event, in order; the number that failed."""
        failed = 0
        for event in events:
            metadata = {k: v for k, v in event.items() if k != "data"}
            metadata["data"] = event.get("data")
            reason = f"EventGrid trigger fired at {utcnow().isoformat()}"
            try:
                await self.invoker.invoke(
                    function, TriggerData(json.dumps(event), "json", metadata), reason
                )
            except Exception:
                failed += 1
        return failed
