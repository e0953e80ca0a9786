"""Queue messages a host holds: control-queue messages of the partitions it owns, and the
work items (activities) it runs.

A received message stays invisible to everyone else while this host holds it: a keeper
extends its visibility timeout before it runs out, for as long as the process lives. When the
process dies, the message reappears after its visibility timeout and another host takes it;
consumers dedupe (see `dfhost.store.azure`), so it is processed once. Messages whose time is
far off (durable timers) are not held: they go back to the queue, hidden until their time.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.storage.queue import QueueMessage
from azure.storage.queue.aio import QueueClient

from dfhost.history import utcnow
from dfhost.store.azure.account import MAX_VISIBILITY, AzureAccount, bounded
from dfhost.store.azure.codec import Envelope, WorkItem, dumps

__all__ = ["ControlInbox", "Held", "HeldTask", "QueueHandle", "WorkItems", "send_text"]

log = logging.getLogger(__name__)

QUEUE_INLINE = 48_000
"""Longer queue texts go to a payload blob (a queue message holds 64 KiB)."""
DEFER_AFTER = 60.0
"""Seconds: a received message due later than this goes back to its queue until then."""
_PAGE = 32
"""Messages per receive: the service's maximum."""


async def send_text(
    account: AzureAccount, queue: QueueClient, text: str, blob: str, delay: float = 0
) -> None:
    """Enqueue `text` (through payload blob `blob` if it is too long), hidden for `delay`
    seconds, rounded down: consumers hold what is not due yet, and a message shown late would
    make its timer late. Messages never expire: a timer may wait longer than a week."""
    if len(text) > QUEUE_INLINE:
        await account.put_payload(blob, text)
        text = dumps({"b": blob})
    hidden = max(0, min(int(delay), MAX_VISIBILITY))
    await queue.send_message(text, visibility_timeout=hidden or None, time_to_live=-1)


@dataclass(eq=False, slots=True, kw_only=True)
class QueueHandle:
    """What deleting or hiding a received message needs; its receipt changes on update."""

    queue: QueueClient
    message_id: str
    receipt: str
    hidden_until: float
    """time.monotonic() when the service shows it again."""
    blob: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def extend(self, seconds: int) -> bool:
        """Hide it `seconds` more; False if it is no longer ours."""
        async with self.lock:
            try:
                receipt = await self.queue.update_message(
                    self.message_id, pop_receipt=self.receipt, visibility_timeout=seconds
                )
            except (ResourceNotFoundError, HttpResponseError) as exc:
                if isinstance(exc, HttpResponseError) and exc.status_code not in (400, 404):
                    raise
                return False
            self.receipt = str(receipt.pop_receipt)
            self.hidden_until = time.monotonic() + seconds
            return True

    async def delete(self) -> None:
        async with self.lock:
            try:
                await self.queue.delete_message(self.message_id, pop_receipt=self.receipt)
            except (ResourceNotFoundError, HttpResponseError) as exc:
                if isinstance(exc, HttpResponseError) and exc.status_code not in (400, 404):
                    raise


async def _received_text(
    account: AzureAccount, message: QueueMessage
) -> tuple[dict[str, Any], str | None]:
    """The message's JSON object (read from its payload blob if it has one), and the blob."""
    data = json.loads(str(message.content))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    blob = data.get("b")
    if blob is None:
        return data, None
    data = json.loads(await account.get_payload(str(blob)))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data, str(blob)


async def _receive(queue: QueueClient, count: int, visibility: int) -> list[QueueMessage]:
    pages = queue.receive_messages(
        messages_per_page=min(_PAGE, count), max_messages=count, visibility_timeout=visibility
    )
    return [message async for message in pages]


@dataclass(eq=False, slots=True, kw_only=True)
class Held:
    """A control-queue message held by this host."""

    envelope: Envelope
    number: int
    """The `message_id` the engine sees."""
    partition: int
    handle: QueueHandle


