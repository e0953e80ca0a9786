"""Azure Queue Storage and Blob Storage triggers and output bindings, on Azurite: a message or a
blob starts an orchestration, whose activity writes the result through an output binding."""

from __future__ import annotations

import base64
import contextlib
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueClient

from tests.e2e.harness import APPS, HostProcess
from tests.triggers.conftest import hub_url, kill_while_held
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

APP = APPS / "triggers_v2"


@pytest.fixture
def storage(request: pytest.FixtureRequest) -> str:
    """Azurite's connection string (installed and started for this worker if need be)."""
    value: str = request.getfixturevalue("azurite")
    return value


def env_for(storage: str, unique: str, **more: str) -> dict[str, str]:
    return {
        "AzureWebJobsStorage": storage,
        "IN_QUEUE": f"in-{unique}",
        "OUT_QUEUE": f"out-{unique}",
        "IN_CONTAINER": f"in-{unique}",
        "OUT_CONTAINER": f"out-{unique}",
        **more,
    }


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def send(storage: str, queue: str, *texts: str) -> None:
    async with QueueClient.from_connection_string(storage, queue) as client:
        with contextlib.suppress(ResourceExistsError):
            await client.create_queue()
        for text in texts:
            await client.send_message(b64(text))


async def drain(storage: str, queue: str, into: list[str]) -> list[str]:
    """Move the messages now in `queue` into `into` (decoded); `into`."""
    async with QueueClient.from_connection_string(storage, queue) as client:
        try:
            async for message in client.receive_messages(max_messages=32):
                into.append(base64.b64decode(message.content).decode())
                await client.delete_message(message)
        except Exception as exc:  # the queue does not exist yet
            if "QueueNotFound" not in str(exc):
                raise
    return into


async def test_a_queue_message_starts_an_orchestration_whose_result_goes_to_a_queue(
    tmp_path: Path, storage: str, unique: str, hosts: list[HostProcess], sdk_session: None
) -> None:
    host = HostProcess(APP, hub_url(tmp_path), env_for(storage, unique)).start()
    hosts.append(host)
    await eventually(lambda: "listens to queue" in host.output, timeout=20)
    await send(storage, f"in-{unique}", "hello", "world")
    seen: list[str] = []
    await eventually(
        lambda: drain(storage, f"out-{unique}", seen),
        lambda got: sorted(got) == ["HELLO", "WORLD"],
        timeout=60,
    )
    reason = f"Reason='New queue message detected on 'in-{unique}'.'"
    assert f"Executing 'Functions.from_queue' ({reason}" in host.output
    assert "Executed 'Functions.from_queue' (Succeeded" in host.output


async def test_a_failing_message_is_tried_max_dequeue_count_times_then_poisoned(
    tmp_path: Path, storage: str, unique: str, hosts: list[HostProcess], sdk_session: None
) -> None:
    host = HostProcess(APP, hub_url(tmp_path), env_for(storage, unique)).start()
    hosts.append(host)
    await send(storage, f"in-{unique}", "fail-1")
    poisoned: list[str] = []
    await eventually(
        lambda: drain(storage, f"in-{unique}-poison", poisoned),
        lambda got: got == ["fail-1"],
        timeout=60,
    )
    # host.json maxDequeueCount is 2: two tries, each logged as failed.
    assert host.output.count("Executed 'Functions.from_queue' (Failed") == 2
    assert "refusing fail-1 (try 1)" in host.output
    assert "refusing fail-1 (try 2)" in host.output


async def test_sigkill_while_messages_run_loses_none(
    tmp_path: Path, storage: str, unique: str, hosts: list[HostProcess], sdk_session: None
) -> None:
    seen: list[str] = []

    async def send_all(texts: list[str]) -> None:
        await send(storage, f"in-{unique}", *texts)

    # batchSize 4 (host.json): four run at once, and the next batch waits until only
    # newBatchThreshold (2) still run, so four are held, unacknowledged, when it is killed.
    second = await kill_while_held(
        APP,
        tmp_path,
        env_for(storage, unique),
        hosts,
        send_all,
        lambda: drain(storage, f"out-{unique}", seen),
        held=4,
    )
    # The messages the first host held ran again on the second (at least once).
    assert "Executing 'Functions.from_queue'" in second.output


async def test_a_new_blob_starts_an_orchestration_whose_result_goes_to_a_blob(
    tmp_path: Path, storage: str, unique: str, hosts: list[HostProcess], sdk_session: None
) -> None:
    async with BlobServiceClient.from_connection_string(storage) as service:
        inbox = service.get_container_client(f"in-{unique}")
        await inbox.create_container()
        await inbox.upload_blob("first.txt", b"blob one")
        await inbox.upload_blob("ignored.bin", b"not matched by {name}.txt")
        host = HostProcess(APP, hub_url(tmp_path), env_for(storage, unique)).start()
        hosts.append(host)
        out = service.get_container_client(f"out-{unique}")

        async def read(name: str) -> bytes | None:
            try:
                return await (await out.download_blob(name)).readall()
            except Exception:
                return None

        assert await eventually(lambda: read("first.out"), timeout=60) == b"BLOB ONE"
        # An updated blob is a new version: it runs again; the unmatched blob never runs.
        await inbox.upload_blob("first.txt", b"blob two", overwrite=True)
        await eventually(lambda: read("first.out"), lambda got: got == b"BLOB TWO", timeout=60)
        reason = f"Reason='New blob detected(LogsAndContainerScan): in-{unique}/first.txt'"
        assert host.output.count(f"Executing 'Functions.from_blob' ({reason}") == 2
        assert "ignored.bin" not in host.output


async def test_each_blob_version_runs_once_across_two_hosts(
    tmp_path: Path, storage: str, unique: str, hosts: list[HostProcess], sdk_session: None
) -> None:
    env = env_for(storage, unique)
    for _ in range(2):
        hosts.append(HostProcess(APP, hub_url(tmp_path), env).start())
    async with BlobServiceClient.from_connection_string(storage) as service:
        inbox = service.get_container_client(f"in-{unique}")
        try:
            await inbox.create_container()
        except Exception as exc:
            if "ContainerAlreadyExists" not in str(exc):
                raise
        names = [f"b{i}" for i in range(5)]
        for name in names:
            await inbox.upload_blob(f"{name}.txt", name.encode())
        out = service.get_container_client(f"out-{unique}")

        async def outputs() -> set[str]:
            try:
                return {b.name async for b in out.list_blobs()}
            except Exception:
                return set()

        await eventually(outputs, lambda got: got == {f"{n}.out" for n in names}, timeout=60)
    runs = sum(h.output.count("Executed 'Functions.from_blob' (Succeeded") for h in hosts)
    assert runs == len(names)
