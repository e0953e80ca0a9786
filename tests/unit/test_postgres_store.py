"""What only the PostgreSQL backend has: its URLs, hubs as schemas, schema versions, hosts with
heartbeats, notifications between processes, and outages (through a proxy the test can cut)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from dfhost.history import EventType, HistoryEvent, OrchestrationStatus, utcnow
from dfhost.store import (
    Claim,
    Completion,
    InstanceHolder,
    LeaseLostError,
    Store,
    StoreError,
    open_store,
    postgres,
)
from dfhost.store.postgres import batches, claims, connections, schema
from dfhost.work import ActivityTask, EpisodeOutcome, EpisodeWork, Message, StartRequest
from tests.conftest import selected_backends


@pytest.fixture
def database(request: pytest.FixtureRequest) -> str:
    if "postgres" not in selected_backends(request.config):
        pytest.skip("PostgreSQL tests: --backend did not select postgres")
    url: str = request.getfixturevalue("postgres_database")
    return url


def hub_url(database: str, **params: object) -> str:
    query = "".join(f"&{key}={value}" for key, value in params.items())
    return f"{database}&hub=U{uuid.uuid4().hex[:16]}{query}"


def later() -> datetime:
    return utcnow() + timedelta(hours=1)


def request(instance_id: str) -> StartRequest:
    return StartRequest(
        instance_id=instance_id, name="Orch", execution_id=uuid.uuid4().hex, created_at=utcnow()
    )


@pytest.fixture
async def opened() -> AsyncIterator[list[Store]]:
    """Stores the test starts; all closed afterwards."""
    stores: list[Store] = []
    yield stores
    for store in stores:
        await store.close()


async def started(stores: list[Store], url: str) -> Store:
    store = open_store(url)
    await store.start()
    stores.append(store)
    return store


# --- URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://h/db?hub=x", "hub 'x' must be 3-45 letters or digits"),
        ("postgresql://h/db?hub=no-dash", "hub 'no-dash' must be"),
        ("postgresql://h/db?takeover=soon", "takeover 'soon' must be a positive number"),
        ("postgresql://h/db?takeover=0", "takeover '0' must be a positive number"),
        ("postgresql://h/db?hub=Abc&hub=Abd", "'hub' given more than once"),
        ("postgresql://h/db?colour=blue", "invalid URI query parameter"),
        ("postgresql://h/db?hub", "malformed query string"),
    ],
)
def test_bad_urls_are_clear_errors(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        open_store(url)


def test_url_forms() -> None:
    store = open_store("postgres://me:secret@db.example:6543/work?hub=Orders&takeover=7.5")
    assert isinstance(store, postgres.PostgresStore)
    assert (store.hub, store.schema, store.takeover) == (
        "Orders",
        "dfhost_orders",
        timedelta(seconds=7.5),
    )
    assert "secret" not in store._label
    assert store._label == "postgresql://me@db.example:6543/work (hub Orders)"
    default = open_store("postgresql://localhost/work")
    assert isinstance(default, postgres.PostgresStore)
    assert (default.hub, default.takeover) == ("TestHubName", timedelta(seconds=30))


def test_missing_driver_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dfhost.store.postgres", None)
    with pytest.raises(StoreError, match=r"pip install 'dfhost\[postgres\]'"):
        open_store("postgresql://localhost/db")


async def test_an_unreachable_server_fails_start_clearly() -> None:
    store = open_store("postgresql://nobody@127.0.0.1:1/nothing?connect_timeout=2")
    with pytest.raises(StoreError, match=r"cannot connect to task hub postgresql://nobody@"):
        await store.start()
    await store.close()


# --- schemas and hubs -----------------------------------------------------------------------


async def test_hubs_in_one_database_are_isolated(database: str, opened: list[Store]) -> None:
    orders = await started(opened, hub_url(database))
    billing = await started(opened, hub_url(database))
    assert await orders.create_instance(request("same-id"))
    assert await billing.get_instance("same-id") is None
    assert await billing.create_instance(request("same-id"))
    now = utcnow()
    [work] = await orders.claim_episodes(
        Claim(owner="a", now=now, lease_until=now + timedelta(minutes=1)), 10
    )
    assert work.instance.instance_id == "same-id"
    assert (
        len(
            await billing.claim_episodes(
                Claim(owner="b", now=now, lease_until=now + timedelta(minutes=1)), 10
            )
        )
        == 1
    )


async def test_hosts_starting_together_create_the_schema_once(
    database: str, opened: list[Store]
) -> None:
    url = hub_url(database)
    stores = [open_store(url) for _ in range(6)]
    opened.extend(stores)
    await asyncio.gather(*(store.start() for store in stores))
    assert await stores[0].create_instance(request("a"))
    assert await stores[-1].get_instance("a") is not None


async def test_a_newer_schema_is_refused(database: str, opened: list[Store]) -> None:
    url = hub_url(database)
    first = await started(opened, url)
    async with await psycopg.AsyncConnection.connect(first.conninfo, autocommit=True) as conn:  # type: ignore[attr-defined]
        await conn.execute("UPDATE schema_version SET version = 99")
    later = open_store(url)
    with pytest.raises(StoreError, match="schema version 99, newer than this dfhost supports"):
        await later.start()


async def test_a_version_1_hub_is_migrated_with_its_work(
    database: str, opened: list[Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = hub_url(database)
    with monkeypatch.context() as patch:  # a hub made by a dfhost before the functions
        patch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
        patch.setattr(schema, "SCHEMA_VERSION", 1)
        old = await started(opened, url)
    start = request("waiting")
    instance = schema.instance_params(start.pending_instance())
    async with await psycopg.AsyncConnection.connect(old.conninfo, autocommit=True) as conn:  # type: ignore[attr-defined]
        await conn.execute(schema.INSERT_INSTANCE, instance)
        await conn.execute(
            "INSERT INTO messages (instance_id, execution_id, event_type, event) "
            "VALUES (%s, %s, %s, %s)",
            (
                "waiting",
                start.execution_id,
                int(start.started_event().type),
                start.started_event().to_json(),
            ),
        )
    store = await started(opened, url)
    await store.open_host("host", utcnow())
    [work] = await store.claim_episodes(grab("host"), 10)
    assert work.instance.instance_id == "waiting"
    assert [m.event for m in work.messages] == [start.started_event()]


# --- hosts -----------------------------------------------------------------------------------


async def test_a_silent_hosts_work_is_taken_over_after_the_window(
    database: str, opened: list[Store]
) -> None:
    window = 0.5
    url = hub_url(database, takeover=window)
    survivor = await started(opened, url)
    # A host that registered, claimed, and then went silent (its process froze or died).
    ghost = await started(opened, url)
    await ghost.open_host("ghost", utcnow())
    ghost._heartbeat.cancel()  # type: ignore[attr-defined]
    await survivor.open_host("survivor", utcnow())
    await survivor.create_instance(request("x"))
    now = utcnow()
    [held] = await ghost.claim_episodes(
        Claim(owner="ghost", now=now, lease_until=now + timedelta(hours=1)), 10
    )

    assert (
        await survivor.claim_episodes(
            Claim(owner="survivor", now=now, lease_until=now + timedelta(hours=1)), 10
        )
        == []
    )
    due = await survivor.next_due_at(utcnow())
    assert due is not None
    assert timedelta(0) < due - utcnow() <= timedelta(seconds=window)  # not the lease's hour

    # As the engine does: claim, and wait until the next due time when there is nothing.
    began = utcnow()
    async with asyncio.timeout(5):
        while not (
            works := await survivor.claim_episodes(
                Claim(owner="survivor", now=utcnow(), lease_until=utcnow() + timedelta(hours=1)), 10
            )
        ):
            await survivor.wait_for_work(await survivor.next_due_at(utcnow()))
    assert utcnow() - began >= timedelta(seconds=window) * 0.5
    [taken] = works
    assert taken.instance.instance_id == "x"
    assert taken.lease_token != held.lease_token
    with pytest.raises(LeaseLostError):
        await ghost.commit_episode(
            "ghost", held, EpisodeOutcome(instance=held.instance, new_events=[])
        )
    await survivor.commit_episode(
        "survivor", taken, EpisodeOutcome(instance=taken.instance, new_events=[])
    )


async def test_live_hosts_keep_their_work_and_closing_frees_it_at_once(
    database: str, opened: list[Store]
) -> None:
    url = hub_url(database, takeover=0.5)
    first = await started(opened, url)
    second = await started(opened, url)
    await first.open_host("first", utcnow())
    await first.create_instance(request("x"))
    now = utcnow()
    [held] = await first.claim_episodes(
        Claim(owner="first", now=now, lease_until=now + timedelta(hours=1)), 10
    )
    await second.open_host("second", utcnow())  # "first" is alive: its lease stays
    await asyncio.sleep(1.0)  # twice the window: heartbeats keep "first" alive
    assert (
        await second.claim_episodes(
            Claim(owner="second", now=utcnow(), lease_until=utcnow() + timedelta(hours=1)), 10
        )
        == []
    )

    await first.close()
    [again] = await second.claim_episodes(
        Claim(owner="second", now=utcnow(), lease_until=utcnow() + timedelta(hours=1)), 10
    )
    assert [m.message_id for m in again.messages] == [m.message_id for m in held.messages]


async def test_other_processes_wake_a_waiting_host(database: str, opened: list[Store]) -> None:
    url = hub_url(database)
    host = await started(opened, url)
    client = await started(opened, url)
    await host.wait_for_work(utcnow())  # nothing pending from the start
    waiter = asyncio.create_task(host.wait_for_work(None))
    await asyncio.sleep(0.1)
    assert not waiter.done()
    began = asyncio.get_running_loop().time()
    await client.create_instance(request("x"))
    await asyncio.wait_for(waiter, 2)
    assert asyncio.get_running_loop().time() - began < 1.0


# --- outages ---------------------------------------------------------------------------------


class CuttableProxy:
    """A TCP proxy in front of PostgreSQL: `cut()` drops every connection and refuses new
    ones, as a database restart or a network failure would; `restore()` undoes it."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        self.refuse_new()
        assert self._server is not None
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    def refuse_new(self) -> None:
        """Refuse new connections but keep the open ones, as a full connection table would."""
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Known from the start: a cut while the upstream connection is still opening must
        # drop this one too (it outlived a cut once, and the test saw a database half there).
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        if writer.transport.is_closing():
            up_writer.transport.abort()
            return
        self._writers.add(up_writer)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.transport.abort()
                self._writers.discard(sink)

        # Cancelled when the test's loop ends: the connections are gone by then anyway.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture
