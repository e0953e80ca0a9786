"""The PostgreSQL task hub's hosts: registration, heartbeats, the takeover of dead hosts' work,
and when work next becomes claimable (a lease expiring, or a host going silent).

A host is live while its heartbeat (on the database's clock) is younger than the takeover
window (`schema.LIVE`, `schema.DEAD`); every host registers before it claims, so an owner that
never registered counts as dead.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from dfhost.store.postgres.schema import LIVE, Conn, utc


async def register_host_txn(conn: Conn, owner: str, window: timedelta) -> bool:
    """Register `owner`, free the work of every owner that is not a live host, and forget dead
    hosts; returns whether anything was freed.

    Owners that never registered count as dead too: every host registers before it claims."""
    await conn.execute(
        "INSERT INTO hosts (owner, registered_at, heartbeat_at) VALUES (%s, now(), now()) "
        "ON CONFLICT (owner) DO UPDATE SET heartbeat_at = now()",
        (owner,),
    )
    params = {"window": window}
    freed = 0
    # Rows locked right now belong to a transaction that is still going: skip them rather than
    # wait (the claims take them over later, as any dead host's).
    for table, key, owner_column, until in (
        ("instances", "instance_id", "lock_owner", "lock_until"),
        ("activity_tasks", "id", "lease_owner", "lease_until"),
        ("timer_functions", "function", "run_owner", "run_until"),
    ):
        cur = await conn.execute(
            f"UPDATE {table} SET {owner_column} = NULL, {until} = NULL WHERE {key} IN "
            f"(SELECT {key} FROM {table} WHERE {owner_column} IS NOT NULL "
            f"AND {owner_column} NOT IN {LIVE} FOR UPDATE SKIP LOCKED)",
            params,
        )
        freed += cur.rowcount
    await conn.execute("DELETE FROM hosts WHERE heartbeat_at <= now() - %(window)s", params)
    return freed > 0


async def heartbeat_txn(conn: Conn, owners: Sequence[str]) -> None:
    # An upsert: a host declared dead (and forgotten) while cut off comes back to life.
    await conn.execute(
        "INSERT INTO hosts (owner, registered_at, heartbeat_at) "
        "SELECT owner, now(), now() FROM unnest(%s::text[]) AS owner "
        "ON CONFLICT (owner) DO UPDATE SET heartbeat_at = now()",
        (list(owners),),
    )


async def unregister_hosts_txn(conn: Conn, owners: Sequence[str]) -> None:
    """A host that stops cleanly frees its work at once rather than after the window."""
    owners = list(owners)
    await conn.execute("DELETE FROM hosts WHERE owner = ANY(%s)", (owners,))
    await conn.execute(
        "UPDATE instances SET lock_owner = NULL, lock_until = NULL WHERE lock_owner = ANY(%s)",
        (owners,),
    )
    await conn.execute(
        "UPDATE activity_tasks SET lease_owner = NULL, lease_until = NULL "
        "WHERE lease_owner = ANY(%s)",
        (owners,),
    )
    await conn.execute(
        "UPDATE timer_functions SET run_owner = NULL, run_until = NULL WHERE run_owner = ANY(%s)",
        (owners,),
    )


async def next_due_txn(
    conn: Conn, now: datetime, window: timedelta, own: Sequence[str]
) -> datetime | None:
    now = utc(now)
    cur = await conn.execute(
        """SELECT
            (SELECT MIN(visible_at) FROM messages WHERE visible_at > %(now)s),
            (SELECT MIN(i.lock_until) FROM instances AS i WHERE i.lock_until > %(now)s
             AND EXISTS (SELECT 1 FROM messages AS m WHERE m.instance_id = i.instance_id)),
            (SELECT MIN(lease_until) FROM activity_tasks WHERE lease_until > %(now)s),
            (SELECT MIN(h.heartbeat_at) + %(window)s - now() FROM hosts AS h
             WHERE h.owner <> ALL(%(own)s) AND (
                EXISTS (SELECT 1 FROM instances
                        WHERE lock_owner = h.owner AND lock_until > %(now)s)
                OR EXISTS (SELECT 1 FROM activity_tasks
                           WHERE lease_owner = h.owner AND lease_until > %(now)s)))""",
        {"now": now, "window": window, "own": list(own)},
    )
    row = await cur.fetchone()
    assert row is not None
    # A lease's end matters only to an instance with messages waiting (a message that comes
    # later wakes the claimers itself): else every host woke whenever an instance's hold
    # ended (50 ms after an activity's start), to claim nothing.
    times: list[datetime] = [value for value in row[:3] if value is not None]
    # Another host's leases become claimable when it misses its heartbeats for the window:
    # wake then (measured on the database's clock, so it does not matter if ours is off).
    takeover_in: timedelta | None = row[3]
    if takeover_in is not None and takeover_in > timedelta(0):
        times.append(now + takeover_in)
    return min(times) if times else None
