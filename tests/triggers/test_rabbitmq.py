"""RabbitMQ triggers and output bindings against the RabbitMQ server of the run: a message starts
an orchestration whose activity publishes the result; failures requeue with the extension's
count header, then dead-letter; a host killed with SIGKILL loses no message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from tests.e2e.harness import APPS, HostProcess
from tests.triggers.conftest import hub_url, kill_while_held
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

APP = APPS / "triggers_v1"


@pytest.fixture
async def channel(rabbitmq_url: str, unique: str) -> AsyncIterator[Any]:
    connection = await aio_pika.connect(rabbitmq_url)
    channel = await connection.channel()
    yield channel
    for suffix in ("in", "out", "dead"):
        await channel.queue_delete(f"dfhost-{suffix}-{unique}")
    await connection.close()


def env_for(rabbitmq_url: str, unique: str, **more: str) -> dict[str, str]:
    return {
        "RabbitMQConnection": rabbitmq_url,
        "RABBIT_IN": f"dfhost-in-{unique}",
        "RABBIT_OUT": f"dfhost-out-{unique}",
        **more,
    }


async def publish(channel: Any, queue: str, *texts: str) -> None:
    for text in texts:
        await channel.default_exchange.publish(aio_pika.Message(text.encode()), routing_key=queue)


async def take(channel: Any, queue: str, into: list[str]) -> list[str]:
    """Move what `queue` holds now into `into`; `into`."""
    declared = await channel.declare_queue(queue, durable=True)
    while (message := await declared.get(no_ack=True, fail=False)) is not None:
        into.append(message.body.decode())
    return into


async def test_a_message_starts_an_orchestration_whose_result_is_published(
    tmp_path: Path,
    rabbitmq_url: str,
    unique: str,
    channel: Any,
    hosts: list[HostProcess],
    sdk_session: None,
) -> None:
    await channel.declare_queue(f"dfhost-in-{unique}", durable=True)
    host = HostProcess(APP, hub_url(tmp_path), env_for(rabbitmq_url, unique)).start()
    hosts.append(host)
    await publish(channel, f"dfhost-in-{unique}", "hello", "world")
    seen: list[str] = []
    await eventually(
        lambda: take(channel, f"dfhost-out-{unique}", seen),
        lambda got: sorted(got) == ["HELLO", "WORLD"],
        timeout=60,
    )
    reason = f"Reason='New RabbitMQ message detected on 'dfhost-in-{unique}'.'"
    assert f"Executing 'Functions.FromRabbit' ({reason}" in host.output


async def test_a_failing_message_is_requeued_four_times_then_dead_lettered(
    tmp_path: Path,
    rabbitmq_url: str,
    unique: str,
    channel: Any,
    hosts: list[HostProcess],
    sdk_session: None,
) -> None:
    await channel.declare_queue(f"dfhost-dead-{unique}", durable=True)
    await channel.declare_queue(
        f"dfhost-in-{unique}",
        durable=True,
        arguments={
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": f"dfhost-dead-{unique}",
        },
    )
    host = HostProcess(APP, hub_url(tmp_path), env_for(rabbitmq_url, unique)).start()
    hosts.append(host)
    await publish(channel, f"dfhost-in-{unique}", "fail-1")
    dead: list[str] = []
    await eventually(
        lambda: take(channel, f"dfhost-dead-{unique}", dead),
        lambda got: got == ["fail-1"],
        timeout=60,
    )
    assert host.output.count("Executed 'Functions.FromRabbit' (Failed") == 5


async def test_sigkill_while_messages_run_loses_none(
    tmp_path: Path,
    rabbitmq_url: str,
    unique: str,
    channel: Any,
    hosts: list[HostProcess],
    sdk_session: None,
) -> None:
    await channel.declare_queue(f"dfhost-in-{unique}", durable=True)
    seen: list[str] = []

    async def send_all(texts: list[str]) -> None:
        await publish(channel, f"dfhost-in-{unique}", *texts)

    # prefetchCount 4 (host.json): four run, unacknowledged, when the host is killed.
    second = await kill_while_held(
        APP,
        tmp_path,
        env_for(rabbitmq_url, unique),
        hosts,
        send_all,
        lambda: take(channel, f"dfhost-out-{unique}", seen),
        held=4,
    )
    assert "Executing 'Functions.FromRabbit'" in second.output