async def proxy(database: str) -> AsyncIterator[tuple[CuttableProxy, str]]:
    """A proxy to the test database, and the database's URL through it."""
    parts = urlsplit(database)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.restore()
    netloc = (
        f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else f"127.0.0.1:{proxy.port}"
    )
    yield proxy, parts._replace(netloc=netloc).geturl()
    await proxy.cut()


async def test_an_outage_is_ridden_out_and_logged_once(
    proxy: tuple[CuttableProxy, str], opened: list[Store], caplog: pytest.LogCaptureFixture
) -> None:
    cut, database = proxy
    store = await started(opened, hub_url(database))
    await store.open_host("host", utcnow())
    await store.create_instance(request("before"))
    caplog.set_level(logging.INFO, logger="dfhost.store.postgres")

    await cut.cut()
    now = utcnow()
    # Engine work waits for the database; a client call too, within its patience.
    claim = asyncio.create_task(
        store.claim_episodes(Claim(owner="host", now=now, lease_until=now + timedelta(hours=1)), 10)
    )
    create = asyncio.create_task(store.create_instance(request("during")))
    await asyncio.sleep(1.0)
    assert not claim.done() and not create.done()
    await cut.restore()

    async with asyncio.timeout(10):
        claimed = await claim
        assert await create
    assert "before" in [work.instance.instance_id for work in claimed]
    assert await store.get_instance("during") is not None
    records = [r for r in caplog.records if r.name == "dfhost.store.postgres"]
    lost = [r for r in records if "lost the connection" in r.getMessage()]
    back = [r for r in records if "reachable again" in r.getMessage()]
    assert len(lost) == 1 and lost[0].levelno == logging.WARNING, records
    assert len(back) == 1, records


