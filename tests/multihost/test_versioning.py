"""A rolling upgrade on PostgreSQL: hosts at `defaultVersion` 1.0 and 2.0 share one hub; the
older leaves the newer instances to the newer host and runs the older ones, which either may
run (versionMatchStrategy CurrentOrOlder)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import timedelta

import pytest

from dfhost.app.functions import FunctionApp
from dfhost.client import DurableClient
from dfhost.history import OrchestrationStatus
from dfhost.runtime import engine as engine_module
from dfhost.runtime.engine import Engine
from dfhost.store import Store, open_store
from tests.multihost.ledger import wait_all_finished
from tests.waiting import eventually


def at_version(app: FunctionApp, version: str) -> FunctionApp:
    return replace(app, settings=replace(app.settings, default_version=version))


async def test_an_old_host_leaves_new_instances_to_the_new_host(
    app: FunctionApp,
    hub_url: str,
    client_store: Store,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(engine_module, "REJECT_RETRY", timedelta(seconds=0.5))
    caplog.set_level(logging.WARNING, logger="dfhost.engine")
    stores = [open_store(hub_url) for _ in range(2)]
    for store in stores:
        await store.start()
    old = Engine(at_version(app, "1.0"), stores[0], owner="old")
    new = Engine(at_version(app, "2.0"), stores[1], owner="new")
    try:
        await old.start()
        chain = json.dumps({"start": 1, "steps": 2})
        old_client = DurableClient(client_store, default_version="1.0")
        new_client = DurableClient(client_store, default_version="2.0")
        for i in range(3):
            await new_client.start_new("chain", f"v2-{i}", chain)
            await old_client.start_new("chain", f"v1-{i}", chain)
        await wait_all_finished(client_store, 3, timeout=30)  # the old host's own
        await eventually(lambda: rejections(caplog), lambda lines: len(lines) == 3, timeout=30)
        for i in range(3):
            waiting = await client_store.get_instance(f"v2-{i}")
            assert waiting is not None and waiting.status is OrchestrationStatus.PENDING
        await new.start()  # the upgraded host joins: it takes them, woken by the hub
        await wait_all_finished(client_store, 6, timeout=30)
    finally:
        await new.stop()
        await old.stop()
        for store in stores:
            await store.close()
    for i in range(3):
        done = await client_store.get_instance(f"v2-{i}")
        assert done is not None and done.version == "2.0"
    # One line per instance, however often it came back to the old host.
    assert len(rejections(caplog)) == 3, rejections(caplog)


def rejections(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "left for another host" in r.getMessage()]
