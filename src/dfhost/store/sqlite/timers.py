"""The SQLite task hub's timer-trigger tables: one row per timer-triggered function.

The row is both the function's claim ledger and its schedule status. `last_due_at` only moves
forward, so each occurrence is claimed at most once across every process sharing the file;
`run_owner`/`run_until` is the lease of the run in progress, which keeps runs from overlapping.
Every function here runs inside the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from dfhost.history import format_time, parse_time
from dfhost.store import Claim, TimerStatus

__all__ = [
    "SCHEMA_V2",
    "claim_timer_run",
    "finish_timer_run",
    "get_timer_status",
    "release_timer_runs",
    "renew_timer_run",
    "set_timer_status",
    "timer_run_owners",
]

SCHEMA_V2 = (
    """CREATE TABLE timer_functions (
        function TEXT PRIMARY KEY, last_due_at TEXT,
        run_owner TEXT, run_token INTEGER NOT NULL DEFAULT 0, run_until TEXT,
        status_last TEXT, status_next TEXT, status_updated TEXT) WITHOUT ROWID""",
)
"""Schema version 2: what version 1 lacked."""


def claim_timer_run(
    conn: sqlite3.Connection, function: str, due_at: datetime | None, claim: Claim
) -> int | None:
    row = conn.execute(
        "SELECT last_due_at, run_owner, run_until FROM timer_functions WHERE function = ?",
        (function,),
    ).fetchone()
    due_text = None if due_at is None else format_time(due_at)
    if row is not None:
        if row["run_owner"] is not None and row["run_until"] > format_time(claim.now):
            return None
        last_due = row["last_due_at"]
        if due_text is not None and last_due is not None and due_text <= last_due:
            return None
    else:
        conn.execute("INSERT INTO timer_functions (function) VALUES (?)", (function,))
    conn.execute(
        "UPDATE timer_functions SET run_owner = ?, run_until = ?, run_token = run_token + 1, "
        "last_due_at = COALESCE(?, last_due_at) WHERE function = ?",
        (claim.owner, format_time(claim.lease_until), due_text, function),
    )
    (token,) = conn.execute(
        "SELECT run_token FROM timer_functions WHERE function = ?", (function,)
    ).fetchone()
    return int(token)


def renew_timer_run(
    conn: sqlite3.Connection, function: str, owner: str, token: int, lease_until: datetime
) -> bool:
    cursor = conn.execute(
        "UPDATE timer_functions SET run_until = ? "
        "WHERE function = ? AND run_owner = ? AND run_token = ?",
        (format_time(lease_until), function, owner, token),
    )
    return cursor.rowcount > 0


def finish_timer_run(
    conn: sqlite3.Connection, function: str, owner: str, token: int, status: TimerStatus | None
) -> bool:
    cursor = conn.execute(
        "UPDATE timer_functions SET run_owner = NULL, run_until = NULL "
        "WHERE function = ? AND run_owner = ? AND run_token = ?",
        (function, owner, token),
    )
    if cursor.rowcount == 0:
        return False
    if status is not None:
        set_timer_status(conn, function, status)
    return True


def get_timer_status(conn: sqlite3.Connection, function: str) -> TimerStatus | None:
    row = conn.execute(
        "SELECT status_last, status_next, status_updated FROM timer_functions "
        "WHERE function = ? AND status_next IS NOT NULL",
        (function,),
    ).fetchone()
    if row is None:
        return None
    last = row["status_last"]
    return TimerStatus(
        last=None if last is None else parse_time(last),
        next=parse_time(row["status_next"]),
        last_updated=parse_time(row["status_updated"]),
    )


def set_timer_status(conn: sqlite3.Connection, function: str, status: TimerStatus) -> None:
    conn.execute(
        "INSERT INTO timer_functions (function, status_last, status_next, status_updated) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (function) DO UPDATE SET "
        "status_last = excluded.status_last, status_next = excluded.status_next, "
        "status_updated = excluded.status_updated",
        (
            function,
            None if status.last is None else format_time(status.last),
            format_time(status.next),
            format_time(status.last_updated),
        ),
    )


def timer_run_owners(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT DISTINCT run_owner FROM timer_functions WHERE run_owner NOT NULL")
    return {row[0] for row in rows}


def release_timer_runs(conn: sqlite3.Connection, owner: str) -> None:
    conn.execute(
        "UPDATE timer_functions SET run_owner = NULL, run_until = NULL WHERE run_owner = ?",
        (owner,),
    )
