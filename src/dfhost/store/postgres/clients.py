"""The PostgreSQL task hub's client transactions: create, send, read, query and purge."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from dfhost.history import (
    TERMINAL_STATUSES,
    EventType,
    HistoryEvent,
    Instance,
    OrchestrationStatus,
    format_time,
    parse_time,
)
from dfhost.store import DeliveryResult, InstanceQuery, StoreError, prefix_upper_bound
from dfhost.store.postgres.schema import (
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


async def send_txn(conn: Conn, message: Message) -> DeliveryResult:
    # KEY SHARE waits only for a purge of the row, not for an episode committing on it.
    cur = await conn.execute(
        "SELECT status FROM instances WHERE instance_id = %s FOR KEY SHARE",
        (message.instance_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return "not_found"
    status = OrchestrationStatus(row[0])
    if message.event.type is EventType.EXECUTION_REWOUND:
        if status is not OrchestrationStatus.FAILED:
            return "gone"
    elif status in TERMINAL_STATUSES:
        return "gone"
    await insert_messages(conn, [message])
    return "sent"


def query_filters(query: InstanceQuery) -> tuple[str, list[object]]:
    """A WHERE clause (a range for the id prefix, so LIKE wildcards need no escaping)."""
    clauses: list[str] = ["TRUE"]
    params: list[object] = []
    if query.created_from is not None:
        clauses.append("created_at >= %s")
        params.append(utc(query.created_from))
    if query.created_to is not None:
        clauses.append("created_at <= %s")
        params.append(utc(query.created_to))
    if query.statuses:
        clauses.append("status = ANY(%s)")
        params.append([OrchestrationStatus(status).value for status in query.statuses])
    if query.instance_id_prefix:
        clauses.append("instance_id >= %s")
        params.append(query.instance_id_prefix)
        upper = prefix_upper_bound(query.instance_id_prefix)
        if upper is not None:
            clauses.append("instance_id < %s")
            params.append(upper)
    if query.name is not None:
        clauses.append("name = %s")
        params.append(query.name)
    return " AND ".join(clauses), params


def encode_token(created_at: datetime, instance_id: str) -> str:
    payload = json.dumps([format_time(created_at), instance_id])
    return base64.urlsafe_b64encode(payload.encode()).decode()


def decode_token(token: str) -> tuple[datetime, str]:
    try:
        data = json.loads(base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True))
        if not (
            isinstance(data, list) and len(data) == 2 and all(isinstance(x, str) for x in data)
        ):
            raise ValueError("not a [created_at, instance_id] pair")
        created_at = parse_time(data[0])
    except (ValueError, binascii.Error):
        raise StoreError("invalid continuation token") from None
    return created_at, data[1]


async def query_txn(conn: Conn, query: InstanceQuery) -> tuple[list[Instance], str | None]:
    top = max(1, min(1000, query.top))
    where, params = query_filters(query)
    if query.continuation is not None:
        created_at, instance_id = decode_token(query.continuation)
        where += " AND (created_at < %s OR (created_at = %s AND instance_id > %s))"
        params += [created_at, created_at, instance_id]
    cur = await conn.execute(
        f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE {where} "
        "ORDER BY created_at DESC, instance_id LIMIT %s",
        [*params, top + 1],
    )
    rows = await cur.fetchall()
    page = [instance_from_row(row) for row in rows[:top]]
    token = None
    if len(rows) > top:
        token = encode_token(page[-1].created_at, page[-1].instance_id)
    return page, token


async def purge_batch_txn(conn: Conn, query: InstanceQuery) -> int:
    where, params = query_filters(query)
    cur = await conn.execute(
        f"SELECT instance_id FROM instances WHERE {where} ORDER BY instance_id "
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
