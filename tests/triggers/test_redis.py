"""Redis triggers (list, stream, pub/sub) and the redis output binding against the Redis server of
the run: each starts an orchestration whose activity RPUSHes the result to a list."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as redis

from tests.e2e.harness import APPS, HostProcess
from tests.triggers.conftest import hub_url
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

APP = APPS / "triggers_v1"


@pytest.fixture
async def client(redis_url: str, unique: str) -> AsyncIterator[redis.Redis]:
    connection = redis.from_url(redis_url, decode_responses=True)
    yield connection
    keys = [f"dfhost:{kind}:{unique}" for kind in ("list", "stream", "out")]
    await connection.delete(*keys)
    await connection.aclose()


@pytest.fixture
def host(
    tmp_path: Path, redis_url: str, unique: str, hosts: list[HostProcess], sdk_session: None
) -> HostProcess:
    env = {
        "RedisConnection": redis_url,
        "REDIS_LIST": f"dfhost:list:{unique}",
        "REDIS_STREAM": f"dfhost:stream:{unique}",
        "REDIS_CHANNEL": f"dfhost:channel:{unique}",
        "REDIS_OUT": f"dfhost:out:{unique}",
        # Not used here: the other functions of the app need them to start.
        "RabbitMQConnection": "amqp://guest:guest@127.0.0.1:1/",
        "RABBIT_IN": "unused",
        "RABBIT_OUT": "unused",
    }
    started = HostProcess(APP, hub_url(tmp_path), env).start()
    hosts.append(started)
    return started


async def results(client: redis.Redis, unique: str) -> list[str]:
    values = await client.lrange(f"dfhost:out:{unique}", 0, -1)
    return [v if isinstance(v, str) else v.decode() for v in values]


async def test_list_elements_start_orchestrations_whose_results_go_to_redis(
    host: HostProcess, client: redis.Redis, unique: str
) -> None:
    await eventually(lambda: "listens to Redis list" in host.output, timeout=20)
    await client.rpush(f"dfhost:list:{unique}", "a", "b")
    got = await eventually(
        lambda: results(client, unique), lambda r: sorted(r) == ["LIST:A", "LIST:B"], timeout=60
    )
    assert got
    assert await client.llen(f"dfhost:list:{unique}") == 0
    assert "Executing 'Functions.FromRedisList'" in host.output


async def test_stream_entries_are_read_by_a_consumer_group_and_acknowledged(
    host: HostProcess, client: redis.Redis, unique: str
) -> None:
    stream = f"dfhost:stream:{unique}"
    await client.xadd(stream, {"text": "s1"})
    await eventually(lambda: results(client, unique), lambda r: r == ["STREAM:S1"], timeout=60)
    groups = await client.xinfo_groups(stream)
    assert [g["name"] for g in groups] == ["FromRedisStream"]

    async def pending() -> int:
        info = await client.xpending(stream, "FromRedisStream")
        return int(info["pending"])

    await eventually(pending, lambda n: n == 0, timeout=30)


async def test_pubsub_messages_start_orchestrations(
    host: HostProcess, client: redis.Redis, unique: str
) -> None:
    channel = f"dfhost:channel:{unique}"

    async def subscribed() -> bool:
        counts = await client.pubsub_numsub(channel)
        return bool(counts and counts[0][1] > 0)

    await eventually(subscribed, timeout=30)
    await client.publish(channel, "p1")
    await eventually(lambda: results(client, unique), lambda r: r == ["PUBSUB:P1"], timeout=60)
