"""The episodes an Azure Storage host has in flight: claimed from the control-queue messages it
holds, committed in DTFx's steps (see the package docstring), and the histories it has read,
cached by the instance row's ETag."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError

from dfhost.history import EventType, HistoryEvent, OrchestrationStatus
from dfhost.store import Claim, LeaseLostError
from dfhost.store.azure.codec import InstanceRow
from dfhost.store.azure.dedupe import consumed_ids, sift
from dfhost.store.azure.instances import Chunk, InstanceTables, chunk_key
from dfhost.store.azure.outbox import Courier
from dfhost.store.azure.partitions import Partitions
from dfhost.store.azure.queues import ControlInbox, Held
from dfhost.work import EpisodeOutcome, EpisodeWork, Message

__all__ = ["CACHE", "Episodes"]

log = logging.getLogger(__name__)

CACHE = 1000
"""Instances whose histories (and start message numbers) a host remembers."""
_WAKES_SUSPENDED = (EventType.EXECUTION_RESUMED, EventType.EXECUTION_TERMINATED)


@dataclass(eq=False, slots=True, kw_only=True)
class InFlight:
    """An episode in flight: what commit needs to finish it."""

    owner: str
    token: int
    lock_until: datetime
    row: InstanceRow
    history: list[HistoryEvent] | None
    """None when it did not decode (then it is not cached)."""
    held: list[Held]
    wakes: list[Held]
    start_number: int | None
    tenure: int | None
    """The partition tenure it was claimed in (see `Partitions.tenure`)."""
    dropped_timers: set[int] = field(default_factory=set)


class Episodes:
    """A store's episodes in flight (`in_flight`, by instance id). Methods raise the SDK's
    errors; the store converts them."""

    def __init__(
        self,
        rows: InstanceTables,
        inbox: ControlInbox,
        courier: Courier,
        partitions: Partitions,
        numbers: itertools.count[int],
        *,
        know: Callable[[str, InstanceRow | None], None],
        wake: Callable[[], None],
        spawn: Callable[[Awaitable[Any]], None],
    ) -> None:
        self.rows = rows
        self.inbox = inbox
        self.courier = courier
        self.partitions = partitions
        self._numbers = numbers
        """Message numbers, shared with the inbox (a start message gets one too)."""
        self._know = know
        """Tells the store an instance row's generation and epoch (see `AzureStore._know`)."""
        self._wake = wake
        self._spawn = spawn
        self._tokens = itertools.count(1)
        self.in_flight: dict[str, InFlight] = {}
        self._claiming: set[str] = set()
        self._start_numbers: dict[tuple[str, str], int] = {}
        self._cache: OrderedDict[str, tuple[str, list[HistoryEvent]]] = OrderedDict()

    # --- histories -----------------------------------------------------------------------
    async def history(self, row: InstanceRow) -> tuple[list[HistoryEvent], str | None]:
        instance_id = row.instance.instance_id
        cached = self._cache.get(instance_id)
        if cached is not None and cached[0] == row.etag:
            self._cache.move_to_end(instance_id)
            return list(cached[1]), None
        events, error = await self.rows.read_history(row)
        if error is None:
            self._remember(instance_id, row.etag, events)
        return events, error

    def _remember(self, instance_id: str, etag: str, events: list[HistoryEvent]) -> None:
        self._cache[instance_id] = (etag, list(events))
        self._cache.move_to_end(instance_id)
        while len(self._cache) > CACHE:
            self._cache.popitem(last=False)

    def forget(self, instance_id: str) -> None:
        """The instance was replaced or purged: its cached history is void."""
        self._cache.pop(instance_id, None)

    # --- claims --------------------------------------------------------------------------
    async def claim(self, claim: Claim, limit: int, partitions: set[int]) -> list[EpisodeWork]:
        """Lease up to `limit` instances of `partitions` that have messages visible at
        `claim.now` in the inbox (read by the caller)."""
        now = claim.now
        works: list[EpisodeWork] = []
        candidates = [
            i
            for i in self.inbox.candidates(now, partitions)
            if i not in self._claiming and not self.locked(i, now)
        ]
        while candidates and len(works) < limit:
            batch, candidates = (
                candidates[: limit - len(works)],
                candidates[limit - len(works) :],
            )
            self._claiming.update(batch)
            try:
                found = await asyncio.gather(*(self._claim(i, claim) for i in batch))
            finally:
                self._claiming.difference_update(batch)
            works.extend(w for w in found if w is not None)
        return works

    def locked(self, instance_id: str, now: datetime) -> bool:
        claim = self.in_flight.get(instance_id)
        return claim is not None and claim.lock_until > now

    async def _claim(self, instance_id: str, claim: Claim) -> EpisodeWork | None:
        now = claim.now
        row = await self.rows.read(instance_id)
        self._know(instance_id, row)
        if row is None:  # DTFx drops messages for unknown instances; keeping them would wedge
            await self.inbox.delete(self.inbox.visible(instance_id, now))
            return None
        if row.pending_outbox:
            await self.courier.deliver_pending(row)
        history, error = await self.history(row)
        visible = self.inbox.visible(instance_id, now)
        wakes = [h for h in visible if h.envelope.kind == "w"]
        keep, drop, dropped_timers = sift(row, history, [h for h in visible if h not in wakes])
        starting = row.start_pending and (row.scheduled_start is None or row.scheduled_start <= now)
        if drop or (wakes and not row.start_pending):
            await self.inbox.delete([*drop, *(wakes if not row.start_pending else [])])
        if not keep and not starting:
            return None
        if row.instance.status is OrchestrationStatus.SUSPENDED and not any(
            h.envelope.event is not None and h.envelope.event.type in _WAKES_SUSPENDED for h in keep
        ):
            return None
        messages: list[Message] = []
        start_number = None
        if starting:
            key = (instance_id, row.generation)
            start_number = self._start_numbers.setdefault(key, next(self._numbers))
            while len(self._start_numbers) > CACHE:
                del self._start_numbers[next(iter(self._start_numbers))]
            messages.append(row.started_message(start_number))
        messages.extend(h.envelope.message(h.number) for h in keep)
        token = next(self._tokens)
        self.in_flight[instance_id] = InFlight(
            owner=claim.owner,
            token=token,
            lock_until=claim.lease_until,
            row=row,
            history=None if error else history,
            held=keep,
            wakes=wakes if row.start_pending else [],
            start_number=start_number,
            tenure=self.partitions.tenure(row.partition),
            dropped_timers=dropped_timers,
        )
        return EpisodeWork(
            instance=row.instance,
            history=[] if error else history,
            messages=messages,
            lease_token=token,
            history_error=error,
        )

    def abandon(self, owner: str, work: EpisodeWork, retry_at: datetime | None = None) -> bool:
        """Release the lease if `owner` holds it, at once or at `retry_at` (a lock nobody
        holds until then); returns whether it did."""
        claim = self.in_flight.get(work.instance.instance_id)
        if claim is None or claim.owner != owner or claim.token != work.lease_token:
            return False
        if retry_at is None:
            del self.in_flight[work.instance.instance_id]
        else:
            claim.owner, claim.lock_until = "", retry_at
        return True

    # --- commits -------------------------------------------------------------------------
    async def commit(self, owner: str, work: EpisodeWork, outcome: EpisodeOutcome) -> None:
        """Commit the episode (`LeaseLostError` if `owner` no longer holds it), then release
        it, and wake the engine, whatever happened."""
        instance_id = work.instance.instance_id
        claim = self.in_flight.get(instance_id)
        if claim is None or claim.token != work.lease_token or claim.owner != owner:
            raise LeaseLostError(
                f"lease on instance {instance_id!r} was lost; episode not committed"
            )
        try:
            await self._commit(claim, work, outcome)
        finally:
            if self.in_flight.get(instance_id) is claim:
                del self.in_flight[instance_id]
            self._wake()

    async def _commit(self, claim: InFlight, work: EpisodeWork, outcome: EpisodeOutcome) -> None:
        old = claim.row
        instance_id = old.instance.instance_id
        if claim.tenure is None or self.partitions.tenure(old.partition) != claim.tenure:
            raise LeaseLostError(
                f"partition {old.partition} of {instance_id!r} was lost; episode not committed"
            )
        numbers = {m.message_id for m in work.messages}
        used = [h for h in claim.held if h.number in numbers]
        new = dataclasses.replace(
            old,
            instance=outcome.instance,
            commit=uuid.uuid4().hex,
            start_pending=old.start_pending and claim.start_number not in numbers,
            consumed=consumed_ids(old.consumed, used),
        )
        if outcome.drop_pending_work:
            new.epoch, new.cancelled = old.epoch + 1, []
        else:
            new.cancelled = [c for c in old.cancelled if c not in claim.dropped_timers]
        new.cancelled = [*new.cancelled, *outcome.cancelled_timer_ids]
        prev = old.history_head
        if outcome.reset_history:
            new.history_epoch, new.history_seq, prev = old.history_epoch + 1, 0, ""
        cid = uuid.uuid4().hex[:12]
        outbox = self.courier.outbox(new, cid, outcome)
        new.history_head = prev
        if outcome.new_events or outbox:
            new.history_seq += 1
            new.history_head = chunk_key(new.history_epoch, new.history_seq, cid)
            await self.rows.write_chunk(
                new, new.history_head, prev, Chunk(outcome.new_events, outbox)
            )
        new.pending_outbox = new.history_head if outbox else ""
        try:
            await self.rows.replace(new, old)
        except (ResourceModifiedError, ResourceNotFoundError):
            landed = await self.rows.read(instance_id)
            if landed is None or landed.commit != new.commit:
                self.forget(instance_id)
                raise LeaseLostError(
                    f"instance {instance_id!r} changed during the episode; not committed"
                ) from None
            new.etag = landed.etag  # our write landed; its reply was lost
        self._know(instance_id, new)
        consumed = asyncio.ensure_future(self.inbox.delete([*used, *claim.wakes]))
        try:
            if outbox:
                await self.courier.deliver(new, outbox)
                await self.courier.mark_delivered(new)
        except AzureError as exc:
            log.warning("dfhost: outbox of %r not delivered yet: %s", instance_id, exc)
            self._spawn(self._redeliver(instance_id))
        finally:
            await consumed
        if claim.history is not None:
            base = [] if outcome.reset_history else claim.history
            self._remember(instance_id, new.etag, [*base, *outcome.new_events])
        if outcome.reset_history and old.history_head:
            self._spawn(self.rows.delete_history(instance_id, below_epoch=new.history_epoch))

    async def _redeliver(self, instance_id: str) -> None:
        for attempt in range(30):
            await asyncio.sleep(min(2**attempt, 30))
            if instance_id in self.in_flight:
                continue
            row = await self.rows.read(instance_id)
            if row is None or not row.pending_outbox:
                return
            with contextlib.suppress(AzureError):
                await self.courier.deliver_pending(row)
                return
