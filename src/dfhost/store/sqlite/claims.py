"""The SQLite task hub's engine transactions: dead hosts' leases, episode claims and commits
(with the instance hold, see `dfhost.store.InstanceHolder`), activities.

Messages addressed to an instance that does not exist are deleted by a claim once they are
visible: DTFx drops events for unknown instances, and keeping them would wedge the queue.
Every function runs inside the caller's transaction.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime

from dfhost.history import (
    EventType,
    HistoryEvent,
    Instance,
    OrchestrationStatus,
    format_time,
    parse_time,
)
from dfhost.store import Claim, KnownHistory, LeaseLostError
from dfhost.store.sqlite import timers
from dfhost.store.sqlite.clients import start
from dfhost.store.sqlite.schema import (
    INSTANCE_COLUMNS,
    insert_activity,
    insert_message,
    instance_from_row,
    instance_params,
    load_history,
    load_instance,
    message_from_row,
)
from dfhost.work import ActivityTask, EpisodeOutcome, EpisodeWork, Message

log = logging.getLogger(__name__)

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


# --- hosts ---------------------------------------------------------------------------------


def lease_owners(conn: sqlite3.Connection) -> set[str]:
    """Every owner of an episode lease, an activity lease or a timer run."""
    # The *_until columns are indexed, and set exactly when an owner is.
    owners = {
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT lock_owner FROM instances WHERE lock_until IS NOT NULL "
            "UNION SELECT DISTINCT lease_owner FROM activity_tasks WHERE lease_until IS NOT NULL"
        )
    }
    return (owners | timers.timer_run_owners(conn)) - {None}


def release_owner(conn: sqlite3.Connection, owner: str) -> None:
    """Free every lease and timer run of `owner` (a dead host)."""
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


# --- episodes ------------------------------------------------------------------------------


def claim_episodes(conn: sqlite3.Connection, claim: Claim, limit: int) -> list[EpisodeWork]:
    now_text = format_time(claim.now)
    first: dict[str, int] = {}  # instance -> its oldest visible message
    for sql in (_IMMEDIATE_CANDIDATES, _DUE_CANDIDATES):
        _find_claimable(conn, sql, now_text, limit, first)
    work: list[EpisodeWork] = []
    for instance_id in sorted(first, key=first.__getitem__)[:limit]:
        leased = _lease_instance(conn, instance_id, claim, now_text)
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
    claim: Claim,
    now_text: str,
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
        (claim.owner, format_time(claim.lease_until), token, instance_id),
    )
    if instance is None:
        instance = load_instance(conn, instance_id)
        assert instance is not None  # the caller found it unlocked
    start = _history_start(instance, claim.known)
    history, error = load_history(conn, instance_id, instance.execution_id, start)
    if start and (error or not history):  # shorter than the claimer thinks: send all of it
        start = 0
        history, error = load_history(conn, instance_id, instance.execution_id)
    return EpisodeWork(
        instance=instance,
        history=history,
        messages=messages,
        lease_token=token,
        history_error=error,
        history_start=start,
    )


def _history_start(instance: Instance, known: KnownHistory | None) -> int:
    """Where the history sent may start: one event before the end of what the claimer holds of
    the same execution (the overlap it checks its copy against)."""
    if known is None:
        return 0
    execution_id, held = known.get(instance.instance_id, ("", 0))
    return held - 1 if execution_id == instance.execution_id and held > 0 else 0


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
        message = message_from_row(row, event)
        assert message is not None
        messages.append(message)
    return messages


def commit_episode(
    conn: sqlite3.Connection,
    owner: str,
    work: EpisodeWork,
    outcome: EpisodeOutcome,
    lease: tuple[datetime, int] | None,
    *,
    hold_until: datetime | None = None,
    completes: ActivityTask | None = None,
) -> tuple[bool, list[ActivityTask]]:
    """Apply the outcome; returns whether the instance or others now have work to wake for,
    and the activity tasks created leased to `owner` as `lease` = (until, at most) asks.

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
    lease_until, lease_limit = lease if lease is not None else (None, 0)
    for task in outcome.activities:
        if len(leased) < lease_limit:
            leased.append(insert_activity(conn, task, owner, lease_until))
        else:
            insert_activity(conn, task)
    for message in outcome.messages:
        insert_message(conn, message)
    enqueued = len(outcome.activities) > len(leased) or bool(outcome.messages)
    for request in outcome.starts:
        enqueued |= start(conn, request)[1]
    # Messages that arrived during the episode become claimable now that the lock is gone
    # (and it is not held for them to wait behind).
    (pending,) = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE instance_id = ?)", (instance_id,)
    ).fetchone()
    params = instance_params(instance)
    params["owner"] = owner
    params["token"] = work.lease_token
    held = None if pending or enqueued else hold_until
    params["hold_until"] = None if held is None else format_time(held)
    if conn.execute(_UPDATE_LEASED_INSTANCE, params).rowcount == 0:
        raise LeaseLostError(f"lease on instance {instance_id!r} was lost; episode not committed")
    return enqueued or bool(pending), leased


def abandon_episode(
    conn: sqlite3.Connection, owner: str, work: EpisodeWork, retry_at: datetime | None
) -> bool:
    """Release the lease if `owner` still holds it (claimable from `retry_at` on, when given:
    a lock with no owner); returns whether it did."""
    cursor = conn.execute(
        "UPDATE instances SET lock_owner = NULL, lock_until = ? "
        "WHERE instance_id = ? AND lock_owner = ? AND lock_token = ?",
        (
            None if retry_at is None else format_time(retry_at),
            work.instance.instance_id,
            owner,
            work.lease_token,
        ),
    )
    return cursor.rowcount > 0


# --- activities ----------------------------------------------------------------------------


def claim_activities(conn: sqlite3.Connection, claim: Claim, limit: int) -> list[ActivityTask]:
    ids = [
        (row["id"],)
        for row in conn.execute(
            "SELECT id FROM activity_tasks WHERE lease_until IS NULL OR lease_until <= ? "
            "ORDER BY id LIMIT ?",
            (format_time(claim.now), limit),
        )
    ]
    conn.executemany(
        "UPDATE activity_tasks SET lease_owner = ?, lease_until = ?, "
        "lease_token = lease_token + 1 WHERE id = ?",
        [(claim.owner, format_time(claim.lease_until), task_id) for (task_id,) in ids],
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


def complete_activity(
    conn: sqlite3.Connection, task: ActivityTask, result: Message, claim: Claim | None
) -> tuple[bool, EpisodeWork | None]:
    """Delete the task and enqueue its result; with a `claim`, lease the result's instance if
    it is unlocked and not suspended. Returns (completed, the leased work or None)."""
    # The lease token is deliberately not checked: delivery is at least once, and whichever
    # run completes first wins.
    cursor = conn.execute("DELETE FROM activity_tasks WHERE id = ?", (task.task_id,))
    if cursor.rowcount == 0:
        return False, None
    insert_message(conn, result)
    if claim is None:
        return True, None
    row = conn.execute(
        f"SELECT {INSTANCE_COLUMNS}, lock_until FROM instances WHERE instance_id = ?",
        (task.instance_id,),
    ).fetchone()
    now_text = format_time(claim.now)
    if row is None or row["status"] == OrchestrationStatus.SUSPENDED.value:
        return True, None
    if row["lock_until"] is not None and row["lock_until"] > now_text:
        return True, None
    return True, _lease_instance(conn, task.instance_id, claim, now_text, instance_from_row(row))
