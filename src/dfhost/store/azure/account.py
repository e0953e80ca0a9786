"""The storage account of an Azure Storage task hub: clients, the hub's tables, queues and
containers, payload blobs, and the conversion of service errors into `StoreError`s."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Iterable, Iterator
from typing import Any, TypeVar

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables.aio import TableClient, TableServiceClient
from azure.storage.blob.aio import BlobServiceClient, ContainerClient
from azure.storage.blob.aio import ExponentialRetry as BlobRetry
from azure.storage.queue._shared.policies_async import ExponentialRetry as QueueRetry
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from dfhost.store import StoreError
from dfhost.store.azure.codec import HubNames

__all__ = ["MAX_VISIBILITY", "AzureAccount", "bounded", "describe_account", "one_line"]

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_VISIBILITY = 7 * 24 * 3600 - 60
"""Seconds: the service hides a queue message for at most 7 days."""
_PARALLEL = 16
"""Storage calls one batch of work (an outbox, a purge) makes at once."""
_CLIENT_OPTIONS: dict[str, Any] = {"connection_timeout": 5, "read_timeout": 30}


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe_account(connection_string: str) -> str:
    """Where a connection string points, without its secrets."""
    fields = dict(
        part.split("=", 1) for part in connection_string.split(";") if "=" in part.strip()
    )
    fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
    if fields.get("usedevelopmentstorage", "").lower() == "true":
        return "Azurite (UseDevelopmentStorage=true)"
    name = fields.get("accountname", "?")
    endpoint = fields.get("tableendpoint") or fields.get("blobendpoint")
    if endpoint:
        return f"{name} at {re.sub(r'^https?://', '', endpoint).rstrip('/')}"
    return f"account {name}"


async def bounded(jobs: Iterable[Awaitable[T]], limit: int = _PARALLEL) -> list[T]:
    """Await `jobs` with at most `limit` running at once; results in order."""
    gate = asyncio.Semaphore(limit)

    async def run(job: Awaitable[T]) -> T:
        async with gate:
            return await job

    return await asyncio.gather(*(run(job) for job in jobs))


class AzureAccount:
    """The hub's storage objects in one account. Use it from one event loop."""

    def __init__(self, connection_string: str, names: HubNames, label: str) -> None:
        # The SDKs log every request and response at INFO: a dozen lines per episode.
        logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(
            logging.WARNING
        )
        self.names = names
        self.label = label
        try:
            self._tables = TableServiceClient.from_connection_string(
                connection_string, retry_total=3, retry_backoff_factor=0.2, **_CLIENT_OPTIONS
            )
            self._queues = QueueServiceClient.from_connection_string(
                connection_string,
                retry_policy=QueueRetry(initial_backoff=1, increment_base=2, retry_total=3),
                **_CLIENT_OPTIONS,
            )
            self._blobs = BlobServiceClient.from_connection_string(
                connection_string,
                retry_policy=BlobRetry(initial_backoff=1, increment_base=2, retry_total=3),
                **_CLIENT_OPTIONS,
            )
        except (ValueError, AzureError) as exc:
            raise StoreError(f"invalid Azure Storage connection string: {one_line(exc)}") from None
        self.instances: TableClient = self._tables.get_table_client(names.instances_table)
        self.history: TableClient = self._tables.get_table_client(names.history_table)
        self.timers: TableClient = self._tables.get_table_client(names.timers_table)
        self.control: list[QueueClient] = [
            self._queues.get_queue_client(names.control_queue(p)) for p in range(names.partitions)
        ]
        self.workitems: QueueClient = self._queues.get_queue_client(names.workitem_queue)
        self.leases: ContainerClient = self._blobs.get_container_client(names.leases_container)
        self.payloads: ContainerClient = self._blobs.get_container_client(names.payloads_container)

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Raise service and network errors as one-line `StoreError`s."""
        try:
            yield
        except AzureError as exc:
            raise StoreError(f"task hub {self.label}: {one_line(exc)}") from exc

    async def create_all(self) -> None:
        """Create whatever of the hub does not exist yet (hosts may start together)."""

        async def create(job: Awaitable[Any]) -> None:
            with contextlib.suppress(ResourceExistsError):
                await job

        with self.errors():
            await bounded(
                [
                    *(
                        create(t.create_table())
                        for t in (self.instances, self.history, self.timers)
                    ),
                    *(create(q.create_queue()) for q in (*self.control, self.workitems)),
                    create(self.leases.create_container()),
                    create(self.payloads.create_container()),
                ]
            )

    async def close(self) -> None:
        for client in (self._tables, self._queues, self._blobs):
            with contextlib.suppress(Exception):
                await client.close()

    # --- payload blobs -------------------------------------------------------------------
    async def put_payload(self, name: str, text: str) -> None:
        await self.payloads.upload_blob(name, text.encode("utf-8"), overwrite=True)

    async def get_payload(self, name: str) -> str:
        """Raises StoreError naming the blob if it is gone."""
        try:
            stream = await self.payloads.download_blob(name)
            data = await stream.readall()
        except ResourceNotFoundError:
            raise StoreError(f"task hub {self.label}: payload blob {name!r} is missing") from None
        return data.decode("utf-8")

    async def delete_payloads(self, names: Iterable[str]) -> None:
        """Best effort: a payload left behind is garbage, never read again."""

        async def delete(name: str) -> None:
            with contextlib.suppress(ResourceNotFoundError):
                await self.payloads.delete_blob(name)

        try:
            await bounded(delete(name) for name in names)
        except AzureError as exc:
            log.warning("dfhost: could not delete payload blobs in %s: %s", self.label, exc)

    async def delete_payload_prefix(self, prefix: str) -> None:
        try:
            names = [b.name async for b in self.payloads.list_blobs(name_starts_with=prefix)]
        except AzureError as exc:
            log.warning("dfhost: could not list payload blobs in %s: %s", self.label, exc)
            return
        await self.delete_payloads(names)
