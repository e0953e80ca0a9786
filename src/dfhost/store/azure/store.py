"""The Azure Storage task hub: tables, queues and blobs in one storage account (or Azurite).

URL: `azure[:SETTING][?hub=NAME&partitions=N&control_timeout=S&workitem_timeout=S&max_poll=S]`.
The connection string is read from the app setting (environment variable) SETTING, default
`AzureWebJobsStorage`; `UseDevelopmentStorage=true` means Azurite on its default ports.

Layout (hub H; see `azure_codec`): tables `HdfhInstances` (one row per instance: its state),
`HdfhHistory` (history chunks) and `HdfhTimers`; control queues `h-dfh-control-NN`
(`partitions`, default 4; an instance belongs to one by a hash of its id) and the work-item
queue `h-dfh-workitems`; containers `h-dfh-leases` (partition and host leases, see
`azure_partitions`) and `h-dfh-payloads` (texts too long for a queue message or a property).
The `dfh` tag keeps dfhost's objects apart from a Functions host's own hub of the same name.

What a commit guarantees. Azure Storage has no transaction spanning tables and queues, so an
episode commits as DTFx's Azure Storage provider does, in steps, and consumers dedupe:
1. The episode's new history events and its outbox (activities, timers, messages, starts) are
   written as one new history chunk, reachable from nothing yet.
2. The instance row is replaced if its ETag is the one read at the claim: the new state, the
   chunk as the new head of the history, the ids of the messages consumed, `PendingOutbox`.
   This single-entity write is the commit point. It fails (LeaseLostError, nothing visible)
   when anything else wrote the row meanwhile, or when this host no longer holds the
   instance's partition (fencing).
3. The outbox is delivered (work items, control-queue messages, sub-orchestration rows), then
   `PendingOutbox` is cleared.
4. The consumed queue messages are deleted.
A host that dies after 2 leaves the outbox pending: whoever next claims the instance, or takes
its partition over, delivers it again, with the same message ids. A host that dies before 4
leaves messages that reappear after their visibility timeout. Either way a message can arrive
twice; the consumer drops it when the instance row lists its id as consumed (kept 15 minutes),
or when the history already holds its result (a task or sub-orchestration answered, a timer
fired: deduped by event id, at any age), or when it belongs to another generation, epoch or
execution of the instance. An activity runs at least once; its result is recorded once.

Dispatch latency: messages this process sends wake its engine at once (`notify`) and are read
by the next claim. Messages sent by other processes are found by a poller that reads the owned
control queues and peeks at the work-item queue with a back-off from 0.1 s doubling to
`max_poll` (default 1 s) while idle, back to 0.1 s when it finds something. Timers this host
knows of wake it at their due time. Crash recovery: a dead host's partitions are free after at
most 15 s; its held messages reappear after the visibility timeout (`control_timeout`,
`workitem_timeout`, default 30 s; a live host keeps extending them).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from dfhost.history import (
    TERMINAL_STATUSES,
    EventType,
    HistoryEvent,
    Instance,
    OrchestrationStatus,
)
from dfhost.store import (
    DeliveryResult,
    EpisodeClaim,
    HubSummary,
    InstancePage,
    InstanceQuery,
    KnownHistory,
    LeaseLostError,
    StoreError,
    TimerStatus,
)
from dfhost.store.azure.account import AzureAccount, bounded, describe_account
from dfhost.store.azure.codec import Envelope, HubNames, InstanceRow, WorkItem
from dfhost.store.azure.config import parse_url
from dfhost.store.azure.dedupe import consumed_ids, sift
from dfhost.store.azure.instances import Chunk, InstanceTables, chunk_key
from dfhost.store.azure.outbox import Courier
from dfhost.store.azure.partitions import Partitions
from dfhost.store.azure.queues import ControlInbox, Held, HeldTask, WorkItems
from dfhost.store.azure.timers import TimerTable
from dfhost.store.wakeup import FinishWatchers, Wakeup
from dfhost.work import ActivityTask, EpisodeOutcome, EpisodeWork, Message, StartRequest

__all__ = ["MIN_POLL", "AzureStore"]

log = logging.getLogger(__name__)

MIN_POLL = 0.1
_CACHE = 1000
_LONG_AGO = datetime.min.replace(tzinfo=UTC)
_WAKES_SUSPENDED = (EventType.EXECUTION_RESUMED, EventType.EXECUTION_TERMINATED)


@dataclass(eq=False, slots=True, kw_only=True)
class _Claim:
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


class AzureStore:
    """The `Store` for `azure` URLs. Use it from one event loop."""

    holds_instances = False

    def __init__(self, url: str) -> None:
        self.url = url
        target = parse_url(url)
        self.hub = target.hub
        self.max_poll = target.max_poll
        self.label = f"{describe_account(target.connection_string)} (hub {target.hub})"
        self.names = HubNames(target.hub, target.partitions)
        self.account = AzureAccount(target.connection_string, self.names, self.label)
        self.rows = InstanceTables(self.account)
        self.timers = TimerTable(self.account.timers)
        self._numbers = itertools.count(1)
        self._tokens = itertools.count(1)
        self.inbox = ControlInbox(self.account, target.control_timeout, self._numbers)
        self.work = WorkItems(self.account, target.workitem_timeout)
        self.courier = Courier(
            self.account,
            self.rows,
            self.inbox,
            on_sent=self._sent,
            on_work=self._work_sent,
            on_replaced=self._replaced,
            spawn=self._spawn,
        )
        self.partitions = Partitions(self.account, self._lost, self._drain, self._acquired)
        self._claims: dict[str, _Claim] = {}
        self._claiming: set[str] = set()
        self._start_numbers: dict[tuple[str, str], int] = {}
        self._cache: OrderedDict[str, tuple[str, list[HistoryEvent]]] = OrderedDict()
        self._known: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._owners: set[str] = set()
        self._dirty: set[int] = set()
        self._work_dirty = True
        self._wake = Wakeup()
        self._finishes = FinishWatchers()
        self._release_event: asyncio.Event | None = None
        self._hosting = False
        self._becoming_host = asyncio.Lock()
        self._open = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        if self._open:
            return
        try:
            await self.account.create_all()
        except StoreError as exc:
            await self.account.close()
            raise StoreError(f"cannot open {exc}") from exc
        self._open = True

    async def close(self) -> None:
        if not self._open:
            return
        self._open = False
        loops, self._loops = self._loops, []
        for task in loops:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(StoreError, AzureError, TimeoutError):
            async with asyncio.timeout(10):
                await self.inbox.release()
                await self.work.release()
                if self._hosting:
                    await self.partitions.stop()
        if self._tasks:  # let clean-ups finish; retries give up (the next host takes over)
            _, pending = await asyncio.wait(self._tasks, timeout=2)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        await self.account.close()

    async def open_host(self, owner: str, now: datetime) -> None:
        """Register `owner` (its host lease), take this host's share of the partitions, and
        free the work of owners that are not live hosts."""
        self._owners.add(owner)
        with self.account.errors():
            await self.partitions.register(owner)
            await self._host()
            live = await self.partitions.live_owners() | self._owners
            for instance_id, claim in list(self._claims.items()):
                if claim.owner not in self._owners:
                    del self._claims[instance_id]
            for held in self.work.held.values():
                if held.owner not in self._owners:
                    held.lease_until = _LONG_AGO
            dead = await self.timers.owners() - live
            await self.timers.release_runs(lambda o: o in dead)
        self.notify()

    async def _host(self) -> None:
        """Become a host: own partitions, poll queues, keep held messages hidden."""
        async with self._becoming_host:
            if self._hosting:
                return
            await self.partitions.start()
            self._loops = [
                asyncio.create_task(self._poll(), name="dfhost-azure-poll"),
                asyncio.create_task(self._keep(), name="dfhost-azure-keep"),
            ]
            self._hosting = True

    def _spawn(self, job: Awaitable[Any]) -> None:
        async def run() -> None:
            try:
                await job
            except Exception as exc:
                log.warning("dfhost: background work on %s failed: %s", self.label, exc)

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- clients -------------------------------------------------------------------------
    async def create_instance(self, request: StartRequest) -> bool:
        conflict = None
        if request.on_conflict is not None:
            conflict = self.courier.envelope(request.on_conflict, uuid.uuid4().hex)
        with self.account.errors():
            return await self.courier.create(request, None, conflict)

    async def send_message(self, message: Message) -> DeliveryResult:
        with self.account.errors():
            row = await self.rows.read(message.instance_id)
            if row is None:
                return "not_found"
            status = row.instance.status
            if message.event.type is EventType.EXECUTION_REWOUND:
                if status is not OrchestrationStatus.FAILED:
                    return "gone"
            elif status in TERMINAL_STATUSES:
                return "gone"
            envelope = self.courier.envelope(message, uuid.uuid4().hex, row)
            await self.courier.send(envelope)
        return "sent"

    async def get_instance(self, instance_id: str) -> Instance | None:
        with self.account.errors():
            row = await self.rows.read(instance_id)
        return None if row is None else row.instance

    async def get_history(self, instance_id: str) -> list[HistoryEvent]:
        """Raises StoreError if a stored chunk does not decode."""
        with self.account.errors():
            row = await self.rows.read(instance_id)
            if row is None:
                return []
            events, error = await self._history(row)
        if error is not None:
            raise StoreError(error)
        return events

    async def _history(self, row: InstanceRow) -> tuple[list[HistoryEvent], str | None]:
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
        while len(self._cache) > _CACHE:
            self._cache.popitem(last=False)

    async def query_instances(self, query: InstanceQuery) -> InstancePage:
        with self.account.errors():
            return await self.rows.query(query)

    async def count_instances(self, query: InstanceQuery) -> int:
        with self.account.errors():
            return await self.rows.count(query)

    async def purge_instance(self, instance_id: str) -> int:
        with self.account.errors():
            purged = await self.rows.purge(instance_id)
        self._replaced(instance_id)
        return purged

    async def purge_instances(self, query: InstanceQuery) -> int:
        with self.account.errors():
            ids = await self.rows.ids(query)
            counts = await bounded(self.rows.purge(i) for i in ids)
        for instance_id in ids:
            self._replaced(instance_id)
        return sum(counts)

    # --- maintenance ---------------------------------------------------------------------
    async def purge_finished(
        self, status: OrchestrationStatus, finished_before: datetime, limit: int
    ) -> int:
        """Each instance is deleted on its own (row first, then history and payloads):
        Azure Storage has no transaction across partitions."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"retention purges finished instances only, not {status.value}")

        def keep(row: InstanceRow) -> bool:
            inst = row.instance
            return inst.status is not status or inst.last_updated_at >= finished_before

        with self.account.errors():
            found = await self.rows.finished_before(status, finished_before)
            ids = [i for _, i in found if i not in self._claims][: max(1, limit)]
            counts = await bounded(self.rows.purge(i, keep) for i in ids)
        return sum(counts)

    async def oldest_finished(self, status: OrchestrationStatus) -> datetime | None:
        with self.account.errors():
            return await self.rows.oldest_finished(status)

    async def overdue_timers(self, now: datetime, limit: int) -> list[Message]:
        """Due timers in the queues of the partitions this host owns (a client that hosts
        nothing peeks at the first 32 messages of each queue)."""
        with self.account.errors():
            if self._hosting:
                await self.inbox.ingest(self.partitions.claimable())
                envelopes = [(h.envelope, h.number) for h in self.inbox]
            else:
                envelopes = [(e, next(self._numbers)) for e in await self._peek_control()]
        due = [
            (envelope.visible_at, number, envelope)
            for envelope, number in envelopes
            if envelope.event is not None
            and envelope.event.type is EventType.TIMER_FIRED
            and envelope.visible_at is not None
            and envelope.visible_at <= now
        ]
        due.sort(key=lambda d: (d[0], d[1]))
        return [envelope.message(number) for _, number, envelope in due[: max(0, limit)]]

    async def hub_summary(self, now: datetime) -> HubSummary:
        """Approximate, as queues are: their lengths count messages in flight and durable
        timers not yet due (activities running are not told apart: None), the oldest ready
        work is the oldest of the first 32 visible messages of each queue, and the next
        timer is known only to a hosting store, among its own partitions' messages."""
        counts: dict[tuple[str, OrchestrationStatus], int] = {}
        with self.account.errors():
            token: str | None = None
            while True:
                page = await self.rows.query(InstanceQuery(top=1000, continuation=token))
                for inst in page.instances:
                    counts[inst.name, inst.status] = counts.get((inst.name, inst.status), 0) + 1
                token = page.continuation
                if token is None:
                    break
            queues = [*self.account.control, self.account.workitems]
            lengths = [
                (await q.get_queue_properties()).approximate_message_count or 0 for q in queues
            ]
            inserted = [
                m.inserted_on
                for q in queues
                for m in await q.peek_messages(max_messages=32)
                if m.inserted_on is not None
            ]
            hosts = 0
            async for blob in self.account.leases.list_blobs(name_starts_with="hosts/"):
                hosts += blob.lease.state == "leased"
        return HubSummary(
            instances=counts,
            ready_messages=sum(lengths[:-1]),
            ready_activities=lengths[-1],
            running_activities=None,
            oldest_ready=min(inserted, default=None),
            next_timer=self.inbox.next_deferred(now) if self._hosting else None,
            live_hosts=hosts,
        )

    async def _peek_control(self) -> list[Envelope]:
        found: list[Envelope] = []
        for queue in self.account.control:
            for message in await queue.peek_messages(max_messages=32):
                with contextlib.suppress(ValueError, TypeError):
                    data = json.loads(str(message.content))
                    if isinstance(data, dict) and "b" not in data:
                        found.append(Envelope.from_dict(data))
        return found

    # --- engines: episodes ---------------------------------------------------------------
    async def claim_episodes(
        self,
        owner: str,
        now: datetime,
        lease_until: datetime,
        limit: int,
        known: KnownHistory | None = None,
    ) -> list[EpisodeWork]:
        if limit <= 0:
            return []
        with self.account.errors():
            await self._host()
            partitions = await self._ingest(now)
            works: list[EpisodeWork] = []
            candidates = [
                i
                for i in self.inbox.candidates(now, partitions)
                if i not in self._claiming and not self._locked(i, now)
            ]
            while candidates and len(works) < limit:
                batch, candidates = (
                    candidates[: limit - len(works)],
                    candidates[limit - len(works) :],
                )
                self._claiming.update(batch)
                try:
                    found = await asyncio.gather(
                        *(self._claim(i, owner, now, lease_until) for i in batch)
                    )
                finally:
                    self._claiming.difference_update(batch)
                works.extend(w for w in found if w is not None)
        return works

    async def _ingest(self, now: datetime) -> set[int]:
        """Read the queues this process sent to, and those with timers due; returns the
        partitions whose episodes this host may start."""
        partitions = self.partitions.claimable()
        dirty = (self._dirty | self.inbox.due_partitions(now)) & partitions
        self._dirty -= dirty
        if dirty:
            await self.inbox.ingest(dirty)
        return partitions

    def _locked(self, instance_id: str, now: datetime) -> bool:
        claim = self._claims.get(instance_id)
        return claim is not None and claim.lock_until > now

    async def _claim(
        self, instance_id: str, owner: str, now: datetime, lease_until: datetime
    ) -> EpisodeWork | None:
        row = await self.rows.read(instance_id)
        self._know(instance_id, row)
        if row is None:  # DTFx drops messages for unknown instances; keeping them would wedge
            await self.inbox.delete(self.inbox.visible(instance_id, now))
            return None
        if row.pending_outbox:
            await self.courier.deliver_pending(row)
        history, error = await self._history(row)
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
            while len(self._start_numbers) > _CACHE:
                del self._start_numbers[next(iter(self._start_numbers))]
            messages.append(row.started_message(start_number))
        messages.extend(h.envelope.message(h.number) for h in keep)
        token = next(self._tokens)
        self._claims[instance_id] = _Claim(
            owner=owner,
            token=token,
            lock_until=lease_until,
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

    async def commit_episode(
        self,
        owner: str,
        work: EpisodeWork,
        outcome: EpisodeOutcome,
        *,
        lease_activities: tuple[datetime, int] | None = None,
        hold_until: datetime | None = None,
        completes: ActivityTask | None = None,
    ) -> list[ActivityTask]:
        """Activity work items go through the work-item queue: none is leased here."""
        instance_id = work.instance.instance_id
        if outcome.instance.instance_id != instance_id:
            raise ValueError("an episode's outcome must be for the instance it claimed")
        if completes is not None:  # hold_until is a hint: this backend always releases
            raise NotImplementedError("this task hub does not hold instances between episodes")
        claim = self._claims.get(instance_id)
        if claim is None or claim.token != work.lease_token or claim.owner != owner:
            raise LeaseLostError(
                f"lease on instance {instance_id!r} was lost; episode not committed"
            )
        try:
            with self.account.errors():
                await self._commit(claim, work, outcome)
        finally:
            if self._claims.get(instance_id) is claim:
                del self._claims[instance_id]
            self.notify()
        if outcome.instance.status in TERMINAL_STATUSES:
            self._finishes.finished(instance_id)
        return []

    async def _commit(self, claim: _Claim, work: EpisodeWork, outcome: EpisodeOutcome) -> None:
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
                self._cache.pop(instance_id, None)
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
            if instance_id in self._claims:
                continue
            row = await self.rows.read(instance_id)
            if row is None or not row.pending_outbox:
                return
            with contextlib.suppress(AzureError):
                await self.courier.deliver_pending(row)
                return

    async def abandon_episode(self, owner: str, work: EpisodeWork) -> None:
        claim = self._claims.get(work.instance.instance_id)
        if claim is not None and claim.owner == owner and claim.token == work.lease_token:
            del self._claims[work.instance.instance_id]
            self.notify()  # its messages are claimable again

    # --- engines: activities -------------------------------------------------------------
    async def claim_activities(
        self, owner: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[ActivityTask]:
        if limit <= 0:
            return []
        with self.account.errors():
            await self._host()
            tasks: list[ActivityTask] = []
            expired = sorted(
                (h for h in self.work.held.values() if h.lease_until <= now),
                key=lambda h: h.task_id,
            )
            for held in expired[:limit]:
                held.owner, held.token, held.lease_until = owner, next(self._tokens), lease_until
                tasks.append(held.item.task(held.task_id, held.token))
            wanted = limit - len(tasks)
            if wanted > 0 and (self._work_dirty or self.work.spares):
                await self.work.refill(wanted, self._current)
                taken = self.work.take(wanted)
                self._work_dirty = len(taken) >= wanted
                for item, handle in taken:  # no await from here: a cancelled claim loses none
                    held = HeldTask(
                        item=item,
                        task_id=next(self._numbers),
                        owner=owner,
                        token=next(self._tokens),
                        lease_until=lease_until,
                        handle=handle,
                    )
                    self.work.held[held.task_id] = held
                    tasks.append(item.task(held.task_id, held.token))
        return tasks

    async def _current(self, items: list[WorkItem]) -> list[bool]:
        """Whether each item still belongs to its instance's generation and epoch. An item
        is only found void on a fresh read of the row."""
        doubtful = sorted(
            {i.instance_id for i in items if self._known.get(i.instance_id) != _stamp(i)}
        )
        for instance_id, row in zip(
            doubtful, await bounded(self.rows.read(i) for i in doubtful), strict=True
        ):
            self._know(instance_id, row)
        return [self._known.get(i.instance_id) == _stamp(i) for i in items]

    def _know(self, instance_id: str, row: InstanceRow | None) -> None:
        """Remember the row's generation and epoch (to validate work items without I/O)."""
        if row is None:
            self._known.pop(instance_id, None)
            return
        self._known[instance_id] = (row.generation, row.epoch)
        self._known.move_to_end(instance_id)
        while len(self._known) > 10 * _CACHE:
            self._known.popitem(last=False)

    async def complete_activity(self, task: ActivityTask, result: Message) -> bool:
        """The result goes out before the work item is deleted: a crash in between runs the
        activity again, and its result (same id) is deduped."""
        held = None if task.task_id is None else self.work.held.pop(task.task_id, None)
        if held is None:
            return False
        item = held.item
        own = result.instance_id == item.instance_id
        envelope = Envelope(
            kind="m",
            id=f"r.{item.id}",
            instance_id=result.instance_id,
            order=self.courier.order.next(),
            visible_at=result.visible_at,
            event=result.event,
            execution_id=result.execution_id,
            generation=item.generation if own else None,
            epoch=item.epoch if own else None,
        )
        try:
            with self.account.errors():
                await self.courier.send(envelope)
        except BaseException:
            self.work.held[held.task_id] = held
            raise
        with contextlib.suppress(AzureError):
            await self.work.delete(held.handle)
        return True

    async def complete_activity_and_claim(
        self, task: ActivityTask, result: Message, claim: EpisodeClaim
    ) -> tuple[bool, EpisodeWork | None]:
        return await self.complete_activity(task, result), None

    async def renew_activity_leases(
        self, owner: str, tasks: Sequence[ActivityTask], lease_until: datetime
    ) -> None:
        """Only the engine's lease: the queue message stays hidden while this host lives."""
        for task in tasks:
            held = None if task.task_id is None else self.work.held.get(task.task_id)
            if held is not None and held.owner == owner:
                held.lease_until = lease_until

    async def next_due_at(self, now: datetime) -> datetime | None:
        times: list[datetime | None] = []
        if self._hosting:
            with self.account.errors():
                await self._ingest(now)
            times += [self.inbox.next_visible(now), self.inbox.next_deferred(now)]
        times += [c.lock_until for c in self._claims.values() if c.lock_until > now]
        times += [h.lease_until for h in self.work.held.values() if h.lease_until > now]
        return min((t for t in times if t is not None), default=None)

    # --- wake-ups ------------------------------------------------------------------------
    async def wait_for_work(self, until: datetime | None) -> None:
        await self._wake.wait(until)

    def notify(self) -> None:
        self._wake.set()
        if self._release_event is not None:
            self._release_event.set()

    def watch_finish(self, instance_id: str) -> asyncio.Future[None]:
        return self._finishes.watch(instance_id)

    def _released(self) -> asyncio.Event:
        """Set when an episode may have ended (see `notify`)."""
        if self._release_event is None:
            self._release_event = asyncio.Event()
        return self._release_event

    async def _poll(self) -> None:
        """Find work other processes sent: poll the owned control queues and peek at the
        work-item queue, every MIN_POLL after finding some, doubling to max_poll while there
        is none (work this process sends itself is read at once, see `_sent`)."""
        interval = self.max_poll
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                await self.work.return_spares(older_than=self.work.SPARE_SECONDS)
                found = await self.inbox.ingest(self.partitions.claimable())
                waiting = bool(await self.account.workitems.peek_messages(max_messages=1))
            except AzureError as exc:
                if not failing:
                    log.warning("dfhost: cannot poll task hub %s: %s", self.label, exc)
                failing, interval = True, self.max_poll
                continue
            if failing:
                log.info("dfhost: task hub %s is reachable again", self.label)
                failing = False
            if waiting:
                self._work_dirty = True
            if found or waiting:
                self.notify()
            interval = MIN_POLL if found else min(interval * 2, self.max_poll)

    async def _keep(self) -> None:
        period = min(self.inbox.visibility, self.work.visibility) / 3
        while True:
            await asyncio.sleep(period)
            await self.inbox.keep_alive()
            await self.work.keep_alive()

    # --- partitions ----------------------------------------------------------------------
    def _lost(self, partition: int) -> None:
        self.inbox.drop(partition)

    async def _drain(self, partition: int) -> None:
        """Before handing `partition` back: let its episodes in flight commit, then hand back
        its held messages so the next owner sees them at once."""
        deadline = time.monotonic() + 5
        while any(c.row.partition == partition for c in self._claims.values()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            released = self._released()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await released.wait()
            released.clear()
        await self.inbox.release(partition)

    async def _acquired(self, partitions: list[int]) -> None:
        await self.courier.recover(partitions)
        self._dirty.update(partitions)

    def _sent(self, partition: int) -> None:
        self._dirty.add(partition)
        self.notify()

    def _work_sent(self) -> None:
        self._work_dirty = True
        self.notify()

    def _replaced(self, instance_id: str) -> None:
        self._cache.pop(instance_id, None)
        self._known.pop(instance_id, None)

    # --- timer triggers ------------------------------------------------------------------
    async def claim_timer_run(
        self,
        function: str,
        due_at: datetime | None,
        owner: str,
        now: datetime,
        lease_until: datetime,
    ) -> int | None:
        with self.account.errors():
            return await self.timers.claim_run(function, due_at, owner, now, lease_until)

    async def renew_timer_run(
        self, function: str, owner: str, token: int, lease_until: datetime
    ) -> bool:
        with self.account.errors():
            return await self.timers.renew_run(function, owner, token, lease_until)

    async def finish_timer_run(
        self, function: str, owner: str, token: int, status: TimerStatus | None
    ) -> bool:
        with self.account.errors():
            return await self.timers.finish_run(function, owner, token, status)

    async def get_timer_status(self, function: str) -> TimerStatus | None:
        with self.account.errors():
            return await self.timers.get_status(function)

    async def set_timer_status(self, function: str, status: TimerStatus) -> None:
        with self.account.errors():
            await self.timers.set_status(function, status)


def _stamp(item: WorkItem) -> tuple[str, int]:
    return item.generation, item.epoch
