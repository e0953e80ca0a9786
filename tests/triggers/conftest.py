"""Fixtures for the message triggers' end-to-end tests: `dfhost start` as a subprocess against
real servers on this machine. Azurite is the run's (tests/azurite.py); Redis and RabbitMQ are
the servers at `$DFHOST_TEST_REDIS` and `$DFHOST_TEST_RABBITMQ` (default: their standard
loopback ports), which scripts/test brings up when nothing answers there (tests/services.py).
A server that cannot be reached fails the test, saying which: nothing is skipped."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from azure.durable_functions.models.utils import http_utils

from tests.e2e.harness import HostProcess

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
