"""examples/queue_orders as its README runs it, on Azurite: an order message starts an
orchestration whose last activity writes the receipt blob; the same order again starts
nothing new."""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob.aio import BlobClient
from azure.storage.queue.aio import QueueClient

from tests.e2e.harness import REPO, HostProcess
from tests.triggers.conftest import hub_url
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXAMPLE = REPO / "examples" / "queue_orders"


async def test_an_order_message_ends_as_a_receipt_blob(
    tmp_path: Path, request: pytest.FixtureRequest, hosts: list[HostProcess], sdk_session: None
) -> None:
    storage: str = request.getfixturevalue("azurite")
    host = HostProcess(EXAMPLE, hub_url(tmp_path), {"AzureWebJobsStorage": storage}).start()
    hosts.append(host)
    order = {
        "orderId": "1001",
        "lines": [{"item": "apple", "quantity": 4}, {"item": "coffee", "quantity": 1}],
    }
    async with QueueClient.from_connection_string(storage, "orders") as queue:
        with contextlib.suppress(ResourceExistsError):
            await queue.create_queue()
        await queue.send_message(base64.b64encode(json.dumps(order).encode()).decode())

    async def receipt() -> dict[str, object] | None:
        blob = BlobClient.from_connection_string(storage, "receipts", "1001.json")
        async with blob:
            try:
                return json.loads(await (await blob.download_blob()).readall())  # type: ignore[no-any-return]
            except Exception:
                return None

    got = await eventually(receipt, timeout=60)
    assert got is not None and got["total"] == 9.0
    # The same order again (a redelivery, say) starts no second orchestration.
    async with QueueClient.from_connection_string(storage, "orders") as queue:
        await queue.send_message(base64.b64encode(json.dumps(order).encode()).decode())
    await eventually(lambda: "order 1001 already started" in host.output, timeout=60)
    assert host.output.count("Executing 'Functions.process_order'") >= 1
    assert "Reason='New queue message detected on 'orders'.'" in host.output
