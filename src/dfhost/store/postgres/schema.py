"""The PostgreSQL task hub's schema, its row shapes, and the statements every part shares.

Every function taking a `Conn` runs inside the caller's transaction, on a connection whose
`search_path` is the hub's schema. Row locks are always taken instance row first, then its
history, inbox and work, so concurrent purges, creates and commits cannot deadlock each other.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from dfhost.history import HistoryEvent, Instance, OrchestrationStatus
from dfhost.store import StoreError
from dfhost.store.postgres import routines
from dfhost.store.query import SqlDialect
from dfhost.work import Message

__all__ = ["DIALECT", "MIGRATIONS", "SCHEMA_VERSION", "Conn", "migrate"]

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # COLLATE "C": ids sort by code point, as in SQLite, so prefix ranges and continuation
        # tokens mean the same on both backends whatever the database's locale.
        """CREATE TABLE instances (
            instance_id TEXT COLLATE "C" PRIMARY KEY, name TEXT NOT NULL,
            execution_id TEXT NOT NULL, status TEXT NOT NULL, version TEXT, input TEXT,
            output TEXT, custom_status TEXT, parent_instance_id TEXT, failure_details TEXT,
            tags TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL,
            last_updated_at TIMESTAMPTZ NOT NULL, lock_owner TEXT,
            lock_token BIGINT NOT NULL DEFAULT 0, lock_until TIMESTAMPTZ, lock_claim TEXT)""",
        "CREATE INDEX instances_created ON instances (created_at DESC, instance_id)",
        "CREATE INDEX instances_finished ON instances (status, last_updated_at)",
        "CREATE INDEX instances_lock_until ON instances (lock_until)",
        "CREATE INDEX instances_lock_owner ON instances (lock_owner) WHERE lock_owner IS NOT NULL",
        """CREATE TABLE history (
            instance_id TEXT COLLATE "C" NOT NULL, execution_id TEXT NOT NULL,
            seq INTEGER NOT NULL, event TEXT NOT NULL,
            PRIMARY KEY (instance_id, execution_id, seq))""",
        """CREATE TABLE messages (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            instance_id TEXT COLLATE "C" NOT NULL, execution_id TEXT,
            event_type SMALLINT NOT NULL, timer_id INTEGER, event TEXT NOT NULL,
            visible_at TIMESTAMPTZ)""",
        "CREATE INDEX messages_instance ON messages (instance_id, id)",
        "CREATE INDEX messages_visible ON messages (visible_at)",
        """CREATE TABLE activity_tasks (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            instance_id TEXT COLLATE "C" NOT NULL, execution_id TEXT NOT NULL,
            task_scheduled_id INTEGER NOT NULL, name TEXT NOT NULL, input TEXT,
            scheduled_at TIMESTAMPTZ NOT NULL, lease_owner TEXT,
            lease_token BIGINT NOT NULL DEFAULT 0, lease_until TIMESTAMPTZ, lease_claim TEXT)""",
        "CREATE INDEX activity_tasks_lease ON activity_tasks (lease_until)",
        "CREATE INDEX activity_tasks_instance ON activity_tasks (instance_id)",
        "CREATE INDEX activity_tasks_owner ON activity_tasks (lease_owner) "
        "WHERE lease_owner IS NOT NULL",
        """CREATE TABLE timer_functions (
            function TEXT PRIMARY KEY, last_due_at TIMESTAMPTZ, run_owner TEXT,
            run_token BIGINT NOT NULL DEFAULT 0, run_until TIMESTAMPTZ,
            status_last TIMESTAMPTZ, status_next TIMESTAMPTZ, status_updated TIMESTAMPTZ)""",
        # heartbeat_at is the database's clock, so hosts' clocks may disagree.
        """CREATE TABLE hosts (
            owner TEXT PRIMARY KEY, registered_at TIMESTAMPTZ NOT NULL,
            heartbeat_at TIMESTAMPTZ NOT NULL)""",
        # Never reused, even across purges and re-creates, so a stale episode's token can
        # never match a new lease.
        "CREATE SEQUENCE lock_tokens",
    ),
    routines.MIGRATION,
)
"""`MIGRATIONS[v]` takes the schema from version v to v + 1."""
SCHEMA_VERSION = len(MIGRATIONS)


async def migrate(conn: Conn, schema: str, label: str) -> None:
    """Create the hub's schema or bring it to `SCHEMA_VERSION`, in one transaction; StoreError
    if it is newer than this dfhost's."""
    async with conn.transaction():
        # Hosts starting together take turns; the loser finds the schema up to date.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"dfhost:{schema}",)
        )
        # Look before creating: a role may use a schema prepared for it without the right
        # to create one.
        cur = await conn.execute(
            "SELECT to_regnamespace(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
            (schema, f"{schema}.schema_version"),
        )
        row = await cur.fetchone()
        has_schema, has_version = row if row is not None else (False, False)
        if not has_schema:
            await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        if not has_version:
            await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        cur = await conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        row = await cur.fetchone()
        version = int(row[0]) if row is not None else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"task hub {label} has schema version {version}, newer than this "
                f"dfhost supports ({SCHEMA_VERSION})"
            )
        if version == SCHEMA_VERSION:
            return
        for step in MIGRATIONS[version:]:
            for statement in step:
                await conn.execute(statement)
        await conn.execute("DELETE FROM schema_version")
        await conn.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION,))


