"""Listing instances the same way on every backend: an `InstanceQuery`'s filters as SQL, pages
newest first, and the continuation token that resumes after a page.

Pages are keyset pages, ordered by `created_at` descending, then by instance id; a token holds
the last instance's (created_at, id), so paging never repeats or skips an instance because
others were created or purged meanwhile. The id prefix is filtered as a range
(`prefix_upper_bound`), so LIKE-style wildcards need no escaping.

SQLite and PostgreSQL share the SQL here, their differences given by a `SqlDialect`. Azure
Storage filters in OData (`azure.instances`) but pages and encodes tokens with the same code.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from dfhost.history import Instance, OrchestrationStatus, format_time, parse_time
from dfhost.store import InstancePage, InstanceQuery, StoreError

__all__ = [
    "MAX_PAGE",
    "SqlDialect",
    "decode_continuation",
    "encode_continuation",
    "page",
    "page_size",
    "prefix_upper_bound",
    "select_count",
    "select_page",
    "where",
]

MAX_PAGE = 1000
"""The most instances one page holds, whatever `InstanceQuery.top` asks."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SqlDialect:
    """What differs between the SQL databases for the statements built here."""

    placeholder: str
    """A parameter's placeholder: "?" (sqlite3) or "%s" (psycopg)."""
    time: Callable[[datetime], object]
    """A time as the driver takes it, to compare with `created_at`."""
    status_beside_prefix: str
    """How to name the `status` column when an id prefix filters too (SQLite's `+status`
    keeps its planner on the primary key's range, see `sqlite.schema`)."""


def page_size(query: InstanceQuery) -> int:
    return max(1, min(MAX_PAGE, query.top))


def where(query: InstanceQuery, dialect: SqlDialect) -> tuple[str, list[object]]:
    """The WHERE condition (without the keyword) for the query's filters, and its parameters;
    paging is left out."""
    p = dialect.placeholder
    clauses: list[str] = []
    params: list[object] = []
    if query.created_from is not None:
        clauses.append(f"created_at >= {p}")
        params.append(dialect.time(query.created_from))
    if query.created_to is not None:
        clauses.append(f"created_at <= {p}")
        params.append(dialect.time(query.created_to))
    if query.statuses:
        column = dialect.status_beside_prefix if query.instance_id_prefix else "status"
        clauses.append(f"{column} IN ({', '.join([p] * len(query.statuses))})")
        params.extend(OrchestrationStatus(status).value for status in query.statuses)
    if query.instance_id_prefix:
        clauses.append(f"instance_id >= {p}")
        params.append(query.instance_id_prefix)
        upper = prefix_upper_bound(query.instance_id_prefix)
        if upper is not None:
            clauses.append(f"instance_id < {p}")
            params.append(upper)
    if query.name is not None:
        clauses.append(f"name = {p}")
        params.append(query.name)
    return " AND ".join(clauses) or "1 = 1", params


def select_page(
    query: InstanceQuery, dialect: SqlDialect, columns: str
) -> tuple[str, list[object]]:
    """The SELECT of `columns` for the page the query asks for, with one row more than
    `page_size` to tell whether another page follows (see `page`)."""
    p = dialect.placeholder
    condition, params = where(query, dialect)
    if query.continuation is not None:
        created_at, instance_id = decode_continuation(query.continuation)
        condition += f" AND (created_at < {p} OR (created_at = {p} AND instance_id > {p}))"
        params += [dialect.time(created_at), dialect.time(created_at), instance_id]
    sql = (
        f"SELECT {columns} FROM instances WHERE {condition} "
        f"ORDER BY created_at DESC, instance_id LIMIT {p}"
    )
    return sql, [*params, page_size(query) + 1]


def select_count(query: InstanceQuery, dialect: SqlDialect) -> tuple[str, list[object]]:
    condition, params = where(query, dialect)
    return f"SELECT COUNT(*) FROM instances WHERE {condition}", params


def page(instances: Sequence[Instance], query: InstanceQuery) -> InstancePage:
    """The page of `instances` (in page order, at most one more than `page_size`), with the
    token for the next page if that extra one is there."""
    top = page_size(query)
    kept = list(instances[:top])
    token = None
    if len(instances) > top:
        token = encode_continuation(kept[-1].created_at, kept[-1].instance_id)
    return InstancePage(instances=kept, continuation=token)


def prefix_upper_bound(prefix: str) -> str | None:
    """The least string greater than every string starting with `prefix` (None: unbounded)."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1])
        if code < 0x10FFFF:
            code += 1
            if 0xD800 <= code <= 0xDFFF:  # surrogates cannot be stored; skip past them
                code = 0xE000
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def encode_continuation(created_at: datetime, instance_id: str) -> str:
    """The opaque token for the page after (created_at, instance_id)."""
    payload = json.dumps([format_time(created_at), instance_id])
    return base64.urlsafe_b64encode(payload.encode()).decode()


def decode_continuation(token: str) -> tuple[datetime, str]:
    """Inverse of `encode_continuation`; StoreError for anything else."""
    try:
        data = json.loads(base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True))
        if not (
            isinstance(data, list) and len(data) == 2 and all(isinstance(x, str) for x in data)
        ):
            raise ValueError("not a [created_at, instance_id] pair")
        created_at = parse_time(data[0])
    except (ValueError, binascii.Error):  # UnicodeError is a ValueError
        raise StoreError("invalid continuation token") from None
    return created_at, data[1]
