"""scripts/test's set-up (tests/services.py): with nothing answering at DFHOST_TEST_POSTGRES, a
throwaway PostgreSQL server is started, the tests are pointed at it, and it is gone afterwards.
"""

from __future__ import annotations

import socket
import tempfile
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
    assert services.needs([]) == services.Needs(
        postgres=True, azurite=True, chromium=True, brokers=True
    )
    assert services.needs(["--backend=sqlite", "tests/contract"]) == services.Needs(
        postgres=False, azurite=False, chromium=False, brokers=False
    )
    assert services.needs(["--backend", "postgres", "-k", "foo"]) == services.Needs(
        postgres=True, azurite=False, chromium=True, brokers=True
    )
    assert services.needs(["tests/triggers/test_redis.py"]).brokers
    assert not services.needs(["tests/unit"]).brokers
    assert services.needs(["tests/dashboard/test_browser.py::test_x"]).chromium
    assert services.needs(["tests"]).chromium
    assert not services.needs(["tests/unit", "tests/web"]).chromium


@pytest.mark.slow
def test_a_throwaway_redis_stands_in_when_nothing_answers() -> None:
    dead = f"redis://127.0.0.1:{dead_port()}/0"
    assert services.redis_problem(dead) is not None
    env = {services.REDIS_SETTING: dead}
    with services.redis(env) as url:
        assert env[services.REDIS_SETTING] == url != dead
        assert services.redis_problem(url) is None
        with socket.create_connection(("127.0.0.1", urlsplit(url).port or 0), 3) as s:
            s.sendall(b"CONFIG GET dir\r\n")
            folder = Path(s.recv(4096).split(b"\r\n")[-2].decode())
        assert folder.is_dir()
    assert services.redis_problem(url, timeout=1) is not None
    assert not folder.exists()


@pytest.mark.slow
def test_a_throwaway_rabbitmq_stands_in_when_nothing_answers() -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{dead_port()}/"
    assert services.rabbitmq_problem(dead) is not None
    env = {services.RABBITMQ_SETTING: dead}
    before = set(Path(tempfile.gettempdir()).glob("dfhost-rabbitmq-*"))
    with services.rabbitmq(env) as url:
        assert env[services.RABBITMQ_SETTING] == url != dead
        assert services.rabbitmq_problem(url) is None
        folders = set(Path(tempfile.gettempdir()).glob("dfhost-rabbitmq-*")) - before
        assert folders
    assert services.rabbitmq_problem(url, timeout=1) is not None
    assert not any(folder.exists() for folder in folders)


def test_brokers_that_answer_are_used_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(binary: Path) -> None:
        raise AssertionError("started a throwaway server though one answers")

    monkeypatch.setattr(services, "redis_problem", lambda url, timeout=3: None)
    monkeypatch.setattr(services, "rabbitmq_problem", lambda url, timeout=3: None)
    monkeypatch.setattr(services, "throwaway_redis", never)
    monkeypatch.setattr(services, "throwaway_rabbitmq", never)
    env = {services.REDIS_SETTING: "redis://127.0.0.1:6999/0"}
    with services.redis(env) as url, services.rabbitmq(env) as amqp:
        assert url == "redis://127.0.0.1:6999/0"
        assert amqp == services.RABBITMQ_DEFAULT == env[services.RABBITMQ_SETTING]


def test_a_broker_that_cannot_be_had_fails_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unavailable(path: Path, package: str) -> Path:
        raise services.Unavailable(f"apt-get install {package} failed: no network")

    monkeypatch.setattr(services, "server_binary", unavailable)
    env = {services.REDIS_SETTING: f"redis://127.0.0.1:{dead_port()}/0"}
    with pytest.raises(services.Unavailable) as caught, services.redis(env):
        pass
    message = str(caught.value)
    assert message.startswith("Redis: nothing answers at redis://127.0.0.1:")
    assert "apt-get install redis-server failed: no network" in message
    assert "\n" not in message
