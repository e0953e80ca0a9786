"""Everything an Azure Storage task hub sends: new instance rows, control-queue messages, work
items, and the outboxes of committed episodes (delivered after the commit, and again by
whoever finds one left pending: every delivery is idempotent, see `dfhost.store.azure`)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from dfhost.history import TERMINAL_STATUSES, utcnow
from dfhost.store.azure.account import AzureAccount, bounded
from dfhost.store.azure.codec import (
    Envelope,
    InstanceRow,
    OrderClock,
    WorkItem,
    dumps,
    partition_of,
    start_request_from_dict,
    start_request_to_dict,
)
from dfhost.store.azure.instances import InstanceTables
from dfhost.store.azure.queues import ControlInbox, send_text
from dfhost.work import EpisodeOutcome, Message, StartRequest

__all__ = ["Courier"]

log = logging.getLogger(__name__)

_REMEMBERED = 1000


class Courier:
    """Sends for one store. `on_sent(partition)` and `on_work()` say that a control queue or
    the work-item queue got something; `on_replaced(id)` that an instance was replaced."""

    def __init__(
        self,
        account: AzureAccount,
        rows: InstanceTables,
        inbox: ControlInbox,
        on_sent: Callable[[int], None],
        on_work: Callable[[], None],
        on_replaced: Callable[[str], None],
        spawn: Callable[[Awaitable[Any]], None],
    ) -> None:
        self.account = account
        self.rows = rows
        self.inbox = inbox
        self.partitions = account.names.partitions
        self.order = OrderClock()
        self._on_sent = on_sent
        self._on_work = on_work
        self._on_replaced = on_replaced
        self._spawn = spawn
        self._woken: dict[tuple[str, str], None] = {}
        """Instances (id, generation) whose wake-up this process sent: no sweep needed."""

    # --- instances -----------------------------------------------------------------------
    async def create(
        self, request: StartRequest, created_by: str | None, conflict: Envelope | None
    ) -> bool:
        """Create (or replace a finished) instance and wake its partition; False if an
        unfinished one has the id (then `conflict` is sent), or if `created_by` (an outbox
        item) created it already."""
        instance_id = request.instance_id
        while True:
            row = self._new_row(request, created_by)
            try:
                await self.rows.insert(row)
                break
            except ResourceExistsError:
                pass
            existing = await self.rows.read(instance_id)
            if existing is None:
                continue
            if created_by is not None and existing.created_by == created_by:
                return False  # delivered before: this is a redelivery
            if existing.instance.status not in TERMINAL_STATUSES:
                if conflict is not None:
                    await self.send(conflict)
                return False
            row.history_epoch = existing.history_epoch + 1
            try:
                await self.rows.replace(row, existing)
            except (ResourceModifiedError, ResourceNotFoundError):
                continue
            self._on_replaced(instance_id)
            self._spawn(self._forget_generation(existing))
            break
        try:
            await self.send(self.wake(instance_id, request.visible_at))
        except AzureError:
            # The instance exists: it must start. Keep trying in the background (a host
            # taking its partition over would wake it too).
            self._spawn(self._wake_later(instance_id, request.visible_at))
        self._woken[instance_id, row.generation] = None
        while len(self._woken) > _REMEMBERED:
            del self._woken[next(iter(self._woken))]
        return True

    async def _wake_later(self, instance_id: str, at: datetime | None) -> None:
        for attempt in range(30):
            await asyncio.sleep(min(2**attempt, 30))
            try:
                await self.send(self.wake(instance_id, at))
                return
            except AzureError:
                continue

    def _new_row(self, request: StartRequest, created_by: str | None) -> InstanceRow:
        instance = request.pending_instance()
        return InstanceRow(
            instance=instance,
            generation=uuid.uuid4().hex[:16],
            partition=partition_of(request.instance_id, self.partitions),
            start_pending=True,
            scheduled_start=request.visible_at,
            parent_execution_id=request.parent_execution_id,
            parent_task_id=request.parent_task_id,
            created_by=created_by,
            commit=uuid.uuid4().hex,
            trace_context=request.trace_context,
        )

    async def _forget_generation(self, old: InstanceRow) -> None:
        instance_id = old.instance.instance_id
        await self.rows.delete_history(instance_id, below_epoch=old.history_epoch + 1)
        prefix = f"{self.rows.payload_prefix(instance_id)}{old.generation}/"
        await self.account.delete_payload_prefix(prefix)

    # --- control queues ------------------------------------------------------------------
    def wake(self, instance_id: str, at: datetime | None) -> Envelope:
        """A wake-up: its partition's owner looks at the row (for its ExecutionStarted)."""
        return Envelope(
            kind="w",
            id=uuid.uuid4().hex,
            instance_id=instance_id,
            order=self.order.next(),
            visible_at=at,
        )

    def envelope(self, message: Message, id_: str, own: InstanceRow | None = None) -> Envelope:
        """An envelope for `message`; stamped as void once `own` (the target's row) is
        replaced, or, if the message is for one execution, once its epoch moves on."""
        addressed = message.execution_id is not None
        return Envelope(
            kind="m",
            id=id_,
            instance_id=message.instance_id,
            order=self.order.next(),
            visible_at=message.visible_at,
            event=message.event,
            execution_id=message.execution_id,
            generation=None if own is None else own.generation,
            epoch=own.epoch if own is not None and addressed else None,
        )

    async def send(self, envelope: Envelope) -> None:
        partition = partition_of(envelope.instance_id, self.partitions)
        delay = 0.0
        if envelope.visible_at is not None:
            delay = (envelope.visible_at - utcnow()).total_seconds()
            if delay > 0:
                self.inbox.defer(envelope.visible_at, partition)
        blob = f"{self.rows.payload_prefix(envelope.instance_id)}m/{envelope.id}"
        text = dumps(envelope.to_dict())
        await send_text(self.account, self.account.control[partition], text, blob, delay)
        self._on_sent(partition)

    # --- outboxes ------------------------------------------------------------------------
    def outbox(self, row: InstanceRow, cid: str, outcome: EpisodeOutcome) -> list[dict[str, Any]]:
        """The outcome's work and messages as outbox items, with ids the same in every
        delivery; what the instance sends itself is stamped with its new epoch."""
        items: list[dict[str, Any]] = []
        for i, task in enumerate(outcome.activities):
            item = WorkItem(
                id=f"{cid}.a{i}",
                instance_id=task.instance_id,
                execution_id=task.execution_id,
                task_scheduled_id=task.task_scheduled_id,
                name=task.name,
                input=task.input,
                scheduled_at=task.scheduled_at,
                generation=row.generation,
                epoch=row.epoch,
                order=self.order.next(),
            )
            items.append({"k": "w", "w": item.to_dict()})
        for i, message in enumerate(outcome.messages):
            own = row if message.instance_id == row.instance.instance_id else None
            envelope = self.envelope(message, f"{cid}.m{i}", own)
            items.append({"k": "m", "e": envelope.to_dict()})
        for i, request in enumerate(outcome.starts):
            conflict = None
            if request.on_conflict is not None:
                conflict = self.envelope(request.on_conflict, f"{cid}.s{i}c").to_dict()
            entry = {"k": "s", "i": f"{cid}.s{i}", "r": start_request_to_dict(request)}
            items.append({**entry, "c": conflict})
        return items

    async def deliver(self, row: InstanceRow, items: Sequence[dict[str, Any]]) -> None:
        """Send an outbox: work items, and meanwhile new instances, then messages (a message
        to an instance started by the same episode must find its row)."""

        async def send_work(entry: dict[str, Any]) -> None:
            work = WorkItem.from_dict(entry)
            blob = f"{self.rows.payload_prefix(work.instance_id)}{row.generation}/w/{work.id}"
            await send_text(self.account, self.account.workitems, dumps(entry), blob)
            self._on_work()

        async def deliver(item: dict[str, Any]) -> None:
            if item.get("k") == "m":
                await self.send(Envelope.from_dict(item["e"]))
            elif item.get("k") == "s":
                conflict = None if item.get("c") is None else Envelope.from_dict(item["c"])
                request = start_request_from_dict(item["r"])
                await self.create(request, str(item["i"]), conflict)

        async def send_rest() -> None:
            await bounded(deliver(i) for i in items if i.get("k") == "s")
            await bounded(deliver(i) for i in items if i.get("k") == "m")

        work = [item["w"] for item in items if item.get("k") == "w"]
        try:
            await asyncio.gather(bounded(send_work(w) for w in work), send_rest())
        except (ValueError, KeyError, TypeError) as exc:
            log.error(
                "dfhost: dropping an unreadable outbox of %r: %s", row.instance.instance_id, exc
            )

    async def mark_delivered(self, row: InstanceRow) -> None:
        done = dataclasses.replace(row, pending_outbox="", commit=uuid.uuid4().hex)
        try:
            await self.rows.replace(done, row)
        except (ResourceModifiedError, ResourceNotFoundError):
            return  # changed meanwhile; a redelivery is deduped
        row.pending_outbox, row.commit, row.etag = "", done.commit, done.etag

    async def deliver_pending(self, row: InstanceRow) -> None:
        """Deliver the outbox a crashed or interrupted commit left (again: deduped)."""
        items = await self.rows.read_outbox(row.instance.instance_id, row.pending_outbox)
        await self.deliver(row, items)
        await self.mark_delivered(row)

    async def recover(self, partitions: list[int]) -> None:
        """Partitions newly ours: finish what a previous owner may have left half done."""
        rows = await self.rows.unfinished_business(partitions)
        await bounded(self.deliver_pending(row) for row in rows if row.pending_outbox)
        await bounded(
            self.send(self.wake(row.instance.instance_id, row.scheduled_start))
            for row in rows
            if row.start_pending and (row.instance.instance_id, row.generation) not in self._woken
        )
