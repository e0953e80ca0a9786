"""The PostgreSQL task hub's server-side functions: each engine transaction in one statement.

A claim, an episode's commit, an activity's completion and a client's start or event are each
ONE call of a function in the hub's schema, sent on an autocommit connection: one round trip,
no BEGIN or COMMIT, and plans the server caches (PL/pgSQL prepares its statements once per
session). Written as separate statements from Python, the same work took 3-6 round trips and
was parsed and planned again every time, which was most of the database's CPU per
orchestration (see bench/RESULTS.md, issue 19).

Conventions: parameters are `p_*`; a claimed instance comes back as a `claimed` row: its instance
columns, its lease token, its current execution's history length and the history from
`history_start` on (by default only the last event: the claimer usually holds the rest), and
its messages visible at the claim's `now` as arrays, oldest first.

The functions resolve table names through the session's `search_path` (the hub's schema, set
on every connection), so one definition serves each hub. `MIGRATION` creates them; changing
one means a new migration that replaces it (`CREATE OR REPLACE`).
"""

from __future__ import annotations

from dfhost.history import TERMINAL_STATUSES, EventType

__all__ = ["MIGRATION"]

_TIMER_FIRED = int(EventType.TIMER_FIRED)
_WAKES_SUSPENDED = f"({int(EventType.EXECUTION_RESUMED)}, {int(EventType.EXECUTION_TERMINATED)})"
_FINISHED = "(" + ", ".join(sorted(f"'{status.value}'" for status in TERMINAL_STATUSES)) + ")"
_UNLOCKED = (
    "({alias}.lock_until IS NULL OR {alias}.lock_until <= p_now OR {alias}.lock_owner = ANY(dead))"
)


def _inbox_loop(where: str, order: str, counter: str) -> str:
    """A claim's walk over the inbox's messages that `where` selects, in `order`, unlocked
    instances only: messages for unknown instances are deleted, the others' instances added
    to `found_ids` (their first message to `firsts`) until `counter` reaches `p_limit`."""
    increment = (
        "" if counter.startswith("cardinality") else f"\n            {counter} := {counter} + 1;"
    )
    return f"""    FOR r IN
        SELECT m.id, m.instance_id, i.instance_id IS NOT NULL AS known
        FROM messages AS m LEFT JOIN instances AS i ON i.instance_id = m.instance_id
        WHERE {where} AND (i.instance_id IS NULL OR (
            {_UNLOCKED.format(alias="i")}
            AND (i.status <> 'Suspended' OR m.event_type IN {_WAKES_SUSPENDED})))
        ORDER BY {order} LIMIT unbounded
    LOOP
        IF NOT r.known THEN
            DELETE FROM messages WHERE id = r.id;
        ELSIF NOT r.instance_id = ANY(found_ids) THEN
            found_ids := found_ids || r.instance_id;
            firsts := firsts || r.id;{increment}
            EXIT WHEN {counter} >= p_limit;
        END IF;
    END LOOP;"""


_CLAIMED = """CREATE TYPE claimed AS (
    instance_id TEXT, name TEXT, execution_id TEXT, status TEXT, version TEXT, input TEXT,
    output TEXT, custom_status TEXT, parent_instance_id TEXT, failure_details TEXT, tags TEXT,
    created_at TIMESTAMPTZ, last_updated_at TIMESTAMPTZ, lock_token BIGINT,
    history_length INTEGER, history_start INTEGER, history TEXT[],
    message_ids BIGINT[], message_executions TEXT[], message_events TEXT[],
    message_visible TIMESTAMPTZ[])"""

