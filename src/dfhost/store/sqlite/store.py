"""The SQLite task hub: one file, shared by any number of hosts and clients.

One worker thread owns the connection and runs every statement, so the event loop never blocks
on disk and the connection is never shared between threads. Every mutation is one
`BEGIN IMMEDIATE` transaction, which also serializes writers in other processes (hosts and
clients sharing the file). Times are stored as `format_time` text, which sorts chronologically.
Hosts tell each other's death by lock files (`hostlocks`), and free a dead host's leases.

Messages addressed to an instance that does not exist are deleted by `claim_episodes` once they
are visible: DTFx drops events for unknown instances, and keeping them would wedge the queue.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs

from dfhost.history import (
    TERMINAL_STATUSES,
    EventType,
    HistoryEvent,
    Instance,
    OrchestrationStatus,
    format_time,
    parse_time,
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
    decode_continuation,
    encode_continuation,
    prefix_upper_bound,
)
from dfhost.store.sqlite import timers as timers
from dfhost.store.sqlite.doorbell import Doorbell
from dfhost.store.sqlite.hostlocks import HostLock, count_live_hosts
from dfhost.store.sqlite.thread import DatabaseThread
from dfhost.store.wakeup import FinishWatchers, Wakeup
from dfhost.work import ActivityTask, EpisodeOutcome, EpisodeWork, Message, StartRequest

__all__ = ["SCHEMA_VERSION", "SqliteStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 2
_PURGE_BATCH = 1000
"""Instances per purge transaction, so a huge purge never holds the write lock for long."""

_SCHEMA = (
    """CREATE TABLE instances (
        instance_id TEXT PRIMARY KEY, name TEXT NOT NULL, execution_id TEXT NOT NULL,
        status TEXT NOT NULL, version TEXT, input TEXT, output TEXT, custom_status TEXT,
        parent_instance_id TEXT, failure_details TEXT, tags TEXT NOT NULL,
        created_at TEXT NOT NULL, last_updated_at TEXT NOT NULL,
        lock_owner TEXT, lock_token INTEGER NOT NULL DEFAULT 0, lock_until TEXT)""",
    "CREATE INDEX instances_created ON instances (created_at DESC, instance_id)",
    "CREATE INDEX instances_status ON instances (status)",
    "CREATE INDEX instances_lock_until ON instances (lock_until)",
    """CREATE TABLE history (
        instance_id TEXT NOT NULL, execution_id TEXT NOT NULL, seq INTEGER NOT NULL,
        event TEXT NOT NULL, PRIMARY KEY (instance_id, execution_id, seq)) WITHOUT ROWID""",
    """CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT, instance_id TEXT NOT NULL, execution_id TEXT,
        event_type INTEGER NOT NULL, timer_id INTEGER, event TEXT NOT NULL, visible_at TEXT)""",
    "CREATE INDEX messages_instance ON messages (instance_id, id)",
    "CREATE INDEX messages_visible ON messages (visible_at)",
    """CREATE TABLE activity_tasks (
        id INTEGER PRIMARY KEY AUTOINCREMENT, instance_id TEXT NOT NULL,
        execution_id TEXT NOT NULL, task_scheduled_id INTEGER NOT NULL, name TEXT NOT NULL,
        input TEXT, scheduled_at TEXT NOT NULL, lease_owner TEXT,
        lease_token INTEGER NOT NULL DEFAULT 0, lease_until TEXT)""",
    "CREATE INDEX activity_tasks_lease ON activity_tasks (lease_until)",
    "CREATE INDEX activity_tasks_instance ON activity_tasks (instance_id)",
    # Episode lease tokens come from one hub-wide counter, so a token is never reused even
    # when an instance is purged and re-created while a stale episode is still in flight.
    "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT INTO counters (name, value) VALUES ('lock_token', 0)",
)
_MIGRATIONS: tuple[tuple[str, ...], ...] = (_SCHEMA, timers.SCHEMA_V2)
"""`_MIGRATIONS[v]` takes the schema from version v to v + 1."""

# Retention finds expired instances by status and finish time without scanning the rest.
_FINISHED_INDEX = (
    "CREATE INDEX IF NOT EXISTS instances_finished ON instances (status, last_updated_at)"
)
# Replaces schema 1's index on status alone: counting instances per status within a creation
# time range (the dashboard's list) then reads this index only, with no row lookups
# (100,000 instances: ~3 ms per status instead of ~400 ms). Same number of indexes to write.
_STATUS_INDEX = (
    "CREATE INDEX IF NOT EXISTS instances_status_created ON instances (status, created_at)",
    "DROP INDEX IF EXISTS instances_status",
)

_INSTANCE_COLUMNS = (
    "instance_id, name, execution_id, status, version, input, output, custom_status, "
    "parent_instance_id, failure_details, tags, created_at, last_updated_at"
)
_UPSERT_INSTANCE = f"""
    INSERT INTO instances ({_INSTANCE_COLUMNS}) VALUES (:instance_id, :name, :execution_id,
        :status, :version, :input, :output, :custom_status, :parent_instance_id,
        :failure_details, :tags, :created_at, :last_updated_at)
    ON CONFLICT (instance_id) DO UPDATE SET name = excluded.name,
        execution_id = excluded.execution_id, status = excluded.status,
        version = excluded.version, input = excluded.input, output = excluded.output,
        custom_status = excluded.custom_status, parent_instance_id = excluded.parent_instance_id,
        failure_details = excluded.failure_details, tags = excluded.tags,
        created_at = excluded.created_at, last_updated_at = excluded.last_updated_at,
        lock_owner = NULL, lock_until = NULL"""
# An episode's commit: the instance as the episode left it, lease released (or held until
# :hold_until), only if the lease is still the committer's (checked here rather than by a
# SELECT first: one statement less).
_UPDATE_LEASED_INSTANCE = """
    UPDATE instances SET name = :name, execution_id = :execution_id, status = :status,
        version = :version, input = :input, output = :output, custom_status = :custom_status,
        parent_instance_id = :parent_instance_id, failure_details = :failure_details,
        tags = :tags, created_at = :created_at, last_updated_at = :last_updated_at,
        lock_owner = CASE WHEN :hold_until IS NULL THEN NULL ELSE lock_owner END,
        lock_until = :hold_until
    WHERE instance_id = :instance_id AND lock_owner = :owner AND lock_token = :token"""

_VISIBLE = "(visible_at IS NULL OR visible_at <= :now)"
_WAKES_SUSPENDED = f"({int(EventType.EXECUTION_RESUMED)}, {int(EventType.EXECUTION_TERMINATED)})"
# A claim reads the inbox oldest first and stops once it has found enough instances, so it
# costs what it claims rather than the whole inbox (a GROUP BY over every visible message made
# each claim O(inbox): 2.4 ms with 1,000 chains queued, 5.8 ms with 3,000). Messages due at
# once (no visible_at) come in id order straight from the visible_at index (which ends with
# the rowid); due timers in due order from the same index, never reading future ones.
_CANDIDATES = f"""
    SELECT m.id, m.instance_id, i.instance_id IS NOT NULL AS known,
        (i.lock_until IS NULL OR i.lock_until <= :now)
        AND (i.status != 'Suspended' OR m.event_type IN {_WAKES_SUSPENDED}) AS claimable
    FROM messages AS m INDEXED BY messages_visible LEFT JOIN instances AS i USING (instance_id)
    WHERE """
_IMMEDIATE_CANDIDATES = _CANDIDATES + "m.visible_at IS NULL ORDER BY m.visible_at, m.id"
_DUE_CANDIDATES = (
    _CANDIDATES + "m.visible_at IS NOT NULL AND m.visible_at <= :now ORDER BY m.visible_at, m.id"
)


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


_PLAIN_FIELDS = (
    *("instance_id", "name", "execution_id", "version", "input", "output"),
    *("custom_status", "parent_instance_id", "failure_details"),
)
"""Instance fields stored as they are; the others need converting."""


def _instance_params(instance: Instance) -> dict[str, object]:
    params: dict[str, object] = {name: getattr(instance, name) for name in _PLAIN_FIELDS}
    params["status"] = instance.status.value
    params["tags"] = json.dumps(instance.tags, sort_keys=True)
    params["created_at"] = format_time(instance.created_at)
    params["last_updated_at"] = format_time(instance.last_updated_at)
    return params


def _instance_from_row(row: sqlite3.Row) -> Instance:
    return Instance(
        **{name: row[name] for name in _PLAIN_FIELDS},
        status=OrchestrationStatus(row["status"]),
        created_at=parse_time(row["created_at"]),
        last_updated_at=parse_time(row["last_updated_at"]),
        tags=json.loads(row["tags"]),
    )


def _load_instance(conn: sqlite3.Connection, instance_id: str) -> Instance | None:
    row = conn.execute(
        f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE instance_id = ?", (instance_id,)
    ).fetchone()
    return None if row is None else _instance_from_row(row)


def _load_history(
    conn: sqlite3.Connection, instance_id: str, execution_id: str, start: int = 0
) -> tuple[list[HistoryEvent], str | None]:
    """The execution's events from position `start` in order, or ([], why) if a row does not
    decode or the history has no event at `start`."""
    rows = conn.execute(
        "SELECT seq, event FROM history WHERE instance_id = ? AND execution_id = ? AND seq >= ? "
        "ORDER BY seq",
        (instance_id, execution_id, start),
    ).fetchall()
    if start and (not rows or rows[0]["seq"] != start):
        return [], f"no history event at position {start}"
    events: list[HistoryEvent] = []
    for row in rows:
        try:
            events.append(HistoryEvent.from_json(row["event"]))
        except (ValueError, TypeError) as exc:
            return [], (
                f"instance {instance_id!r} execution {execution_id!r}: history row "
                f"seq={row['seq']} is not a valid event: {exc}"
            )
    return events, None


def _insert_message(conn: sqlite3.Connection, message: Message) -> None:
    conn.execute(
        "INSERT INTO messages (instance_id, execution_id, event_type, timer_id, event, "
        "visible_at) VALUES (?, ?, ?, ?, ?, ?)",
        (
            message.instance_id,
            message.execution_id,
            int(message.event.type),
            message.event.timer_id,
            message.event.to_json(),
            None if message.visible_at is None else format_time(message.visible_at),
        ),
    )


def _insert_activity(
    conn: sqlite3.Connection,
    task: ActivityTask,
    lease_owner: str | None = None,
    lease_until: datetime | None = None,
) -> ActivityTask:
    """Insert the task (leased to `lease_owner` if given); returns it as stored."""
    (task_id,) = conn.execute(
        "INSERT INTO activity_tasks (instance_id, execution_id, task_scheduled_id, name, input, "
        "scheduled_at, lease_owner, lease_until, lease_token) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "RETURNING id",
        (
            task.instance_id,
            task.execution_id,
            task.task_scheduled_id,
            task.name,
            task.input,
            format_time(task.scheduled_at),
            lease_owner,
            None if lease_until is None else format_time(lease_until),
            0 if lease_owner is None else 1,
        ),
    ).fetchone()
    return replace(task, task_id=task_id, lease_token=0 if lease_owner is None else 1)


def _delete_instances(conn: sqlite3.Connection, ids: Sequence[str], *, keep_row: bool) -> int:
    """Delete the instances' history, inbox and work (and rows); returns rows deleted."""
    params = [(instance_id,) for instance_id in ids]
    for table in ("history", "messages", "activity_tasks"):
        conn.executemany(f"DELETE FROM {table} WHERE instance_id = ?", params)
    if keep_row:
        return 0
    return conn.executemany("DELETE FROM instances WHERE instance_id = ?", params).rowcount


