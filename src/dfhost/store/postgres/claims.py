"""The PostgreSQL task hub's engine transactions: episode claims and commits, activities.

Claims, commits and completions are each one call of a server-side function (`routines`):
one round trip, autocommit. Claims lock with `SKIP LOCKED` and never wait. A dead host's
leases (see `hosts`) are claimable as if they had expired.

Every call that takes a lease tags it (`lock_claim`, `lease_claim`) with a tag, fresh per
call: when the connection dies before the answer comes back, the retry looks the tag up and
hands out what the lost attempt took, so a lease that went through unseen never sits with a
host that does not know it holds it. That covers the shortcuts too: the activities a commit
leases (`commit_txn` finds its own tag on the instance) and the episode an activity's
completion claims (`reload_claim_txn`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from dfhost.store import Claim, KnownHistory, LeaseLostError
from dfhost.store.postgres.clients import start_txn
from dfhost.store.postgres.schema import (
    DEAD,
    Conn,
    decode_history,
    instance_from_row,
    instance_params,
    message_from_row,
    text_array,
    utc,
)
from dfhost.work import ActivityTask, EpisodeOutcome, EpisodeWork, Message

log = logging.getLogger("dfhost.store.postgres")

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


# --- episodes ------------------------------------------------------------------------------

_HISTORY = 14
"""Where a `claimed` row's history columns start: length, start, events; then the messages'
ids, executions, events and visible times."""


async def claim_episodes_txn(
    conn: Conn, claim: Claim, limit: int, *, tag: str, window: timedelta
) -> list[EpisodeWork]:
    cur = await conn.execute(
        "SELECT * FROM claim_episodes(%s, %s, %s, %s, %s, %s)",
        (claim.owner, utc(claim.now), utc(claim.lease_until), limit, tag, window),
    )
    return await load_work(conn, await cur.fetchall(), claim.known)


async def reload_claim_txn(conn: Conn, claim: Claim, tag: str) -> list[EpisodeWork] | None:
    """The work of an earlier attempt at `claim`, tagged `tag`, that went through unseen, or
    None."""
    cur = await conn.execute(
        "SELECT * FROM claimed_work(ARRAY(SELECT i.instance_id FROM instances AS i "
        "WHERE i.lock_claim = %s AND i.lock_owner = %s ORDER BY (SELECT MIN(m.id) "
        "FROM messages AS m WHERE m.instance_id = i.instance_id)), NULL, NULL, %s)",
        (tag, claim.owner, utc(claim.now)),
    )
    rows = await cur.fetchall()
    if not rows:
        return None
    return await load_work(conn, rows, claim.known)


COMPLETE = (
    "complete_activity(%s::bigint, %s, %s, %s::smallint, %s::integer, %s, %s::timestamptz, "
    "%s, %s::timestamptz, %s::timestamptz, %s, %s::interval, %s, %s::integer, %s, %s)"
)
"""The call of the function that completes an activity (and may lease its instance)."""


def complete_params(
    task_id: int,
    result: Message,
    claim: Claim | None,
    *,
    tag: str,
    window: timedelta,
    channel: str,
    sender: str,
) -> list[object]:
    """`COMPLETE`'s parameters: delete the task and enqueue its result; with a `claim`, lease
    the result's instance to `claim.owner` when it is unlocked (or held by a dead host), not
    Suspended, and has messages visible at `claim.now`, tagged with `tag` as claims tag their
    leases."""
    known = None
    if claim is not None and claim.known is not None:
        known = claim.known.get(result.instance_id)
    return [
        task_id,
        result.instance_id,
        result.execution_id,
        int(result.event.type),
        result.event.timer_id,
        result.event.to_json(),
        None if result.visible_at is None else utc(result.visible_at),
        None if claim is None else claim.owner,
        None if claim is None else utc(claim.now),
        None if claim is None else utc(claim.lease_until),
        tag,
        window,
        None if known is None else known[0],
        None if known is None else known[1],
        channel,
        sender,
    ]


def decoded_work(
    rows: Sequence[Sequence[Any]], known: KnownHistory | None
) -> list[EpisodeWork] | None:
    """The work of `claimed` rows when they carry all it needs (the history the claimer
    lacks, decodable messages), without a statement; else None (see `load_work`)."""
    work: list[EpisodeWork] = []
    for row in rows:
        instance_id, execution_id = row[0], row[2]
        length, sent_from, events = row[_HISTORY], row[_HISTORY + 1], row[_HISTORY + 2]
        start = _history_start(instance_id, execution_id, length, known)
        ids, executions, texts, visible = row[_HISTORY + 3 :]
        messages = [
            message_from_row((message_id, instance_id, execution, text, at))
            for message_id, execution, text, at in sorted(
                zip(ids or (), executions or (), texts or (), visible or (), strict=True)
            )
        ]
        if start < sent_from or not messages or None in messages:
            return None
        instance = instance_from_row(row)
        history, error = decode_history(
            instance_id, instance.execution_id, list(enumerate(events[start - sent_from :], start))
        )
        work.append(
            EpisodeWork(
                instance=instance,
                history=history,
                messages=[m for m in messages if m is not None],
                lease_token=row[13],
                history_error=error,
                history_start=0 if error else start,
            )
        )
    return work


def _history_start(
    instance_id: str, execution_id: str, length: int, known: KnownHistory | None
) -> int:
    """Where the history sent for a claimed instance may start: one event before the end of
    what the claimer holds of the same execution (the overlap it checks its copy against), or
    0 when it holds nothing, another execution, or more than there is (a purge and
    re-create, a lost commit)."""
    if known is None:
        return 0
    execution, held = known.get(instance_id, ("", 0))
    return held - 1 if execution == execution_id and 0 < held <= length else 0


async def load_work(
    conn: Conn, rows: Sequence[Sequence[Any]], known: KnownHistory | None
) -> list[EpisodeWork]:
    """The work of `claimed` rows, in order. A row carries the history from some position on
    (usually its last event): enough when the claimer holds the rest (`known`), else the
    missing part is read with one more statement. An instance left with no message (every
    one it had was undecodable, and dropped) is released instead."""
    starts: dict[str, int] = {}
    histories: dict[str, list[tuple[int, str]]] = {}
    for row in rows:
        instance_id, execution_id = row[0], row[2]
        length, sent_from, events = row[_HISTORY], row[_HISTORY + 1], row[_HISTORY + 2]
        start = _history_start(instance_id, execution_id, length, known)
        starts[instance_id] = start
        if start >= sent_from:
            histories[instance_id] = list(enumerate(events[start - sent_from :], start))
    missing = {iid: start for iid, start in starts.items() if iid not in histories}
    if missing:
        cur = await conn.execute(
            "SELECT h.instance_id, h.seq, h.event "
            "FROM unnest(%s::text[], %s::integer[]) AS k(instance_id, start) "
            "JOIN instances AS i ON i.instance_id = k.instance_id "
            "JOIN history AS h ON h.instance_id = k.instance_id "
            "AND h.execution_id = i.execution_id AND h.seq >= k.start "
            "ORDER BY h.instance_id, h.seq",
            (list(missing), list(missing.values())),
        )
        for instance_id in missing:
            histories[instance_id] = []
        for instance_id, seq, text in await cur.fetchall():
            histories[instance_id].append((seq, text))
    work: list[EpisodeWork] = []
    empty: list[str] = []
    for row in rows:
        instance = instance_from_row(row)
        iid = instance.instance_id
        messages = await _messages(conn, iid, row[_HISTORY + 3 :])
        if not messages:
            empty.append(iid)
            continue
        history, error = decode_history(iid, instance.execution_id, histories[iid])
        work.append(
            EpisodeWork(
                instance=instance,
                history=history,
                messages=messages,
                lease_token=row[13],
                history_error=error,
                history_start=0 if error else starts[iid],
            )
        )
    if empty:
        await conn.execute(
            "UPDATE instances SET lock_owner = NULL, lock_until = NULL WHERE instance_id = ANY(%s)",
            (empty,),
        )
    return work


async def _messages(conn: Conn, instance_id: str, columns: Sequence[Any]) -> list[Message]:
    """A `claimed` row's messages (ids, executions, events, visible times), decoded."""
    ids, executions, events, visible = columns
    found: list[Message] = []
    # The arrays are aggregated together (so aligned) from rows read in id order; sorted
    # again here, as SQL does not promise an aggregate keeps its input's order.
    for message_id, execution_id, text, visible_at in sorted(
        zip(ids or (), executions or (), events or (), visible or (), strict=True)
    ):
        message = message_from_row((message_id, instance_id, execution_id, text, visible_at))
        if message is None:
            # A message that can never be decoded would be re-claimed forever; drop it loudly.
            log.error("dropping undecodable message %s for %r", message_id, instance_id)
            await conn.execute("DELETE FROM messages WHERE id = %s", (message_id,))
            continue
        found.append(message)
    return found


