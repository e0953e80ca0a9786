"""Timer-trigger records of an Azure Storage task hub: one row per function in the Timers
table, changed only by ETag-conditional writes (read, decide, write if unchanged, else again),
so every claim is atomic across hosts: each occurrence runs once and runs never overlap."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from dfhost.history import format_time, parse_time
from dfhost.store import Claim, TimerStatus
from dfhost.store.azure.codec import decode_key, encode_key

__all__ = ["TimerTable"]

Change = Callable[[dict[str, Any]], "dict[str, Any] | None"]
"""Given the current row ({} if none), the new row, or None to change nothing."""


class TimerTable:
    def __init__(self, table: TableClient) -> None:
        self.table = table

    async def _read(self, function: str) -> Any | None:
        try:
            return await self.table.get_entity(encode_key(function), "")
        except ResourceNotFoundError:
            return None

    async def _change(self, function: str, change: Change) -> dict[str, Any] | None:
        """Apply `change` atomically; returns the row written, or None if it declined."""
        while True:
            current = await self._read(function)
            new = change(dict(current) if current is not None else {})
            if new is None:
                return None
            new["PartitionKey"] = encode_key(function)
            new["RowKey"] = ""
            try:
                if current is None:
                    await self.table.create_entity(new)
                else:
                    await self.table.update_entity(
                        new,
                        mode=UpdateMode.REPLACE,
                        etag=current.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
            except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
                continue  # someone else wrote first: decide again on what they wrote
            return new

    async def claim_run(self, function: str, due_at: datetime | None, claim: Claim) -> int | None:
        due = None if due_at is None else format_time(due_at)

        def take(row: dict[str, Any]) -> dict[str, Any] | None:
            if row.get("RunOwner") and str(row.get("RunUntil")) > format_time(claim.now):
                return None
            last = row.get("LastDueAt")
            if due is not None and last and due <= str(last):
                return None
            row.update(
                RunOwner=claim.owner,
                RunUntil=format_time(claim.lease_until),
                RunToken=int(row.get("RunToken") or 0) + 1,
            )
            if due is not None:
                row["LastDueAt"] = due
            return row

        written = await self._change(function, take)
        return None if written is None else int(written["RunToken"])

    def _held(self, row: dict[str, Any], owner: str, token: int) -> bool:
        return row.get("RunOwner") == owner and int(row.get("RunToken") or 0) == token

    async def renew_run(self, function: str, owner: str, token: int, lease_until: datetime) -> bool:
        def renew(row: dict[str, Any]) -> dict[str, Any] | None:
            if not self._held(row, owner, token):
                return None
            row["RunUntil"] = format_time(lease_until)
            return row

        return await self._change(function, renew) is not None

    async def finish_run(
        self, function: str, owner: str, token: int, status: TimerStatus | None
    ) -> bool:
        def finish(row: dict[str, Any]) -> dict[str, Any] | None:
            if not self._held(row, owner, token):
                return None
            row.pop("RunOwner", None)
            row.pop("RunUntil", None)
            if status is not None:
                _put_status(row, status)
            return row

        return await self._change(function, finish) is not None

    async def get_status(self, function: str) -> TimerStatus | None:
        row = await self._read(function)
        if row is None or not row.get("StatusNext"):
            return None
        last = row.get("StatusLast")
        return TimerStatus(
            last=None if not last else parse_time(str(last)),
            next=parse_time(str(row["StatusNext"])),
            last_updated=parse_time(str(row["StatusUpdated"])),
        )

    async def set_status(self, function: str, status: TimerStatus) -> None:
        def put(row: dict[str, Any]) -> dict[str, Any]:
            _put_status(row, status)
            return row

        await self._change(function, put)

    async def release_runs(self, is_dead: Callable[[str], bool]) -> None:
        """Free the runs held by owners `is_dead` says are gone."""
        async for row in self.table.query_entities("RunOwner ne ''", select=["PartitionKey"]):
            function = str(row["PartitionKey"])

            def free(current: dict[str, Any]) -> dict[str, Any] | None:
                owner = current.get("RunOwner")
                if not owner or not is_dead(str(owner)):
                    return None
                current.pop("RunOwner", None)
                current.pop("RunUntil", None)
                return current

            await self._change(decode_key(function), free)

    async def owners(self) -> set[str]:
        return {
            str(row["RunOwner"])
            async for row in self.table.query_entities("RunOwner ne ''", select=["RunOwner"])
        }


def _put_status(row: dict[str, Any], status: TimerStatus) -> None:
    row["StatusNext"] = format_time(status.next)
    row["StatusUpdated"] = format_time(status.last_updated)
    if status.last is None:
        row.pop("StatusLast", None)
    else:
        row["StatusLast"] = format_time(status.last)
