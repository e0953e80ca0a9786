"""Group commit: calls of the hub's functions made at the same time go to the server together,
as ONE statement (so one transaction and one WAL flush for all of them).

With `synchronous_commit` on (the server's default), every transaction waits for its WAL
flush; many episodes committing one transaction each queue up behind the disk and behind
PostgreSQL's lock that orders notifying transactions. A `Batch` sends the first call at once
and the calls that arrive while it is in flight together when it returns, as
`SELECT 0, r.* FROM f(...) AS r UNION ALL SELECT 1, r.* FROM f(...) AS r ...`: one round trip,
one commit. A lone call costs what it did alone.

The functions batched here report expected refusals (a lost lease) as values, not errors, so
one call cannot fail the others. If a batch fails anyway (a bug, a constraint), its calls are
sent again one by one, so that each caller gets its own answer or error. A batch is retried
through outages like any transaction; each function is written so that running it again after
a commit whose answer was lost is harmless (see `routines`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from dfhost.store import StoreError
from dfhost.store.postgres.connections import Connections, Unreachable
from dfhost.store.postgres.schema import Conn, as_text

__all__ = ["Batch"]

Row = tuple[Any, ...]


@dataclass(slots=True)
class _Call:
    function: str
    """A function call with placeholders: `commit_episode(%s::text, ...)`."""
    params: Sequence[object]
    answer: asyncio.Future[list[Row]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Batch:
    """Sends function calls together when they come together. Use from one event loop."""

    def __init__(
        self, db: Connections, *, patient: bool, largest: int = 50, in_flight: int = 2
    ) -> None:
        self._db = db
        self._patient = patient
        self._largest = largest
        """The most calls in one statement (and its parameters well under the protocol's
        65,535)."""
        self._in_flight = in_flight
        """How many statements may be on their way at once: while one waits for its flush,
        the next gathers the calls that arrive meanwhile."""
        self._queue: list[_Call] = []
        self._senders: set[asyncio.Task[None]] = set()

    async def call(self, function: str, params: Sequence[object]) -> list[Row]:
        """The rows `SELECT * FROM <function>` returns, sent alone or with others."""
        call = _Call(function, params)
        self._queue.append(call)
        if len(self._senders) < self._in_flight:
            sender = asyncio.get_running_loop().create_task(self._send_queued())
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        return await call.answer

    async def _send_queued(self) -> None:
        try:
            while self._queue:
                calls = self._queue[: self._largest]
                del self._queue[: self._largest]
                await self._send(calls)
        finally:
            # At once, not in the done callback: a call queued before that ran would count
            # this sender as busy and wait for nobody.
            if (task := asyncio.current_task()) is not None:
                self._senders.discard(task)

    async def _send(self, calls: list[_Call]) -> None:
        try:
            rows = await self._db.transact(
                lambda conn, retrying: _run(conn, calls), patient=self._patient, single=True
            )
        except StoreError as exc:
            if len(calls) == 1 or isinstance(exc, Unreachable):
                for call in calls:
                    _settle(call, exc)
                return
            for call in calls:  # one of them failed the statement: each gets its own answer
                await self._send([call])
            return
        except asyncio.CancelledError as exc:  # the callers must not wait forever
            for call in calls:
                _settle(call, exc)
            raise
        except Exception as exc:  # a bug: each caller gets it, the sender goes on
            for call in calls:
                _settle(call, exc)
            return
        for index, call in enumerate(calls):
            if not call.answer.done():
                call.answer.set_result(rows.get(index, []))


@functools.lru_cache(maxsize=512)
def _statement(functions: tuple[str, ...]) -> str:
    """The statement of calls of `functions` (each with `%s` placeholders), in `$n` form.

    psycopg rewrites `%s` queries with a regular expression at every execution when they
    have more than 50 parameters (it caches only smaller ones): for a batch of 41-parameter
    commits that was a fifth of the host's CPU. Written in `$n` form once, a batch is sent as
    it is (a raw cursor)."""
    parts: list[str] = []
    number = 0
    for index, function in enumerate(functions):
        pieces = function.split("%s")
        call = pieces[0]
        for piece in pieces[1:]:
            number += 1
            call += f"${number}{piece}"
        parts.append(f"SELECT {index}, r.* FROM {call} AS r")
    return " UNION ALL ".join(parts)


async def _run(conn: Conn, calls: Sequence[_Call]) -> dict[int, list[Row]]:
    statement = _statement(tuple(call.function for call in calls))
    params = [as_text(value) for call in calls for value in call.params]
    cur = psycopg.AsyncRawCursor(conn)
    await cur.execute(statement, params)
    found: dict[int, list[Row]] = {}
    for row in await cur.fetchall():
        found.setdefault(row[0], []).append(tuple(row[1:]))
    return found


def _settle(call: _Call, exc: BaseException) -> None:
    if not call.answer.done():
        call.answer.set_exception(exc)
