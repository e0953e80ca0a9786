"""The PostgreSQL task hub's timer-trigger transactions: one row per timer-triggered function.

As in SQLite, the row is both the function's claim ledger and its schedule status: `last_due_at`
only moves forward, so each occurrence is claimed at most once by all hosts together, and
`run_owner`/`run_until` is the lease of the run in progress (a dead host's counts as expired).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from dfhost.store import Claim, TimerStatus
from dfhost.store.postgres.schema import DEAD, Conn, utc


async def claim_timer_run_txn(
    conn: Conn, function: str, due_at: datetime | None, claim: Claim, window: timedelta
) -> int | None:
    await conn.execute(
        "INSERT INTO timer_functions (function) VALUES (%s) ON CONFLICT DO NOTHING", (function,)
    )
    cur = await conn.execute(
        "SELECT last_due_at, run_owner IS NOT NULL AND run_until > %(now)s "
        f"AND run_owner NOT IN {DEAD} FROM timer_functions WHERE function = %(function)s "
        "FOR UPDATE",
        {"now": utc(claim.now), "window": window, "function": function},
    )
    row = await cur.fetchone()
    assert row is not None
    last_due_at, running = row
    if running:
        return None
    if due_at is not None and last_due_at is not None and utc(due_at) <= last_due_at:
        return None
    cur = await conn.execute(
        "UPDATE timer_functions SET run_owner = %s, run_until = %s, run_token = run_token + 1, "
        "last_due_at = COALESCE(%s, last_due_at) WHERE function = %s RETURNING run_token",
        (claim.owner, utc(claim.lease_until), None if due_at is None else utc(due_at), function),
    )
    token = await cur.fetchone()
    assert token is not None
    return int(token[0])


async def renew_timer_run_txn(
    conn: Conn, function: str, owner: str, token: int, lease_until: datetime
) -> bool:
    cur = await conn.execute(
        "UPDATE timer_functions SET run_until = %s "
        "WHERE function = %s AND run_owner = %s AND run_token = %s",
        (utc(lease_until), function, owner, token),
    )
    return cur.rowcount > 0


async def finish_timer_run_txn(
    conn: Conn, function: str, owner: str, token: int, status: TimerStatus | None
) -> bool:
    cur = await conn.execute(
        "UPDATE timer_functions SET run_owner = NULL, run_until = NULL "
        "WHERE function = %s AND run_owner = %s AND run_token = %s",
        (function, owner, token),
    )
    if cur.rowcount == 0:
        return False
    if status is not None:
        await set_timer_status_txn(conn, function, status)
    return True


async def get_timer_status_txn(conn: Conn, function: str) -> TimerStatus | None:
    cur = await conn.execute(
        "SELECT status_last, status_next, status_updated FROM timer_functions "
        "WHERE function = %s AND status_next IS NOT NULL",
        (function,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return TimerStatus(last=row[0], next=row[1], last_updated=row[2])


async def set_timer_status_txn(conn: Conn, function: str, status: TimerStatus) -> None:
    await conn.execute(
        "INSERT INTO timer_functions (function, status_last, status_next, status_updated) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (function) DO UPDATE SET "
        "status_last = excluded.status_last, status_next = excluded.status_next, "
        "status_updated = excluded.status_updated",
        (
            function,
            None if status.last is None else utc(status.last),
            utc(status.next),
            utc(status.last_updated),
        ),
    )