def _start(conn: sqlite3.Connection, request: StartRequest) -> tuple[bool, bool]:
    """Create or replace the instance; returns (created, enqueued anything)."""
    row = conn.execute(
        "SELECT status FROM instances WHERE instance_id = ?", (request.instance_id,)
    ).fetchone()
    if row is not None and OrchestrationStatus(row["status"]) not in TERMINAL_STATUSES:
        if request.on_conflict is None:
            return False, False
        _insert_message(conn, request.on_conflict)
        return False, True
    if row is not None:
        _delete_instances(conn, [request.instance_id], keep_row=True)
    instance = request.pending_instance()
    # The upsert keeps lock_token and clears any lock, so an episode still running against the
    # replaced generation fails its commit instead of overwriting the new one.
    conn.execute(_UPSERT_INSTANCE, _instance_params(instance))
    started = Message(
        instance_id=request.instance_id,
        execution_id=request.execution_id,
        event=request.started_event(),
        visible_at=request.visible_at,
    )
    _insert_message(conn, started)
    return True, True


def _query_filters(query: InstanceQuery) -> tuple[str, list[object]]:
    """A WHERE clause (a range for the id prefix, so LIKE wildcards need no escaping)."""
    clauses: list[str] = ["1"]
    params: list[object] = []
    if query.created_from is not None:
        clauses.append("created_at >= ?")
        params.append(format_time(query.created_from))
    if query.created_to is not None:
        clauses.append("created_at <= ?")
        params.append(format_time(query.created_to))
    if query.statuses:
        # With an id prefix, the primary key's range is the index to use; unanalyzed, the
        # planner would rather walk every instance of the status (`+` keeps it off that index).
        column = "+status" if query.instance_id_prefix else "status"
        clauses.append(f"{column} IN ({', '.join('?' * len(query.statuses))})")
        params.extend(OrchestrationStatus(status).value for status in query.statuses)
    if query.instance_id_prefix:
        clauses.append("instance_id >= ?")
        params.append(query.instance_id_prefix)
        upper = prefix_upper_bound(query.instance_id_prefix)
        if upper is not None:
            clauses.append("instance_id < ?")
            params.append(upper)
    if query.name is not None:
        clauses.append("name = ?")
        params.append(query.name)
    return " AND ".join(clauses), params


