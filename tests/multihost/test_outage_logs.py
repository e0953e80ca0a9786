"""An outage of the database, seen from a working host's console: one warning when it starts,
one line when it ends, and every orchestration finishes; nothing else (psycopg's own warnings
about the connections it cannot close cleanly were ~95 lines per 8-second outage)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from dfhost.app.functions import FunctionApp
from dfhost.client import DurableClient
from dfhost.runtime.engine import Engine
from dfhost.store import Store, open_store
from tests.multihost.ledger import start_many, wait_all_finished
from tests.unit.test_postgres_store import CuttableProxy


async def test_an_outage_under_load_logs_one_line_when_it_starts_and_one_when_it_ends(
    app: FunctionApp,
    hub_url: str,
    client_store: Store,
    state_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    parts = urlsplit(hub_url)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.restore()
    user = f"{parts.username}@" if parts.username else ""
    store = open_store(parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}").geturl())
    await store.start()
    engine = Engine(app, store, owner="host")
    caplog.set_level(logging.INFO)
    try:
        await engine.start()
        specs = [("chain", f"chain-{i}", {"start": i, "steps": 4, "sleep": 0.2}) for i in range(8)]
        specs += [("fanout", f"fan-{i}", {"width": 20}) for i in range(4)]
        await start_many(DurableClient(client_store, app), specs)
        await asyncio.sleep(0.3)  # work in flight: episodes, activities, claims
        caplog.clear()
        await proxy.cut()
        await asyncio.sleep(2.5)
        await proxy.restore()
        await wait_all_finished(client_store, len(specs), timeout=60)
    finally:
        await engine.stop()
        await store.close()
        await proxy.cut()
    noisy = [
        f"{r.name} {r.levelname}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.WARNING or r.name.startswith(("psycopg", "dfhost.store"))
    ]
    lost = [line for line in noisy if "lost the connection" in line]
    back = [line for line in noisy if "reachable again" in line]
    assert len(lost) == 1 and len(back) == 1, noisy
    assert len(noisy) == 2, noisy
    assert all("\n" not in r.getMessage() for r in caplog.records), "a multi-line record"
