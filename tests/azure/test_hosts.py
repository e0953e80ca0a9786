"""`dfhost start --store azure` on Azurite: the example app's loop, chaining, a fan-out of 200,
two hosts sharing one task hub, and a host killed mid-run."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from dfhost.client import DurableClient
from dfhost.store import Store, open_store
from tests.azure.conftest import HUB_OVERRIDE, PROVIDER_OVERRIDE
from tests.azurite import store_url
from tests.e2e.harness import APPS, EXAMPLE_APP, HostProcess, finished
from tests.multihost.conftest import APP as SHARED_APP
from tests.multihost.ledger import assert_recorded_once, runs, start_many, wait_all_finished
from tests.waiting import eventually

pytestmark = pytest.mark.e2e


def host(app: Path, env: dict[str, str]) -> HostProcess:
    return HostProcess(app, "azure", env)


@asynccontextmanager
async def client_store(hub: str) -> AsyncIterator[Store]:
    """The test's own connection to the hub, as a client in another process would have."""
    store = open_store(store_url(hub))
    await store.start()
    try:
        yield store
    finally:
        await store.close()


async def test_the_example_loop_on_azurite(
    tmp_path: Path, host_env: dict[str, str], sdk_session: None
) -> None:
    # A copy of the example, whose local.settings.json says UseDevelopmentStorage=true (the
    # environment overrides it): no SQLite hub may appear in it.
    app = tmp_path / "eternal_timer"
    shutil.copytree(EXAMPLE_APP, app, ignore=shutil.ignore_patterns(".dfhost", "__pycache__"))
    # No --store: host.json's storageProvider (here as an app-setting override) selects it.
    env = {**host_env, f"{PROVIDER_OVERRIDE}type": "azureStorage", "WORK_SECONDS": "0.1"}
    example = HostProcess(app, "", env).start()
    try:
        async with httpx.AsyncClient(base_url=example.origin) as http:
            body = (
                await http.post(
                    "/api/orchestrators/durable-orchestrator", json={"interval_seconds": 1}
                )
            ).json()
            await eventually(
                lambda: example.output, lambda out: out.count("working on ") >= 3, timeout=60
            )
            status = (
                await http.get(body["statusQueryGetUri"], params={"showHistory": "true"})
            ).json()
        async with client_store(host_env[HUB_OVERRIDE]) as store:
            assert await store.get_instance(body["id"]) is not None
    finally:
        example.stop()
    assert not (app / ".dfhost").exists()  # no SQLite task hub was made
    assert status["runtimeStatus"] == "Running"
    history = status.get("historyEvents") or []
    assert [e["EventType"] for e in history].count("ExecutionStarted") == 1
    assert "Activity cleanup started at" in example.output


async def test_chaining_and_a_fan_out_of_200(
    hub: str, host_env: dict[str, str], sdk_session: None
) -> None:
    process = host(APPS / "e2e_v2", host_env).start()
    try:
        client = process.client(hub)
        chained = await finished(client, await client.start_new("chain"), 60)
        assert chained.output == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
        fanned = await finished(client, await client.start_new("fanout", None, 200), 120)
        assert fanned.runtime_status.value == "Completed"
        assert fanned.output == sum(2 * i for i in range(200))
    finally:
        process.stop()


async def test_two_hosts_share_one_task_hub(hub: str, host_env: dict[str, str]) -> None:
    state = Path(host_env["DFHOST_MH_STATE"])
    first = host(SHARED_APP, host_env).start(60)
    second = None
    try:
        second = host(SHARED_APP, host_env).start(60)
        # The first host owned every partition; it hands half back to the second.
        await eventually(lambda: second.output, lambda out: "owns partitions" in out, timeout=30)
        specs = [("chain", f"c{i}", {"start": i, "steps": 3}) for i in range(12)]
        specs += [("fanout", f"f{i}", {"width": 10}) for i in range(2)]
        async with client_store(hub) as store:
            await start_many(DurableClient(store), specs)
            await wait_all_finished(store, len(specs), 120)
            await assert_recorded_once(store, [instance_id for _, instance_id, _ in specs])
            for _, instance_id, spec in specs:
                instance = await store.get_instance(instance_id)
                assert instance is not None
                expected = spec["start"] * 8 if "steps" in spec else sum(range(10)) * 2
                assert instance.output == str(expected), instance_id
    finally:
        first.stop()
        if second is not None:
            second.stop()
    # Both hosts ran episodes and activities, and every activity ran once.
    for process in (first, second):
        assert process is not None
        assert "Executed 'Functions.chain'" in process.output
    pids = {run.pid for run in runs(state) if run.kind == "end"}
    assert len(pids) == 2
    ends = [run.key for run in runs(state) if run.kind == "end"]
    assert len(ends) == len(set(ends)) == 12 * 3 + 2 * 10


async def test_a_host_killed_mid_run_is_recovered(
    hub: str, host_env: dict[str, str], sdk_session: None
) -> None:
    state = Path(host_env["DFHOST_E2E_STATE"])
    first = host(APPS / "e2e_v2", host_env).start()
    try:
        client = first.client(hub)
        blocked = await client.start_new("blocked", None, "release")
        fanned = await client.start_new("fanout", None, 20)
        started = state / "release.started"
        await eventually(started.exists, timeout=60)
        first_pid = int(started.read_text())
        first.kill()
    finally:
        first.stop()
    assert first.proc is not None and first.proc.returncode == -9

    started.unlink()
    (state / "release").write_text("released")
    second = host(APPS / "e2e_v2", host_env).start()
    try:
        client = second.client(hub)
        # Its partitions are free after their 15 s leases, its messages back after 5 s.
        status = await finished(client, blocked, 90)
        assert status.runtime_status.value == "Completed"
        assert status.output == "released"
        assert int(started.read_text()) not in (first_pid, os.getpid())
        status = await finished(client, fanned, 60)
        assert status.output == sum(2 * i for i in range(20))
    finally:
        second.stop()
