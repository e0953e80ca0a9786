"""The PostgreSQL task hub's client and maintenance transactions: create, send, read, list,
purge, and the reads of retention, the startup report and status pages."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

from dfhost.history import (
    TERMINAL_STATUSES,
    EventType,
    HistoryEvent,
    Instance,
    OrchestrationStatus,
)
from dfhost.store import DeliveryResult, HubSummary, InstancePage, InstanceQuery
from dfhost.store import query as listing
from dfhost.store.postgres.schema import (
    DIALECT,
    INSERT_INSTANCE,
    INSTANCE_COLUMNS,
    MESSAGE_COLUMNS,
    UPDATE_INSTANCE,
    Conn,
    decode_history,
    delete_instances,
    insert_messages,
    instance_from_row,
    instance_params,
    message_from_row,
    utc,
)
from dfhost.work import Message, StartRequest

_PURGE_BATCH = 1000
"""Instances per purge transaction, so a huge purge never holds many row locks for long."""


async def load_instance(conn: Conn, instance_id: str) -> Instance | None:
    cur = await conn.execute(
        f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE instance_id = %s", (instance_id,)
    )
    row = await cur.fetchone()
    return None if row is None else instance_from_row(row)


async def has_messages(conn: Conn, instance_id: str) -> bool:
    """Whether the instance has messages deliverable at once (results, events; not timers)."""
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE instance_id = %s AND visible_at IS NULL)",
        (instance_id,),
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def load_history(conn: Conn, instance_id: str) -> tuple[list[HistoryEvent], str | None]:
    """The current execution's events in order (empty for unknown instances), or ([], why)."""
    cur = await conn.execute(
        "SELECT h.seq, h.event, i.execution_id FROM history AS h JOIN instances AS i "
        "ON i.instance_id = h.instance_id AND i.execution_id = h.execution_id "
        "WHERE h.instance_id = %s ORDER BY h.seq",
        (instance_id,),
    )
    rows = await cur.fetchall()
    if not rows:
        return [], None
    return decode_history(instance_id, rows[0][2], [row[:2] for row in rows])


async def start_txn(conn: Conn, request: StartRequest, *, retrying: bool) -> tuple[bool, bool]:
    """Create or replace the instance; returns (created, enqueued anything).

    `retrying`: an earlier attempt may have committed unseen (its connection died in COMMIT);
    an unfinished instance with this very execution id is then that attempt's."""
    instance = request.pending_instance()
    params = instance_params(instance)
    while True:
        cur = await conn.execute(INSERT_INSTANCE, params)
        if await cur.fetchone() is not None:
            break
        cur = await conn.execute(
            "SELECT status, execution_id FROM instances WHERE instance_id = %s FOR NO KEY UPDATE",
            (request.instance_id,),
        )
        row = await cur.fetchone()
        if row is None:  # purged since the insert saw it: insert again
            continue
        if OrchestrationStatus(row[0]) not in TERMINAL_STATUSES:
            if retrying and row[1] == request.execution_id:
                return True, False
            if request.on_conflict is None:
                return False, False
            await insert_messages(conn, [request.on_conflict])
            return False, True
        await delete_instances(conn, [request.instance_id], keep_row=True)
        await conn.execute(UPDATE_INSTANCE, params)
        break
    started = Message(
        instance_id=request.instance_id,
        execution_id=request.execution_id,
        event=request.started_event(),
        visible_at=request.visible_at,
    )
    await insert_messages(conn, [started])
    return True, True


START = (
    "start_instance(%s, %s, %s, %s, %s, %s, %s, %s, %s::timestamptz, %s::timestamptz, "
    "%s::smallint, %s, %s::timestamptz, %s, %s)"
)
"""The call of the function that makes the common start in one statement: it creates the
instance and notifies, unless the id is taken; it answers whether it created it (else the
caller runs `start_txn`)."""


def start_params(request: StartRequest, channel: str, sender: str) -> list[object]:
    instance = request.pending_instance()
    params = instance_params(instance)
    event = request.started_event()
    return [
        params["instance_id"],
        params["name"],
        params["execution_id"],
        params["status"],
        params["version"],
        params["input"],
        params["parent_instance_id"],
        params["tags"],
        params["created_at"],
        params["last_updated_at"],
        int(event.type),
        event.to_json(),
        None if request.visible_at is None else utc(request.visible_at),
        channel,
        sender,
    ]


async def send_call(conn: Conn, message: Message, channel: str, sender: str) -> DeliveryResult:
    """Enqueue a client's message and notify, in one statement (see `routines`)."""
    event = message.event
    cur = await conn.execute(
        "SELECT send_message(%s, %s, %s::smallint, %s::integer, %s, %s::timestamptz, %s, %s, %s)",
        (
            message.instance_id,
            message.execution_id,
            int(event.type),
            event.timer_id,
            event.to_json(),
            None if message.visible_at is None else utc(message.visible_at),
            event.type is EventType.EXECUTION_REWOUND,
            channel,
            sender,
        ),
    )
    row = await cur.fetchone()
    result = row[0] if row else "not_found"
    assert result in ("sent", "not_found", "gone")
    return cast(DeliveryResult, result)


async def query_txn(conn: Conn, query: InstanceQuery) -> InstancePage:
    sql, params = listing.select_page(query, DIALECT, INSTANCE_COLUMNS)
    cur = await conn.execute(sql, params)
    return listing.page([instance_from_row(row) for row in await cur.fetchall()], query)


async def count_txn(conn: Conn, query: InstanceQuery) -> int:
    sql, params = listing.select_count(query, DIALECT)
    cur = await conn.execute(sql, params)
    row = await cur.fetchone()
    return int(row[0]) if row is not None else 0


async def purge_batch_txn(conn: Conn, query: InstanceQuery) -> int:
    condition, params = listing.where(query, DIALECT)
    cur = await conn.execute(
        f"SELECT instance_id FROM instances WHERE {condition} ORDER BY instance_id "
        f"LIMIT {_PURGE_BATCH} FOR UPDATE",
        params,
    )
    return await delete_instances(conn, [row[0] for row in await cur.fetchall()], keep_row=False)


async def purge_finished_txn(
    conn: Conn, status: OrchestrationStatus, finished_before: datetime, limit: int
) -> int:
    cur = await conn.execute(
        "SELECT instance_id FROM instances "
        "WHERE status = %s AND last_updated_at < %s AND lock_owner IS NULL "
        "ORDER BY last_updated_at LIMIT %s FOR UPDATE SKIP LOCKED",
        (status.value, utc(finished_before), max(1, limit)),
    )
    return await delete_instances(conn, [row[0] for row in await cur.fetchall()], keep_row=False)


async def overdue_timers_txn(conn: Conn, now: datetime, limit: int) -> list[Message]:
    cur = await conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages AS m WHERE m.visible_at <= %s "
        "AND m.event_type = %s ORDER BY m.visible_at, m.id LIMIT %s",
        (utc(now), int(EventType.TIMER_FIRED), max(0, limit)),
    )
    return [m for row in await cur.fetchall() if (m := message_from_row(row)) is not None]


async def hub_summary_txn(conn: Conn, now: datetime, window: timedelta) -> HubSummary:
    """The summary at `now`; hosts are live if heard from within the takeover `window`."""
    params = {"now": now, "window": window}
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
