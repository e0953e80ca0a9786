"""A transaction the server cut off is an outage to retry, not a failed statement, however
psycopg reports it: a claim whose COMMIT went unseen is only recovered by a retry."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from psycopg import errors

from dfhost.store import StoreError, open_store
from dfhost.store.postgres import connections
from dfhost.store.postgres.store import PostgresStore


def raised(exc: BaseException, context: BaseException | None = None) -> BaseException:
    """`exc` as Python leaves it when raised while handling `context`."""
    try:
        try:
            if context is not None:
                raise context
        finally:
            raise exc
    except BaseException as caught:
        return caught


def pipeline_busy(after: BaseException) -> BaseException:
    """What psycopg raises leaving a pipeline whose statement failed with `after`."""
    return raised(psycopg.OperationalError("cannot exit pipeline mode while busy"), after)


SHUTDOWN = errors.AdminShutdown("terminating connection due to administrator command")


@pytest.mark.parametrize(
    ("exc", "broken", "lost"),
    [
        (pipeline_busy(SHUTDOWN), False, True),
        (raised(SHUTDOWN), False, True),
        (raised(errors.CannotConnectNow("the database system is starting up")), False, True),
        (pipeline_busy(errors.DivisionByZero("division by zero")), False, False),
        (raised(errors.UniqueViolation("duplicate key")), False, False),
        (raised(psycopg.OperationalError("consuming input failed")), True, True),
    ],
)
def test_what_counts_as_a_lost_connection(exc: psycopg.Error, broken: bool, lost: bool) -> None:
    conn: Any = SimpleNamespace(broken=broken)
    assert connections.connection_lost(conn, exc) is lost


async def test_a_pipeline_cut_off_mid_transaction_is_retried(
    hub_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(hub_url)
    assert isinstance(store, PostgresStore)
    await store.start()
    attempts: list[bool] = []

    async def body(conn: Any, retrying: bool) -> str:
        attempts.append(retrying)
        await conn.execute("SELECT 1")
        if not retrying:
            raise pipeline_busy(SHUTDOWN)
        return "claimed"

    async def failing(conn: Any, retrying: bool) -> str:
        await conn.execute("SELECT 1")
        raise pipeline_busy(errors.DivisionByZero("division by zero"))

    try:
        with caplog.at_level(logging.INFO, logger="dfhost.store.postgres"):
            assert await store.db.transact(body, patient=True, pipelined=True) == "claimed"
        assert attempts == [False, True]  # the retry knows: it looks for what the cut one took
        assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]  # lost, then back
        with pytest.raises(StoreError, match="cannot exit pipeline mode while busy"):
            await store.db.transact(failing, patient=True, pipelined=True)
    finally:
        await store.close()


def test_psycopgs_warnings_about_cleaning_up_after_a_lost_connection_are_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The outage is reported once by the store; these only repeated it, in several lines.
    psycopg_log = logging.getLogger("psycopg")
    with caplog.at_level(logging.WARNING, logger="psycopg"):
        psycopg_log.warning(
            "error ignored terminating %r: %s",
            "<psycopg.AsyncPipeline [BAD]>",
            "server closed the connection unexpectedly\n\tThis probably means ...",
        )
        psycopg_log.warning("error ignored in rollback of %s: %s", "<Transaction>", "lost")
        psycopg_log.warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]