INSTANCE_COLUMNS = (
    "instance_id, name, execution_id, status, version, input, output, custom_status, "
    "parent_instance_id, failure_details, tags, created_at, last_updated_at"
)
INSERT_INSTANCE = f"""
    INSERT INTO instances ({INSTANCE_COLUMNS}) VALUES (%(instance_id)s, %(name)s,
        %(execution_id)s, %(status)s, %(version)s, %(input)s, %(output)s, %(custom_status)s,
        %(parent_instance_id)s, %(failure_details)s, %(tags)s, %(created_at)s,
        %(last_updated_at)s)
    ON CONFLICT (instance_id) DO NOTHING RETURNING 1"""
# Keeps lock_token and clears the lock: an episode still running against a replaced generation
# fails its commit instead of overwriting the new one.
UPDATE_INSTANCE = """
    UPDATE instances SET name = %(name)s, execution_id = %(execution_id)s, status = %(status)s,
        version = %(version)s, input = %(input)s, output = %(output)s,
        custom_status = %(custom_status)s, parent_instance_id = %(parent_instance_id)s,
        failure_details = %(failure_details)s, tags = %(tags)s, created_at = %(created_at)s,
        last_updated_at = %(last_updated_at)s, lock_owner = NULL, lock_until = NULL
    WHERE instance_id = %(instance_id)s"""
MESSAGE_COLUMNS = "m.id, m.instance_id, m.execution_id, m.event, m.visible_at"
VISIBLE = "(m.visible_at IS NULL OR m.visible_at <= %(now)s)"
# A host is dead when its heartbeat (the database's clock) is older than the takeover window.
DEAD = "(SELECT owner FROM hosts WHERE heartbeat_at <= now() - %(window)s)"
LIVE = "(SELECT owner FROM hosts WHERE heartbeat_at > now() - %(window)s)"


# --- rows ----------------------------------------------------------------------------------


def utc(value: datetime) -> datetime:
    """Naive datetimes are UTC (as `format_time` takes them)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def text_array(values: Sequence[str | None]) -> str | None:
    """A `text[]` parameter as its literal, or None for none (pass it with a `::text[]` cast).

    psycopg quotes each element of a list with a regular expression, character by character
    for JSON full of quotes: a tenth of the host's CPU per orchestration. `str.replace` does
    the same escaping at C speed."""
    if not values:
        return None
    return (
        "{"
        + ",".join(
            "NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
            for v in values
        )
        + "}"
    )


def as_text(value: object) -> str | None:
    """A parameter in PostgreSQL's text form (the statement casts it to its type).

    psycopg keys its prepared statements by the parameters' types too, and those change with
    the values (None or not, small or large integers): the same commit statement was prepared
    again and again, each time parsed and planned. Sent as text, every parameter has one type
    (unknown), whatever its value."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return utc(value).isoformat()
    if isinstance(value, timedelta):
        return f"{value.total_seconds()} seconds"
    if isinstance(value, list):
        if not value:
            return None
        if all(item is None or isinstance(item, str) for item in value):
            return text_array(value)
        return "{" + ",".join("NULL" if v is None else f'"{as_text(v)}"' for v in value) + "}"
    raise TypeError(f"no text form for a {type(value).__name__} parameter")


