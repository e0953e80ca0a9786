"""The SQLite task hub's client and maintenance transactions: create, send, list, purge, and
the reads of retention, the startup report and status pages.

Every function runs inside the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

from dfhost.history import (
    TERMINAL_STATUSES,
    EventType,
    OrchestrationStatus,
    format_time,
    parse_time,
)
from dfhost.store import DeliveryResult, HubSummary, InstancePage, InstanceQuery
from dfhost.store import query as listing
from dfhost.store.sqlite.hostlocks import count_live_hosts
from dfhost.store.sqlite.schema import (
    DIALECT,
    INSTANCE_COLUMNS,
    UPSERT_INSTANCE,
    delete_instances,
    insert_message,
    instance_from_row,
    instance_params,
    message_from_row,
)
from dfhost.work import Message, StartRequest

PURGE_BATCH = 1000
"""Instances per purge transaction, so a huge purge never holds the write lock for long."""


def start(conn: sqlite3.Connection, request: StartRequest) -> tuple[bool, bool]:
    """Create or replace the instance; returns (created, enqueued anything)."""
    row = conn.execute(
        "SELECT status FROM instances WHERE instance_id = ?", (request.instance_id,)
    ).fetchone()
    if row is not None and OrchestrationStatus(row["status"]) not in TERMINAL_STATUSES:
        if request.on_conflict is None:
            return False, False
        insert_message(conn, request.on_conflict)
        return False, True
    if row is not None:
        delete_instances(conn, [request.instance_id], keep_row=True)
    instance = request.pending_instance()
    # The upsert keeps lock_token and clears any lock, so an episode still running against the
    # replaced generation fails its commit instead of overwriting the new one.
    conn.execute(UPSERT_INSTANCE, instance_params(instance))
    started = Message(
        instance_id=request.instance_id,
        execution_id=request.execution_id,
        event=request.started_event(),
        visible_at=request.visible_at,
    )
    insert_message(conn, started)
    return True, True


def send(conn: sqlite3.Connection, message: Message) -> DeliveryResult:
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
    insert_message(conn, message)
    return "sent"


def query_page(conn: sqlite3.Connection, query: InstanceQuery) -> InstancePage:
    sql, params = listing.select_page(query, DIALECT, INSTANCE_COLUMNS)
    rows = conn.execute(sql, params).fetchall()
    return listing.page([instance_from_row(row) for row in rows], query)


def count(conn: sqlite3.Connection, query: InstanceQuery) -> int:
    sql, params = listing.select_count(query, DIALECT)
    counted: int = conn.execute(sql, params).fetchone()[0]
    return counted


def purge_batch(conn: sqlite3.Connection, query: InstanceQuery) -> int:
    """Delete up to `PURGE_BATCH` of the instances matching the filters; returns how many."""
    condition, params = listing.where(query, DIALECT)
    sql = f"SELECT instance_id FROM instances WHERE {condition} LIMIT {PURGE_BATCH}"
    ids = [row["instance_id"] for row in conn.execute(sql, params)]
    return delete_instances(conn, ids, keep_row=False)


def purge_finished(
    conn: sqlite3.Connection, status: OrchestrationStatus, finished_before: datetime, limit: int
) -> int:
    ids = [
        row["instance_id"]
        for row in conn.execute(
            "SELECT instance_id FROM instances "
            "WHERE status = ? AND last_updated_at < ? AND lock_owner IS NULL LIMIT ?",
            (status.value, format_time(finished_before), max(1, limit)),
        )
    ]
    return delete_instances(conn, ids, keep_row=False)


def oldest_finished(conn: sqlite3.Connection, status: OrchestrationStatus) -> datetime | None:
    (oldest,) = conn.execute(
        "SELECT MIN(last_updated_at) FROM instances WHERE status = ?", (status.value,)
    ).fetchone()
    return None if oldest is None else parse_time(oldest)


def overdue_timers(conn: sqlite3.Connection, now: datetime, limit: int) -> list[Message]:
    rows = conn.execute(
        "SELECT * FROM messages WHERE visible_at <= ? AND event_type = ? "
        "ORDER BY visible_at, id LIMIT ?",
        (format_time(now), int(EventType.TIMER_FIRED), max(0, limit)),
    ).fetchall()
    return [m for row in rows if (m := message_from_row(row)) is not None]


def hub_summary(conn: sqlite3.Connection, now: datetime, path: Path | None) -> HubSummary:
    """The summary at `now`; `path`: the hub's file, whose host lock files tell the live hosts
    (None in memory: not told)."""
    at = format_time(now)
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
        live_hosts=None if path is None else count_live_hosts(path),
    )