_COMMIT_TYPES = (
    "text text bigint text "  # the instance, the lease, the commit's tag
    "text text text text text text text text text text timestamptz timestamptz "
    "bigint[] bigint boolean boolean integer text[] integer[] "
    "text[] text[] integer[] text[] text[] timestamptz[] integer timestamptz "  # activities
    "text[] text[] smallint[] integer[] text[] timestamptz[] "  # messages
    "timestamptz boolean text text"
)
COMMIT = "commit_episode(" + ", ".join(f"%s::{kind}" for kind in _COMMIT_TYPES.split()) + ")"
"""The call of the commit function, for `commit_params`."""


@dataclasses.dataclass(frozen=True, slots=True)
class Committed:
    """What a commit did."""

    repeated: bool
    """An earlier attempt had made it (its answer was lost)."""
    wake: bool
    """The instance or others have work now: claims should look."""
    held: bool
    """The lease was kept (a hold), not released."""
    leased: list[ActivityTask]
    """The activities created leased to the committer."""


def commit_params(
    owner: str,
    work: EpisodeWork,
    outcome: EpisodeOutcome,
    *,
    tag: str,
    channel: str,
    sender: str,
    lease_activities: tuple[datetime, int] | None = None,
    hold_until: datetime | None = None,
    completes: ActivityTask | None = None,
) -> list[object]:
    """The parameters of `COMMIT` for an episode (see `routines` commit_episode)."""
    instance = outcome.instance
    same_history = not (
        outcome.reset_history
        or work.history_error
        or instance.execution_id != work.instance.execution_id
    )
    until, limit = lease_activities if lease_activities is not None else (None, 0)
    leasing = len(outcome.activities[: max(limit, 0)])
    enqueued = len(outcome.activities) > leasing or bool(outcome.messages or outcome.starts)
    params = instance_params(instance)
    activities, messages = outcome.activities, outcome.messages
    return [
        instance.instance_id,
        owner,
        work.lease_token,
        tag,
        params["name"],
        params["execution_id"],
        params["status"],
        params["version"],
        params["input"],
        params["output"],
        params["custom_status"],
        params["parent_instance_id"],
        params["failure_details"],
        params["tags"],
        params["created_at"],
        params["last_updated_at"],
        _some([m.message_id for m in work.messages if m.message_id is not None]),
        None if completes is None else completes.task_id,
        outcome.drop_pending_work,
        outcome.reset_history,
        work.history_start + len(work.history) - 1 if same_history else None,
        text_array([event.to_json() for event in outcome.new_events]),
        _some(list(outcome.cancelled_timer_ids)),
        text_array([t.instance_id for t in activities]),
        text_array([t.execution_id for t in activities]),
        _some([t.task_scheduled_id for t in activities]),
        text_array([t.name for t in activities]),
        text_array([t.input for t in activities]),
        _some([utc(t.scheduled_at) for t in activities]),
        leasing,
        None if until is None else utc(until),
        text_array([m.instance_id for m in messages]),
        text_array([m.execution_id for m in messages]),
        _some([int(m.event.type) for m in messages]),
        _some([m.event.timer_id for m in messages]),
        text_array([m.event.to_json() for m in messages]),
        _some([None if m.visible_at is None else utc(m.visible_at) for m in messages]),
        None if hold_until is None or outcome.starts else utc(hold_until),
        enqueued,
        channel,
        sender,
    ]