class ControlInbox:
    """The control-queue messages of the partitions this host owns, by instance."""

    def __init__(
        self,
        account: AzureAccount,
        visibility: int,
        numbers: Iterator[int],
        limit_per_partition: int = 2000,
    ) -> None:
        self.account = account
        self.visibility = visibility
        self.numbers = numbers
        self.limit = limit_per_partition
        self.held: dict[str, dict[str, Held]] = {}
        self._deferred: list[tuple[datetime, int]] = []
        self._receiving = [asyncio.Lock() for _ in account.control]

    def __iter__(self) -> Iterator[Held]:
        return itertools.chain.from_iterable(list(m.values()) for m in list(self.held.values()))

    def count(self, partition: int) -> int:
        return sum(1 for h in self if h.partition == partition)

    # --- receiving -----------------------------------------------------------------------
    async def ingest(self, partitions: Iterable[int]) -> int:
        """Receive what is visible in these partitions' queues; returns how many are new.

        Shielded: a receive the service has answered must be recorded even if the caller is
        cancelled (a host stopping), or its messages would stay hidden for a timeout."""
        jobs = [self._ingest(p) for p in partitions]
        counts = await asyncio.shield(asyncio.gather(*jobs))
        return sum(counts)

    async def _ingest(self, partition: int) -> int:
        queue = self.account.control[partition]
        new = 0
        async with self._receiving[partition]:
            while self.count(partition) < self.limit:
                messages = await _receive(queue, _PAGE, self.visibility)
                accepted = await asyncio.gather(
                    *(self._accept(partition, queue, m) for m in messages)
                )
                new += sum(accepted)
                if len(messages) < _PAGE:
                    break
        return new

    async def _accept(self, partition: int, queue: QueueClient, message: QueueMessage) -> bool:
        handle = QueueHandle(
            queue=queue,
            message_id=str(message.id),
            receipt=str(message.pop_receipt),
            hidden_until=time.monotonic() + self.visibility,
        )
        try:
            data, handle.blob = await _received_text(self.account, message)
            envelope = Envelope.from_dict(data)
        except (ValueError, TypeError) as exc:
            # It can never be read: keeping it would only bring it back forever.
            log.error("dfhost: dropping an unreadable control message in %s: %s", queue, exc)
            await handle.delete()
            return False
        mine = self.held.setdefault(envelope.instance_id, {})
        known = mine.get(envelope.id)
        if known is not None:  # it came back (our hold lapsed): keep the newest receipt
            known.handle = handle
            return False
        if envelope.visible_at is not None:
            wait = (envelope.visible_at - utcnow()).total_seconds()
            if wait > DEFER_AFTER:
                hidden = min(int(wait), MAX_VISIBILITY)
                if not mine:
                    del self.held[envelope.instance_id]
                if await handle.extend(hidden):
                    heapq.heappush(self._deferred, (envelope.visible_at, partition))
                return False
        mine[envelope.id] = Held(
            envelope=envelope, number=next(self.numbers), partition=partition, handle=handle
        )
        return True

    def defer(self, due: datetime, partition: int) -> None:
        """Remember that a message of `partition` falls due at `due` (see `next_deferred`)."""
        heapq.heappush(self._deferred, (due, partition))

    def next_deferred(self, now: datetime) -> datetime | None:
        while self._deferred and self._deferred[0][0] <= now:
            heapq.heappop(self._deferred)
        return self._deferred[0][0] if self._deferred else None

    def due_partitions(self, now: datetime) -> set[int]:
        """Partitions with a deferred message due by `now` (forgotten once reported)."""
        due: set[int] = set()
        while self._deferred and self._deferred[0][0] <= now:
            due.add(heapq.heappop(self._deferred)[1])
        return due

    # --- reading -------------------------------------------------------------------------
    def visible(self, instance_id: str, now: datetime) -> list[Held]:
        items = self.held.get(instance_id, {}).values()
        found = [h for h in items if h.envelope.visible_at is None or h.envelope.visible_at <= now]
        return sorted(found, key=lambda h: (h.envelope.order, h.number))

    def candidates(self, now: datetime, partitions: set[int]) -> list[str]:
        """Instances with a visible message in `partitions`, oldest message first."""
        firsts: list[tuple[int, int, str]] = []
        for instance_id, items in self.held.items():
            visible = [
                (h.envelope.order, h.number)
                for h in items.values()
                if h.partition in partitions
                and (h.envelope.visible_at is None or h.envelope.visible_at <= now)
            ]
            if visible:
                firsts.append((*min(visible), instance_id))
        return [instance_id for *_, instance_id in sorted(firsts)]

    def next_visible(self, now: datetime) -> datetime | None:
        times = [
            h.envelope.visible_at
            for h in self
            if h.envelope.visible_at is not None and h.envelope.visible_at > now
        ]
        return min(times, default=None)

    # --- letting go ----------------------------------------------------------------------
    def forget(self, items: Iterable[Held]) -> list[Held]:
        """Stop holding `items` (those still held are returned)."""
        gone: list[Held] = []
        for held in items:
            mine = self.held.get(held.envelope.instance_id)
            if mine is not None and mine.get(held.envelope.id) is held:
                del mine[held.envelope.id]
                if not mine:
                    del self.held[held.envelope.instance_id]
                gone.append(held)
        return gone

    async def delete(self, items: Iterable[Held]) -> None:
        """Consume `items`: delete them from their queues, and their payload blobs."""
        gone = self.forget(items)
        await bounded(held.handle.delete() for held in gone)
        blobs = [h.handle.blob for h in gone if h.handle.blob]
        if blobs:
            await self.account.delete_payloads(blobs)

    async def release(self, partition: int | None = None) -> None:
        """Hand back held messages (of one partition, or all) for another host to take now."""
        items = [h for h in self if partition is None or h.partition == partition]
        self.forget(items)
        with contextlib.suppress(AzureError):
            await bounded(h.handle.extend(0) for h in items)

    def drop(self, partition: int) -> None:
        """Forget a lost partition's messages (they reappear for its new owner)."""
        self.forget([h for h in self if h.partition == partition])

    async def keep_alive(self) -> None:
        """Extend the visibility of messages that would reappear soon."""
        await _keep_alive(self, [h.handle for h in self], self.visibility)

    def lost(self, handle: QueueHandle) -> None:
        self.forget([h for h in self if h.handle is handle])


