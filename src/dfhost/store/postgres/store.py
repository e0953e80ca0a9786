"""`PostgresStore`: URLs, connections, retries through outages, wake-ups, and the `Store` methods
(see the package docstring for the design)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.pq import TransactionStatus

from dfhost.history import (
    TERMINAL_STATUSES,
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
    StoreError,
    TimerStatus,
)
from dfhost.store.postgres import claims, clients, timers
from dfhost.store.postgres.config import DEFAULT_HUB, DEFAULT_TAKEOVER, parse_hub_url
from dfhost.store.postgres.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Conn,
    delete_instances,
    notify,
    utc,
)
from dfhost.store.wakeup import FinishWatchers, Wakeup
from dfhost.work import ActivityTask, EpisodeOutcome, EpisodeWork, Message, StartRequest

__all__ = [
    "CLIENT_PATIENCE",
    "DEFAULT_HUB",
    "DEFAULT_TAKEOVER",
    "POLL_FALLBACK",
    "SCHEMA_VERSION",
    "PostgresStore",
]

log = logging.getLogger("dfhost.store.postgres")

T = TypeVar("T")

POLL_FALLBACK = timedelta(seconds=10)
"""The longest an idle host waits without looking, in case a notification was missed."""
CLIENT_PATIENCE = 15.0
"""Seconds a client call (start, raise, query, ...) retries through an outage before failing."""
_POOL_SIZE = 8
_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 2.0
_CONFLICT_RETRIES = 20
_OUTAGE_STATES = frozenset({"25006", "53300", "57P01", "57P02", "57P03"})
"""Errors on a live connection that mean "try again later", as during a restart or failover:
read-only (a demoted primary), too many connections, shutting down, starting up."""
_LIBPQ_DEFAULTS = {
    "connect_timeout": "5",
    "application_name": "dfhost",
    # A host whose database vanished without a word (cable, VM) must notice, or its listener
    # would wait forever on a dead socket.
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
}

Body = Callable[[Conn, bool], Awaitable[T]]
"""A transaction body: (connection, whether an earlier attempt failed) -> result."""


@dataclass(frozen=True, slots=True)
class _Target:
    conninfo: str
    hub: str
    schema: str
    takeover: timedelta
    label: str


def _parse_url(url: str) -> _Target:
    parsed = parse_hub_url(url)
    hub, takeover, base = parsed.hub, parsed.takeover, parsed.libpq_url()
    try:
        params = psycopg.conninfo.conninfo_to_dict(base)
    except psycopg.Error as exc:
        raise StoreError(f"invalid store URL: {_one_line(exc)}") from None
    schema = f"dfhost_{hub.lower()}"
    for key, value in _LIBPQ_DEFAULTS.items():
        params.setdefault(key, value)
    # Unqualified table names resolve to the hub's schema; times come back in UTC. A session
    # idle inside a transaction for the takeover window belongs to a frozen host (a paused
    # VM, SIGSTOP): the server ends it, so its row locks don't outlive its leases.
    idle_ms = int(max(takeover.total_seconds(), 5.0) * 1000)
    params["options"] = (
        f"{params.get('options') or ''} -c search_path={schema} -c TimeZone=UTC "
        f"-c idle_in_transaction_session_timeout={idle_ms}"
    )
    user = params.get("user")
    where = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
    label = f"postgresql://{f'{user}@' if user else ''}{where}/{params.get('dbname') or ''}"
    return _Target(
        conninfo=psycopg.conninfo.make_conninfo("", **params),
        hub=hub,
        schema=schema,
        takeover=takeover,
        label=f"{label} (hub {hub})",
    )


def _connection_lost(conn: Conn, exc: psycopg.Error) -> bool:
    """Whether `exc` means the session is gone or going, not that a statement failed.

    A pipeline cut off by the server (a terminated backend, a shutdown) surfaces as "cannot
    exit pipeline mode while busy", without an SQLSTATE, on a connection not yet marked
    broken; the server's own reason is in the exception's context. Taking that for a
    statement error would skip the retry that recovers a claim whose COMMIT went unseen,
    leaving its instances leased to a live host that never got them."""
    if conn.broken:
        return True
    seen: BaseException | None = exc
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        if isinstance(seen, psycopg.Error) and seen.sqlstate in _OUTAGE_STATES:
            return True
        visited.add(id(seen))
        seen = seen.__cause__ or seen.__context__
    return False


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(eq=False, slots=True)
class _Pooled:
    conn: Conn
    epoch: int
    """The outage count when it was opened: a later outage has probably killed it."""


class _Unreachable(Exception):
    """A connection failed: the database or the network is (maybe briefly) gone."""

    def __init__(self, connecting: bool) -> None:
        super().__init__(connecting)
        self.connecting = connecting
        """Opening a connection failed, so waiting before the next try is worth it."""


class PostgresStore:
    """The `Store` for `postgresql://` URLs. Use it from one event loop."""

    holds_instances = False

    def __init__(self, url: str) -> None:
        self.url = url
        target = _parse_url(url)
        self.hub = target.hub
        self.schema = target.schema
        self.takeover = target.takeover
        self.conninfo = target.conninfo
        self._label = target.label
        self._sender = uuid.uuid4().hex  # our NOTIFY payload, so the listener can skip our own
        self._idle: list[_Pooled] = []
        self._slots: asyncio.Semaphore | None = None
        self._open = False
        self._epoch = 0
        self._outage_since: float | None = None
        self._owners: set[str] = set()
        self._wake = Wakeup(longest=POLL_FALLBACK)
        self._finishes = FinishWatchers()
        self._listener: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        if self._open:
            return
        try:
            conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to task hub {self._label}: {_one_line(exc)}") from exc
        try:
            await self._migrate(conn)
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, psycopg.Error):
                raise StoreError(f"cannot open task hub {self._label}: {_one_line(exc)}") from exc
            raise
        self._idle.append(_Pooled(conn, self._epoch))
        self._slots = asyncio.Semaphore(_POOL_SIZE)
        self._open = True
        listening = asyncio.Event()
        self._listener = asyncio.create_task(self._listen(listening), name="dfhost-pg-listen")
        # The first LISTEN must be in place before anyone waits, or a wake-up could be missed.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await listening.wait()

    async def _migrate(self, conn: Conn) -> None:
        async with conn.transaction():
            # Hosts starting together take turns; the loser finds the schema up to date.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"dfhost:{self.schema}",)
            )
            # Look before creating: a role may use a schema prepared for it without the right
            # to create one.
            cur = await conn.execute(
                "SELECT to_regnamespace(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
                (self.schema, f"{self.schema}.schema_version"),
            )
            row = await cur.fetchone()
            has_schema, has_version = row if row is not None else (False, False)
            if not has_schema:
                await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
            if not has_version:
                await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            cur = await conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            row = await cur.fetchone()
            version = int(row[0]) if row is not None else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"task hub {self._label} has schema version {version}, newer than this "
                    f"dfhost supports ({SCHEMA_VERSION})"
                )
            if version == SCHEMA_VERSION:
                return
            for step in MIGRATIONS[version:]:
                for statement in step:
                    await conn.execute(statement)
            await conn.execute("DELETE FROM schema_version")
            await conn.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION,))

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
                    await self._transact(self._unregister(owners), patient=False, tries=1)
            self._owners.clear()
        self._open = False
        await self._drop_idle()

    def _unregister(self, owners: Sequence[str]) -> Body[None]:
        async def body(conn: Conn, retrying: bool) -> None:
            await claims.unregister_hosts_txn(conn, owners)
            await notify(conn, self.schema, self._sender)

        return body

    async def open_host(self, owner: str, now: datetime) -> None:
        """Register `owner` (heartbeats start), then free the work of every owner that is not
        a live host: never registered, or silent for the takeover window."""
        self._owners.add(owner)

        async def register(conn: Conn, retrying: bool) -> bool:
            freed = await claims.register_host_txn(conn, owner, self.takeover)
            if freed:
                await notify(conn, self.schema, self._sender)
            return freed

        if await self._transact(register, patient=True):
            self.notify()
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._beat(), name="dfhost-pg-heartbeat")

    async def _beat(self) -> None:
        interval = self.takeover.total_seconds() / 6
        while True:
            await asyncio.sleep(interval)
            try:
                await self._transact(
                    self._heartbeat_body(sorted(self._owners)), patient=True, single=True
                )
            except StoreError as exc:  # not an outage (those are retried): say why, go on
                log.error("dfhost: could not write the heartbeat to %s: %s", self._label, exc)

    @staticmethod
    def _heartbeat_body(owners: Sequence[str]) -> Body[None]:
        return lambda conn, retrying: claims.heartbeat_txn(conn, owners)

    # --- clients -------------------------------------------------------------------------
    async def create_instance(self, request: StartRequest) -> bool:
        async def create(conn: Conn, retrying: bool) -> tuple[bool, bool]:
            created, enqueued = await clients.start_txn(conn, request, retrying=retrying)
            if enqueued:
                await notify(conn, self.schema, self._sender)
            return created, enqueued

        created, enqueued = await self._transact(create, patient=False)
        if enqueued:
            self.notify()
        return created

    async def send_message(self, message: Message) -> DeliveryResult:
        async def send(conn: Conn, retrying: bool) -> DeliveryResult:
            result = await clients.send_txn(conn, message)
            if result == "sent":
                await notify(conn, self.schema, self._sender)
            return result

        result = await self._transact(
            send,
            patient=False,
            ambiguous=(
                f"the connection to task hub {self._label} was lost while committing; the "
                f"message to {message.instance_id!r} may or may not have been sent"
            ),
        )
        if result == "sent":
            self.notify()
        return result

    async def get_instance(self, instance_id: str) -> Instance | None:
        return await self._transact(
            lambda conn, retrying: clients.load_instance(conn, instance_id),
            patient=False,
            single=True,
        )

    async def get_history(self, instance_id: str) -> list[HistoryEvent]:
        """Raises StoreError if a stored row does not decode."""
        events, error = await self._transact(
            lambda conn, retrying: clients.load_history(conn, instance_id),
            patient=False,
            single=True,
        )
        if error is not None:
            raise StoreError(error)
        return events

    async def query_instances(self, query: InstanceQuery) -> InstancePage:
        if query.continuation is not None:
            clients.decode_token(query.continuation)  # a bad token is the caller's error: no retry
        page, token = await self._transact(
            lambda conn, retrying: clients.query_txn(conn, query), patient=False, single=True
        )
        return InstancePage(instances=page, continuation=token)

    async def purge_instance(self, instance_id: str) -> int:
        async def purge(conn: Conn, retrying: bool) -> int:
            # Deleting the row first locks it: an episode committing on it finishes first.
            cur = await conn.execute("DELETE FROM instances WHERE instance_id = %s", (instance_id,))
            await delete_instances(conn, [instance_id], keep_row=True)
            return cur.rowcount

        return await self._transact(purge, patient=False)

    async def purge_instances(self, query: InstanceQuery) -> int:
        total = 0
        while count := await self._transact(
            lambda conn, retrying: clients.purge_batch_txn(conn, query), patient=False
        ):
            total += count
        return total

    async def count_instances(self, query: InstanceQuery) -> int:
        where, params = clients.query_filters(query)

        async def count(conn: Conn, retrying: bool) -> int:
            cur = await conn.execute(f"SELECT COUNT(*) FROM instances WHERE {where}", params)
            row = await cur.fetchone()
            return int(row[0]) if row is not None else 0

        return await self._transact(count, patient=False, single=True)

    # --- maintenance ---------------------------------------------------------------------
    async def purge_finished(
        self, status: OrchestrationStatus, finished_before: datetime, limit: int
    ) -> int:
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"retention purges finished instances only, not {status.value}")
        return await self._transact(
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

        return await self._transact(oldest, patient=True, single=True)

    async def overdue_timers(self, now: datetime, limit: int) -> list[Message]:
        return await self._transact(
            lambda conn, retrying: clients.overdue_timers_txn(conn, now, limit),
            patient=True,
            single=True,
        )

    async def hub_summary(self, now: datetime) -> HubSummary:
        params = {"now": now, "window": self.takeover}

        async def load(conn: Conn, retrying: bool) -> HubSummary:
            cur = await conn.execute("SELECT name, status, COUNT(*) FROM instances GROUP BY 1, 2")
            counts = {(r[0], OrchestrationStatus(r[1])): int(r[2]) for r in await cur.fetchall()}
            cur = await conn.execute(
                "SELECT COUNT(*) FILTER (WHERE visible_at IS NULL OR visible_at <= %(now)s), "
                "MIN(COALESCE(visible_at, (event::jsonb ->> 'timestamp')::timestamptz)) "
                "FILTER (WHERE visible_at IS NULL OR visible_at <= %(now)s), "
                "MIN(visible_at) FILTER (WHERE visible_at > %(now)s) FROM messages",
                params,
            )
            ready, oldest_message, next_timer = await cur.fetchone() or (0, None, None)
            cur = await conn.execute(
                "SELECT COUNT(*) FILTER (WHERE lease_until IS NULL OR lease_until <= %(now)s), "
                "COUNT(*) FILTER (WHERE lease_until > %(now)s), "
                "MIN(scheduled_at) FILTER (WHERE lease_until IS NULL OR lease_until <= %(now)s) "
                "FROM activity_tasks",
                params,
            )
            waiting, running, oldest_task = await cur.fetchone() or (0, 0, None)
            cur = await conn.execute(
                "SELECT COUNT(*) FROM hosts WHERE heartbeat_at > now() - %(window)s", params
            )
            hosts = await cur.fetchone()
            oldest = min((t for t in (oldest_message, oldest_task) if t is not None), default=None)
            return HubSummary(
                instances=counts,
                ready_messages=int(ready),
                ready_activities=int(waiting),
                running_activities=int(running),
                oldest_ready=oldest,
                next_timer=next_timer,
                live_hosts=int(hosts[0]) if hosts is not None else 0,
            )

        return await self._transact(load, patient=False, single=True)

    # --- engines -------------------------------------------------------------------------
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
        claim = uuid.uuid4().hex

        async def body(conn: Conn, retrying: bool) -> list[EpisodeWork]:
            if retrying:  # an earlier attempt may have committed unseen: hand out what it took
                taken = await claims.reload_claim_txn(conn, owner, now, claim, known)
                if taken is not None:
                    return taken
            return await claims.claim_episodes_txn(
                conn,
                owner,
                now,
                lease_until,
                limit,
                claim=claim,
                window=self.takeover,
                known=known,
            )

        return await self._transact(body, patient=True, pipelined=True)

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
        if outcome.instance.instance_id != work.instance.instance_id:
            raise ValueError("an episode's outcome must be for the instance it claimed")
        if completes is not None:  # hold_until is a hint: this backend always releases
            raise NotImplementedError("this task hub does not hold instances between episodes")

        lease = None
        if lease_activities is not None and lease_activities[1] > 0 and outcome.activities:
            lease = (lease_activities[0], lease_activities[1], uuid.uuid4().hex)

        async def commit(conn: Conn, retrying: bool) -> tuple[bool, list[ActivityTask]]:
            # Retried after a COMMIT that may have gone through, the lease check fails: the
            # episode was recorded at most once either way. If that COMMIT leased activities,
            # they are found by their claim id, and then it did go through: hand them out
            # (and wake this process, which its own NOTIFY does not), or they would wait,
            # leased to a host that never heard of them, until their lease expired.
            if (
                retrying
                and lease is not None
                and (taken := await claims.leased_activities_txn(conn, owner, lease[2]))
            ):
                return True, taken
            wake, leased = await claims.commit_txn(
                conn, owner, work, outcome, retrying=retrying, lease_activities=lease
            )
            if wake:
                await notify(conn, self.schema, self._sender)
            return wake, leased

        wake, leased = await self._transact(commit, patient=True, pipelined=True)
        if not wake:
            # A result enqueued while this commit held the instance can miss both the commit's
            # own look at the inbox (it was not committed yet) and its NOTIFY's claims (the
            # instance was still locked): look again now that the lock is gone, or it would
            # wait for the polling fallback.
            wake = await self._transact(
                lambda conn, retrying: clients.has_messages(conn, work.instance.instance_id),
                patient=True,
                single=True,
            )
        if wake:
            self.notify()
        if outcome.instance.status in TERMINAL_STATUSES:
            self._finishes.finished(outcome.instance.instance_id)
        return leased

    async def abandon_episode(self, owner: str, work: EpisodeWork) -> None:
        async def abandon(conn: Conn, retrying: bool) -> bool:
            cur = await conn.execute(
                "UPDATE instances SET lock_owner = NULL, lock_until = NULL "
                "WHERE instance_id = %s AND lock_owner = %s AND lock_token = %s",
                (work.instance.instance_id, owner, work.lease_token),
            )
            if cur.rowcount > 0:  # its messages are claimable again
                await notify(conn, self.schema, self._sender)
            return cur.rowcount > 0

        if await self._transact(abandon, patient=True):
            self.notify()

    async def claim_activities(
        self, owner: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[ActivityTask]:
        if limit <= 0:
            return []
        claim = uuid.uuid4().hex
        return await self._transact(
            lambda conn, retrying: claims.claim_activities_txn(
                conn,
                owner,
                now,
                lease_until,
                limit,
                claim=claim,
                window=self.takeover,
                retrying=retrying,
            ),
            patient=True,
            single=True,
        )

    async def complete_activity(self, task: ActivityTask, result: Message) -> bool:
        # The lease token is deliberately not checked: delivery is at least once, and whichever
        # run completes first wins (a retry after a lost COMMIT finds the task gone).
        task_id = task.task_id
        if task_id is None:
            return False

        completed = await self._transact(
            lambda conn, retrying: claims.complete_activity_txn(
                conn, task_id, result, self.schema, self._sender
            ),
            patient=True,
            single=True,
        )
        if completed:
            self.notify()
        return completed

    async def complete_activity_and_claim(
        self, task: ActivityTask, result: Message, claim: EpisodeClaim
    ) -> tuple[bool, EpisodeWork | None]:
        task_id = task.task_id
        if task_id is None:
            return False, None
        tag = uuid.uuid4().hex

        async def body(conn: Conn, retrying: bool) -> tuple[bool, EpisodeWork | None]:
            # Retried after a COMMIT that may have gone through, the task is gone. If that
            # COMMIT leased the instance, the lease carries `tag`: hand its work out, as a
            # claim's retry does, or the instance would sit leased to this host, which never
            # runs it, until the lease expired. If it completed without leasing, the retry
            # answers (False, None), as `complete_activity`'s does: the result was delivered
            # once either way.
            if retrying:
                taken = await claims.reload_claim_txn(
                    conn, claim.owner, claim.now, tag, claim.known
                )
                if taken:
                    return True, taken[0]
            done, work = await claims.complete_and_claim_txn(
                conn, task_id, result, claim, claim=tag, window=self.takeover
            )
            if done and work is None:
                await notify(conn, self.schema, self._sender)
            return done, work

        done, work = await self._transact(body, patient=True, pipelined=True)
        if done and work is None:
            self.notify()
        return done, work

    async def renew_activity_leases(
        self, owner: str, tasks: Sequence[ActivityTask], lease_until: datetime
    ) -> None:
        ids = [task.task_id for task in tasks if task.task_id is not None]
        if not ids:
            return
        await self._transact(
            lambda conn, retrying: conn.execute(
                "UPDATE activity_tasks SET lease_until = %s "
                "WHERE id = ANY(%s) AND lease_owner = %s",
                (utc(lease_until), ids, owner),
            ),
            patient=True,
            single=True,
        )

    async def next_due_at(self, now: datetime) -> datetime | None:
        own = sorted(self._owners)
        return await self._transact(
            lambda conn, retrying: claims.next_due_txn(conn, now, self.takeover, own),
            patient=True,
            single=True,
        )

    # --- wake-ups ------------------------------------------------------------------------
    async def wait_for_work(self, until: datetime | None) -> None:
        await self._wake.wait(until)

    def notify(self) -> None:
        self._wake.set()

    def watch_finish(self, instance_id: str) -> asyncio.Future[None]:
        return self._finishes.watch(instance_id)

    async def _listen(self, listening: asyncio.Event) -> None:
        """Hold a LISTEN connection for the store's life, reconnecting after failures."""
        delay = _FIRST_BACKOFF
        while True:
            epoch = self._epoch
            try:
                conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
            except psycopg.Error as exc:
                self._lost(exc, epoch)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
                continue
            try:
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.schema)))
                    self._reached()
                    delay = _FIRST_BACKOFF
                    if listening.is_set():
                        self.notify()  # whatever was sent while we were away is unheard
                    listening.set()
                    async for note in conn.notifies():
                        if note.payload != self._sender:
                            self.notify()
            except psycopg.Error as exc:
                self._lost(exc, epoch)

    # --- timer triggers ------------------------------------------------------------------
    async def claim_timer_run(
        self,
        function: str,
        due_at: datetime | None,
        owner: str,
        now: datetime,
        lease_until: datetime,
    ) -> int | None:
        # Not retried after a lost COMMIT with a claim tag: a run that was claimed unseen just
        # holds its lease until it expires, and the occurrence is skipped (at most once).
        return await self._transact(
            lambda conn, retrying: timers.claim_timer_run_txn(
                conn, function, due_at, owner, now, lease_until, self.takeover
            ),
            patient=True,
        )

    async def renew_timer_run(
        self, function: str, owner: str, token: int, lease_until: datetime
    ) -> bool:
        return await self._transact(
            lambda conn, retrying: timers.renew_timer_run_txn(
                conn, function, owner, token, lease_until
            ),
            patient=True,
            single=True,
        )

    async def finish_timer_run(
        self, function: str, owner: str, token: int, status: TimerStatus | None
    ) -> bool:
        return await self._transact(
            lambda conn, retrying: timers.finish_timer_run_txn(
                conn, function, owner, token, status
            ),
            patient=True,
        )

    async def get_timer_status(self, function: str) -> TimerStatus | None:
        return await self._transact(
            lambda conn, retrying: timers.get_timer_status_txn(conn, function),
            patient=True,
            single=True,
        )

    async def set_timer_status(self, function: str, status: TimerStatus) -> None:
        await self._transact(
            lambda conn, retrying: timers.set_timer_status_txn(conn, function, status),
            patient=True,
        )

    # --- plumbing ------------------------------------------------------------------------
    async def _transact(
        self,
        body: Body[T],
        *,
        patient: bool,
        ambiguous: str | None = None,
        tries: int | None = None,
        single: bool = False,
        pipelined: bool = False,
    ) -> T:
        """Run `body` in one transaction, retrying through outages and lock conflicts.

        `patient` (engine work) retries until the database answers or the store closes; else
        the call fails after `CLIENT_PATIENCE` seconds. `ambiguous` is the error raised,
        without retrying, when the connection dies during COMMIT. `single`: the body is one
        statement, atomic by itself, so BEGIN and COMMIT would only cost round trips.
        `pipelined`: the body fetches every result it needs (no `rowcount`), so its
        statements can be sent without waiting for each other's answers.
        """
        deadline = None if patient else time.monotonic() + CLIENT_PATIENCE
        retrying = False
        delay = _FIRST_BACKOFF
        failures = conflicts = attempts = 0
        while True:
            if not self._open or self._slots is None:
                raise StoreError(f"task hub {self._label} is not open")
            attempts += 1
            try:
                return await self._attempt(body, retrying, ambiguous, single, pipelined)
            except pg_errors.TransactionRollback as exc:  # deadlock or serialization failure
                conflicts += 1
                if conflicts > _CONFLICT_RETRIES:
                    raise StoreError(f"task hub {self._label}: {_one_line(exc)}") from exc
                await asyncio.sleep(0.001 * conflicts)
            except _Unreachable as exc:
                failures += 1
                cause = exc.__cause__ or exc
                if (tries is not None and attempts >= tries) or (
                    deadline is not None and time.monotonic() > deadline
                ):
                    raise StoreError(
                        f"task hub {self._label} is unreachable: {_one_line(cause)}"
                    ) from cause
                # A dead pooled connection gets one immediate retry on a fresh one: the
                # database may well be up (a killed backend, a restarted proxy).
                if exc.connecting or failures > 1:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _MAX_BACKOFF)
            retrying = True

    async def _attempt(
        self, body: Body[T], retrying: bool, ambiguous: str | None, single: bool, pipelined: bool
    ) -> T:
        """One try; raises `_Unreachable(backoff)` when the connection failed."""
        assert self._slots is not None
        async with self._slots:
            pooled: _Pooled | None = None
            committing = False
            epoch = self._epoch
            try:
                if self._idle:
                    pooled = self._idle.pop()
                else:
                    conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
                    pooled = _Pooled(conn, epoch)
                conn = pooled.conn
                if single:
                    result = await body(conn, retrying)
                else:
                    async with (
                        conn.pipeline() if pipelined else contextlib.nullcontext(),
                        conn.transaction(),
                    ):
                        result = await body(conn, retrying)
                        committing = True
            except psycopg.Error as exc:
                if pooled is not None and not pooled.conn.closed:
                    if not _connection_lost(pooled.conn, exc):
                        if isinstance(exc, pg_errors.TransactionRollback):
                            raise
                        raise StoreError(f"task hub {self._label}: {_one_line(exc)}") from exc
                    await pooled.conn.close()
                await self._lost_async(exc, epoch if pooled is None else pooled.epoch)
                if committing and ambiguous is not None:
                    raise StoreError(ambiguous) from exc
                raise _Unreachable(connecting=pooled is None) from exc
            finally:
                if pooled is not None:
                    await self._release(pooled)
        self._reached()
        return result

    async def _release(self, pooled: _Pooled) -> None:
        conn = pooled.conn
        if (
            self._open
            and not conn.closed
            and conn.info.transaction_status == TransactionStatus.IDLE
        ):
            self._idle.append(pooled)
        else:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for pooled in idle:
            with contextlib.suppress(Exception):
                await pooled.conn.close()

    async def _lost_async(self, exc: BaseException, epoch: int) -> None:
        self._lost(exc, epoch)
        await self._drop_idle()  # they were probably cut off too

    def _lost(self, exc: BaseException, epoch: int) -> None:
        """Note a failed connection, or a failed attempt to open one, that began in `epoch`;
        log an outage's start.

        A connection opened before the current outage began failing later is part of that
        outage, not a new one."""
        if self._outage_since is not None or epoch < self._epoch:
            return
        self._epoch += 1
        self._outage_since = time.monotonic()
        log.warning(
            "dfhost: lost the connection to task hub %s (%s); retrying with backoff",
            self._label,
            _one_line(exc),
        )

    def _reached(self) -> None:
        if self._outage_since is not None:
            log.info(
                "dfhost: task hub %s is reachable again after %.1f s",
                self._label,
                time.monotonic() - self._outage_since,
            )
            self._outage_since = None
