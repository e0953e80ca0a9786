"""`SqliteStore`: the SQLite task hub, one file shared by any number of hosts and clients.

One worker thread owns the connection and runs every statement (`thread`), so the event loop
never blocks on disk and the connection is never shared between threads. Every mutation is one
`BEGIN IMMEDIATE` transaction, which also serializes writers in other processes (hosts and
clients sharing the file). Hosts tell each other's death by lock files (`hostlocks`), and free a
dead host's leases; clients in other processes wake a host by its doorbell (`doorbell`).

Modules: `store` (this: the `Store`, connections, hosts, wake-ups), `schema` (tables,
migrations, rows), `clients`, `claims` (episodes, activities, the instance hold) and `timers`
hold the transactions.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs

from dfhost.history import HistoryEvent, Instance, OrchestrationStatus, format_time, parse_time
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
from dfhost.store.sqlite import claims, clients, timers
from dfhost.store.sqlite.doorbell import Doorbell
from dfhost.store.sqlite.hostlocks import HostLock
from dfhost.store.sqlite.schema import (
    SCHEMA_VERSION,
    connect,
    delete_instances,
    load_history,
    load_instance,
)
from dfhost.store.sqlite.thread import DatabaseThread
from dfhost.store.wakeup import Wakeups
from dfhost.work import ActivityTask, EpisodeOutcome, EpisodeWork, Message, StartRequest

__all__ = ["SCHEMA_VERSION", "SqliteStore"]

T = TypeVar("T")


def _parse_url(url: str) -> tuple[Path | None, str]:
    """(absolute database path or None for memory, synchronous mode) from a store URL."""
    base, _, query = url.partition("?")
    if base in ("sqlite://:memory:", "sqlite:///:memory:"):
        path = None
    elif base.startswith("sqlite:///") and len(base) > len("sqlite:///"):
        path = Path(os.path.abspath(base[len("sqlite:///") :]))
    else:
        raise StoreError(
            f"invalid store URL {url!r}: expected sqlite:///PATH, sqlite:////ABSOLUTE/PATH "
            "or sqlite://:memory:"
        )
    try:
        options = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise StoreError(f"invalid store URL {url!r}: malformed query string") from None
    synchronous = "FULL"
    for key, values in options.items():
        if key != "synchronous":
            raise StoreError(f"invalid store URL {url!r}: unsupported option {key!r}")
        if len(values) != 1:
            raise StoreError(f"invalid store URL {url!r}: {key!r} given more than once")
        synchronous = values[0].upper()
        if synchronous not in ("FULL", "NORMAL"):
            raise StoreError(f"invalid store URL {url!r}: synchronous must be full or normal")
    return path, synchronous


class SqliteStore(Wakeups):
    """The `Store` for `sqlite:///PATH` and `sqlite://:memory:` URLs; an `InstanceHolder`.

    `notify()` must be called on the event loop's thread; other threads use
    `loop.call_soon_threadsafe(store.notify)`.
    """

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.path, self._synchronous = _parse_url(url)
        self._label = str(self.path) if self.path is not None else ":memory:"
        self._db: DatabaseThread | None = None
        self._conn: sqlite3.Connection | None = None
        """In memory only, used on the event loop's thread; files have `_db`'s connection."""
        self._host_lock: HostLock | None = None  # set once this store is a host's
        # SQLite has no notifications: clients in other processes ring the host's doorbell.
        self._doorbell = None if self.path is None else Doorbell(self.path)

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        if self._db is not None or self._conn is not None:
            return
        if self.path is None:
            # In memory there is no I/O to wait for: statements take microseconds, and running
            # them on the event loop's thread saves two thread switches per call.
            self._conn = connect(None, self._synchronous)
            return
        db = DatabaseThread("dfhost-sqlite", self._synchronous)
        await db.start(functools.partial(connect, self.path, self._synchronous))
        self._db = db

    async def close(self) -> None:
        if self._doorbell is not None:
            self._doorbell.close()
        db, self._db = self._db, None
        if db is not None:
            await db.stop(self._shutdown)
        elif self._conn is not None:
            self._shutdown(self._conn)
            self._conn = None

    def _shutdown(self, conn: sqlite3.Connection | None) -> None:
        if conn is not None:
            conn.close()
        if self._host_lock is not None:
            self._host_lock.release()
            self._host_lock = None

    async def open_host(self, owner: str, now: datetime) -> None:
        """Hold this host's lock file, then free the work of every owner that is not a live
        host (see `hostlocks`): several hosts may share one file."""
        if self.path is not None and self._host_lock is None:
            await self._call(functools.partial(self._lock_host, owner))
            if self._doorbell is not None:
                self._doorbell.listen(self.notify)
        await self._write(functools.partial(self._free_dead_hosts, opening=True))

    def _lock_host(self, owner: str) -> None:
        assert self.path is not None
        lock = HostLock(self.path, owner)
        try:
            lock.hold()
        except OSError as exc:
            raise StoreError(f"cannot create host lock file in {lock.folder}: {exc}") from exc
        self._host_lock = lock

    def _free_dead_hosts(self, conn: sqlite3.Connection, *, opening: bool = False) -> None:
        """Release the leases and timer runs of dead hosts and delete their lock files.

        Opening, every owner of a lease without a live lock file counts as dead (as the single
        host used to free everything). A running host checks, before each claim, the lock
        files only (a directory listing and a `flock` try per host, no query), and frees the
        hosts whose file it can lock: a crashed or stopped host's work is taken over at once,
        with no heartbeat.
        """
        lock = self._host_lock
        if lock is None:
            if opening:  # in memory: one connection, so every other owner is gone
                for owner in claims.lease_owners(conn):
                    claims.release_owner(conn, owner)
            return
        owners = set(lock.others())
        if opening:
            owners.update(claims.lease_owners(conn))
        for owner in owners:
            if lock.bury_if_dead(owner, missing_is_dead=opening):
                claims.release_owner(conn, owner)

    # --- clients -------------------------------------------------------------------------
    async def create_instance(self, request: StartRequest) -> bool:
        created, enqueued = await self._write(lambda conn: clients.start(conn, request))
        if enqueued:
            self.notify()
        return created

    async def send_message(self, message: Message) -> DeliveryResult:
        result = await self._write(lambda conn: clients.send(conn, message))
        if result == "sent":
            self.notify()
        return result

    async def get_instance(self, instance_id: str) -> Instance | None:
        return await self._read(lambda conn: load_instance(conn, instance_id))

    async def get_history(self, instance_id: str) -> list[HistoryEvent]:
        """Raises StoreError if a stored row does not decode."""

        def load(conn: sqlite3.Connection) -> tuple[list[HistoryEvent], str | None]:
            instance = load_instance(conn, instance_id)
            if instance is None:
                return [], None
            return load_history(conn, instance_id, instance.execution_id)

        events, error = await self._read(load)
        if error is not None:
            raise StoreError(error)
        return events

    async def query_instances(self, query: InstanceQuery) -> InstancePage:
        return await self._read(lambda conn: clients.query_page(conn, query))

    async def count_instances(self, query: InstanceQuery) -> int:
        return await self._read(lambda conn: clients.count(conn, query))

    async def purge_instance(self, instance_id: str) -> int:
        return await self._write(lambda conn: delete_instances(conn, [instance_id], keep_row=False))

    async def purge_instances(self, query: InstanceQuery) -> int:
        total = 0
        while count := await self._write(lambda conn: clients.purge_batch(conn, query)):
            total += count
        return total

    # --- maintenance ---------------------------------------------------------------------
    async def purge_finished(
        self, status: OrchestrationStatus, finished_before: datetime, limit: int
    ) -> int:
        require_finished(status)
        return await self._write(
            lambda conn: clients.purge_finished(conn, status, finished_before, limit)
        )

    async def oldest_finished(self, status: OrchestrationStatus) -> datetime | None:
        return await self._read(lambda conn: clients.oldest_finished(conn, status))

    async def overdue_timers(self, now: datetime, limit: int) -> list[Message]:
        return await self._read(lambda conn: clients.overdue_timers(conn, now, limit))

    async def hub_summary(self, now: datetime) -> HubSummary:
        return await self._read(lambda conn: clients.hub_summary(conn, now, self.path))

    # --- episodes ------------------------------------------------------------------------
    async def claim_episodes(self, claim: Claim, limit: int) -> list[EpisodeWork]:
        if limit <= 0:
            return []

        def body(conn: sqlite3.Connection) -> list[EpisodeWork]:
            self._free_dead_hosts(conn)
            return claims.claim_episodes(conn, claim, limit)

        return await self._write(body, durable=False)

    async def commit_episode(
        self,
        owner: str,
        work: EpisodeWork,
        outcome: EpisodeOutcome,
        *,
        lease_activities: tuple[datetime, int] | None = None,
    ) -> list[ActivityTask]:
        return await self._commit(owner, work, outcome, lease_activities, None, None)

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
        """See `InstanceHolder`."""
        return await self._commit(owner, work, outcome, lease_activities, hold_until, completes)

    async def _commit(
        self,
        owner: str,
        work: EpisodeWork,
        outcome: EpisodeOutcome,
        lease_activities: tuple[datetime, int] | None,
        hold_until: datetime | None,
        completes: ActivityTask | None,
    ) -> list[ActivityTask]:
        require_same_instance(work, outcome)
        wake, leased = await self._write(
            lambda conn: claims.commit_episode(
                conn,
                owner,
                work,
                outcome,
                lease_activities,
                hold_until=hold_until,
                completes=completes,
            )
        )
        if wake:
            self.notify()
        self.committed(outcome.instance)
        return leased

    async def abandon_episode(
        self, owner: str, work: EpisodeWork, *, retry_at: datetime | None = None
    ) -> None:
        if await self._write(
            lambda conn: claims.abandon_episode(conn, owner, work, retry_at), durable=False
        ):
            self.notify()  # its messages are claimable again, or when to look again

    # --- activities ----------------------------------------------------------------------
    async def claim_activities(self, claim: Claim, limit: int) -> list[ActivityTask]:
        if limit <= 0:
            return []

        def body(conn: sqlite3.Connection) -> list[ActivityTask]:
            self._free_dead_hosts(conn)
            return claims.claim_activities(conn, claim, limit)

        return await self._write(body, durable=False)

    async def complete_activity(
        self, task: ActivityTask, result: Message, claim: Claim | None = None
    ) -> Completion | None:
        if task.task_id is None:
            return None
        completed, work = await self._write(
            lambda conn: claims.complete_activity(conn, task, result, claim), durable=False
        )
        if not completed:
            return None
        if work is None:
            self.notify()
        return Completion(work)

    async def renew_activity_leases(
        self, owner: str, tasks: Sequence[ActivityTask], lease_until: datetime
    ) -> None:
        params = [(format_time(lease_until), task.task_id, owner) for task in tasks]
        await self._write(
            lambda conn: conn.executemany(
                "UPDATE activity_tasks SET lease_until = ? WHERE id = ? AND lease_owner = ?",
                params,
            ),
            durable=False,
        )

    # --- wake-ups ------------------------------------------------------------------------
    async def next_due_at(self, now: datetime) -> datetime | None:
        queries = (  # each column is indexed: every MIN is one index probe
            "SELECT MIN(visible_at) FROM messages WHERE visible_at > ?",
            "SELECT MIN(lock_until) FROM instances WHERE lock_until > ?",
            "SELECT MIN(lease_until) FROM activity_tasks WHERE lease_until > ?",
        )

        def due(conn: sqlite3.Connection) -> list[str]:
            found = [conn.execute(sql, (format_time(now),)).fetchone()[0] for sql in queries]
            return [value for value in found if value is not None]

        times = await self._read(due)
        return parse_time(min(times)) if times else None

    def notify(self) -> None:
        super().notify()
        if self._host_lock is None and self._doorbell is not None:
            self._doorbell.ring()

    # --- timer triggers ------------------------------------------------------------------
    async def claim_timer_run(
        self, function: str, due_at: datetime | None, claim: Claim
    ) -> int | None:
        def body(conn: sqlite3.Connection) -> int | None:
            self._free_dead_hosts(conn)
            return timers.claim_timer_run(conn, function, due_at, claim)

        return await self._write(body)

    async def renew_timer_run(
        self, function: str, owner: str, token: int, lease_until: datetime
    ) -> bool:
        return await self._write(
            lambda conn: timers.renew_timer_run(conn, function, owner, token, lease_until),
            durable=False,
        )

    async def finish_timer_run(
        self, function: str, owner: str, token: int, status: TimerStatus | None
    ) -> bool:
        return await self._write(
            lambda conn: timers.finish_timer_run(conn, function, owner, token, status)
        )

    async def get_timer_status(self, function: str) -> TimerStatus | None:
        return await self._read(lambda conn: timers.get_timer_status(conn, function))

    async def set_timer_status(self, function: str, status: TimerStatus) -> None:
        await self._write(lambda conn: timers.set_timer_status(conn, function, status))

    # --- plumbing ------------------------------------------------------------------------
    async def _call(self, job: Callable[[], T]) -> T:
        """Run `job` on the database thread, outside any transaction."""
        if self._db is not None:
            return await self._db.call(lambda _: job())
        if self._conn is None:
            raise StoreError(f"task hub {self._label} is not open")
        return job()

    async def _read(self, body: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(body, write=False, durable=False)

    async def _write(self, body: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """A write transaction; `durable=False` for leases and results that may be lost to a
        power cut (see `thread`), which then commit without waiting for the disk."""
        return await self._run(body, write=True, durable=durable)

    async def _run(
        self, body: Callable[[sqlite3.Connection], T], *, write: bool, durable: bool
    ) -> T:
        try:
            if self._db is not None:
                return await self._db.run(body, write=write, durable=durable)
            return self._transaction("BEGIN IMMEDIATE" if write else "BEGIN", body)
        except sqlite3.Error as exc:
            raise StoreError(f"task hub {self._label}: {exc}") from exc

    def _transaction(self, begin: str, body: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreError(f"task hub {self._label} is not open")
        conn.execute(begin)
        try:
            result = body(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result
