"""The SQLite task hub's schema, how a connection opens it, its row shapes, and the statements
every part shares.

Times are stored as `format_time` text, which sorts chronologically. Every function taking a
connection runs inside the caller's transaction.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from dfhost.history import HistoryEvent, Instance, OrchestrationStatus, format_time, parse_time
from dfhost.store import StoreError
from dfhost.store.query import SqlDialect
from dfhost.store.sqlite import timers
from dfhost.work import ActivityTask, Message

__all__ = ["DIALECT", "SCHEMA_VERSION", "connect"]

SCHEMA_VERSION = 2

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

DIALECT = SqlDialect(
    placeholder="?",
    time=format_time,
    # With an id prefix, the primary key's range is the index to use; unanalyzed, the planner
    # would rather walk every instance of the status (`+` keeps it off that index).
    status_beside_prefix="+status",
)
"""How `dfhost.store.query` writes instance listings for SQLite."""

INSTANCE_COLUMNS = (
    "instance_id, name, execution_id, status, version, input, output, custom_status, "
    "parent_instance_id, failure_details, tags, created_at, last_updated_at"
)
UPSERT_INSTANCE = f"""
    INSERT INTO instances ({INSTANCE_COLUMNS}) VALUES (:instance_id, :name, :execution_id,
        :status, :version, :input, :output, :custom_status, :parent_instance_id,
        :failure_details, :tags, :created_at, :last_updated_at)
    ON CONFLICT (instance_id) DO UPDATE SET name = excluded.name,
        execution_id = excluded.execution_id, status = excluded.status,
        version = excluded.version, input = excluded.input, output = excluded.output,
        custom_status = excluded.custom_status, parent_instance_id = excluded.parent_instance_id,
        failure_details = excluded.failure_details, tags = excluded.tags,
        created_at = excluded.created_at, last_updated_at = excluded.last_updated_at,
        lock_owner = NULL, lock_until = NULL"""


# --- opening -------------------------------------------------------------------------------


def _create_private(path: Path) -> None:
    """Create the hub's folder (0700) and file (0600) unless they exist: the hub holds every
    input and output. SQLite gives its -wal and -shm files the database file's mode. Existing
    ones keep theirs (`dfhost start` warns when others can read them)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def connect(path: Path | None, synchronous: str) -> sqlite3.Connection:
    """A connection to the task hub at `path` (None: in memory), its schema created or
    migrated; StoreError if it cannot be opened or its schema is newer than this dfhost's."""
    label = ":memory:" if path is None else str(path)
    try:
        if path is not None:
            _create_private(path)
        conn = sqlite3.connect(label, isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open task hub {label}: {exc}") from exc
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
        conn.execute(f"PRAGMA synchronous = {synchronous}")
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
        raise StoreError(f"cannot open task hub {label}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


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


# --- rows ----------------------------------------------------------------------------------

_PLAIN_FIELDS = (
    *("instance_id", "name", "execution_id", "version", "input", "output"),
    *("custom_status", "parent_instance_id", "failure_details"),
)
"""Instance fields stored as they are; the others need converting."""


def instance_params(instance: Instance) -> dict[str, object]:
    params: dict[str, object] = {name: getattr(instance, name) for name in _PLAIN_FIELDS}
    params["status"] = instance.status.value
    params["tags"] = json.dumps(instance.tags, sort_keys=True)
    params["created_at"] = format_time(instance.created_at)
    params["last_updated_at"] = format_time(instance.last_updated_at)
    return params


def instance_from_row(row: sqlite3.Row) -> Instance:
    return Instance(
        **{name: row[name] for name in _PLAIN_FIELDS},
        status=OrchestrationStatus(row["status"]),
        created_at=parse_time(row["created_at"]),
        last_updated_at=parse_time(row["last_updated_at"]),
        tags=json.loads(row["tags"]),
    )


def message_from_row(row: sqlite3.Row, event: HistoryEvent | None = None) -> Message | None:
    """The stored message (its `event` already decoded, if given), or None if its event does
    not decode."""
    if event is None:
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


def load_instance(conn: sqlite3.Connection, instance_id: str) -> Instance | None:
    row = conn.execute(
        f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE instance_id = ?", (instance_id,)
    ).fetchone()
    return None if row is None else instance_from_row(row)


def load_history(
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


def insert_message(conn: sqlite3.Connection, message: Message) -> None:
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


def insert_activity(
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


def delete_instances(conn: sqlite3.Connection, ids: Sequence[str], *, keep_row: bool) -> int:
    """Delete the instances' history, inbox and work (and rows); returns rows deleted."""
    params = [(instance_id,) for instance_id in ids]
    for table in ("history", "messages", "activity_tasks"):
        conn.executemany(f"DELETE FROM {table} WHERE instance_id = ?", params)
    if keep_row:
        return 0
    return conn.executemany("DELETE FROM instances WHERE instance_id = ?", params).rowcount