def _some(values: list[Any]) -> list[Any] | None:
    """An array parameter, or NULL for none (the functions read both as empty; psycopg dumps
    NULL for free, an empty list at the cost of a full one)."""
    return values or None


def committed(
    row: Sequence[Any], work: EpisodeWork, outcome: EpisodeOutcome, leasing: int
) -> Committed:
    """The answer of `COMMIT`; raises `LeaseLostError` if it wrote nothing because the lease
    was lost or the activity it completes was completed by another run."""
    result, wake, held, ids, scheduled = row
    if result == "lease_lost":
        raise LeaseLostError(
            f"lease on instance {work.instance.instance_id!r} was lost; episode not committed"
        )
    if result == "task_gone":
        raise LeaseLostError("the activity the episode completes was already completed")
    by_id = {task.task_scheduled_id: task for task in outcome.activities[: max(leasing, 0)]}
    tasks = [
        dataclasses.replace(by_id[seq], task_id=task_id, lease_token=1)
        for task_id, seq in zip(ids, scheduled, strict=True)
        if seq in by_id
    ]
    return Committed(repeated=result == "repeated", wake=bool(wake), held=bool(held), leased=tasks)


async def commit_with_starts_txn(
    conn: Conn,
    params: Sequence[object],
    work: EpisodeWork,
    outcome: EpisodeOutcome,
    leasing: int,
    *,
    retrying: bool,
) -> Committed:
    """A commit that starts other instances: the episode, then the starts, in the caller's
    transaction (the starts are not written when the episode is not)."""
    cur = await conn.execute(f"SELECT * FROM {COMMIT}", params)
    row = await cur.fetchone()
    assert row is not None
    done = committed(row, work, outcome, leasing)
    if not done.repeated:
        for request in outcome.starts:
            await start_txn(conn, request, retrying=retrying)
    return done


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