def test_an_attempt_begun_during_an_outage_that_fails_after_it_ended_is_not_a_new_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Seen under load: a connect that hung through the outage failed after another call had
    reached the database, and the outage was logged twice."""
    pool = connections.Connections(connections.parse_target("postgresql://127.0.0.1:9/x"))
    caplog.set_level(logging.INFO, logger="dfhost.store.postgres")
    cut = OSError("connection refused")
    pool._lost(cut, pool._epoch)  # the outage starts
    hung = pool._epoch  # a connect begins while it lasts
    pool._reached(hung)  # another call, on a connection opened since, gets through
    pool._lost(cut, hung)  # the hung connect fails only now
    lines = [r.getMessage() for r in caplog.records]
    assert sum("lost the connection" in line for line in lines) == 1, lines
    assert sum("reachable again" in line for line in lines) == 1, lines
    pool._lost(cut, pool._epoch)  # a call begun since fails: that is a new outage
    assert sum("lost the connection" in r.getMessage() for r in caplog.records) == 2


def test_a_connection_the_outage_missed_does_not_end_it(caplog: pytest.LogCaptureFixture) -> None:
    """Seen under load: a connection the proxy's cut missed kept working while new ones were
    refused, and every call on it logged the outage's end, then the next refusal a new start
    (37 lines for one 2.5-second outage)."""
    pool = connections.Connections(connections.parse_target("postgresql://127.0.0.1:9/x"))
    caplog.set_level(logging.INFO, logger="dfhost.store.postgres")
    old = pool._epoch  # a connection opened before the outage
    pool._lost(OSError("connection refused"), pool._epoch)
    during = pool._epoch
    for _ in range(3):
        pool._reached(old)  # a call on the old connection succeeds
        pool._lost(OSError("connection refused"), during)  # a new connection is refused
    lines = [r.getMessage() for r in caplog.records]
    assert sum("lost the connection" in line for line in lines) == 1, lines
    assert not any("reachable again" in line for line in lines), lines
    pool._reached(during)  # a connection opened during the outage works: it is over
    assert sum("reachable again" in r.getMessage() for r in caplog.records) == 1


async def test_during_an_outage_a_connection_opened_before_it_is_not_reused(
    proxy: tuple[CuttableProxy, str], opened: list[Store], caplog: pytest.LogCaptureFixture
) -> None:
    cut, database = proxy
    store = await started(opened, hub_url(database))
    assert isinstance(store, postgres.PostgresStore)
    pool = store.db
    await store.get_instance("warm")  # one idle connection, opened before the outage
    while len(pool._idle) > 1:
        await pool._idle.pop().conn.close()
    caplog.set_level(logging.INFO, logger="dfhost.store.postgres")
    cut.refuse_new()  # it survives, but new connections are refused
    pool._lost(OSError("connection refused"), pool._epoch)
    assert await store.get_instance("x") is None  # served by the survivor...
    assert not pool._idle  # ...which is then closed, not pooled
    lines = [r.getMessage() for r in caplog.records]
    assert not any("reachable again" in line for line in lines), lines
    await cut.restore()
    assert await store.get_instance("x") is None
    assert sum("reachable again" in r.getMessage() for r in caplog.records) == 1


async def test_client_calls_give_up_after_their_patience(
    proxy: tuple[CuttableProxy, str], opened: list[Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    cut, database = proxy
    store = await started(opened, hub_url(database))
    monkeypatch.setattr(connections, "CLIENT_PATIENCE", 0.5)
    await cut.cut()
    with pytest.raises(StoreError, match="is unreachable"):
        await store.get_instance("x")
    await cut.restore()
    assert await store.get_instance("x") is None


async def test_a_claim_whose_commit_was_lost_is_handed_out_on_retry(
    database: str, opened: list[Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await started(opened, hub_url(database))
    await store.create_instance(request("x"))
    original = claims.claim_episodes_txn
    claimed: list[int] = []

    async def claim_then_lose_the_answer(*args: Any, **kwargs: Any) -> Any:
        works = await original(*args, **kwargs)
        if claimed:
            return works
        claimed.extend(work.lease_token for work in works)
        # The claim commits, then the connection dies before the answer comes back.
        await args[0].close()
        raise psycopg.OperationalError("the connection was lost")

    monkeypatch.setattr(claims, "claim_episodes_txn", claim_then_lose_the_answer)
    now = utcnow()
    works = await store.claim_episodes(
        Claim(owner="host", now=now, lease_until=now + timedelta(hours=1)), 10
    )
    # The retry found the committed claim instead of claiming again (the instance is leased).
    assert [(w.instance.instance_id, w.lease_token) for w in works] == [("x", claimed[0])]
    assert len(claimed) == 1
    await store.commit_episode(
        "host", works[0], EpisodeOutcome(instance=replace(works[0].instance), new_events=[])
    )


# --- shortcuts: their retries and host liveness ------------------------------------------------


def scheduling(work: EpisodeWork, count: int) -> EpisodeOutcome:
    """An episode of `work` that records two events and schedules `count` activities."""
    now = utcnow()
    instance = replace(work.instance, status=OrchestrationStatus.RUNNING, last_updated_at=now)
    tasks = [
        ActivityTask(
            instance_id=instance.instance_id,
            execution_id=instance.execution_id,
            task_scheduled_id=n,
            name="Act",
            input=str(n),
            scheduled_at=now,
        )
        for n in range(count)
    ]
    events = [
        HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=now),
        HistoryEvent(type=EventType.ORCHESTRATOR_COMPLETED, timestamp=now),
    ]
    return EpisodeOutcome(instance=instance, new_events=events, activities=tasks)


def result_of(task: ActivityTask) -> Message:
    done = HistoryEvent(
        type=EventType.TASK_COMPLETED,
        timestamp=utcnow(),
        task_scheduled_id=task.task_scheduled_id,
        result="1",
    )
    return Message(instance_id=task.instance_id, execution_id=task.execution_id, event=done)


def grab(owner: str, known: dict[str, tuple[str, int]] | None = None) -> Claim:
    return Claim(owner=owner, now=utcnow(), lease_until=later(), known=known)


def lose_the_answer(monkeypatch: pytest.MonkeyPatch, name: str, module: Any = claims) -> list[Any]:
    """Make `module.<name>` (`claims` by default) commit its transaction, then drop the
    connection before the answer comes back, once; returns the list its results go to."""
    original = getattr(module, name)
    results: list[Any] = []

    async def commit_then_lose_the_answer(*args: Any, **kwargs: Any) -> Any:
        outcome = await original(*args, **kwargs)
        if results:
            return outcome
        results.append(outcome)
        # It committed (one statement, autocommit); the connection dies before the answer.
        await args[0].close()
        raise psycopg.OperationalError("the connection was lost")

    monkeypatch.setattr(module, name, commit_then_lose_the_answer)
    return results


async def test_a_completion_whose_commit_was_lost_hands_out_its_lease_on_retry(
    database: str, opened: list[Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await started(opened, hub_url(database))
    await store.open_host("host", utcnow())
    await store.create_instance(request("x"))
    [work] = await store.claim_episodes(grab("host"), 10)
    await store.commit_episode("host", work, scheduling(work, 1))
    [task] = await store.claim_activities(grab("host"), 10)
    attempts = lose_the_answer(monkeypatch, "_run", batches)

    known = {"x": (work.instance.execution_id, 2)}
    result = result_of(task)
    done = await store.complete_activity(task, result, grab("host", known))
    # The retry found the task gone and the lease the lost attempt took, tagged as its own.
    [first] = attempts  # the lost answer: the instance it leased, as a `claimed` row
    [first_row] = first[0]
    assert first_row[0] == "x"
    assert done is not None and done.work is not None
    leased = done.work
    assert leased.lease_token == first_row[13]
    assert [m.event for m in leased.messages] == [result.event]  # delivered once
    assert (leased.history_start, len(leased.history)) == (1, 1)  # the known tail
    await store.commit_episode(
        "host", leased, EpisodeOutcome(instance=leased.instance, new_events=[])
    )
    assert await store.claim_episodes(grab("host"), 10) == []


async def test_a_commit_whose_answer_was_lost_hands_out_the_activities_it_leased(
    database: str, opened: list[Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await started(opened, hub_url(database))
    await store.open_host("host", utcnow())
    await store.create_instance(request("x"))
    [work] = await store.claim_episodes(grab("host"), 10)
    attempts = lose_the_answer(monkeypatch, "_run", batches)

    leased = await store.commit_episode(
        "host", work, scheduling(work, 3), lease_activities=(later(), 2)
    )
    # Not a LeaseLostError: the retry knew the commit went through by the tasks it leased.
    [first] = attempts  # the commit's row: outcome, wake, held, leased ids, their task ids
    assert [t.task_id for t in leased] == first[0][0][3]
    assert [t.task_scheduled_id for t in leased] == [0, 1]
    assert all(t.lease_token == 1 for t in leased)
    [other] = await store.claim_activities(grab("other"), 10)
    assert other.task_scheduled_id == 2
    assert len(await store.get_history("x")) == 2


async def test_a_completion_claims_an_instance_only_from_a_dead_host(
    database: str, opened: list[Store]
) -> None:
    url = hub_url(database)
    live = await started(opened, url)
    ghost = await started(opened, url)
    await live.open_host("live", utcnow())
    await ghost.open_host("ghost", utcnow())
    ghost._heartbeat.cancel()  # type: ignore[attr-defined]
    await live.create_instance(request("x"))
    [work] = await live.claim_episodes(grab("live"), 10)
    await live.commit_episode("live", work, scheduling(work, 2))
    first, second = await live.claim_activities(grab("live"), 10)
    raised = HistoryEvent(type=EventType.EVENT_RAISED, timestamp=utcnow(), name="go", input="1")
    assert await live.send_message(Message(instance_id="x", event=raised)) == "sent"
    [held] = await ghost.claim_episodes(grab("ghost"), 10)

    # The ghost is alive: its lease holds, and the result waits for it.
    assert await live.complete_activity(first, result_of(first), grab("live")) == Completion()
    async with await psycopg.AsyncConnection.connect(
        live.conninfo,  # type: ignore[attr-defined]
        autocommit=True,
    ) as conn:
        await conn.execute(
            "UPDATE hosts SET heartbeat_at = now() - interval '1 day' WHERE owner = 'ghost'"
        )
    # Silent for the takeover window, it is dead: the completion takes its lease over.
    done = await live.complete_activity(second, result_of(second), grab("live"))
    assert done is not None and done.work is not None
    taken = done.work
    assert taken.lease_token != held.lease_token
    assert [m.event.type for m in taken.messages] == [
        EventType.EVENT_RAISED,
        EventType.TASK_COMPLETED,
        EventType.TASK_COMPLETED,
    ]
    with pytest.raises(LeaseLostError):
        await ghost.commit_episode(
            "ghost", held, EpisodeOutcome(instance=held.instance, new_events=[])
        )
    await live.commit_episode("live", taken, EpisodeOutcome(instance=taken.instance, new_events=[]))


async def test_text_arrays_written_by_hand_read_back_as_they_were(database: str) -> None:
    values = ['{"a": "b\\"c\\\\n"}', "", "NULL", None, "a,b}{", " spaced ", "\\", '"']
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        cur = await conn.execute("SELECT %s::text[]", (schema.text_array(values),))
        assert await cur.fetchone() == (values,)
        cur = await conn.execute("SELECT %s::text[]", (schema.text_array([]),))
        assert await cur.fetchone() == (None,)


async def test_idle_hosts_wake_at_a_holds_end_only_when_messages_wait_behind_it(
    database: str, opened: list[Store]
) -> None:
    store = await started(opened, hub_url(database))
    await store.open_host("host", utcnow())
    await store.create_instance(request("x"))
    [work] = await store.claim_episodes(grab("host"), 10)
    now = utcnow()
    hold_ends = now + timedelta(seconds=10)
    activity_lease_ends = now + timedelta(hours=2)
    assert isinstance(store, InstanceHolder)
    [_] = await store.commit_episode_holding(
        "host",
        work,
        scheduling(work, 1),
        lease_activities=(activity_lease_ends, 1),
        hold_until=hold_ends,
    )
    # Held for its activity, with nothing waiting: its hold's end claims nothing.
    assert await store.next_due_at(now) == activity_lease_ends
    raised = HistoryEvent(type=EventType.EVENT_RAISED, timestamp=utcnow(), name="go", input="1")
    assert await store.send_message(Message(instance_id="x", event=raised)) == "sent"
    assert await store.next_due_at(now) == hold_ends


# --- group commit ------------------------------------------------------------------------------


async def test_calls_made_together_share_a_statement_and_get_their_own_answers(
    database: str, opened: list[Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await started(opened, hub_url(database))
    assert isinstance(store, postgres.PostgresStore)
    batch = batches.Batch(store.db, patient=True)
    statements: list[int] = []
    run = batches._run

    async def counted(conn: Any, calls: Any) -> Any:
        statements.append(len(calls))
        return await run(conn, calls)

    monkeypatch.setattr(batches, "_run", counted)
    answers = await asyncio.gather(
        *(batch.call("generate_series(%s::int, %s::int)", [1, n]) for n in range(1, 6))
    )
    assert answers == [[(i,) for i in range(1, n + 1)] for n in range(1, 6)]
    assert len(statements) < 5  # the first went alone, the others together
    # One call that fails the statement fails alone: the others are sent again, one by one.
    statements.clear()
    good, bad, other = await asyncio.gather(
        batch.call("generate_series(1, %s::int)", [2]),
        batch.call("generate_series(1, %s::int / 0)", [2]),
        batch.call("generate_series(1, %s::int)", [3]),
        return_exceptions=True,
    )
    assert good == [(1,), (2,)] and other == [(1,), (2,), (3,)]
    assert isinstance(bad, StoreError) and "division by zero" in str(bad)


async def test_a_batch_that_cannot_reach_the_hub_fails_every_call_in_it(
    database: str, opened: list[Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await started(opened, hub_url(database))
    assert isinstance(store, postgres.PostgresStore)
    batch = batches.Batch(store.db, patient=False, in_flight=1)

    async def unreachable(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.01)
        raise connections.Unreachable("task hub x is unreachable: gone")

    monkeypatch.setattr(store.db, "transact", unreachable)
    async with asyncio.timeout(5):  # nobody waits forever
        answers = await asyncio.gather(
            *(batch.call("generate_series(1, %s::int)", [n]) for n in range(4)),
            return_exceptions=True,
        )
    assert all(isinstance(answer, connections.Unreachable) for answer in answers)
