"""A SQLite host is woken at once by work a client in another store (process) enqueues."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dfhost.history import utcnow
from dfhost.store import open_store
from dfhost.store.sqlite.doorbell import Doorbell
from dfhost.work import StartRequest


async def test_a_client_store_wakes_the_host_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    host, client = open_store(url), open_store(url)
    await host.start()
    await client.start()
    try:
        await host.open_host("host-1", utcnow())
        await asyncio.wait_for(host.wait_for_work(utcnow()), 1)  # consume the start-up wake
        waiting = asyncio.create_task(host.wait_for_work(None))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        request = StartRequest(
            instance_id="a", name="Orch", execution_id="a:1", created_at=utcnow()
        )
        assert await client.create_instance(request)
        await asyncio.wait_for(waiting, 2)
    finally:
        await client.close()
        await host.close()


def test_ringing_with_nobody_listening_is_harmless(tmp_path: Path) -> None:
    bell = Doorbell(tmp_path / "hub.sqlite3")
    bell.ring()  # no FIFO yet
    bell.path.write_text("not a fifo")
    bell.ring()
    assert bell.path.read_text() == "not a fifo"