DIALECT = SqlDialect(placeholder="%s", time=utc, status_beside_prefix="status")
"""How `dfhost.store.query` writes instance listings for PostgreSQL."""


def instance_params(instance: Instance) -> dict[str, object]:
    return {
        "instance_id": instance.instance_id,
        "name": instance.name,
        "execution_id": instance.execution_id,
        "status": instance.status.value,
        "version": instance.version,
        "input": instance.input,
        "output": instance.output,
        "custom_status": instance.custom_status,
        "parent_instance_id": instance.parent_instance_id,
        "failure_details": instance.failure_details,
        "tags": json.dumps(instance.tags, sort_keys=True),
        "created_at": utc(instance.created_at),
        "last_updated_at": utc(instance.last_updated_at),
    }


def instance_from_row(row: Sequence[Any]) -> Instance:
    return Instance(
        instance_id=row[0],
        name=row[1],
        execution_id=row[2],
        status=OrchestrationStatus(row[3]),
        version=row[4],
        input=row[5],
        output=row[6],
        custom_status=row[7],
        parent_instance_id=row[8],
        failure_details=row[9],
        tags=json.loads(row[10]),
        created_at=row[11],
        last_updated_at=row[12],
    )


def message_from_row(row: Sequence[Any]) -> Message | None:
    """A `MESSAGE_COLUMNS` row as a message, or None if its event does not decode."""
    try:
        event = HistoryEvent.from_json(row[3])
    except (ValueError, TypeError):
        return None
    return Message(
        instance_id=row[1], event=event, execution_id=row[2], visible_at=row[4], message_id=row[0]
    )


def decode_history(
    instance_id: str, execution_id: str, rows: Sequence[Sequence[Any]]
) -> tuple[list[HistoryEvent], str | None]:
    """(events, None), or ([], why) if a (seq, event) row does not decode."""
    events: list[HistoryEvent] = []
    for seq, text in rows:
        try:
            events.append(HistoryEvent.from_json(text))
        except (ValueError, TypeError) as exc:
            return [], (
                f"instance {instance_id!r} execution {execution_id!r}: history row "
                f"seq={seq} is not a valid event: {exc}"
            )
    return events, None


async def insert_messages(conn: Conn, messages: Sequence[Message]) -> None:
    if not messages:
        return
    await conn.execute(
        "INSERT INTO messages (instance_id, execution_id, event_type, timer_id, event, "
        "visible_at) SELECT * FROM unnest(%s::text[], %s::text[], %s::smallint[], "
        "%s::integer[], %s::text[], %s::timestamptz[])",
        (
            [m.instance_id for m in messages],
            [m.execution_id for m in messages],
            [int(m.event.type) for m in messages],
            [m.event.timer_id for m in messages],
            [m.event.to_json() for m in messages],
            [None if m.visible_at is None else utc(m.visible_at) for m in messages],
        ),
    )


async def notify(conn: Conn, channel: str, sender: str) -> None:
    """Wake listening hosts when this transaction commits."""
    await conn.execute("SELECT pg_notify(%s, %s)", (channel, sender))


async def delete_instances(conn: Conn, ids: Sequence[str], *, keep_row: bool) -> int:
    """Delete the instances' history, inbox and work (and rows); returns rows deleted.

    Lock the instance rows first (the callers do), so this waits for in-flight commits."""
    ids = list(ids)
    if not ids:
        return 0
    for table in ("history", "messages", "activity_tasks"):
        await conn.execute(f"DELETE FROM {table} WHERE instance_id = ANY(%s)", (ids,))
    if keep_row:
        return 0
    cur = await conn.execute("DELETE FROM instances WHERE instance_id = ANY(%s)", (ids,))
    return cur.rowcount