# The work of instances this transaction just leased, in `p_ids` order (PL/pgSQL rather than
# SQL, whose plans would be made again at every call). The history starts
# where the claimer's copy ends (one event of overlap) when `p_executions`/`p_held` say what
# it holds, from the start if that does not fit, and at the last event when they are NULL.
_CLAIMED_WORK = """
CREATE FUNCTION claimed_work(
    p_ids TEXT[], p_executions TEXT[], p_held INTEGER[], p_now TIMESTAMPTZ)
RETURNS SETOF claimed LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    SELECT i.instance_id, i.name, i.execution_id, i.status, i.version, i.input, i.output,
        i.custom_status, i.parent_instance_id, i.failure_details, i.tags, i.created_at,
        i.last_updated_at, i.lock_token, h.length, s.start,
        ARRAY(SELECT e.event FROM history AS e
              WHERE e.instance_id = i.instance_id AND e.execution_id = i.execution_id
                AND e.seq >= s.start ORDER BY e.seq),
        m.ids, m.executions, m.events, m.visible
    FROM unnest(p_ids, p_executions, p_held) WITH ORDINALITY AS k(instance_id, execution_id,
                                                                  held, n)
    JOIN instances AS i ON i.instance_id = k.instance_id
    CROSS JOIN LATERAL (
        SELECT COALESCE(MAX(e.seq) + 1, 0) AS length FROM history AS e
        WHERE e.instance_id = i.instance_id AND e.execution_id = i.execution_id) AS h
    CROSS JOIN LATERAL (
        SELECT CASE
            WHEN k.execution_id IS NULL THEN GREATEST(h.length - 1, 0)
            WHEN k.execution_id = i.execution_id AND k.held BETWEEN 1 AND h.length
                THEN k.held - 1
            ELSE 0 END AS start) AS s
    CROSS JOIN LATERAL (
        SELECT array_agg(m.id) AS ids, array_agg(m.execution_id) AS executions,
            array_agg(m.event) AS events, array_agg(m.visible_at) AS visible
        FROM (SELECT m.id, m.execution_id, m.event, m.visible_at FROM messages AS m
              WHERE m.instance_id = i.instance_id
                AND (m.visible_at IS NULL OR m.visible_at <= p_now)
              ORDER BY m.id) AS m) AS m
    ORDER BY k.n;
END
$$"""

# Reads the inbox oldest first (messages due at once by id, then due timers by due time) and
# stops once it has found `p_limit` claimable instances, so a claim costs what it claims, not
# the size of the inbox. Messages for instances that do not exist are deleted on the way
# (DTFx drops them; kept, they would be read forever). The instance rows are locked with
# SKIP LOCKED, re-checking the lease on the latest row version, so a lease taken meanwhile by
# another host is never taken twice.
_CLAIM_EPISODES = f"""
CREATE FUNCTION claim_episodes(
    p_owner TEXT, p_now TIMESTAMPTZ, p_until TIMESTAMPTZ, p_limit INTEGER, p_tag TEXT,
    p_window INTERVAL)
RETURNS SETOF claimed LANGUAGE plpgsql AS $$
DECLARE
    dead TEXT[] := ARRAY(SELECT h.owner FROM hosts AS h
                         WHERE h.heartbeat_at <= now() - p_window);
    found_ids TEXT[] := '{{}}';
    firsts BIGINT[] := '{{}}';
    due INTEGER := 0;  -- instances found by their due timers
    taken TEXT[];
    r RECORD;
    -- Never reached; a LIMIT whose value the plan does not know makes the planner prefer a
    -- plan that reads the inbox in order and can stop (index order, nested loop) to one that
    -- reads all of it (hash join and sort: 3 ms per claim with 2,000 messages queued).
    unbounded BIGINT := 9223372036854775807;
BEGIN
    -- A claim writes only leases: one lost in a crash of the server just frees its instance
    -- again, so its commit need not wait for the disk (a flush is ~0.15 ms of the server's
    -- CPU). A stale episode whose token came back cannot record anything twice: every
    -- commit is fenced, and the history's primary key refuses a second episode at the same
    -- position.
    PERFORM set_config('synchronous_commit', 'off', true);
{_inbox_loop("m.visible_at IS NULL", "m.id", "cardinality(found_ids)")}
{_inbox_loop("m.visible_at <= p_now", "m.visible_at, m.id", "due")}
    IF cardinality(found_ids) = 0 THEN
        RETURN;
    END IF;
    WITH candidates AS (
        SELECT c.instance_id, c.first FROM unnest(found_ids, firsts) AS c(instance_id, first)
        ORDER BY c.first LIMIT p_limit),
    locked AS (
        SELECT i.instance_id FROM instances AS i
        WHERE i.instance_id IN (SELECT c.instance_id FROM candidates AS c)
          AND {_UNLOCKED.format(alias="i")}
        FOR NO KEY UPDATE SKIP LOCKED),
    leased AS (
        UPDATE instances AS i SET lock_owner = p_owner, lock_until = p_until,
            lock_token = nextval('lock_tokens'), lock_claim = p_tag
        FROM locked WHERE i.instance_id = locked.instance_id
        RETURNING i.instance_id)
    SELECT array_agg(c.instance_id ORDER BY c.first) INTO taken
    FROM candidates AS c JOIN leased AS l USING (instance_id);
    RETURN QUERY SELECT * FROM claimed_work(taken, NULL, NULL, p_now);
END
$$"""

