"""Durable Functions patterns end to end: `dfhost start` in a subprocess, driven over HTTP
through the SDK's own DurableOrchestrationClient. Patterns that wait for durable timers or
loop with continue_as_new run on virtual time in tests/testing/test_testhost.py."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.harness import HostProcess, finished
from tests.waiting import eventually

pytestmark = pytest.mark.e2e
HUB = "E2EHub"


async def test_chaining(e2e_host: HostProcess) -> None:
    client = e2e_host.client(HUB)
    iid = await client.start_new("chain")
    status = await finished(client, iid)
    assert status.runtime_status.value == "Completed"
    assert status.output == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]


async def test_fan_out_fan_in(e2e_host: HostProcess) -> None:
    client = e2e_host.client(HUB)
    iid = await client.start_new("fanout", None, 50)
    status = await finished(client, iid)
    assert status.output == sum(2 * i for i in range(50))


async def test_http_starter_returns_check_status_urls(e2e_host: HostProcess) -> None:
    async with httpx.AsyncClient(base_url=e2e_host.origin) as http:
        response = await http.post("/api/orchestrators/chain")
        assert response.status_code == 202
        body = response.json()
        assert response.headers["location"] == body["statusQueryGetUri"]
        assert body["statusQueryGetUri"].startswith(e2e_host.origin)
        status = await eventually(
            lambda: http.get(body["statusQueryGetUri"]), lambda r: r.status_code == 200, timeout=20
        )
        assert status.json()["output"] == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]


async def test_human_interaction_event_via_send_event_uri(e2e_host: HostProcess) -> None:
    async with httpx.AsyncClient(base_url=e2e_host.origin) as http:
        body = (await http.post("/api/orchestrators/approval", json={"timeout": 60})).json()
        url = body["sendEventPostUri"].replace("{eventName}", "Approval")
        # The event may be raised before the orchestrator waits for it: it is buffered.
        response = await http.post(url, json={"by": "alice"})
        assert response.status_code == 202
        client = e2e_host.client(HUB)
        status = await finished(client, body["id"])
        assert status.output == {"approved": {"by": "alice"}}


async def test_raise_event_through_sdk_client(e2e_host: HostProcess) -> None:
    client = e2e_host.client(HUB)
    iid = await client.start_new("waiter")
    await eventually(
        lambda: client.get_status(iid), lambda s: s.runtime_status.value == "Running", timeout=20
    )
    await client.raise_event(iid, "Go", "green")
    status = await finished(client, iid)
    # As with the real extension, the SDK client double-encodes event data, so the
    # orchestrator receives the JSON text (Azure/azure-functions-durable-python#295).
    assert status.output == '"green"'


async def test_sub_orchestrations(e2e_host: HostProcess) -> None:
    client = e2e_host.client(HUB)
    iid = await client.start_new("parent")
    status = await finished(client, iid)
    assert status.output == {
        "child": ["Hello Tokyo!", "Hello Seattle!", "Hello London!"],
        "doubled": 12,
    }
    kid = await client.get_status(f"{iid}-kid")
    assert kid.runtime_status.value == "Completed"


async def test_retry_succeeds_on_third_attempt(e2e_host: HostProcess) -> None:
    client = e2e_host.client(HUB)
    iid = await client.start_new("retrying")
    status = await finished(client, iid)
    assert status.output == "ok after 3"


async def test_failure_and_caught_failure(e2e_host: HostProcess) -> None:
    client = e2e_host.client(HUB)
    failed = await finished(client, await client.start_new("failing"))
    assert failed.runtime_status.value == "Failed"
    assert "Activity function 'boom' failed:  ValueError: kaboom" in failed.output
    caught = await finished(client, await client.start_new("catching"))
    assert caught.runtime_status.value == "Completed"
    # Two spaces after "failed:", as on Azure (tests/parity has the whole shape).
    assert caught.output.startswith("caught: Activity function 'boom' failed:  ValueError: kaboom")


async def test_terminate(e2e_host: HostProcess) -> None:
    client = e2e_host.client(HUB)
    iid = await client.start_new("waiter")
    await eventually(
        lambda: client.get_status(iid), lambda s: s.runtime_status.value == "Running", timeout=20
    )
    await client.terminate(iid, "enough")
    status = await finished(client, iid)
    assert status.runtime_status.value == "Terminated"
    assert status.output == "enough"


async def test_singleton_refused_while_running(e2e_host: HostProcess) -> None:
    client = e2e_host.client(HUB)
    await client.start_new("waiter", "the-one")
    with pytest.raises(Exception, match="already exists"):
        await client.start_new("waiter", "the-one")
    async with httpx.AsyncClient(base_url=e2e_host.origin) as http:
        response = await http.post("/runtime/webhooks/durabletask/orchestrators/waiter/the-one")
        assert response.status_code == 409


async def test_paging_with_continuation_tokens(e2e_host: HostProcess) -> None:
    client = e2e_host.client(HUB)
    ids = {await client.start_new("waiter", f"page-{i:02d}") for i in range(7)}
    seen: list[str] = []
    token = None
    async with httpx.AsyncClient(base_url=e2e_host.origin) as http:
        while True:
            headers: dict[str, str] = {"x-ms-continuation-token": token} if token else {}
            response = await http.get(
                "/runtime/webhooks/durabletask/instances",
                params={"top": 3, "instanceIdPrefix": "page-"},
                headers=headers,
            )
            assert response.status_code == 200
            seen.extend(item["instanceId"] for item in response.json())
            token = response.headers.get("x-ms-continuation-token")
            if not token:
                break
    assert sorted(seen) == sorted(ids)


async def test_status_codes(e2e_host: HostProcess) -> None:
    client = e2e_host.client(HUB)
    done = await client.start_new("chain")
    await finished(client, done)
    running = await client.start_new("waiter")
    await eventually(
        lambda: client.get_status(running),
        lambda s: s.runtime_status.value == "Running",
        timeout=20,
    )
    api = "/runtime/webhooks/durabletask"
    async with httpx.AsyncClient(base_url=e2e_host.origin) as http:
        assert (await http.get(f"{api}/instances/{done}")).status_code == 200
        assert (await http.get(f"{api}/instances/{running}")).status_code == 202
        assert (await http.get(f"{api}/instances/nope")).status_code == 404
        raise_done = f"{api}/instances/{done}/raiseEvent/Go"
        assert (await http.post(raise_done, json=1)).status_code == 410
        assert (await http.post(f"{api}/instances/nope/raiseEvent/Go", json=1)).status_code == 404
        assert (await http.post(f"{api}/instances/{done}/terminate")).status_code == 410
        assert (await http.post(f"{api}/instances/nope/terminate")).status_code == 404
        assert (await http.post(f"{api}/orchestrators/no_such_orchestrator")).status_code == 400
        bad = await http.post(
            f"{api}/orchestrators/chain",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert bad.status_code == 400
        assert (await http.delete(f"{api}/instances/{done}")).json() == {"instancesDeleted": 1}
        assert (await http.delete(f"{api}/instances/{done}")).status_code == 404
        assert (await http.get("/admin/host/status")).json()["state"] == "Running"
