"""The PostgreSQL task hub's engine transactions: episode claims and commits, activities.

Claims lock with `SKIP LOCKED` and never wait. A dead host's leases (see `hosts`) are
claimable as if they had expired.

Every transaction that takes a lease tags it (`lock_claim`, `lease_claim`) with a claim tag,
fresh per call: when the connection dies in COMMIT, the retry looks the tag up and hands out
what the lost attempt took, so a lease that went through unseen never sits with a host that does not
know it holds it. That covers the shortcuts too: the activities a commit leases
(`leased_activities_txn`) and the episode an activity's completion claims (`reload_claim_txn`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg

from dfhost.history import EventType
from dfhost.store import Claim, KnownHistory, LeaseLostError
from dfhost.store.postgres.clients import start_txn
from dfhost.store.postgres.schema import (
    DEAD,
    INSTANCE_COLUMNS,
    MESSAGE_COLUMNS,
    UPDATE_INSTANCE,
    VISIBLE,
    Conn,
    decode_history,
    insert_messages,
    instance_from_row,
    instance_params,
    message_from_row,
    utc,
)
from dfhost.work import ActivityTask, EpisodeOutcome, EpisodeWork, Message

log = logging.getLogger("dfhost.store.postgres")

_UNLOCKED = f"(i.lock_until IS NULL OR i.lock_until <= %(now)s OR i.lock_owner IN {DEAD})"
_WAKES_SUSPENDED = f"({int(EventType.EXECUTION_RESUMED)}, {int(EventType.EXECUTION_TERMINATED)})"
# The instance rows are locked in first-message order; SKIP LOCKED passes over rows another
# host is claiming or committing right now, and the outer condition is re-checked on the
# latest row version, so a lease taken meanwhile is never taken twice.
_CLAIMABLE = f"""
    WITH ready AS (
        SELECT m.instance_id, MIN(m.id) AS first_id
        FROM messages AS m JOIN instances AS i USING (instance_id)
        WHERE {VISIBLE} AND {_UNLOCKED}
          AND (i.status <> 'Suspended' OR m.event_type IN {_WAKES_SUSPENDED})
        GROUP BY m.instance_id)
    SELECT i.instance_id, ready.first_id FROM ready JOIN instances AS i USING (instance_id)
    WHERE {_UNLOCKED}
    ORDER BY ready.first_id LIMIT %(limit)s
    FOR NO KEY UPDATE OF i SKIP LOCKED"""
_CLAIMED_COLUMNS = ", ".join(f"i.{column}" for column in INSTANCE_COLUMNS.split(", ")) + (
    ", i.lock_token"
)


_ACTIVITY_COLUMNS = (
    "t.id, t.instance_id, t.execution_id, t.task_scheduled_id, t.name, t.input, "
    "t.scheduled_at, t.lease_token"
)


def _activity_from_row(row: Sequence[Any]) -> ActivityTask:
    return ActivityTask(
        task_id=row[0],
        instance_id=row[1],
        execution_id=row[2],
        task_scheduled_id=row[3],
        name=row[4],
        input=row[5],
        scheduled_at=row[6],
        lease_token=row[7],
    )


ActivityLease = tuple[str, datetime, str]
"""(owner, until, claim tag): how `commit_txn` leases the activities it creates."""


async def _insert_activities(
    conn: Conn, tasks: Sequence[ActivityTask], lease: ActivityLease | None = None
) -> psycopg.AsyncCursor[tuple[Any, ...]] | None:
    """Insert the tasks, leased as a claim would lease them if `lease` is given, then
    returning the cursor of the rows (`_ACTIVITY_COLUMNS`), to fetch once the pipeline is
    sent."""
    if not tasks:
        return None
    owner, until, tag = lease if lease is not None else (None, None, None)
    cur = await conn.execute(
        "INSERT INTO activity_tasks AS t (instance_id, execution_id, task_scheduled_id, name, "
        "input, scheduled_at, lease_owner, lease_until, lease_token, lease_claim) "
        "SELECT *, %s, %s::timestamptz, %s, %s FROM unnest(%s::text[], %s::text[], "
        "%s::integer[], %s::text[], %s::text[], %s::timestamptz[])"
        + ("" if lease is None else f" RETURNING {_ACTIVITY_COLUMNS}"),
        (
            owner,
            None if until is None else utc(until),
            0 if lease is None else 1,  # a claim's first lease of a task
            tag,
            [t.instance_id for t in tasks],
            [t.execution_id for t in tasks],
            [t.task_scheduled_id for t in tasks],
            [t.name for t in tasks],
            [t.input for t in tasks],
            [utc(t.scheduled_at) for t in tasks],
        ),
    )
    return None if lease is None else cur


# --- episodes ------------------------------------------------------------------------------


async def claim_episodes_txn(
    conn: Conn, claim: Claim, limit: int, *, tag: str, window: timedelta
) -> list[EpisodeWork]:
    """Runs pipelined: only fetches wait for the server."""
    now = utc(claim.now)
    # DTFx drops events for unknown instances; kept, they would be scanned forever.
    await conn.execute(
        "DELETE FROM messages WHERE id IN (SELECT m.id FROM messages AS m "
        f"WHERE {VISIBLE} AND NOT EXISTS "
        "(SELECT 1 FROM instances AS i WHERE i.instance_id = m.instance_id) "
        "FOR UPDATE SKIP LOCKED)",
        {"now": now},
    )
    cur = await conn.execute(
        f"WITH picked AS ({_CLAIMABLE}) "
        "UPDATE instances AS i SET lock_owner = %(owner)s, lock_until = %(until)s, "
        "lock_token = nextval('lock_tokens'), lock_claim = %(claim)s "
        "FROM picked WHERE i.instance_id = picked.instance_id "
        f"RETURNING {_CLAIMED_COLUMNS}, picked.first_id",
        {
            "now": now,
            "limit": limit,
            "window": window,
            "owner": claim.owner,
            "until": utc(claim.lease_until),
            "claim": tag,
        },
    )
    rows = sorted(await cur.fetchall(), key=lambda row: row[-1])
    if not rows:
        return []
    return await _load_work(conn, rows, now, claim.known)


async def reload_claim_txn(conn: Conn, claim: Claim, tag: str) -> list[EpisodeWork] | None:
    """The work of an earlier attempt at `claim`, tagged `tag`, that committed unseen, or
    None."""
    cur = await conn.execute(
        f"SELECT {_CLAIMED_COLUMNS} FROM instances AS i "
        "WHERE i.lock_claim = %s AND i.lock_owner = %s",
        (tag, claim.owner),
    )
    rows = await cur.fetchall()
    if not rows:
        return None
    work = await _load_work(conn, rows, utc(claim.now), claim.known)
    work.sort(key=lambda item: min((m.message_id or 0 for m in item.messages), default=0))
    return work


# Completes an activity and, in the same statement, leases its instance as a claim would. The
# task row is deleted (waiting for it if need be) before the instance row is locked, and that
# lock never waits (SKIP LOCKED: an instance being committed or claimed right now stays with
# its holder), so this cannot deadlock with commits, which lock the instance first. The result
# inserted here is not visible to the rest of the statement: `visible` stands in for it.
_COMPLETE_AND_CLAIM = f"""
    WITH done AS (DELETE FROM activity_tasks WHERE id = %(task)s RETURNING id),
    sent AS (
        INSERT INTO messages (instance_id, execution_id, event_type, timer_id, event, visible_at)
        SELECT %(instance)s, %(execution)s::text, %(type)s, %(timer)s::integer, %(event)s,
            %(visible_at)s::timestamptz
        FROM done RETURNING id),
    picked AS (
        SELECT i.instance_id FROM instances AS i
        WHERE i.instance_id = %(instance)s AND EXISTS (SELECT 1 FROM done)
          AND i.status <> 'Suspended' AND {_UNLOCKED}
          AND (%(visible)s OR EXISTS (SELECT 1 FROM messages AS m
                                      WHERE m.instance_id = %(instance)s AND {VISIBLE}))
        FOR NO KEY UPDATE OF i SKIP LOCKED),
    leased AS (
        UPDATE instances AS i SET lock_owner = %(owner)s, lock_until = %(until)s,
            lock_token = nextval('lock_tokens'), lock_claim = %(claim)s
        FROM picked WHERE i.instance_id = picked.instance_id AND {_UNLOCKED}
        RETURNING {_CLAIMED_COLUMNS})
    SELECT EXISTS (SELECT 1 FROM sent), leased.*
    FROM (VALUES (1)) AS one LEFT JOIN leased ON true"""


async def complete_and_claim_txn(
    conn: Conn, task_id: int, result: Message, claim: Claim, *, tag: str, window: timedelta
) -> tuple[bool, EpisodeWork | None]:
    """Delete the task and enqueue its result; if the task was there, lease the result's
    instance to `claim.owner` when it is unlocked (or held by a dead host), not Suspended,
    and has messages visible at `claim.now`, tagged with `tag` as `claim_episodes_txn`
    tags its leases. Returns (completed, the leased work or None). Runs pipelined."""
    now = utc(claim.now)
    cur = await conn.execute(
        _COMPLETE_AND_CLAIM,
        {
            "task": task_id,
            "instance": result.instance_id,
            "execution": result.execution_id,
            "type": int(result.event.type),
            "timer": result.event.timer_id,
            "event": result.event.to_json(),
            "visible_at": None if result.visible_at is None else utc(result.visible_at),
            "visible": result.visible_at is None or utc(result.visible_at) <= now,
            "now": now,
            "window": window,
            "owner": claim.owner,
            "until": utc(claim.lease_until),
            "claim": tag,
        },
    )
    row = await cur.fetchone()
    if row is None or not row[0]:
        return False, None
    if row[1] is None:  # not leased
        return True, None
    work = await _load_work(conn, [row[1:]], now, claim.known)
    return True, work[0] if work else None


def _history_start(row: Sequence[Any], known: KnownHistory | None) -> int:
    """Where the history sent for a claimed row may start: one event before the end of what
    the claimer holds of the same execution (the overlap it checks its copy against)."""
    if known is None:
        return 0
    execution_id, held = known.get(row[0], ("", 0))
    return held - 1 if execution_id == row[2] and held > 0 else 0


async def _load_work(
    conn: Conn, rows: Sequence[Sequence[Any]], now: datetime, known: KnownHistory | None
) -> list[EpisodeWork]:
    """The work of claimed instance rows (`_CLAIMED_COLUMNS`), in `rows` order: their messages
    visible at `now` and their histories, each from where `known` allows. An instance left
    with no message (every one it had was undecodable, and dropped) is released instead."""
    starts = {row[0]: _history_start(row, known) for row in rows}
    tails = await _history_rows(conn, starts)
    messages = await _visible_messages(conn, list(starts), now)
    histories = _by_instance(await tails.fetchall())
    # A history shorter than the claimer thinks (a purge and re-create, a lost commit) has no
    # event where its tail would start: send all of it.
    short = {
        instance_id: 0
        for instance_id, start in starts.items()
        if start and [seq for seq, _ in histories.get(instance_id, [])[:1]] != [start]
    }
    if short:
        starts.update(short)
        for instance_id in short:
            histories.pop(instance_id, None)
        histories.update(_by_instance(await (await _history_rows(conn, short)).fetchall()))
    empty = [instance_id for instance_id in starts if not messages.get(instance_id)]
    if empty:
        await conn.execute(
            "UPDATE instances SET lock_owner = NULL, lock_until = NULL WHERE instance_id = ANY(%s)",
            (empty,),
        )
    work: list[EpisodeWork] = []
    for row in rows:
        instance = instance_from_row(row)
        if instance.instance_id in empty:
            continue
        history, error = decode_history(
            instance.instance_id, instance.execution_id, histories.get(instance.instance_id, [])
        )
        work.append(
            EpisodeWork(
                instance=instance,
                history=history,
                messages=messages[instance.instance_id],
                lease_token=row[13],
                history_error=error,
                history_start=0 if error else starts[instance.instance_id],
            )
        )
    return work


async def _history_rows(
    conn: Conn, starts: Mapping[str, int]
) -> psycopg.AsyncCursor[tuple[Any, ...]]:
    """The cursor of the instances' current histories, each from position `starts[id]` on:
    (instance_id, seq, event) rows."""
    return await conn.execute(
        "SELECT h.instance_id, h.seq, h.event "
        "FROM unnest(%s::text[], %s::integer[]) AS k(instance_id, start) "
        "JOIN instances AS i ON i.instance_id = k.instance_id "
        "JOIN history AS h ON h.instance_id = k.instance_id "
        "AND h.execution_id = i.execution_id AND h.seq >= k.start "
        "ORDER BY h.instance_id, h.seq",
        (list(starts), list(starts.values())),
    )


def _by_instance(history_rows: Sequence[Sequence[Any]]) -> dict[str, list[tuple[int, str]]]:
    found: dict[str, list[tuple[int, str]]] = {}
    for instance_id, seq, text in history_rows:
        found.setdefault(instance_id, []).append((seq, text))
    return found


async def _visible_messages(
    conn: Conn, ids: Sequence[str], now: datetime
) -> dict[str, list[Message]]:
    cur = await conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages AS m "
        f"WHERE m.instance_id = ANY(%(ids)s) AND {VISIBLE} ORDER BY m.id",
        {"ids": list(ids), "now": now},
    )
    found: dict[str, list[Message]] = {}
    for row in await cur.fetchall():
        message = message_from_row(row)
        if message is None:
            # A message that can never be decoded would be re-claimed forever; drop it loudly.
            log.error("dropping undecodable message %s for %r", row[0], row[1])
            await conn.execute("DELETE FROM messages WHERE id = %s", (row[0],))
            continue
        found.setdefault(message.instance_id, []).append(message)
    return found


async def commit_txn(
    conn: Conn,
    owner: str,
    work: EpisodeWork,
    outcome: EpisodeOutcome,
    *,
    retrying: bool,
    lease_activities: tuple[datetime, int, str] | None = None,
) -> tuple[bool, list[ActivityTask]]:
    """Apply the outcome; returns whether the instance or others now have work to wake for,
    and the activities created leased to `owner` as `lease_activities` = (until, at most,
    claim tag) asks.

    Runs pipelined: the writes go out behind the lease check without waiting for it, and a
    failed check rolls them all back."""
    instance = outcome.instance
    instance_id = instance.instance_id
    lease = await conn.execute(
        "SELECT lock_owner, lock_token FROM instances WHERE instance_id = %s FOR NO KEY UPDATE",
        (instance_id,),
    )
    consumed = [m.message_id for m in work.messages if m.message_id is not None]
    if consumed:
        await conn.execute("DELETE FROM messages WHERE id = ANY(%s)", (consumed,))
    if outcome.drop_pending_work:
        await conn.execute(
            "DELETE FROM messages WHERE instance_id = %s "
            "AND (event_type = %s OR execution_id IS NOT NULL)",
            (instance_id, int(EventType.TIMER_FIRED)),
        )
        await conn.execute("DELETE FROM activity_tasks WHERE instance_id = %s", (instance_id,))
    if outcome.reset_history:
        await conn.execute("DELETE FROM history WHERE instance_id = %s", (instance_id,))
    if outcome.new_events:
        # The primary key makes two commits for one history position impossible, whatever
        # happened to the lease check.
        await conn.execute(
            "INSERT INTO history (instance_id, execution_id, seq, event) "
            "SELECT %(id)s, %(execution)s, base.last + e.n, e.event FROM "
            "(SELECT COALESCE(MAX(seq), -1) AS last FROM history "
            " WHERE instance_id = %(id)s AND execution_id = %(execution)s) AS base, "
            "unnest(%(events)s::text[]) WITH ORDINALITY AS e(event, n)",
            {
                "id": instance_id,
                "execution": instance.execution_id,
                "events": [event.to_json() for event in outcome.new_events],
            },
        )
    if outcome.cancelled_timer_ids:
        await conn.execute(
            "DELETE FROM messages WHERE instance_id = %s AND event_type = %s "
            "AND timer_id = ANY(%s)",
            (instance_id, int(EventType.TIMER_FIRED), list(outcome.cancelled_timer_ids)),
        )
    until, limit, tag = lease_activities if lease_activities is not None else (None, 0, "")
    leasing = outcome.activities[: max(limit, 0)]
    leased = await _insert_activities(conn, leasing, None if until is None else (owner, until, tag))
    await _insert_activities(conn, outcome.activities[len(leasing) :])
    await insert_messages(conn, outcome.messages)
    enqueued = len(outcome.activities) > len(leasing) or bool(outcome.messages)
    if outcome.starts:  # these wait for answers: not worth doing under a lost lease
        _check_lease(await lease.fetchone(), owner, work)
    for request in outcome.starts:
        enqueued |= (await start_txn(conn, request, retrying=retrying))[1]
    await conn.execute(UPDATE_INSTANCE, instance_params(instance))
    # Messages that arrived during the episode become claimable now that the lock is gone.
    pending = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE instance_id = %s)", (instance_id,)
    )
    if not outcome.starts:
        _check_lease(await lease.fetchone(), owner, work)
    row = await pending.fetchone()
    tasks = [] if leased is None else [_activity_from_row(r) for r in await leased.fetchall()]
    return enqueued or bool(row and row[0]), sorted(tasks, key=lambda t: t.task_id or 0)


def _check_lease(row: Sequence[Any] | None, owner: str, work: EpisodeWork) -> None:
    if row is None or row[0] != owner or row[1] != work.lease_token:
        raise LeaseLostError(
            f"lease on instance {work.instance.instance_id!r} was lost; episode not committed"
        )


# --- activities ----------------------------------------------------------------------------


async def claim_activities_txn(
    conn: Conn, claim: Claim, limit: int, *, tag: str, window: timedelta, retrying: bool
) -> list[ActivityTask]:
    # An earlier attempt may have committed unseen: hand out what it took.
    if retrying and (taken := await leased_activities_txn(conn, claim.owner, tag)):
        return taken
    cur = await conn.execute(
        "WITH picked AS (SELECT id FROM activity_tasks "
        "WHERE lease_until IS NULL OR lease_until <= %(now)s "
        f"OR lease_owner IN {DEAD} "
        "ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
        "UPDATE activity_tasks AS t SET lease_owner = %(owner)s, lease_until = %(until)s, "
        "lease_token = t.lease_token + 1, lease_claim = %(claim)s "
        f"FROM picked WHERE t.id = picked.id RETURNING {_ACTIVITY_COLUMNS}",
        {
            "now": utc(claim.now),
            "limit": limit,
            "window": window,
            "owner": claim.owner,
            "until": utc(claim.lease_until),
            "claim": tag,
        },
    )
    return sorted(
        (_activity_from_row(row) for row in await cur.fetchall()), key=lambda t: t.task_id or 0
    )


async def leased_activities_txn(conn: Conn, owner: str, tag: str) -> list[ActivityTask]:
    """The activities that the claim (or commit) tagged `tag` leased to `owner` and it still
    holds."""
    cur = await conn.execute(
        f"SELECT {_ACTIVITY_COLUMNS} FROM activity_tasks AS t "
        "WHERE t.lease_claim = %s AND t.lease_owner = %s ORDER BY t.id",
        (tag, owner),
    )
    return [_activity_from_row(row) for row in await cur.fetchall()]


async def complete_activity_txn(
    conn: Conn, task_id: int, result: Message, channel: str, sender: str
) -> bool:
    """One statement: delete the task and, if it was still there, enqueue its result and
    notify."""
    cur = await conn.execute(
        "WITH done AS (DELETE FROM activity_tasks WHERE id = %s RETURNING 1), "
        "sent AS (INSERT INTO messages (instance_id, execution_id, event_type, timer_id, event, "
        "visible_at) SELECT %s, %s, %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM done) "
        "RETURNING 1) "
        "SELECT pg_notify(%s, %s) FROM sent",
        (
            task_id,
            result.instance_id,
            result.execution_id,
            int(result.event.type),
            result.event.timer_id,
            result.event.to_json(),
            None if result.visible_at is None else utc(result.visible_at),
            channel,
            sender,
        ),
    )
    return bool(await cur.fetchall())
