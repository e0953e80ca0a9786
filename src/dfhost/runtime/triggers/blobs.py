"""Blob Storage triggers: new and updated blobs whose names match the trigger's `path`.

The container is scanned every `extensions.blobs.dfhost.pollingInterval` (Azure's standard
trigger scans too). Each blob version (its ETag) runs once, across every host of the app, by
way of a receipt blob, as the extension keeps them: `azure-webjobs-hosts/blobreceipts/
{hostId}/{functionId}/{etag}/{container}/{blob}`. A host takes the receipt's lease before it
runs the function, marks the receipt complete after success, and leaves it incomplete after a
failure, so the next scan (on any host) tries again, up to `extensions.queues.maxDequeueCount`
times; then a message goes to the `webjobs-blobtrigger-poison` queue, as in Azure. A host
that dies mid-run loses its lease: the blob runs again elsewhere. At most
`maxDegreeOfParallelism` blobs run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from typing import Any

from dfhost.app.bindings import BlobPathPattern, TriggerData
from dfhost.app.functions import Function
from dfhost.config import BlobSettings, QueueSettings, expand_app_settings
from dfhost.runtime.shutdown import finish_within
from dfhost.runtime.triggers.bindings_io import encode_queue_message
from dfhost.runtime.triggers.connections import Connections
from dfhost.runtime.triggers.invoker import TriggerInvoker
from dfhost.runtime.triggers.listener import Listener
from dfhost.runtime.triggers.stats import TRIGGER_STATS

__all__ = ["BlobListener"]

log = logging.getLogger("dfhost.triggers")

HOSTS_CONTAINER = "azure-webjobs-hosts"
POISON_QUEUE = "webjobs-blobtrigger-poison"
_INCOMPLETE = "Incomplete"
_TRIES = "DequeueCount"


class BlobListener(Listener):
    """Runs one blob-triggered function."""

    def __init__(
        self,
        function: Function,
        invoker: TriggerInvoker,
        connections: Connections,
        settings: BlobSettings,
        queues: QueueSettings,
        host_id: str,
    ) -> None:
        super().__init__(function)
        self.invoker = invoker
        self.settings = settings
        self.queues = queues
        raw = str(function.trigger.settings.get("path") or "")
        if not raw:
            raise ValueError('has no "path" (container/{name})')
        try:
            self.pattern = BlobPathPattern.parse(expand_app_settings(raw))
        except KeyError as exc:
            raise ValueError(
                f"path {raw!r} uses app setting {exc.args[0]!r}, which is not set"
            ) from None
        connection = function.trigger.settings.get("connection")
        service = connections.blob_service(str(connection) if connection else None)
        self.container = service.get_container_client(self.pattern.container)
        self.hosts = service.get_container_client(HOSTS_CONTAINER)
        self.poison = connections.queue_service(
            str(connection) if connection else None
        ).get_queue_client(POISON_QUEUE)
        self.receipts = f"blobreceipts/{host_id}/Host.Functions.{function.name}"
        self._done: dict[str, str] = {}
        """Blob name -> the ETag whose receipt is complete: not looked at again."""
        self._active: dict[str, asyncio.Task[None]] = {}
        self._gate = asyncio.Semaphore(settings.max_degree_of_parallelism)

    def describe(self) -> str:
        return f"blobs '{self.pattern.container}/{self.pattern.blob_pattern}'"

    async def run(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        for container in (self.container, self.hosts):
            with contextlib.suppress(ResourceExistsError):
                await container.create_container()
        while True:
            try:
                await self._scan()
            except Exception as exc:
                self.report_error("could not scan the container", exc)
            await asyncio.sleep(self.settings.polling_interval)

    async def _scan(self) -> None:
        async for blob in self.container.list_blobs(
            name_starts_with=self.pattern.prefix or None, include=["metadata"]
        ):
            values = self.pattern.match(blob.name)
            etag = str(blob.etag).strip('"')
            if values is None or self._done.get(blob.name) == etag or blob.name in self._active:
                continue
            await self._gate.acquire()  # at most maxDegreeOfParallelism at once
            task = asyncio.create_task(self._try(blob, etag, values))
            self._active[blob.name] = task
            task.add_done_callback(functools.partial(self._end, blob.name))

    def _end(self, name: str, _: object) -> None:
        self._active.pop(name, None)
        self._gate.release()

    async def drain(self, grace: float) -> None:
        await finish_within(list(self._active.values()), grace)

    # --- one blob version ----------------------------------------------------------------
    async def _try(self, blob: Any, etag: str, values: dict[str, str]) -> None:
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        receipt = self.hosts.get_blob_client(
            f"{self.receipts}/{etag}/{self.pattern.container}/{blob.name}"
        )
        try:
            with contextlib.suppress(ResourceExistsError):
                await receipt.upload_blob(
                    b"", overwrite=False, metadata={_INCOMPLETE: "true", _TRIES: "0"}
                )
            if not await self._incomplete(receipt):
                self._done[blob.name] = etag  # ran before (this host's restart, or another)
                return
            try:
                lease = await receipt.acquire_lease(
                    lease_duration=round(self.settings.receipt_lease)
                )
            except HttpResponseError as exc:
                if exc.status_code == 409:
                    return  # another host runs it now
                raise
        except Exception as exc:
            self.report_error(f"could not take the receipt of blob {blob.name!r}", exc)
            return
        renewal = asyncio.create_task(self._renew(lease))
        try:
            await self._run_leased(blob, etag, values, receipt, lease)
        except Exception as exc:
            self.report_error(f"could not record the receipt of blob {blob.name!r}", exc)
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
            with contextlib.suppress(Exception):
                await lease.release()

    async def _run_leased(
        self, blob: Any, etag: str, values: dict[str, str], receipt: Any, lease: Any
    ) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        metadata = await self._receipt_metadata(receipt)
        if metadata.get(_INCOMPLETE.lower()) != "true":
            self._done[blob.name] = etag  # completed meanwhile, here or on another host
            return
        tries = int(metadata.get(_TRIES.lower(), "0") or 0) + 1
        await receipt.set_blob_metadata({_INCOMPLETE: "true", _TRIES: str(tries)}, lease=lease)
        client = self.container.get_blob_client(blob.name)
        try:
            download = await client.download_blob(
                etag=f'"{etag}"', match_condition=MatchConditions.IfNotModified
            )
            data = await download.readall()
        except (ResourceModifiedError, ResourceNotFoundError):
            # Replaced or deleted since the scan: the new version has a receipt of its own.
            await receipt.set_blob_metadata({}, lease=lease)
            self._done[blob.name] = etag
            return
        properties = download.properties
        path = f"{self.pattern.container}/{blob.name}"
        trigger_metadata: dict[str, Any] = {
            "BlobTrigger": path,
            "Uri": client.url,
            "Properties": {
                "ContentLength": properties.size,
                "ContentType": properties.content_settings.content_type,
                "ETag": etag,
                "LastModified": properties.last_modified.isoformat()
                if properties.last_modified
                else None,
            },
            "Metadata": dict(properties.metadata or {}),
            **values,
        }
        reason = f"New blob detected(LogsAndContainerScan): {path}"
        try:
            await self.invoker.invoke(
                self.function, TriggerData(data, "bytes", trigger_metadata), reason
            )
        except Exception:
            if tries < self.queues.max_dequeue_count:
                return  # the receipt stays incomplete: the next scan tries again
            await self._poison(blob.name, etag)
        await receipt.set_blob_metadata({}, lease=lease)
        self._done[blob.name] = etag

    @staticmethod
    async def _receipt_metadata(receipt: Any) -> dict[str, str]:
        properties = await receipt.get_blob_properties()
        return {str(k).lower(): str(v) for k, v in (properties.metadata or {}).items()}

    async def _incomplete(self, receipt: Any) -> bool:
        return (await self._receipt_metadata(receipt)).get(_INCOMPLETE.lower()) == "true"

    async def _poison(self, name: str, etag: str) -> None:
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            await self.poison.create_queue()
        message = {
            "Type": "BlobTrigger",
            "FunctionId": f"Host.Functions.{self.function.name}",
            "BlobType": "BlockBlob",
            "ContainerName": self.pattern.container,
            "BlobName": name,
            "ETag": etag,
        }
        await self.poison.send_message(
            encode_queue_message(json.dumps(message), self.queues.message_encoding)
        )
        TRIGGER_STATS.poisoned(self.function.name, self.function.trigger.type)
        log.warning(
            "dfhost: function '%s': blob '%s/%s' failed %d times; a message about it went to "
            "queue '%s'",
            self.function.name,
            self.pattern.container,
            name,
            self.queues.max_dequeue_count,
            POISON_QUEUE,
        )

    async def _renew(self, lease: Any) -> None:
        while True:
            await asyncio.sleep(self.settings.receipt_lease / 3)
            try:
                await lease.renew()
            except Exception as exc:
                self.report_error("could not renew a receipt's lease", exc)