# Deletes the task and enqueues its result; with `p_owner`, also leases the result's instance
# to it, as a claim would, when it is unlocked (or held by a dead host), not Suspended, and has
# messages visible at `p_now`. Returns nothing when the task was gone (nothing enqueued), the
# instance's `claimed` row when it was leased, else one row of NULLs (and notifies: the
# result waits for a claim). Run again after an answer that was lost, it answers as the lost
# attempt would have (by `p_tag`). The task row is deleted before the instance row is locked, and
# that lock never waits (SKIP LOCKED: an instance being committed or claimed right now stays
# with its holder), so this cannot deadlock with commits, which lock the instance first.
_COMPLETE_ACTIVITY = f"""
CREATE FUNCTION complete_activity(
    p_task BIGINT, p_instance TEXT, p_execution TEXT, p_type SMALLINT, p_timer INTEGER,
    p_event TEXT, p_visible_at TIMESTAMPTZ, p_owner TEXT, p_now TIMESTAMPTZ,
    p_until TIMESTAMPTZ, p_tag TEXT, p_window INTERVAL, p_known_execution TEXT,
    p_known INTEGER, p_channel TEXT, p_sender TEXT)
RETURNS SETOF claimed LANGUAGE plpgsql AS $$
DECLARE
    dead TEXT[];
    nothing claimed;
BEGIN
    DELETE FROM activity_tasks WHERE id = p_task;
    IF NOT FOUND THEN
        -- Completed already: by another run, or by an earlier attempt of this very call whose
        -- answer was lost; if that attempt leased the instance (its tag), hand the work out.
        IF p_owner IS NOT NULL THEN
            RETURN QUERY SELECT * FROM claimed_work(
                ARRAY(SELECT i.instance_id FROM instances AS i
                      WHERE i.lock_claim = p_tag AND i.lock_owner = p_owner),
                ARRAY[COALESCE(p_known_execution, '')], ARRAY[COALESCE(p_known, 0)], p_now);
        END IF;
        RETURN;
    END IF;
    INSERT INTO messages (instance_id, execution_id, event_type, timer_id, event, visible_at)
    VALUES (p_instance, p_execution, p_type, p_timer, p_event, p_visible_at);
    IF p_owner IS NOT NULL THEN
        dead := ARRAY(SELECT h.owner FROM hosts AS h WHERE h.heartbeat_at <= now() - p_window);
        UPDATE instances AS i SET lock_owner = p_owner, lock_until = p_until,
            lock_token = nextval('lock_tokens'), lock_claim = p_tag
        WHERE i.instance_id = (
            SELECT x.instance_id FROM instances AS x
            WHERE x.instance_id = p_instance AND x.status <> 'Suspended'
              AND {_UNLOCKED.format(alias="x")}
              AND EXISTS (SELECT 1 FROM messages AS m WHERE m.instance_id = p_instance
                          AND (m.visible_at IS NULL OR m.visible_at <= p_now))
            FOR NO KEY UPDATE SKIP LOCKED);
        IF FOUND THEN
            RETURN QUERY SELECT * FROM claimed_work(
                ARRAY[p_instance], ARRAY[COALESCE(p_known_execution, '')],
                ARRAY[COALESCE(p_known, 0)], p_now);
            RETURN;
        END IF;
    END IF;
    PERFORM pg_notify(p_channel, p_sender);
    RETURN NEXT nothing;
END
$$"""

