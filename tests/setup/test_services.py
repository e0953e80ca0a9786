"""scripts/test's set-up (tests/services.py): with nothing answering at DFHOST_TEST_POSTGRES, a
throwaway PostgreSQL server is started, the tests are pointed at it, and it is gone afterwards.
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from tests import services


def dead_port() -> int:
    """A loopback port nothing listens on (bound, then released, without listening)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_a_throwaway_postgres_stands_in_when_nothing_answers() -> None:
    dead = f"postgresql://postgres@127.0.0.1:{dead_port()}/postgres"
    assert services.postgres_problem(dead) is not None
    env = {services.POSTGRES_SETTING: dead}
    with services.postgres(env) as url:
        assert env[services.POSTGRES_SETTING] == url
        assert urlsplit(url).port != urlsplit(dead).port
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
            assert row is not None
            data = Path(row[0])
            conn.execute('CREATE DATABASE "dfhost_setup_test"')
        assert data.is_dir()
    assert services.postgres_problem(url, timeout=1) is not None
    assert not data.exists()
    assert not data.parent.exists()


def test_a_server_that_answers_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    def answers(url: str, timeout: int = 3) -> str | None:
        return None

    def never(binaries: services.Binaries) -> None:
        raise AssertionError("started a throwaway server though one answers")

    monkeypatch.setattr(services, "postgres_problem", answers)
    monkeypatch.setattr(services, "throwaway_postgres", never)
    given = "postgresql://postgres@127.0.0.1:5999/postgres"
    env = {services.POSTGRES_SETTING: given}
    with services.postgres(env) as url:
        assert url == env[services.POSTGRES_SETTING] == given


def test_what_the_arguments_need(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(services.REPO)  # scripts/test runs from there
    assert services.needs([]) == services.Needs(postgres=True, azurite=True, chromium=True)
    assert services.needs(["--backend=sqlite", "tests/contract"]) == services.Needs(
        postgres=False, azurite=False, chromium=False
    )
    assert services.needs(["--backend", "postgres", "-k", "foo"]) == services.Needs(
        postgres=True, azurite=False, chromium=True
    )
    assert services.needs(["tests/dashboard/test_browser.py::test_x"]).chromium
    assert services.needs(["tests"]).chromium
    assert not services.needs(["tests/unit", "tests/web"]).chromium