@dataclass(eq=False, slots=True, kw_only=True)
class HeldTask:
    """A work item held by this host, leased to one owner (the engine's lease)."""

    item: WorkItem
    task_id: int
    owner: str
    token: int
    lease_until: datetime
    handle: QueueHandle


class WorkItems:
    """The work items this host holds: leased ones by task id, and a few spares.

    A claim receives up to `SPARES` more items than it wants and hands out the oldest: work
    items are sent in parallel, so the queue's order is only roughly the order they were
    scheduled in. Spares nobody claimed within `SPARE_SECONDS` go back to the queue.
    """

    SPARES = 8
    SPARE_SECONDS = 2.0

    def __init__(self, account: AzureAccount, visibility: int) -> None:
        self.account = account
        self.visibility = visibility
        self.held: dict[int, HeldTask] = {}
        self.spares: list[tuple[WorkItem, QueueHandle, float]] = []
        """(item, handle, time.monotonic() received), oldest item first."""

    async def refill(
        self, count: int, valid: Callable[[list[WorkItem]], Awaitable[list[bool]]]
    ) -> None:
        """Receive into the spares until they hold `count` items (plus `SPARES`), if the queue
        has them, deleting those `valid` says are void. Shielded, like `ControlInbox.ingest`."""

        async def refill() -> None:
            if len(self.spares) >= count:
                return
            received = await self.receive(count - len(self.spares) + self.SPARES)
            verdicts = await valid([item for item, _ in received])
            now = time.monotonic()
            for (item, handle), ok in zip(received, verdicts, strict=True):
                if ok:
                    self.spares.append((item, handle, now))
                else:
                    await self.delete(handle)  # its execution ended: void
            self.spares.sort(key=lambda s: s[0].order)

        await asyncio.shield(refill())

    def take(self, count: int) -> list[tuple[WorkItem, QueueHandle]]:
        """Up to `count` spares, oldest first."""
        taken, self.spares = self.spares[:count], self.spares[count:]
        return [(item, handle) for item, handle, _ in taken]

    async def return_spares(self, older_than: float | None = None) -> None:
        """Hand spares back to the queue (those received more than `older_than` s ago)."""
        limit = time.monotonic() - (older_than or 0)
        stale = [s for s in self.spares if older_than is None or s[2] < limit]
        if not stale:
            return
        self.spares = [s for s in self.spares if s not in stale]
        with contextlib.suppress(AzureError):
            await bounded(handle.extend(0) for _, handle, _ in stale)

    async def receive(self, count: int) -> list[tuple[WorkItem, QueueHandle]]:
        """Up to `count` new work items from the queue (unreadable ones are dropped)."""
        queue = self.account.workitems
        received: list[tuple[WorkItem, QueueHandle]] = []
        for message in await _receive(queue, count, self.visibility):
            handle = QueueHandle(
                queue=queue,
                message_id=str(message.id),
                receipt=str(message.pop_receipt),
                hidden_until=time.monotonic() + self.visibility,
            )
            try:
                data, handle.blob = await _received_text(self.account, message)
                received.append((WorkItem.from_dict(data), handle))
            except (ValueError, TypeError) as exc:
                log.error("dfhost: dropping an unreadable work item: %s", exc)
                await handle.delete()
        return sorted(received, key=lambda r: r[0].order)

    async def delete(self, handle: QueueHandle) -> None:
        await handle.delete()
        if handle.blob:
            await self.account.delete_payloads([handle.blob])

    async def release(self) -> None:
        held, self.held = list(self.held.values()), {}
        await self.return_spares()
        with contextlib.suppress(AzureError):
            await bounded(h.handle.extend(0) for h in held)

    async def keep_alive(self) -> None:
        handles = [h.handle for h in self.held.values()] + [h for _, h, _ in self.spares]
        await _keep_alive(self, handles, self.visibility)

    def lost(self, handle: QueueHandle) -> None:
        for task_id, held in list(self.held.items()):
            if held.handle is handle:
                del self.held[task_id]
        self.spares = [s for s in self.spares if s[1] is not handle]


async def _keep_alive(owner: ControlInbox | WorkItems, handles: list[QueueHandle], v: int) -> None:
    soon = time.monotonic() + v / 2
    due = [h for h in handles if h.hidden_until < soon]

    async def extend(handle: QueueHandle) -> None:
        if not await handle.extend(v):
            owner.lost(handle)

    try:
        await bounded(extend(h) for h in due)
    except AzureError as exc:
        log.warning("dfhost: could not extend held queue messages: %s", exc)
