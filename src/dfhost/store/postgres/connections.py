"""The PostgreSQL task hub's connections: a small pool whose transactions are retried through
outages and lock conflicts, the LISTEN connection, and one log line per outage (see the package
docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.pq import TransactionStatus

from dfhost.store import StoreError
from dfhost.store.postgres.config import parse_hub_url
from dfhost.store.postgres.schema import Conn

__all__ = ["CLIENT_PATIENCE", "Body", "Connections", "Target", "Unreachable", "parse_target"]

log = logging.getLogger("dfhost.store.postgres")

T = TypeVar("T")

CLIENT_PATIENCE = 15.0
"""Seconds a client call (start, raise, query, ...) retries through an outage before failing."""
_POOL_SIZE = 8
_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 2.0
_CONFLICT_RETRIES = 20
_PREPARED = 256
"""Prepared statements kept per connection (psycopg's default is 100)."""
_OUTAGE_STATES = frozenset({"25006", "53300", "57P01", "57P02", "57P03"})
"""Errors on a live connection that mean "try again later", as during a restart or failover:
read-only (a demoted primary), too many connections, shutting down, starting up."""
_LIBPQ_DEFAULTS = {
    "connect_timeout": "5",
    "application_name": "dfhost",
    # A host whose database vanished without a word (cable, VM) must notice, or its listener
    # would wait forever on a dead socket.
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
}


class _Aftermath(logging.Filter):
    """Drops psycopg's warnings that it could not clean up after an error it raised (a
    rollback or a pipeline on a connection already lost: "error ignored ..."). The error itself
    reaches `Connections`, which reports each outage once, when it starts and when it ends;
    these warnings only repeated it, several lines each, dozens per outage."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.WARNING and str(record.msg).startswith("error ignored")
        )


logging.getLogger("psycopg").addFilter(_Aftermath())

Body = Callable[[Conn, bool], Awaitable[T]]
"""A transaction body: (connection, whether an earlier attempt failed) -> result."""


@dataclass(frozen=True, slots=True)
class Target:
    conninfo: str
    hub: str
    schema: str
    takeover: timedelta
    label: str


def parse_target(url: str) -> Target:
    parsed = parse_hub_url(url)
    hub, takeover, base = parsed.hub, parsed.takeover, parsed.libpq_url()
    try:
        params = psycopg.conninfo.conninfo_to_dict(base)
    except psycopg.Error as exc:
        raise StoreError(f"invalid store URL: {_one_line(exc)}") from None
    schema = f"dfhost_{hub.lower()}"
    for key, value in _LIBPQ_DEFAULTS.items():
        params.setdefault(key, value)
    # Unqualified table names resolve to the hub's schema; times come back in UTC. A session
    # idle inside a transaction for the takeover window belongs to a frozen host (a paused
    # VM, SIGSTOP): the server ends it, so its row locks don't outlive its leases.
    idle_ms = int(max(takeover.total_seconds(), 5.0) * 1000)
    # The engine's statements and functions are planned once per session (generic plans):
    # their best plans do not depend on the values, and PostgreSQL's default planned some of
    # them again at every call, ~15% of the database's CPU per orchestration.
    params["options"] = (
        f"{params.get('options') or ''} -c search_path={schema} -c TimeZone=UTC "
        f"-c idle_in_transaction_session_timeout={idle_ms} -c plan_cache_mode=force_generic_plan"
    )
    user = params.get("user")
    where = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
    label = f"postgresql://{f'{user}@' if user else ''}{where}/{params.get('dbname') or ''}"
    return Target(
        conninfo=psycopg.conninfo.make_conninfo("", **params),
        hub=hub,
        schema=schema,
        takeover=takeover,
        label=f"{label} (hub {hub})",
    )


class Unreachable(StoreError):
    """A call gave up waiting for the task hub to answer (a client's patience ran out)."""


def connection_lost(conn: Conn, exc: psycopg.Error) -> bool:
    """Whether `exc` means the session is gone or going, not that a statement failed.

    A pipeline cut off by the server (a terminated backend, a shutdown) surfaces as "cannot
    exit pipeline mode while busy", without an SQLSTATE, on a connection not yet marked
    broken; the server's own reason is in the exception's context. Taking that for a
    statement error would skip the retry that recovers a claim whose COMMIT went unseen,
    leaving its instances leased to a live host that never got them."""
    if conn.broken:
        return True
    seen: BaseException | None = exc
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        if isinstance(seen, psycopg.Error) and seen.sqlstate in _OUTAGE_STATES:
            return True
        visited.add(id(seen))
        seen = seen.__cause__ or seen.__context__
    return False


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(eq=False, slots=True)
class _Pooled:
    conn: Conn
    epoch: int
    """The outage count when it was opened: a later outage has probably killed it."""


class _Unreachable(Exception):
    """A connection failed: the database or the network is (maybe briefly) gone."""

    def __init__(self, connecting: bool) -> None:
        super().__init__(connecting)
        self.connecting = connecting
        """Opening a connection failed, so waiting before the next try is worth it."""


class Connections:
    """The connections of one store to its task hub. Use it from one event loop."""

    def __init__(self, target: Target) -> None:
        self.conninfo = target.conninfo
        self.label = target.label
        self._idle: list[_Pooled] = []
        self._slots: asyncio.Semaphore | None = None
        self._open = False
        self._epoch = 0
        self._outage_since: float | None = None

    async def open(self, prepare: Callable[[Conn], Awaitable[None]]) -> None:
        """Connect (StoreError if the database does not answer) and run `prepare` (creating or
        migrating the schema) on the first connection; then transactions may run."""
        try:
            conn = await self._connect()
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to task hub {self.label}: {_one_line(exc)}") from exc
        try:
            await prepare(conn)
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, psycopg.Error):
                raise StoreError(f"cannot open task hub {self.label}: {_one_line(exc)}") from exc
            raise
        self._idle.append(_Pooled(conn, self._epoch))
        self._slots = asyncio.Semaphore(_POOL_SIZE)
        self._open = True

    async def close(self) -> None:
        self._open = False
        await self._drop_idle()

    async def _connect(self) -> Conn:
        conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        # Every statement is prepared at its first run, not its fifth: the engine sends the
        # same few again and again (a group commit's text differs by its size), and parsing
        # and planning them was a tenth of the database's CPU per orchestration.
        conn.prepare_threshold = 0
        conn.prepared_max = _PREPARED
        return conn

    async def listen(
        self, channel: str, wake: Callable[[], None], own: str, listening: asyncio.Event
    ) -> None:
        """Hold a LISTEN connection on `channel` until cancelled, reconnecting after failures.

        Calls `wake` for every notification but this store's own (payload `own`), and after
        each reconnection (what was sent meanwhile went unheard); sets `listening` once the
        first LISTEN is in place."""
        delay = _FIRST_BACKOFF
        while True:
            epoch = self._epoch
            try:
                conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
            except psycopg.Error as exc:
                self._lost(exc, epoch)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
                continue
            try:
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self._reached(epoch)
                    delay = _FIRST_BACKOFF
                    if listening.is_set():
                        wake()  # whatever was sent while we were away is unheard
                    listening.set()
                    async for note in conn.notifies():
                        if note.payload != own:
                            wake()
            except psycopg.Error as exc:
                self._lost(exc, epoch)

    async def transact(
        self,
        body: Body[T],
        *,
        patient: bool,
        ambiguous: str | None = None,
        tries: int | None = None,
        single: bool = False,
        pipelined: bool = False,
    ) -> T:
        """Run `body` in one transaction, retrying through outages and lock conflicts.

        `patient` (engine work) retries until the database answers or the store closes; else
        the call fails after `CLIENT_PATIENCE` seconds. `ambiguous` is the error raised,
        without retrying, when the connection dies during COMMIT. `single`: the body is one
        statement, atomic by itself, so BEGIN and COMMIT would only cost round trips.
        `pipelined`: the body fetches every result it needs (no `rowcount`), so its
        statements can be sent without waiting for each other's answers.
        """
        deadline = None if patient else time.monotonic() + CLIENT_PATIENCE
        retrying = False
        delay = _FIRST_BACKOFF
        failures = conflicts = attempts = 0
        while True:
            if not self._open or self._slots is None:
                raise StoreError(f"task hub {self.label} is not open")
            attempts += 1
            try:
                return await self._attempt(body, retrying, ambiguous, single, pipelined)
            except pg_errors.TransactionRollback as exc:  # deadlock or serialization failure
                conflicts += 1
                if conflicts > _CONFLICT_RETRIES:
                    raise StoreError(f"task hub {self.label}: {_one_line(exc)}") from exc
                await asyncio.sleep(0.001 * conflicts)
            except _Unreachable as exc:
                failures += 1
                cause = exc.__cause__ or exc
                if (tries is not None and attempts >= tries) or (
                    deadline is not None and time.monotonic() > deadline
                ):
                    raise Unreachable(
                        f"task hub {self.label} is unreachable: {_one_line(cause)}"
                    ) from cause
                # A dead pooled connection gets one immediate retry on a fresh one: the
                # database may well be up (a killed backend, a restarted proxy).
                if exc.connecting or failures > 1:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _MAX_BACKOFF)
            retrying = True

    async def _attempt(
        self, body: Body[T], retrying: bool, ambiguous: str | None, single: bool, pipelined: bool
    ) -> T:
        """One try; raises `_Unreachable(backoff)` when the connection failed."""
        assert self._slots is not None
        async with self._slots:
            pooled: _Pooled | None = None
            committing = False
            epoch = self._epoch
            try:
                pooled = self._idle.pop() if self._idle else _Pooled(await self._connect(), epoch)
                conn = pooled.conn
                if single:
                    # The statement commits itself: a connection lost now may have committed.
                    committing = True
                    result = await body(conn, retrying)
                else:
                    async with (
                        conn.pipeline() if pipelined else contextlib.nullcontext(),
                        conn.transaction(),
                    ):
                        result = await body(conn, retrying)
                        committing = True
            except psycopg.Error as exc:
                if pooled is not None and not pooled.conn.closed:
                    if not connection_lost(pooled.conn, exc):
                        if isinstance(exc, pg_errors.TransactionRollback):
                            raise
                        raise StoreError(f"task hub {self.label}: {_one_line(exc)}") from exc
                    await pooled.conn.close()
                await self._lost_async(exc, epoch if pooled is None else pooled.epoch)
                if committing and ambiguous is not None:
                    raise StoreError(ambiguous) from exc
                raise _Unreachable(connecting=pooled is None) from exc
            finally:
                if pooled is not None:
                    await self._release(pooled)
        assert pooled is not None  # the try above either set it or raised
        self._reached(pooled.epoch)
        return result

    async def _release(self, pooled: _Pooled) -> None:
        conn = pooled.conn
        if (
            self._open
            and not conn.closed
            and conn.info.transaction_status == TransactionStatus.IDLE
            # During an outage a connection that outlived its start is not reused: the next
            # call opens a new one, and only that one's success says the outage is over.
            and (self._outage_since is None or pooled.epoch >= self._epoch)
        ):
            self._idle.append(pooled)
        else:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for pooled in idle:
            with contextlib.suppress(Exception):
                await pooled.conn.close()

    async def _lost_async(self, exc: BaseException, epoch: int) -> None:
        self._lost(exc, epoch)
        await self._drop_idle()  # they were probably cut off too

    def _lost(self, exc: BaseException, epoch: int) -> None:
        """Note a failed connection, or a failed attempt to open one, that began in `epoch`;
        log an outage's start.

        A connection opened before the current outage began failing later is part of that
        outage, not a new one."""
        if self._outage_since is not None or epoch < self._epoch:
            return
        self._epoch += 1
        self._outage_since = time.monotonic()
        log.warning(
            "dfhost: lost the connection to task hub %s (%s); retrying with backoff",
            self.label,
            _one_line(exc),
        )

    def _reached(self, epoch: int) -> None:
        """Note a call that succeeded on a connection opened in `epoch`; log an outage's end.

        A connection opened before the outage that still works (one the cut missed) says
        nothing about new ones: counting it had the log flap between lost and back again."""
        if self._outage_since is not None and epoch >= self._epoch:
            log.info(
                "dfhost: task hub %s is reachable again after %.1f s",
                self.label,
                time.monotonic() - self._outage_since,
            )
            self._outage_since = None
            # A new epoch: an attempt begun during the outage that fails only now (a connect
            # that hung while the database was away) belongs to that outage, not a new one.
            self._epoch += 1
