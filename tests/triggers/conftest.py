"""Fixtures for the message triggers' end-to-end tests: `dfhost start` as a subprocess against
real servers on this machine. Azurite is the run's (tests/azurite.py); Redis and RabbitMQ are
the servers at `$DFHOST_TEST_REDIS` and `$DFHOST_TEST_RABBITMQ` (default: their standard
loopback ports), which scripts/test brings up when nothing answers there (tests/services.py).
A server that cannot be reached fails the test, saying which: nothing is skipped."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from azure.durable_functions.models.utils import http_utils

from tests.e2e.harness import HostProcess
from tests.waiting import eventually

REDIS_SETTING = "DFHOST_TEST_REDIS"
REDIS_DEFAULT = "redis://127.0.0.1:6379/0"
RABBITMQ_SETTING = "DFHOST_TEST_RABBITMQ"
RABBITMQ_DEFAULT = "amqp://guest:guest@127.0.0.1:5672/"


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 3):
            return True
    except OSError:
        return False


def _server(setting: str, default: str, what: str) -> str:
    url = os.environ.get(setting) or default
    if not _answers(url):
        pytest.fail(
            f"{what}: nothing answers at {urlsplit(url).netloc.rpartition('@')[2]}; run the "
            f"tests with scripts/test (it starts one), or point {setting} at one",
            pytrace=False,
        )
    return url


@pytest.fixture
def redis_url() -> str:
    return _server(REDIS_SETTING, REDIS_DEFAULT, "Redis")


@pytest.fixture
def rabbitmq_url() -> str:
    return _server(RABBITMQ_SETTING, RABBITMQ_DEFAULT, "RabbitMQ")


@pytest.fixture
def unique() -> str:
    """A name part no other test (nor worker) uses: lower-case letters and digits."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def sdk_session() -> AsyncIterator[None]:
    # The SDK keeps one module-level aiohttp session, bound to the loop that created it.
    yield
    await http_utils._close_session()


@pytest.fixture
def hosts() -> Iterator[list[HostProcess]]:
    """Hosts a test started; stopped at its end whatever happened, their output printed (pytest
    shows it when the test failed)."""
    started: list[HostProcess] = []
    yield started
    for number, host in enumerate(started, 1):
        host.stop()
        print(f"--- host {number} ---\n{host.output}")


def hub_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hub.sqlite3'}"


async def kill_while_held(
    app: Path,
    tmp_path: Path,
    env: dict[str, str],
    hosts: list[HostProcess],
    send: Callable[[list[str]], Awaitable[None]],
    results: Callable[[], Awaitable[list[str]]],
    held: int,
) -> HostProcess:
    """The SIGKILL test of a message trigger: a host runs `held` messages at once (the app's
    starter waits in HOLD_DIR until released) and is killed with SIGKILL; a second host on the
    same task hub then brings every message's result, at least once. The second host."""
    hold = tmp_path / "hold"
    hold.mkdir()
    env = {**env, "HOLD_DIR": str(hold)}
    first = HostProcess(app, hub_url(tmp_path), env).start()
    hosts.append(first)
    texts = [f"m{i}" for i in range(held + 2)]
    await send(texts)
    await eventually(lambda: len(list(hold.glob("started-*"))) >= held, timeout=60)
    assert first.proc is not None
    first_pid = str(first.proc.pid)
    first.kill()
    (hold / "release").write_text("go")
    second = HostProcess(app, hub_url(tmp_path), env).start()
    hosts.append(second)
    await eventually(results, lambda got: set(got) >= {t.upper() for t in texts}, timeout=90)

    def ran_again() -> bool:
        # The starter writes its pid when it runs: each message ran on the second host too,
        # the ones the first host held included (their orchestrations alone would not tell).
        markers = [hold / f"started-{t}" for t in texts]
        return all(m.exists() and m.read_text() not in ("", first_pid) for m in markers)

    await eventually(ran_again, timeout=60)
    return second
