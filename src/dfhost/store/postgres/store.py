"""`PostgresStore`: the `Store` methods, hosts' heartbeats and wake-ups (see the package
docstring for the design); `connections` runs its transactions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from dfhost.history import TERMINAL_STATUSES, HistoryEvent, Instance, OrchestrationStatus
from dfhost.store import (
    Claim,
    Completion,
    DeliveryResult,
    HubSummary,
    InstancePage,
    InstanceQuery,
    StoreError,
    TimerStatus,
    require_finished,
    require_same_instance,
)
from dfhost.store import query as listing
from dfhost.store.postgres import claims, clients, hosts, timers
from dfhost.store.postgres.batches import Batch
from dfhost.store.postgres.connections import CLIENT_PATIENCE, Body, Connections, parse_target
from dfhost.store.postgres.schema import (
    SCHEMA_VERSION,
    Conn,
    delete_instances,
    migrate,
    notify,
    utc,
)
from dfhost.store.wakeup import Wakeups
from dfhost.work import ActivityTask, EpisodeOutcome, EpisodeWork, Message, StartRequest

__all__ = ["CLIENT_PATIENCE", "POLL_FALLBACK", "SCHEMA_VERSION", "PostgresStore"]

log = logging.getLogger("dfhost.store.postgres")

POLL_FALLBACK = timedelta(seconds=10)
"""The longest an idle host waits without looking, in case a notification was missed."""


class PostgresStore(Wakeups):
    """The `Store` for `postgresql://` URLs. Use it from one event loop."""

    def __init__(self, url: str) -> None:
        super().__init__(longest=POLL_FALLBACK)
        self.url = url
        target = parse_target(url)
        self.hub = target.hub
        self.schema = target.schema
        self.takeover = target.takeover
        self.conninfo = target.conninfo
        self.db = Connections(target)
        self._commits = Batch(self.db, patient=True)
        """Episodes' commits: those made at the same time share one statement."""
        self._completions = Batch(self.db, patient=True)
        """Activities' completions, the same way."""
        self._starts = Batch(self.db, patient=False)
        """Clients' starts, the same way."""
        self._label = target.label
        self._sender = uuid.uuid4().hex  # our NOTIFY payload, so the listener can skip our own
        self._open = False
        self._owners: set[str] = set()
        self._listener: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        if self._open:
            return
        await self.db.open(lambda conn: migrate(conn, self.schema, self._label))
        self._open = True
        listening = asyncio.Event()
        self._listener = asyncio.create_task(
            self.db.listen(self.schema, self.notify, self._sender, listening),
            name="dfhost-pg-listen",
        )
        # The first LISTEN must be in place before anyone waits, or a wake-up could be missed.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await listening.wait()

    async def close(self) -> None:
        if not self._open:
            return
        for task in (self._heartbeat, self._listener):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._heartbeat = self._listener = None
        if self._owners:
            owners = sorted(self._owners)
            # One try: if the database is gone, the others take over after the window anyway.
            with contextlib.suppress(StoreError, TimeoutError):
                async with asyncio.timeout(5):
                    await self.db.transact(self._unregister(owners), patient=False, tries=1)
            self._owners.clear()
        self._open = False
        await self.db.close()

    def _unregister(self, owners: Sequence[str]) -> Body[None]:
        async def body(conn: Conn, retrying: bool) -> None:
            await hosts.unregister_hosts_txn(conn, owners)
            await notify(conn, self.schema, self._sender)

        return body

    async def open_host(self, owner: str, now: datetime) -> None:
        """Register `owner` (heartbeats start), then free the work of every owner that is not
        a live host: never registered, or silent for the takeover window."""
        self._owners.add(owner)

        async def register(conn: Conn, retrying: bool) -> bool:
            freed = await hosts.register_host_txn(conn, owner, self.takeover)
            if freed:
                await notify(conn, self.schema, self._sender)
            return freed

        if await self.db.transact(register, patient=True):
            self.notify()
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._beat(), name="dfhost-pg-heartbeat")

    async def _beat(self) -> None:
        interval = self.takeover.total_seconds() / 6
        while True:
            await asyncio.sleep(interval)
            try:
                await self.db.transact(
                    self._heartbeat_body(sorted(self._owners)), patient=True, single=True
                )
            except StoreError as exc:  # not an outage (those are retried): say why, go on
                log.error("dfhost: could not write the heartbeat to %s: %s", self._label, exc)

    @staticmethod
    def _heartbeat_body(owners: Sequence[str]) -> Body[None]:
        return lambda conn, retrying: hosts.heartbeat_txn(conn, owners)

    # --- clients -------------------------------------------------------------------------
    async def create_instance(self, request: StartRequest) -> bool:
        params = clients.start_params(request, self.schema, self._sender)
        [(created,)] = await self._starts.call(clients.START, params)
        enqueued = bool(created)
        if not created:
            # The id is taken: replace a finished instance or report the conflict. Retrying,
            # as an earlier attempt (its answer lost) may be what took the id: an unfinished
            # instance with this very execution id is ours.
            async def replace(conn: Conn, retrying: bool) -> tuple[bool, bool]:
                created, enqueued = await clients.start_txn(conn, request, retrying=True)
                if enqueued:
                    await notify(conn, self.schema, self._sender)
                return created, enqueued

            created, enqueued = await self.db.transact(replace, patient=False)
        if enqueued:
            self.notify()
        return bool(created)

    async def send_message(self, message: Message) -> DeliveryResult:
        result = await self.db.transact(
            lambda conn, retrying: clients.send_call(conn, message, self.schema, self._sender),
            patient=False,
            single=True,
            ambiguous=(
                f"the connection to task hub {self._label} was lost while committing; the "
                f"message to {message.instance_id!r} may or may not have been sent"
            ),
        )
        if result == "sent":
            self.notify()
        return result

    async def get_instance(self, instance_id: str) -> Instance | None:
        return await self.db.transact(
            lambda conn, retrying: clients.load_instance(conn, instance_id),
            patient=False,
            single=True,
        )

    async def get_history(self, instance_id: str) -> list[HistoryEvent]:
        """Raises StoreError if a stored row does not decode."""
        events, error = await self.db.transact(
            lambda conn, retrying: clients.load_history(conn, instance_id),
            patient=False,
            single=True,
        )
        if error is not None:
            raise StoreError(error)
        return events

    async def query_instances(self, query: InstanceQuery) -> InstancePage:
        if query.continuation is not None:  # a bad token is the caller's error: no retry
            listing.decode_continuation(query.continuation)
        return await self.db.transact(
            lambda conn, retrying: clients.query_txn(conn, query), patient=False, single=True
        )

    async def count_instances(self, query: InstanceQuery) -> int:
        return await self.db.transact(
            lambda conn, retrying: clients.count_txn(conn, query), patient=False, single=True
        )

    async def purge_instance(self, instance_id: str) -> int:
        async def purge(conn: Conn, retrying: bool) -> int:
            # Deleting the row first locks it: an episode committing on it finishes first.
            cur = await conn.execute("DELETE FROM instances WHERE instance_id = %s", (instance_id,))
            await delete_instances(conn, [instance_id], keep_row=True)
            return cur.rowcount

        return await self.db.transact(purge, patient=False)

    async def purge_instances(self, query: InstanceQuery) -> int:
        total = 0
        while count := await self.db.transact(
            lambda conn, retrying: clients.purge_batch_txn(conn, query), patient=False
        ):
            total += count
        return total

    # --- maintenance ---------------------------------------------------------------------
    async def purge_finished(
        self, status: OrchestrationStatus, finished_before: datetime, limit: int
    ) -> int:
        require_finished(status)
        return await self.db.transact(
            lambda conn, retrying: clients.purge_finished_txn(conn, status, finished_before, limit),
            patient=True,
        )

    async def oldest_finished(self, status: OrchestrationStatus) -> datetime | None:
        async def oldest(conn: Conn, retrying: bool) -> datetime | None:
            cur = await conn.execute(
                "SELECT MIN(last_updated_at) FROM instances WHERE status = %s", (status.value,)
            )
            row = await cur.fetchone()
            return None if row is None else row[0]

        return await self.db.transact(oldest, patient=True, single=True)

    async def overdue_timers(self, now: datetime, limit: int) -> list[Message]:
        return await self.db.transact(
            lambda conn, retrying: clients.overdue_timers_txn(conn, now, limit),
            patient=True,
            single=True,
        )

    async def hub_summary(self, now: datetime) -> HubSummary:
        return await self.db.transact(
            lambda conn, retrying: clients.hub_summary_txn(conn, now, self.takeover),
            patient=False,
            single=True,
        )

    # --- episodes ------------------------------------------------------------------------
    async def claim_episodes(self, claim: Claim, limit: int) -> list[EpisodeWork]:
        if limit <= 0:
            return []
        tag = uuid.uuid4().hex

        async def body(conn: Conn, retrying: bool) -> list[EpisodeWork]:
            if retrying:  # an earlier attempt may have gone through unseen: hand out its work
                taken = await claims.reload_claim_txn(conn, claim, tag)
                if taken is not None:
                    return taken
            return await claims.claim_episodes_txn(
                conn, claim, limit, tag=tag, window=self.takeover
            )

        return await self.db.transact(body, patient=True, single=True)

    async def commit_episode(
        self,
        owner: str,
        work: EpisodeWork,
        outcome: EpisodeOutcome,
        *,
        lease_activities: tuple[datetime, int] | None = None,
    ) -> list[ActivityTask]:
        return await self.commit_episode_holding(
            owner, work, outcome, lease_activities=lease_activities
        )

    async def commit_episode_holding(
        self,
        owner: str,
        work: EpisodeWork,
        outcome: EpisodeOutcome,
        *,
        lease_activities: tuple[datetime, int] | None = None,
        hold_until: datetime | None = None,
        completes: ActivityTask | None = None,
    ) -> list[ActivityTask]:
        """See `InstanceHolder`: one statement (a transaction only when the episode starts
        other instances)."""
        require_same_instance(work, outcome)
        params = claims.commit_params(
            owner,
            work,
            outcome,
            tag=uuid.uuid4().hex,
            channel=self.schema,
            sender=self._sender,
            lease_activities=lease_activities,
            hold_until=hold_until,
            completes=completes,
        )
        leasing = 0 if lease_activities is None else lease_activities[1]
        # Retried after an answer that never came, a commit finds its own tag on the instance
        # if it went through, and answers as it would have: the episode is recorded once, and
        # the activities it leased are handed out (else they would wait, leased to a host that
        # never heard of them, until their lease expired).
        if outcome.starts:

            async def commit(conn: Conn, retrying: bool) -> claims.Committed:
                async with conn.transaction():
                    return await claims.commit_with_starts_txn(
                        conn, params, work, outcome, leasing, retrying=retrying
                    )

            done = await self.db.transact(commit, patient=True, single=True)
        else:
            [row] = await self._commits.call(claims.COMMIT, params)
            done = claims.committed(row, work, outcome, leasing)
        self.committed(outcome.instance)
        wake = done.wake
        if not wake and not done.held and outcome.instance.status not in TERMINAL_STATUSES:
            # A result enqueued while this commit held the instance can miss both the commit's
            # own look at the inbox (it was not committed yet) and its NOTIFY's claims (the
            # instance was still locked): look again now that the lock is gone, or it would
            # wait for the polling fallback. (Held, the instance is the holder's to run, and a
            # hold ends with its activity's result; finished, its messages are only dropped.)
            wake = await self.db.transact(
                lambda conn, retrying: clients.has_messages(conn, work.instance.instance_id),
                patient=True,
                single=True,
            )
        if wake:
            self.notify()
        return done.leased

    async def abandon_episode(
        self, owner: str, work: EpisodeWork, *, retry_at: datetime | None = None
    ) -> None:
        async def abandon(conn: Conn, retrying: bool) -> bool:
            # With `retry_at`, a lock with no owner: every host's next due time includes it.
            cur = await conn.execute(
                "UPDATE instances SET lock_owner = NULL, lock_until = %s "
                "WHERE instance_id = %s AND lock_owner = %s AND lock_token = %s",
                (
                    None if retry_at is None else utc(retry_at),
                    work.instance.instance_id,
                    owner,
                    work.lease_token,
                ),
            )
            if cur.rowcount > 0:  # its messages are claimable again, or when to look again
                await notify(conn, self.schema, self._sender)
            return cur.rowcount > 0

        if await self.db.transact(abandon, patient=True):
            self.notify()

    # --- activities ----------------------------------------------------------------------
    async def claim_activities(self, claim: Claim, limit: int) -> list[ActivityTask]:
        if limit <= 0:
            return []
        tag = uuid.uuid4().hex
        return await self.db.transact(
            lambda conn, retrying: claims.claim_activities_txn(
                conn, claim, limit, tag=tag, window=self.takeover, retrying=retrying
            ),
            patient=True,
            single=True,
        )

    async def complete_activity(
        self, task: ActivityTask, result: Message, claim: Claim | None = None
    ) -> Completion | None:
        # The lease token is deliberately not checked: delivery is at least once, and whichever
        # run completes first wins (a retry after a lost answer finds the task gone).
        task_id = task.task_id
        if task_id is None:
            return None
        # Completions made at the same time share a statement, as commits do. Run again after
        # an answer that was lost, the function answers as the lost attempt would have: the
        # task is gone, and a lease that attempt took (its tag) is handed out, or the instance
        # would sit leased to this host, which never runs it, until the lease expired.
        params = claims.complete_params(
            task_id,
            result,
            claim,
            tag=uuid.uuid4().hex,
            window=self.takeover,
            channel=self.schema,
            sender=self._sender,
        )
        rows = await self._completions.call(claims.COMPLETE, params)
        if not rows:  # the task was gone: another run (or the lost attempt) completed it
            return None
        work = None
        if claim is not None and rows[0][0] is not None:
            works = claims.decoded_work(rows, claim.known)
            if works is None:  # history to read, or a message that does not decode
                works = await self.db.transact(
                    lambda conn, retrying: claims.load_work(conn, rows, claim.known),
                    patient=True,
                    single=True,
                )
            work = works[0] if works else None
        if work is None:
            self.notify()
        return Completion(work)

    async def renew_activity_leases(
        self, owner: str, tasks: Sequence[ActivityTask], lease_until: datetime
    ) -> None:
        ids = [task.task_id for task in tasks if task.task_id is not None]
        if not ids:
            return
        await self.db.transact(
            lambda conn, retrying: conn.execute(
                "UPDATE activity_tasks SET lease_until = %s "
                "WHERE id = ANY(%s) AND lease_owner = %s",
                (utc(lease_until), ids, owner),
            ),
            patient=True,
            single=True,
        )

    # --- wake-ups ------------------------------------------------------------------------
    async def next_due_at(self, now: datetime) -> datetime | None:
        own = sorted(self._owners)
        return await self.db.transact(
            lambda conn, retrying: hosts.next_due_txn(conn, now, self.takeover, own),
            patient=True,
            single=True,
        )

    # --- timer triggers ------------------------------------------------------------------
    async def claim_timer_run(
        self, function: str, due_at: datetime | None, claim: Claim
    ) -> int | None:
        # Not retried after a lost COMMIT with a claim tag: a run that was claimed unseen just
        # holds its lease until it expires, and the occurrence is skipped (at most once).
        return await self.db.transact(
            lambda conn, retrying: timers.claim_timer_run_txn(
                conn, function, due_at, claim, self.takeover
            ),
            patient=True,
        )

    async def renew_timer_run(
        self, function: str, owner: str, token: int, lease_until: datetime
    ) -> bool:
        return await self.db.transact(
            lambda conn, retrying: timers.renew_timer_run_txn(
                conn, function, owner, token, lease_until
            ),
            patient=True,
            single=True,
        )

    async def finish_timer_run(
        self, function: str, owner: str, token: int, status: TimerStatus | None
    ) -> bool:
        return await self.db.transact(
            lambda conn, retrying: timers.finish_timer_run_txn(
                conn, function, owner, token, status
            ),
            patient=True,
        )

    async def get_timer_status(self, function: str) -> TimerStatus | None:
        return await self.db.transact(
            lambda conn, retrying: timers.get_timer_status_txn(conn, function),
            patient=True,
            single=True,
        )

    async def set_timer_status(self, function: str, status: TimerStatus) -> None:
        await self.db.transact(
            lambda conn, retrying: timers.set_timer_status_txn(conn, function, status),
            patient=True,
        )