class SqliteStore:
    """The `Store` for `sqlite:///PATH` and `sqlite://:memory:` URLs.

    `notify()` must be called on the event loop's thread; other threads use
    `loop.call_soon_threadsafe(store.notify)`.
    """

    holds_instances = True

    def __init__(self, url: str) -> None:
        self.url = url
        self.path, self._synchronous = _parse_url(url)
        self._label = str(self.path) if self.path is not None else ":memory:"
        self._db: DatabaseThread | None = None
        self._conn: sqlite3.Connection | None = None
        """In memory only, used on the event loop's thread; files have `_db`'s connection."""
        self._host_lock: HostLock | None = None  # set once this store is a host's
        # SQLite has no notifications: clients in other processes ring the host's doorbell.
        self._doorbell = None if self.path is None else Doorbell(self.path)
        self._wake = Wakeup()
        self._finishes = FinishWatchers()

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        if self._db is not None or self._conn is not None:
            return
        if self.path is None:
            # In memory there is no I/O to wait for: statements take microseconds, and running
            # them on the event loop's thread saves two thread switches per call.
            self._conn = self._open()
            return
        db = DatabaseThread("dfhost-sqlite", self._synchronous)
        await db.start(self._open)
        self._db = db

    def _open(self) -> sqlite3.Connection:
        try:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._label, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open task hub {self._label}: {exc}") from exc
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 10000")
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"task hub schema version {version} is newer than this dfhost supports "
                    f"({SCHEMA_VERSION})"
                )
            _enable_wal(conn)
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute("BEGIN IMMEDIATE")
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version < SCHEMA_VERSION:  # re-read: another process may have done it meanwhile
                for step in _MIGRATIONS[version:]:
                    for statement in step:
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            # Added after schema 1 shipped; optional for readers, so no version bump.
            conn.execute(_FINISHED_INDEX)
            for statement in _STATUS_INDEX:
                conn.execute(statement)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open task hub {self._label}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

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
                for owner in _lease_owners(conn):
                    _release_owner(conn, owner)
            return
        owners = set(lock.others())
        if opening:
            owners.update(_lease_owners(conn))
        for owner in owners:
            if lock.bury_if_dead(owner, missing_is_dead=opening):
                _release_owner(conn, owner)

    # --- clients -------------------------------------------------------------------------
    async def create_instance(self, request: StartRequest) -> bool:
        created, enqueued = await self._write(lambda conn: _start(conn, request))
        if enqueued:
            self.notify()
        return created

    async def send_message(self, message: Message) -> DeliveryResult:
        def send(conn: sqlite3.Connection) -> DeliveryResult:
            row = conn.execute(
                "SELECT status FROM instances WHERE instance_id = ?", (message.instance_id,)
            ).fetchone()
            if row is None:
                return "not_found"
            status = OrchestrationStatus(row["status"])
            if message.event.type is EventType.EXECUTION_REWOUND:
                if status is not OrchestrationStatus.FAILED:
                    return "gone"
            elif status in TERMINAL_STATUSES:
                return "gone"
            _insert_message(conn, message)
            return "sent"

        result = await self._write(send)
        if result == "sent":
            self.notify()
        return result

    async def get_instance(self, instance_id: str) -> Instance | None:
        return await self._read(lambda conn: _load_instance(conn, instance_id))

    async def get_history(self, instance_id: str) -> list[HistoryEvent]:
        """Raises StoreError if a stored row does not decode."""

        def load(conn: sqlite3.Connection) -> tuple[list[HistoryEvent], str | None]:
            instance = _load_instance(conn, instance_id)
            if instance is None:
                return [], None
            return _load_history(conn, instance_id, instance.execution_id)

        events, error = await self._read(load)
        if error is not None:
            raise StoreError(error)
        return events

    async def query_instances(self, query: InstanceQuery) -> InstancePage:
        top = max(1, min(1000, query.top))
        where, params = _query_filters(query)
        if query.continuation is not None:
            created_at, instance_id = decode_continuation(query.continuation)
            where += " AND (created_at < ? OR (created_at = ? AND instance_id > ?))"
            params += [created_at, created_at, instance_id]
        sql = (
            f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE {where} "
            "ORDER BY created_at DESC, instance_id LIMIT ?"
        )
        rows = await self._read(lambda conn: conn.execute(sql, [*params, top + 1]).fetchall())
        page = rows[:top]
        token = None
        if len(rows) > top:
            token = encode_continuation(page[-1]["created_at"], page[-1]["instance_id"])
        return InstancePage(instances=[_instance_from_row(row) for row in page], continuation=token)

    async def purge_instance(self, instance_id: str) -> int:
        return await self._write(
            lambda conn: _delete_instances(conn, [instance_id], keep_row=False)
        )

    async def purge_instances(self, query: InstanceQuery) -> int:
        where, params = _query_filters(query)
        sql = f"SELECT instance_id FROM instances WHERE {where} LIMIT {_PURGE_BATCH}"

        def purge_batch(conn: sqlite3.Connection) -> int:
            ids = [row["instance_id"] for row in conn.execute(sql, params)]
            return _delete_instances(conn, ids, keep_row=False)

        total = 0
        while count := await self._write(purge_batch):
            total += count
        return total

    async def count_instances(self, query: InstanceQuery) -> int:
        where, params = _query_filters(query)
        sql = f"SELECT COUNT(*) FROM instances WHERE {where}"
        count: int = await self._read(lambda conn: conn.execute(sql, params).fetchone()[0])
        return count

    # --- maintenance ---------------------------------------------------------------------
    async def purge_finished(
        self, status: OrchestrationStatus, finished_before: datetime, limit: int
    ) -> int:
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"retention purges finished instances only, not {status.value}")
        params = (status.value, format_time(finished_before), max(1, limit))

        def purge_batch(conn: sqlite3.Connection) -> int:
            ids = [
                row["instance_id"]
                for row in conn.execute(
                    "SELECT instance_id FROM instances "
                    "WHERE status = ? AND last_updated_at < ? AND lock_owner IS NULL LIMIT ?",
                    params,
                )
            ]
            return _delete_instances(conn, ids, keep_row=False)

        return await self._write(purge_batch)

    async def oldest_finished(self, status: OrchestrationStatus) -> datetime | None:
        oldest = await self._read(
            lambda conn: conn.execute(
                "SELECT MIN(last_updated_at) FROM instances WHERE status = ?", (status.value,)
            ).fetchone()[0]
        )
        return None if oldest is None else parse_time(oldest)

    async def overdue_timers(self, now: datetime, limit: int) -> list[Message]:
        def load(conn: sqlite3.Connection) -> list[Message]:
            rows = conn.execute(
                "SELECT * FROM messages WHERE visible_at <= ? AND event_type = ? "
                "ORDER BY visible_at, id LIMIT ?",
                (format_time(now), int(EventType.TIMER_FIRED), max(0, limit)),
            ).fetchall()
            return [m for row in rows if (m := _message_from_row(row)) is not None]

        return await self._read(load)

    async def hub_summary(self, now: datetime) -> HubSummary:
        at = format_time(now)

        def load(conn: sqlite3.Connection) -> HubSummary:
            counts = conn.execute("SELECT name, status, COUNT(*) FROM instances GROUP BY 1, 2")
            ready, oldest_message = conn.execute(
                "SELECT COUNT(*), MIN(COALESCE(visible_at, json_extract(event, '$.timestamp'))) "
                "FROM messages WHERE visible_at IS NULL OR visible_at <= ?",
                (at,),
            ).fetchone()
            (next_timer,) = conn.execute(
                "SELECT MIN(visible_at) FROM messages WHERE visible_at > ?", (at,)
            ).fetchone()
            waiting, running, oldest_task = conn.execute(
                "SELECT COUNT(*) - COUNT(held), COUNT(held), MIN(iif(held, NULL, scheduled_at)) "
                "FROM (SELECT scheduled_at, iif(lease_until > ?, 1, NULL) AS held "
                "FROM activity_tasks)",
                (at,),
            ).fetchone()
            oldest = min((t for t in (oldest_message, oldest_task) if t is not None), default=None)
            return HubSummary(
                instances={(row[0], OrchestrationStatus(row[1])): row[2] for row in counts},
                ready_messages=ready,
                ready_activities=waiting,
                running_activities=running,
                oldest_ready=None if oldest is None else parse_time(oldest),
                next_timer=None if next_timer is None else parse_time(next_timer),
                live_hosts=None if self.path is None else count_live_hosts(self.path),
            )

        return await self._read(load)

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

        def claim(conn: sqlite3.Connection) -> list[EpisodeWork]:
            self._free_dead_hosts(conn)
            return _claim_episodes(conn, owner, now, lease_until, limit, known)

        return await self._write(claim, durable=False)

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
        lease = None if lease_activities is None else (owner, *lease_activities)
        wake, leased = await self._write(
            lambda conn: _commit_episode(
                conn, owner, work, outcome, lease, hold_until=hold_until, completes=completes
            )
        )
        if wake:
            self.notify()
        if outcome.instance.status in TERMINAL_STATUSES:
            self._finishes.finished(outcome.instance.instance_id)
        return leased

    async def abandon_episode(self, owner: str, work: EpisodeWork) -> None:
        def abandon(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE instances SET lock_owner = NULL, lock_until = NULL "
                "WHERE instance_id = ? AND lock_owner = ? AND lock_token = ?",
                (work.instance.instance_id, owner, work.lease_token),
            )
            return cursor.rowcount > 0

        if await self._write(abandon, durable=False):
            self.notify()  # its messages are claimable again

    async def claim_activities(
        self, owner: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[ActivityTask]:
        if limit <= 0:
            return []

        def claim(conn: sqlite3.Connection) -> list[ActivityTask]:
            self._free_dead_hosts(conn)
            return _claim_activities(conn, owner, now, lease_until, limit)

        return await self._write(claim, durable=False)

    async def complete_activity(self, task: ActivityTask, result: Message) -> bool:
        completed, _ = await self._complete_activity(task, result, None)
        return completed

    async def complete_activity_and_claim(
        self, task: ActivityTask, result: Message, claim: EpisodeClaim
    ) -> tuple[bool, EpisodeWork | None]:
        return await self._complete_activity(task, result, claim)

    async def _complete_activity(
        self, task: ActivityTask, result: Message, claim: EpisodeClaim | None
    ) -> tuple[bool, EpisodeWork | None]:
        # The lease token is deliberately not checked: delivery is at least once, and whichever
        # run completes first wins.
        def complete(conn: sqlite3.Connection) -> tuple[bool, EpisodeWork | None]:
            cursor = conn.execute("DELETE FROM activity_tasks WHERE id = ?", (task.task_id,))
            if cursor.rowcount == 0:
                return False, None
            _insert_message(conn, result)
            if claim is None:
                return True, None
            row = conn.execute(
                f"SELECT {_INSTANCE_COLUMNS}, lock_until FROM instances WHERE instance_id = ?",
                (task.instance_id,),
            ).fetchone()
            now_text = format_time(claim.now)
            if row is None or row["status"] == OrchestrationStatus.SUSPENDED.value:
                return True, None
            if row["lock_until"] is not None and row["lock_until"] > now_text:
                return True, None
            work = _lease_instance(
                conn,
                task.instance_id,
                claim.owner,
                now_text,
                claim.lease_until,
                claim.known,
                _instance_from_row(row),
            )
            return True, work

        if task.task_id is None:
            return False, None
        completed, work = await self._write(complete, durable=False)
        if completed and work is None:
            self.notify()
        return completed, work

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

    # --- wake-ups ------------------------------------------------------------------------
    async def wait_for_work(self, until: datetime | None) -> None:
        await self._wake.wait(until)

    def notify(self) -> None:
        self._wake.set()
        if self._host_lock is None and self._doorbell is not None:
            self._doorbell.ring()

    def watch_finish(self, instance_id: str) -> asyncio.Future[None]:
        return self._finishes.watch(instance_id)

    # --- timer triggers ------------------------------------------------------------------
    async def claim_timer_run(
        self,
        function: str,
        due_at: datetime | None,
        owner: str,
        now: datetime,
        lease_until: datetime,
    ) -> int | None:
        def claim(conn: sqlite3.Connection) -> int | None:
            self._free_dead_hosts(conn)
            return timers.claim_timer_run(conn, function, due_at, owner, now, lease_until)

        return await self._write(claim)

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
        power cut (see `sqlite_thread`), which then commit without waiting for the disk."""
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


def _lease_owners(conn: sqlite3.Connection) -> set[str]:
    # The *_until columns are indexed, and set exactly when an owner is.
    owners = {
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT lock_owner FROM instances WHERE lock_until IS NOT NULL "
            "UNION SELECT DISTINCT lease_owner FROM activity_tasks WHERE lease_until IS NOT NULL"
        )
    }
    return (owners | timers.timer_run_owners(conn)) - {None}


def _release_owner(conn: sqlite3.Connection, owner: str) -> None:
    conn.execute(
        "UPDATE instances SET lock_owner = NULL, lock_until = NULL "
        "WHERE lock_until IS NOT NULL AND lock_owner = ?",
        (owner,),
    )
    conn.execute(
        "UPDATE activity_tasks SET lease_owner = NULL, lease_until = NULL "
        "WHERE lease_until IS NOT NULL AND lease_owner = ?",
        (owner,),
    )
    timers.release_timer_runs(conn, owner)


def _claim_activities(
    conn: sqlite3.Connection, owner: str, now: datetime, lease_until: datetime, limit: int
) -> list[ActivityTask]:
    ids = [
        (row["id"],)
        for row in conn.execute(
            "SELECT id FROM activity_tasks WHERE lease_until IS NULL OR lease_until <= ? "
            "ORDER BY id LIMIT ?",
            (format_time(now), limit),
        )
    ]
    conn.executemany(
        "UPDATE activity_tasks SET lease_owner = ?, lease_until = ?, "
        "lease_token = lease_token + 1 WHERE id = ?",
        [(owner, format_time(lease_until), task_id) for (task_id,) in ids],
    )
    rows = [conn.execute("SELECT * FROM activity_tasks WHERE id = ?", i).fetchone() for i in ids]
    return [
        ActivityTask(
            instance_id=row["instance_id"],
            execution_id=row["execution_id"],
            task_scheduled_id=row["task_scheduled_id"],
            name=row["name"],
            input=row["input"],
            scheduled_at=parse_time(row["scheduled_at"]),
            task_id=row["id"],
            lease_token=row["lease_token"],
        )
        for row in rows
    ]


def _claim_episodes(
    conn: sqlite3.Connection,
    owner: str,
    now: datetime,
    lease_until: datetime,
    limit: int,
    known: KnownHistory | None,
) -> list[EpisodeWork]:
    now_text = format_time(now)
    first: dict[str, int] = {}  # instance -> its oldest visible message
    for sql in (_IMMEDIATE_CANDIDATES, _DUE_CANDIDATES):
        _find_claimable(conn, sql, now_text, limit, first)
    work: list[EpisodeWork] = []
    for instance_id in sorted(first, key=first.__getitem__)[:limit]:
        leased = _lease_instance(conn, instance_id, owner, now_text, lease_until, known)
        if leased is not None:
            work.append(leased)
    return work


def _find_claimable(
    conn: sqlite3.Connection, sql: str, now_text: str, limit: int, first: dict[str, int]
) -> None:
    """Add to `first` up to `limit` claimable instances that `sql` lists, reading no further;
    delete the messages it passes that are for instances that do not exist (DTFx drops
    them; kept, every claim would read past them again)."""
    found: set[str] = set()
    orphans: list[tuple[int]] = []
    cursor = conn.execute(sql, {"now": now_text})
    try:
        for message_id, instance_id, known, claimable in cursor:
            if not known:
                orphans.append((message_id,))
            elif claimable and instance_id not in found:
                found.add(instance_id)
                if message_id < first.get(instance_id, message_id + 1):
                    first[instance_id] = message_id
                if len(found) >= limit:
                    break
    finally:
        cursor.close()
    if orphans:
        conn.executemany("DELETE FROM messages WHERE id = ?", orphans)


def _lease_instance(
    conn: sqlite3.Connection,
    instance_id: str,
    owner: str,
    now_text: str,
    lease_until: datetime,
    known: KnownHistory | None,
    instance: Instance | None = None,
) -> EpisodeWork | None:
    """Lease an instance already known to be unlocked (`instance`: its row, if the caller
    read it in this transaction); None if it has no visible messages."""
    messages = _visible_messages(conn, instance_id, now_text)
    if not messages:
        return None
    (token,) = conn.execute(
        "UPDATE counters SET value = value + 1 WHERE name = 'lock_token' RETURNING value"
    ).fetchone()
    conn.execute(
        "UPDATE instances SET lock_owner = ?, lock_until = ?, lock_token = ? WHERE instance_id = ?",
        (owner, format_time(lease_until), token, instance_id),
    )
    if instance is None:
        instance = _load_instance(conn, instance_id)
        assert instance is not None  # the caller found it unlocked
    start = 0
    if known is not None:
        execution_id, held = known.get(instance_id, ("", 0))
        if execution_id == instance.execution_id and held > 0:
            start = held - 1
    history, error = _load_history(conn, instance_id, instance.execution_id, start)
    if start and (error or not history):  # shorter than the claimer thinks: send all of it
        start = 0
        history, error = _load_history(conn, instance_id, instance.execution_id)
    return EpisodeWork(
        instance=instance,
        history=history,
        messages=messages,
        lease_token=token,
        history_error=error,
        history_start=start,
    )


def _message_from_row(row: sqlite3.Row) -> Message | None:
    """The stored message, or None if its event does not decode."""
    try:
        event = HistoryEvent.from_json(row["event"])
    except (ValueError, TypeError):
        return None
    visible_at = row["visible_at"]
    return Message(
        instance_id=row["instance_id"],
        event=event,
        execution_id=row["execution_id"],
        visible_at=None if visible_at is None else parse_time(visible_at),
        message_id=row["id"],
    )


def _visible_messages(conn: sqlite3.Connection, instance_id: str, now: str) -> list[Message]:
    rows = conn.execute(
        f"SELECT * FROM messages WHERE instance_id = :id AND {_VISIBLE} ORDER BY id",
        {"id": instance_id, "now": now},
    ).fetchall()
    messages = []
    for row in rows:
        try:
            event = HistoryEvent.from_json(row["event"])
        except (ValueError, TypeError) as exc:
            # A message that can never be decoded would be re-claimed forever; drop it loudly.
            log.error("dropping undecodable message %s for %r: %s", row["id"], instance_id, exc)
            conn.execute("DELETE FROM messages WHERE id = ?", (row["id"],))
            continue
        visible_at = row["visible_at"]
        messages.append(
            Message(
                instance_id=instance_id,
                event=event,
                execution_id=row["execution_id"],
                visible_at=None if visible_at is None else parse_time(visible_at),
                message_id=row["id"],
            )
        )
    return messages


def _commit_episode(
    conn: sqlite3.Connection,
    owner: str,
    work: EpisodeWork,
    outcome: EpisodeOutcome,
    lease: tuple[str, datetime, int] | None,
    *,
    hold_until: datetime | None,
    completes: ActivityTask | None,
) -> tuple[bool, list[ActivityTask]]:
    """Apply the outcome; returns whether the instance or others now have work to wake for,
    and the activity tasks created leased to `lease` = (owner, until, at most).

    Raises `LeaseLostError` (and the transaction rolls back) if the lease is no longer
    `owner`'s, or the task it `completes` is gone."""
    instance = outcome.instance
    instance_id = instance.instance_id
    if completes is not None:
        done = conn.execute("DELETE FROM activity_tasks WHERE id = ?", (completes.task_id,))
        if done.rowcount == 0:
            raise LeaseLostError(f"activity task {completes.task_id} was already completed")
    stored = [(m.message_id,) for m in work.messages if m.message_id is not None]
    if stored:  # a held instance's episode consumes its activity's result unstored
        conn.executemany("DELETE FROM messages WHERE id = ?", stored)
    if outcome.drop_pending_work:
        conn.execute(
            "DELETE FROM messages WHERE instance_id = ? "
            "AND (event_type = ? OR execution_id IS NOT NULL)",
            (instance_id, int(EventType.TIMER_FIRED)),
        )
        conn.execute("DELETE FROM activity_tasks WHERE instance_id = ?", (instance_id,))
    if outcome.reset_history:
        conn.execute("DELETE FROM history WHERE instance_id = ?", (instance_id,))
    if outcome.new_events:
        same_history = not (
            outcome.reset_history
            or work.history_error
            or instance.execution_id != work.instance.execution_id
        )
        if same_history:  # the lease holder alone appends: the claim saw every event
            last = work.history_start + len(work.history) - 1
        else:
            (last,) = conn.execute(
                "SELECT COALESCE(MAX(seq), -1) FROM history "
                "WHERE instance_id = ? AND execution_id = ?",
                (instance_id, instance.execution_id),
            ).fetchone()
        conn.executemany(
            "INSERT INTO history (instance_id, execution_id, seq, event) VALUES (?, ?, ?, ?)",
            [
                (instance_id, instance.execution_id, last + 1 + offset, event.to_json())
                for offset, event in enumerate(outcome.new_events)
            ],
        )
    if outcome.cancelled_timer_ids:
        conn.executemany(
            "DELETE FROM messages WHERE instance_id = ? AND event_type = ? AND timer_id = ?",
            [
                (instance_id, int(EventType.TIMER_FIRED), timer_id)
                for timer_id in outcome.cancelled_timer_ids
            ],
        )
    leased: list[ActivityTask] = []
    lease_owner, lease_until, lease_limit = lease if lease is not None else (None, None, 0)
    for task in outcome.activities:
        if len(leased) < lease_limit:
            assert lease_owner is not None and lease_until is not None
            leased.append(_insert_activity(conn, task, lease_owner, lease_until))
        else:
            _insert_activity(conn, task)
    for message in outcome.messages:
        _insert_message(conn, message)
    enqueued = len(outcome.activities) > len(leased) or bool(outcome.messages)
    for request in outcome.starts:
        enqueued |= _start(conn, request)[1]
    # Messages that arrived during the episode become claimable now that the lock is gone
    # (and it is not held for them to wait behind).
    (pending,) = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE instance_id = ?)", (instance_id,)
    ).fetchone()
    params = _instance_params(instance)
    params["owner"] = owner
    params["token"] = work.lease_token
    held = None if pending or enqueued else hold_until
    params["hold_until"] = None if held is None else format_time(held)
    if conn.execute(_UPDATE_LEASED_INSTANCE, params).rowcount == 0:
        raise LeaseLostError(f"lease on instance {instance_id!r} was lost; episode not committed")
    return enqueued or bool(pending), leased


def _enable_wal(conn: sqlite3.Connection, patience: float = 10.0) -> None:
    """Switch to WAL. The switch needs the file to itself, and SQLite reports "database is
    locked" for it at once, without its busy timeout, while another process opens the same
    new file (two hosts starting together): so wait here."""
    deadline = time.monotonic() + patience
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)