# An episode's whole commit. Fenced: the instance row is locked first and the lease must still
# be (p_owner, p_token), else nothing is written. Every commit leaves its tag
# in lock_claim, so a retry after a COMMIT whose answer was lost knows it went through and
# hands out what it leased instead of failing (or, with a hold, applying it twice).
# `p_last`: the history position the episode appends after, or NULL to look it up (a new
# execution, a reset). The first `p_leasing` activities are created leased to `p_owner`.
# `p_hold_until`: keep the lease until then instead of releasing it, unless messages wait for
# the instance or the commit enqueued work. `p_completes`: the activity whose result the
# episode consumed unstored (a held instance), which another run may have completed.
# Returns the outcome: 'committed'; 'repeated' (an earlier attempt made this commit);
# 'lease_lost' or 'task_gone' (nothing written: a value, not an error, so that the commits
# sent together in one statement do not fail with it); then whether anyone should wake (and
# notifies them), whether the lease is held, and the leased activities' ids and
# task_scheduled_ids.
_COMMIT_EPISODE = f"""
CREATE FUNCTION commit_episode(
    p_id TEXT, p_owner TEXT, p_token BIGINT, p_tag TEXT,
    p_name TEXT, p_execution TEXT, p_status TEXT, p_version TEXT, p_input TEXT,
    p_output TEXT, p_custom_status TEXT, p_parent TEXT, p_failure TEXT, p_tags TEXT,
    p_created TIMESTAMPTZ, p_updated TIMESTAMPTZ,
    p_consumed BIGINT[], p_completes BIGINT, p_drop_pending BOOLEAN, p_reset BOOLEAN,
    p_last INTEGER, p_events TEXT[], p_cancelled INTEGER[],
    p_task_instances TEXT[], p_task_executions TEXT[], p_task_ids INTEGER[],
    p_task_names TEXT[], p_task_inputs TEXT[], p_task_at TIMESTAMPTZ[],
    p_leasing INTEGER, p_lease_until TIMESTAMPTZ,
    p_message_instances TEXT[], p_message_executions TEXT[], p_message_types SMALLINT[],
    p_message_timers INTEGER[], p_message_events TEXT[], p_message_visible TIMESTAMPTZ[],
    p_hold_until TIMESTAMPTZ, p_enqueued BOOLEAN, p_channel TEXT, p_sender TEXT)
RETURNS TABLE (
    outcome TEXT, wake BOOLEAN, held BOOLEAN, leased BIGINT[], leased_ids INTEGER[])
LANGUAGE plpgsql AS $$
DECLARE
    v_owner TEXT;
    v_token BIGINT;
    v_claim TEXT;
    v_last INTEGER;
    v_pending BOOLEAN;
    v_hold TIMESTAMPTZ;
BEGIN
    SELECT i.lock_owner, i.lock_token, i.lock_claim INTO v_owner, v_token, v_claim
    FROM instances AS i WHERE i.instance_id = p_id FOR NO KEY UPDATE;
    IF FOUND AND v_claim = p_tag THEN
        outcome := 'repeated';
        wake := false;
        held := v_owner = p_owner AND v_token = p_token;
        SELECT COALESCE(array_agg(t.id ORDER BY t.id), '{{}}'),
            COALESCE(array_agg(t.task_scheduled_id ORDER BY t.id), '{{}}')
        INTO leased, leased_ids
        FROM activity_tasks AS t WHERE t.lease_claim = p_tag AND t.lease_owner = p_owner;
        RETURN NEXT;
        RETURN;
    END IF;
    IF NOT FOUND OR v_owner IS DISTINCT FROM p_owner OR v_token IS DISTINCT FROM p_token THEN
        outcome := 'lease_lost';
        RETURN NEXT;
        RETURN;
    END IF;
    IF p_completes IS NOT NULL THEN
        DELETE FROM activity_tasks WHERE id = p_completes;
        IF NOT FOUND THEN
            outcome := 'task_gone';
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;
    IF cardinality(p_consumed) > 0 THEN
        DELETE FROM messages WHERE id = ANY(p_consumed);
    END IF;
    IF p_drop_pending THEN
        DELETE FROM messages AS m WHERE m.instance_id = p_id
            AND (m.event_type = {_TIMER_FIRED} OR m.execution_id IS NOT NULL);
        DELETE FROM activity_tasks AS t WHERE t.instance_id = p_id;
    END IF;
    IF p_reset THEN
        DELETE FROM history AS h WHERE h.instance_id = p_id;
    END IF;
    IF cardinality(p_events) > 0 THEN
        v_last := p_last;
        IF v_last IS NULL THEN
            SELECT COALESCE(MAX(h.seq), -1) INTO v_last FROM history AS h
            WHERE h.instance_id = p_id AND h.execution_id = p_execution;
        END IF;
        -- The primary key makes two commits for one history position impossible.
        INSERT INTO history (instance_id, execution_id, seq, event)
        SELECT p_id, p_execution, v_last + e.n, e.event
        FROM unnest(p_events) WITH ORDINALITY AS e(event, n);
    END IF;
    IF cardinality(p_cancelled) > 0 THEN
        DELETE FROM messages AS m WHERE m.instance_id = p_id
            AND m.event_type = {_TIMER_FIRED} AND m.timer_id = ANY(p_cancelled);
    END IF;
    leased := '{{}}';
    leased_ids := '{{}}';
    IF cardinality(p_task_ids) > 0 THEN
        WITH created AS (
            INSERT INTO activity_tasks AS t (instance_id, execution_id, task_scheduled_id,
                name, input, scheduled_at, lease_owner, lease_until, lease_token, lease_claim)
            SELECT a.instance_id, a.execution_id, a.task_id, a.name, a.input, a.at,
                CASE WHEN a.n <= p_leasing THEN p_owner END,
                CASE WHEN a.n <= p_leasing THEN p_lease_until END,
                CASE WHEN a.n <= p_leasing THEN 1 ELSE 0 END,
                CASE WHEN a.n <= p_leasing THEN p_tag END
            FROM unnest(p_task_instances, p_task_executions, p_task_ids, p_task_names,
                        p_task_inputs, p_task_at)
                WITH ORDINALITY AS a(instance_id, execution_id, task_id, name, input, at, n)
            ORDER BY a.n
            RETURNING t.id, t.task_scheduled_id, t.lease_owner)
        SELECT COALESCE(array_agg(c.id ORDER BY c.id), '{{}}'),
            COALESCE(array_agg(c.task_scheduled_id ORDER BY c.id), '{{}}')
        INTO leased, leased_ids
        FROM created AS c WHERE c.lease_owner IS NOT NULL;
    END IF;
    IF cardinality(p_message_instances) > 0 THEN
        INSERT INTO messages (instance_id, execution_id, event_type, timer_id, event,
                              visible_at)
        SELECT * FROM unnest(p_message_instances, p_message_executions, p_message_types,
                             p_message_timers, p_message_events, p_message_visible);
    END IF;
    -- Messages that arrived during the episode: claimable once the lock is gone (and the
    -- instance is not held for them to wait behind).
    v_pending := EXISTS (SELECT 1 FROM messages AS m WHERE m.instance_id = p_id);
    v_hold := CASE WHEN v_pending OR p_enqueued THEN NULL ELSE p_hold_until END;
    -- lock_token is kept: an episode still running against a replaced generation fails its
    -- commit instead of overwriting the new one.
    UPDATE instances SET name = p_name, execution_id = p_execution, status = p_status,
        version = p_version, input = p_input, output = p_output,
        custom_status = p_custom_status, parent_instance_id = p_parent,
        failure_details = p_failure, tags = p_tags, created_at = p_created,
        last_updated_at = p_updated,
        lock_owner = CASE WHEN v_hold IS NULL THEN NULL ELSE lock_owner END,
        lock_until = v_hold, lock_claim = p_tag
    WHERE instance_id = p_id;
    outcome := 'committed';
    wake := v_pending OR p_enqueued;
    IF wake THEN
        PERFORM pg_notify(p_channel, p_sender);
    END IF;
    held := v_hold IS NOT NULL;
    RETURN NEXT;
END
$$"""

