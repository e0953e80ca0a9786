"""`AzureStore`: the `Store` for Azure Storage (see the package docstring for the design):
hosting (partitions, polling, keeping held messages hidden), clients, activities and timer
triggers; `episodes` claims and commits episodes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import AzureError

from dfhost.history import (
    TERMINAL_STATUSES,
    EventType,
    HistoryEvent,
    Instance,
    OrchestrationStatus,
)
from dfhost.store import (
    Claim,
    Completion,
    DeliveryResult,
    HubSummary,
    InstancePage,
    InstanceQuery,
    StoreError,
    TimerStatus,
    require_same_instance,
)
from dfhost.store.azure.account import AzureAccount, bounded, describe_account
from dfhost.store.azure.codec import Envelope, HubNames, InstanceRow, WorkItem
from dfhost.store.azure.config import parse_url
from dfhost.store.azure.episodes import CACHE, Episodes
from dfhost.store.azure.instances import InstanceTables
from dfhost.store.azure.outbox import Courier
from dfhost.store.azure.partitions import Partitions
from dfhost.store.azure.queues import ControlInbox, HeldTask, WorkItems
from dfhost.store.azure.timers import TimerTable
from dfhost.store.wakeup import Wakeups
from dfhost.work import ActivityTask, EpisodeOutcome, EpisodeWork, Message, StartRequest

__all__ = ["MIN_POLL", "AzureStore"]

log = logging.getLogger(__name__)

MIN_POLL = 0.1
_LONG_AGO = datetime.min.replace(tzinfo=UTC)


class AzureStore(Wakeups):
    """The `Store` for `azure` URLs. Use it from one event loop."""

    def __init__(self, url: str) -> None:
        super().__init__()
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
        self.episodes = Episodes(
            self.rows,
            self.inbox,
            self.courier,
            self.partitions,
            self._numbers,
            know=self._know,
            wake=self.notify,
            spawn=self._spawn,
        )
        self._known: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._owners: set[str] = set()
        self._dirty: set[int] = set()
        self._work_dirty = True
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
            in_flight = self.episodes.in_flight
            for instance_id, claim in list(in_flight.items()):
                if claim.owner not in self._owners:
                    del in_flight[instance_id]
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
            events, error = await self.episodes.history(row)
        if error is not None:
            raise StoreError(error)
        return events

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
            ids = [i for _, i in found if i not in self.episodes.in_flight][: max(1, limit)]
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
        with self.account.errors():
            counts = await self.rows.status_counts()
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

    # --- episodes ------------------------------------------------------------------------
    async def claim_episodes(self, claim: Claim, limit: int) -> list[EpisodeWork]:
        if limit <= 0:
            return []
        with self.account.errors():
            await self._host()
            partitions = await self._ingest(claim.now)
            return await self.episodes.claim(claim, limit, partitions)

    async def _ingest(self, now: datetime) -> set[int]:
        """Read the queues this process sent to, and those with timers due; returns the
        partitions whose episodes this host may start."""
        partitions = self.partitions.claimable()
        dirty = (self._dirty | self.inbox.due_partitions(now)) & partitions
        self._dirty -= dirty
        if dirty:
            await self.inbox.ingest(dirty)
        return partitions

    async def commit_episode(
        self,
        owner: str,
        work: EpisodeWork,
        outcome: EpisodeOutcome,
        *,
        lease_activities: tuple[datetime, int] | None = None,
    ) -> list[ActivityTask]:
        """Activity work items go through the work-item queue: none is leased here."""
        require_same_instance(work, outcome)
        with self.account.errors():
            await self.episodes.commit(owner, work, outcome)
        self.committed(outcome.instance)
        return []

    async def abandon_episode(
        self, owner: str, work: EpisodeWork, *, retry_at: datetime | None = None
    ) -> None:
        if self.episodes.abandon(owner, work, retry_at):
            self.notify()  # its messages are claimable again, or when to look again

    # --- activities ----------------------------------------------------------------------
    async def claim_activities(self, claim: Claim, limit: int) -> list[ActivityTask]:
        if limit <= 0:
            return []
        owner, lease_until = claim.owner, claim.lease_until
        with self.account.errors():
            await self._host()
            tasks: list[ActivityTask] = []
            expired = sorted(
                (h for h in self.work.held.values() if h.lease_until <= claim.now),
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
        while len(self._known) > 10 * CACHE:
            self._known.popitem(last=False)

    async def complete_activity(
        self, task: ActivityTask, result: Message, claim: Claim | None = None
    ) -> Completion | None:
        """The result goes out before the work item is deleted: a crash in between runs the
        activity again, and its result (same id) is deduped. Its episode is never leased here:
        the result's message goes to its instance's control queue."""
        held = None if task.task_id is None else self.work.held.pop(task.task_id, None)
        if held is None:
            return None
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
        return Completion()

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
        times += [c.lock_until for c in self.episodes.in_flight.values() if c.lock_until > now]
        times += [h.lease_until for h in self.work.held.values() if h.lease_until > now]
        return min((t for t in times if t is not None), default=None)

    # --- wake-ups ------------------------------------------------------------------------
    def notify(self) -> None:
        super().notify()
        if self._release_event is not None:
            self._release_event.set()

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
        while any(c.row.partition == partition for c in self.episodes.in_flight.values()):
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
        self.episodes.forget(instance_id)
        self._known.pop(instance_id, None)

    # --- timer triggers ------------------------------------------------------------------
    async def claim_timer_run(
        self, function: str, due_at: datetime | None, claim: Claim
    ) -> int | None:
        with self.account.errors():
            return await self.timers.claim_run(function, due_at, claim)

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
