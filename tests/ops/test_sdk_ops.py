"""The operations through the SDK's own `DurableOrchestrationClient` (aiohttp against a live
uvicorn server), as an app's client function would call them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import azure.durable_functions as df
import pytest
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from dfhost.history import OrchestrationStatus
from dfhost.web import build_app
from dfhost.wire import client_binding
from tests.web.conftest import BASE, live_server

from .conftest import SDK_ADVICE, Hub, wait_status

pytestmark = pytest.mark.filterwarnings(SDK_ADVICE)
Status = OrchestrationStatus
Runtime = OrchestrationRuntimeStatus


@pytest.fixture
async def sdk(hub: Hub) -> AsyncIterator[df.DurableOrchestrationClient]:
    web_app = build_app(hub.client, hub.app, rpc_base_url="http://placeholder/")
    async with live_server(web_app) as origin:
        binding = client_binding(origin=origin, hub_name="OpsHub", rpc_base_url=f"{origin}{BASE}/")
        yield df.DurableOrchestrationClient(json.dumps(binding))


async def test_suspend_with_an_event_raised_meanwhile(
    sdk: df.DurableOrchestrationClient, hub: Hub
) -> None:
    instance_id = await sdk.start_new("waiter", "paused")
    await wait_status(hub.client, instance_id, Status.RUNNING)
    await sdk.suspend(instance_id, "hold on")
    await wait_status(hub.client, instance_id, Status.SUSPENDED)
    await sdk.raise_event(instance_id, "Go", {"n": 1})
    assert (await sdk.get_status(instance_id)).runtime_status is Runtime.Suspended

    await sdk.resume(instance_id, "carry on")
    status = await wait_status(hub.client, instance_id, Status.COMPLETED)
    # The SDK double-encodes event data, as against Azure (see dfhost.web.api).
    assert json.loads(status.output or "") == '{"n": 1}'

    await sdk.suspend(instance_id, "too late")  # 410: the SDK treats it as success
    await sdk.resume(instance_id, "too late")
    with pytest.raises(Exception, match=r"No instance with ID 'nope' found\."):
        await sdk.suspend("nope", "x")
    with pytest.raises(Exception, match=r"No instance with ID 'nope' found\."):
        await sdk.resume("nope", "x")


async def test_rewind(sdk: df.DurableOrchestrationClient, hub: Hub) -> None:
    (hub.state / "broken-sdk").touch()
    instance_id = await sdk.start_new("steps", "rewound", "sdk")
    await wait_status(hub.client, instance_id, Status.FAILED)

    with pytest.raises(Exception, match=r"No instance with ID nope found\."):
        await sdk.rewind("nope", "why")
    (hub.state / "broken-sdk").unlink()
    await sdk.rewind(instance_id, "fixed it")
    status = await wait_status(hub.client, instance_id, Status.COMPLETED)
    assert json.loads(status.output or "") == [2, "sdk ok", 4]

    with pytest.raises(Exception, match="only supported on failed"):
        await sdk.rewind(instance_id, "again")


async def test_restart_returns_the_check_status_body(
    sdk: df.DurableOrchestrationClient, hub: Hub
) -> None:
    instance_id = await sdk.start_new("echo", "original", {"k": "v"})
    await wait_status(hub.client, instance_id, Status.COMPLETED)

    body = await sdk.restart(instance_id)
    assert isinstance(body, dict)  # the check-status payload, as from the extension
    assert body["id"] != instance_id
    assert body["statusQueryGetUri"].endswith(
        f"/instances/{body['id']}?taskHub=OpsHub&connection=Storage"
    )
    restarted = await wait_status(hub.client, body["id"], Status.COMPLETED)
    assert restarted.output == '{"k": "v"}'

    same = await sdk.restart(instance_id, restart_with_new_instance_id=False)
    assert isinstance(same, dict) and same["id"] == instance_id
    await wait_status(hub.client, instance_id, Status.COMPLETED)
    with pytest.raises(Exception, match=r"No instance with ID 'nope' found\."):
        await sdk.restart("nope")


async def test_terminate_and_purge(sdk: df.DurableOrchestrationClient, hub: Hub) -> None:
    since = datetime.now(UTC) - timedelta(minutes=1)
    waiting = await sdk.start_new("waiter", "stuck")
    done = await sdk.start_new("echo", "fine", 1)
    await wait_status(hub.client, waiting, Status.RUNNING)
    await wait_status(hub.client, done, Status.COMPLETED)
    await sdk.terminate(waiting, "enough")
    assert (await wait_status(hub.client, waiting)).status is Status.TERMINATED

    assert (await sdk.purge_instance_history(waiting)).instances_deleted == 1
    assert (await sdk.purge_instance_history(waiting)).instances_deleted == 0
    purged = await sdk.purge_instance_history_by(
        created_time_from=since, runtime_status=[Runtime.Completed]
    )
    assert purged.instances_deleted == 1
    assert not await sdk.get_status(done)
