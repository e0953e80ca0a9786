"""The Event Grid webhook's keys, in process: with keys enforced it takes the system key
`eventgrid_extension` or the master key, as in Azure, and nothing else."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from starlette.applications import Starlette

from dfhost.app.functions import Function
from dfhost.web.auth import Access
from dfhost.web.eventgrid import event_grid_routes
from dfhost.web.keys import KeySet

MASTER = "m" * 32
SYSTEM = "e" * 32
HOST_KEY = "h" * 32


class FakeEventGrid:
    def __init__(self) -> None:
        self.delivered: list[Sequence[Mapping[str, Any]]] = []

    def find(self, name: str) -> Function | None:
        return object() if name.lower() == "ongrid" else None  # type: ignore[return-value]

    async def deliver(self, function: Function, events: Sequence[Mapping[str, Any]]) -> int:
        self.delivered.append(events)
        return 0


class FakeHost:
    def __init__(self) -> None:
        self.event_grid = FakeEventGrid()


async def test_keys_enforced_take_the_system_or_master_key_only() -> None:
    keys = KeySet(master=MASTER, host={"default": HOST_KEY}, system={"eventgrid_extension": SYSTEM})
    host = FakeHost()
    app = Starlette(
        routes=event_grid_routes(host, Access(keys=keys, enforce=True), 1024)  # type: ignore[arg-type]
    )
    event = [{"id": "1", "eventType": "T", "subject": "s", "data": {}}]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        url = "/runtime/webhooks/EventGrid?functionName=OnGrid"
        refused = [
            await http.post(url, json=event),
            await http.post(f"{url}&code={HOST_KEY}", json=event),
        ]
        accepted = [
            await http.post(f"{url}&code={SYSTEM}", json=event),
            await http.post(url, json=event, headers={"x-functions-key": MASTER}),
            await http.post(f"{url.lower()}&code={SYSTEM}", json=event),
        ]
        too_big = await http.post(f"{url}&code={SYSTEM}", content=b"[" + b" " * 2000 + b"]")
    assert [r.status_code for r in refused] == [401, 401]
    assert "eventgrid_extension" in refused[0].text
    assert [r.status_code for r in accepted] == [202, 202, 202]
    assert len(host.event_grid.delivered) == 3
    assert too_big.status_code == 413
