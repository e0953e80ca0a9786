"""Instance rows and histories of the Azure Storage task hub (the Instances and History tables).

An instance's row (Instances table, partition key = the encoded instance id) is its state and
the commit point of its episodes. Its history is a chain of chunks in the History table, one
per episode, in the instance's partition: row key `EEEEEE.SSSSSSSS.CID` (history epoch, sequence
number, a per-write id) and a `Prev` pointer. A chunk is written before the row that makes it
current (`HistoryHead`), so a chunk left by a writer whose row update failed is on no chain and
is never read. Each chunk also holds the episode's outbox (the work and messages it produced).
Texts too long for a property live in payload blobs under `<encoded id>/`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from dfhost.history import (
    HistoryEvent,
    Instance,
    OrchestrationStatus,
    format_time,
    parse_time,
)
from dfhost.store import InstancePage, InstanceQuery
from dfhost.store import query as listing
from dfhost.store.azure.account import AzureAccount, bounded
from dfhost.store.azure.codec import (
    BIG_FIELDS,
    PART_CHARS,
    InstanceRow,
    decode_key,
    dumps,
    encode_key,
    join_parts,
    row_entity,
    row_from_entity,
    split_parts,
)

__all__ = ["Chunk", "InstanceTables", "chunk_key"]

log = logging.getLogger(__name__)

_CHUNK_PARTS = 12
"""A chunk keeps up to this many property parts (360,000 characters); longer ones go to a blob."""
_BATCH = 100
"""Operations per entity-group transaction (the service's limit)."""
_LIST_COLUMNS = [
    *("PartitionKey", "Name", "ExecutionId", "Status", "CreatedAt", "LastUpdatedAt", "Tags"),
    *("Version", "ParentInstanceId", "Generation", "Partition", "Input", "Output"),
    *("CustomStatus", "FailureDetails", "InputBlob", "OutputBlob", "CustomStatusBlob"),
    "FailureDetailsBlob",
]


def chunk_key(history_epoch: int, seq: int, cid: str) -> str:
    return f"{history_epoch:06d}.{seq:08d}.{cid}"


def _epoch_range(history_epoch: int) -> tuple[str, str]:
    return f"{history_epoch:06d}.", f"{history_epoch:06d}/"


class Chunk:
    """One history chunk as written: its events and outbox items."""

    def __init__(self, events: Sequence[HistoryEvent], outbox: Sequence[dict[str, Any]]):
        self.events = list(events)
        self.outbox = list(outbox)

    def document(self) -> str:
        return dumps({"e": [e.to_dict() for e in self.events], "o": self.outbox})


class InstanceTables:
    """Reads and writes instance rows and history chunks. Methods raise the SDK's errors;
    the store converts them."""

    def __init__(self, account: AzureAccount) -> None:
        self.account = account

    @staticmethod
    def payload_prefix(instance_id: str) -> str:
        return f"{encode_key(instance_id)}/"

    # --- rows ----------------------------------------------------------------------------
    async def read(self, instance_id: str) -> InstanceRow | None:
        try:
            entity = await self.account.instances.get_entity(encode_key(instance_id), "")
        except ResourceNotFoundError:
            return None
        row, blob_fields = row_from_entity(entity)
        if blob_fields:
            texts = await bounded(self.account.get_payload(b) for b in blob_fields.values())
            updates: dict[str, Any] = dict(zip(blob_fields, texts, strict=True))
            row.instance = replace(row.instance, **updates)
            row.blobs = {f: (blob_fields[f], updates[f]) for f in blob_fields}
        return row

    async def _entity(self, row: InstanceRow) -> tuple[dict[str, Any], dict[str, tuple[str, str]]]:
        """The row's entity, uploading big fields that changed; and the row's new blobs."""
        blobs: dict[str, tuple[str, str]] = {}
        for name in BIG_FIELDS:
            text = getattr(row.instance, name)
            if text is None or len(text) <= PART_CHARS:
                continue
            old = row.blobs.get(name)
            if old is not None and old[1] == text:
                blobs[name] = old
                continue
            blob = f"{self.payload_prefix(row.instance.instance_id)}{row.generation}/f/{name}-"
            blob += uuid.uuid4().hex[:12]
            await self.account.put_payload(blob, text)
            blobs[name] = (blob, text)
        entity = row_entity(row, {name: blob for name, (blob, _) in blobs.items()})
        return entity, blobs

    def _stale_blobs(self, old: InstanceRow, blobs: dict[str, tuple[str, str]]) -> list[str]:
        kept = {blob for blob, _ in blobs.values()}
        return [blob for blob, _ in old.blobs.values() if blob not in kept]

    async def insert(self, row: InstanceRow) -> None:
        """Create the row; raises ResourceExistsError if the id is taken. Sets `row.etag`."""
        entity, blobs = await self._entity(row)
        result = await self.account.instances.create_entity(entity)
        row.etag = str(result.get("etag") or "")
        row.blobs = blobs

    async def replace(self, row: InstanceRow, old: InstanceRow) -> None:
        """Overwrite `old`'s row with `row` if it has not changed since `old` was read.

        Raises ResourceModifiedError or ResourceNotFoundError otherwise. Sets `row.etag`.
        """
        entity, blobs = await self._entity(row)
        result = await self.account.instances.update_entity(
            entity,
            mode=UpdateMode.REPLACE,
            etag=old.etag,
            match_condition=MatchConditions.IfNotModified,
        )
        row.etag = str(result.get("etag") or "")
        row.blobs = blobs
        if old.generation == row.generation:
            stale = self._stale_blobs(old, blobs)
            if stale:
                await self.account.delete_payloads(stale)

    # --- history -------------------------------------------------------------------------
    async def write_chunk(self, row: InstanceRow, key: str, prev: str, chunk: Chunk) -> None:
        """Write a chunk that `row` will point to (not current until the row is written)."""
        instance_id = row.instance.instance_id
        document = chunk.document()
        entity: dict[str, Any] = {
            "PartitionKey": encode_key(instance_id),
            "RowKey": key,
            "Prev": prev,
            "Events": len(chunk.events),
        }
        parts = split_parts("D", document, _CHUNK_PARTS)
        if parts is None:
            blob = f"{self.payload_prefix(instance_id)}{row.generation}/h/{key}"
            await self.account.put_payload(blob, document)
            entity["Blob"] = blob
        else:
            entity.update(parts)
        await self.account.history.upsert_entity(entity, mode=UpdateMode.REPLACE)

    async def _chunk_document(self, entity: Any) -> dict[str, Any]:
        blob = entity.get("Blob")
        text = await self.account.get_payload(str(blob)) if blob else join_parts(entity, "D")
        data = json.loads(text or "")
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data

    async def read_history(self, row: InstanceRow) -> tuple[list[HistoryEvent], str | None]:
        """The current history along the chain from `row.history_head`, or ([], why)."""
        if not row.history_head:
            return [], None
        instance_id = row.instance.instance_id
        low, high = _epoch_range(row.history_epoch)
        entities = {
            str(e["RowKey"]): e
            async for e in self.account.history.query_entities(
                "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                parameters={"pk": encode_key(instance_id), "low": low, "high": high},
            )
        }
        chain: list[Any] = []
        key = row.history_head
        while key:
            entity = entities.get(key)
            if entity is None:
                return [], (
                    f"instance {instance_id!r} execution {row.instance.execution_id!r}: "
                    f"history chunk {key} is missing"
                )
            chain.append(entity)
            key = str(entity.get("Prev") or "")
        events: list[HistoryEvent] = []
        for entity in reversed(chain):
            try:
                document = await self._chunk_document(entity)
                events.extend(HistoryEvent.from_dict(e) for e in document.get("e", []))
            except (ValueError, TypeError, AttributeError) as exc:
                return [], (
                    f"instance {instance_id!r} execution {row.instance.execution_id!r}: "
                    f"history chunk {entity['RowKey']} is not valid: {exc}"
                )
        return events, None

    async def read_outbox(self, instance_id: str, key: str) -> list[dict[str, Any]]:
        """The outbox of a chunk ([] if the chunk is gone: its instance was purged)."""
        try:
            entity = await self.account.history.get_entity(encode_key(instance_id), key)
        except ResourceNotFoundError:
            return []
        try:
            outbox = (await self._chunk_document(entity)).get("o", [])
        except (ValueError, TypeError) as exc:
            log.error("dfhost: outbox of %r chunk %s is unreadable: %s", instance_id, key, exc)
            return []
        return [item for item in outbox if isinstance(item, dict)]

    async def delete_history(self, instance_id: str, below_epoch: int | None = None) -> None:
        """Delete the instance's history chunks (those of epochs below `below_epoch` only, if
        given) and their payload blobs."""
        pk = encode_key(instance_id)
        query = "PartitionKey eq @pk"
        parameters: dict[str, Any] = {"pk": pk}
        if below_epoch is not None:
            query += " and RowKey lt @high"
            parameters["high"] = f"{below_epoch:06d}."
        entities = [
            e
            async for e in self.account.history.query_entities(
                query, parameters=parameters, select=["PartitionKey", "RowKey", "Blob"]
            )
        ]
        blobs = [str(e["Blob"]) for e in entities if e.get("Blob")]
        batches = [entities[i : i + _BATCH] for i in range(0, len(entities), _BATCH)]
        await bounded(
            self.account.history.submit_transaction([("delete", e) for e in batch])
            for batch in batches
        )
        if blobs:
            await self.account.delete_payloads(blobs)

    # --- purge ---------------------------------------------------------------------------
    async def purge(
        self, instance_id: str, keep: Callable[[InstanceRow], bool] | None = None
    ) -> int:
        """Delete the instance's row, then its history and payloads; 0 if there was none
        (or `keep(row)` said to leave it)."""
        pk = encode_key(instance_id)
        while True:
            row = await self.read(instance_id)
            if row is None or (keep is not None and keep(row)):
                return 0
            try:
                await self.account.instances.delete_entity(
                    pk, "", etag=row.etag, match_condition=MatchConditions.IfNotModified
                )
            except ResourceModifiedError:
                continue  # changed meanwhile: look again
            except ResourceNotFoundError:
                return 0
            break
        await self.delete_history(instance_id)
        await self.account.delete_payload_prefix(self.payload_prefix(instance_id))
        return 1

    # --- queries -------------------------------------------------------------------------
    async def scan(self, query: InstanceQuery, select: list[str] | None = None) -> list[Any]:
        """Every row matching the filters (unordered)."""
        text, parameters = _filter(query)
        table = self.account.instances
        if text:
            pages = table.query_entities(text, parameters=parameters, select=select)
        else:
            pages = table.list_entities(select=select)
        return [entity async for entity in pages]

    async def query(self, query: InstanceQuery) -> InstancePage:
        """One page, sorted here: the table knows no order but its keys'."""
        after = None
        if query.continuation is not None:
            created_at, instance_id = listing.decode_continuation(query.continuation)
            after = (format_time(created_at), instance_id)
        rows = await self.scan(query, _LIST_COLUMNS)
        keys = sorted(
            ((str(e["CreatedAt"]), decode_key(str(e["PartitionKey"])), e) for e in rows),
            key=lambda k: (_descending(k[0]), k[1]),
        )
        if after is not None:
            keys = [k for k in keys if k[0] < after[0] or (k[0] == after[0] and k[1] > after[1])]
        wanted = keys[: listing.page_size(query) + 1]
        instances = await bounded(self._listed(entity) for _, _, entity in wanted)
        return listing.page(instances, query)

    async def _listed(self, entity: Any) -> Instance:
        row, blob_fields = row_from_entity({"Partition": 0, **entity})
        if not blob_fields:
            return row.instance
        texts = await bounded(self.account.get_payload(b) for b in blob_fields.values())
        updates: dict[str, Any] = dict(zip(blob_fields, texts, strict=True))
        return replace(row.instance, **updates)

    async def count(self, query: InstanceQuery) -> int:
        return len(await self.scan(query, ["PartitionKey"]))

    async def status_counts(self) -> dict[tuple[str, OrchestrationStatus], int]:
        """How many instances of each name are in each status: one scan of two columns (paging
        with `query` scans the whole table once per page)."""
        counts: dict[tuple[str, OrchestrationStatus], int] = {}
        for e in await self.scan(InstanceQuery(), ["Name", "Status"]):
            key = (str(e["Name"]), OrchestrationStatus(e["Status"]))
            counts[key] = counts.get(key, 0) + 1
        return counts

    async def ids(self, query: InstanceQuery) -> list[str]:
        return [
            decode_key(str(e["PartitionKey"])) for e in await self.scan(query, ["PartitionKey"])
        ]

    async def finished_before(
        self, status: OrchestrationStatus, before: datetime
    ) -> list[tuple[str, str]]:
        """(finished at, id) of instances in `status` last updated before `before`."""
        rows = [
            e
            async for e in self.account.instances.query_entities(
                "Status eq @status and LastUpdatedAt lt @before",
                parameters={"status": status.value, "before": format_time(before)},
                select=["PartitionKey", "LastUpdatedAt"],
            )
        ]
        return sorted((str(e["LastUpdatedAt"]), decode_key(str(e["PartitionKey"]))) for e in rows)

    async def oldest_finished(self, status: OrchestrationStatus) -> datetime | None:
        times = [
            str(e["LastUpdatedAt"])
            async for e in self.account.instances.query_entities(
                "Status eq @status", parameters={"status": status.value}, select=["LastUpdatedAt"]
            )
        ]
        return parse_time(min(times)) if times else None

    async def unfinished_business(self, partitions: Sequence[int]) -> list[InstanceRow]:
        """Rows of `partitions` with an outbox to deliver or a start to wake up for."""
        rows: list[InstanceRow] = []
        async for entity in self.account.instances.query_entities(
            "PendingOutbox ne '' or StartPending eq true"
        ):
            row, blob_fields = row_from_entity(entity)
            if row.partition not in partitions:
                continue
            if blob_fields:  # the payloads matter to the episode, not to this sweep
                read = await self.read(row.instance.instance_id)
                if read is None:
                    continue
                row = read
            rows.append(row)
        return rows


def _descending(text: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in text)


def _filter(query: InstanceQuery) -> tuple[str, dict[str, Any]]:
    clauses: list[str] = []
    parameters: dict[str, Any] = {}
    if query.created_from is not None:
        clauses.append("CreatedAt ge @cfrom")
        parameters["cfrom"] = format_time(query.created_from)
    if query.created_to is not None:
        clauses.append("CreatedAt le @cto")
        parameters["cto"] = format_time(query.created_to)
    if query.statuses:
        names = []
        for i, status in enumerate(query.statuses):
            parameters[f"s{i}"] = OrchestrationStatus(status).value
            names.append(f"Status eq @s{i}")
        # Spaces around the parentheses: the SDK finds @parameters by splitting on spaces.
        clauses.append(f"( {' or '.join(names)} )")
    if query.instance_id_prefix:
        low = encode_key(query.instance_id_prefix)
        clauses.append("PartitionKey ge @plow")
        parameters["plow"] = low
        high = listing.prefix_upper_bound(low)
        if high is not None:
            clauses.append("PartitionKey lt @phigh")
            parameters["phigh"] = high
    if query.name is not None:
        clauses.append("Name eq @name")
        parameters["name"] = query.name
    return " and ".join(clauses), parameters