# A client's start, when the id is free: the instance and its ExecutionStarted message, and
# a notification. Returns false, writing nothing, when the id is taken (the caller then runs
# the transaction that replaces a finished instance or reports the conflict).
_START_INSTANCE = """
CREATE FUNCTION start_instance(
    p_id TEXT, p_name TEXT, p_execution TEXT, p_status TEXT, p_version TEXT, p_input TEXT,
    p_parent TEXT, p_tags TEXT, p_created TIMESTAMPTZ, p_updated TIMESTAMPTZ,
    p_type SMALLINT, p_event TEXT, p_visible_at TIMESTAMPTZ, p_channel TEXT, p_sender TEXT)
RETURNS BOOLEAN LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO instances (instance_id, name, execution_id, status, version, input,
        parent_instance_id, tags, created_at, last_updated_at)
    VALUES (p_id, p_name, p_execution, p_status, p_version, p_input, p_parent, p_tags,
        p_created, p_updated)
    ON CONFLICT (instance_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO messages (instance_id, execution_id, event_type, event, visible_at)
    VALUES (p_id, p_execution, p_type, p_event, p_visible_at);
    PERFORM pg_notify(p_channel, p_sender);
    RETURN true;
END
$$"""

# A client's event, unless the instance is unknown or finished (an ExecutionRewound only for a
# Failed one); KEY SHARE waits only for a purge of the row, not for an episode committing on
# it. Returns 'sent', 'not_found' or 'gone'.
_SEND_MESSAGE = f"""
CREATE FUNCTION send_message(
    p_id TEXT, p_execution TEXT, p_type SMALLINT, p_timer INTEGER, p_event TEXT,
    p_visible_at TIMESTAMPTZ, p_rewind BOOLEAN, p_channel TEXT, p_sender TEXT)
RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
    v_status TEXT;
BEGIN
    SELECT i.status INTO v_status FROM instances AS i WHERE i.instance_id = p_id
    FOR KEY SHARE;
    IF NOT FOUND THEN
        RETURN 'not_found';
    END IF;
    IF p_rewind THEN
        IF v_status <> 'Failed' THEN
            RETURN 'gone';
        END IF;
    ELSIF v_status IN {_FINISHED} THEN
        RETURN 'gone';
    END IF;
    INSERT INTO messages (instance_id, execution_id, event_type, timer_id, event, visible_at)
    VALUES (p_id, p_execution, p_type, p_timer, p_event, p_visible_at);
    PERFORM pg_notify(p_channel, p_sender);
    RETURN 'sent';
END
$$"""

MIGRATION: tuple[str, ...] = (
    # Due timers are read in due order, messages due at once in id order, each from an index
    # of its own kind (one index update per message, as the single visible_at index was).
    "DROP INDEX messages_visible",
    "CREATE INDEX messages_ready ON messages (id) WHERE visible_at IS NULL",
    "CREATE INDEX messages_due ON messages (visible_at, id) WHERE visible_at IS NOT NULL",
    _CLAIMED,
    _CLAIMED_WORK,
    _CLAIM_EPISODES,
    _COMPLETE_ACTIVITY,
    _COMMIT_EPISODE,
    _START_INSTANCE,
    _SEND_MESSAGE,
)
"""Schema version 1 -> 2: the functions, and the inbox's indexes for claims that stop."""
