"""RabbitMQ triggers, with the `RabbitMQTrigger` extension's semantics.

The listener consumes `queueName` (the trigger's, else host.json `extensions.rabbitMQ.queueName`)
with manual acknowledgements and `prefetchCount` unacknowledged messages at most, which is also
how many run at once. A message is acknowledged only after the function and its output bindings
succeeded, so a host that dies loses nothing: the broker redelivers what it had not
acknowledged. A failed message is published again at the end of the queue with its header
`x-ms-rabbitmq-requeuecount` counting the failures, then acknowledged; at the fifth failure it
is rejected without requeueing, which sends it to the queue's dead-letter exchange if it has
one (as the extension does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from dfhost.app.bindings import TriggerData, json_properties, resolve_expression
from dfhost.app.functions import Function
from dfhost.config import RabbitMQSettings
from dfhost.runtime.shutdown import finish_within
from dfhost.runtime.triggers.bindings_io import declare_queue
from dfhost.runtime.triggers.connections import Connections, require_package
from dfhost.runtime.triggers.invoker import TriggerInvoker
from dfhost.runtime.triggers.listener import Listener
from dfhost.runtime.triggers.stats import TRIGGER_STATS

__all__ = ["REQUEUE_COUNT_HEADER", "RabbitMQListener"]

log = logging.getLogger("dfhost.triggers")

REQUEUE_COUNT_HEADER = "x-ms-rabbitmq-requeuecount"
_MAX_FAILURES = 5


class RabbitMQListener(Listener):
    """Runs one RabbitMQ-triggered function."""

    def __init__(
        self,
        function: Function,
        invoker: TriggerInvoker,
        connections: Connections,
        settings: RabbitMQSettings,
    ) -> None:
        super().__init__(function)
        self.invoker = invoker
        self.settings = settings
        trigger = function.trigger.settings
        raw = trigger.get("queueName") or settings.queue_name
        if not raw:
            raise ValueError('has no "queueName" (nor host.json extensions.rabbitMQ.queueName)')
        self.queue_name = resolve_expression(str(raw), {})
        self.url = connections.amqp_url(trigger)
        require_package("aio_pika", "rabbitmq")
        self._connection: Any = None
        self._running: set[asyncio.Task[None]] = set()

    def describe(self) -> str:
        return f"RabbitMQ queue '{self.queue_name}' (prefetch {self.settings.prefetch_count})"

    async def run(self) -> None:
        import aio_pika

        await self.close()
        self._connection = connection = await aio_pika.connect(self.url, timeout=10)
        await declare_queue(connection, self.queue_name)
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self.settings.prefetch_count)
        queue = await channel.get_queue(self.queue_name, ensure=False)
        closed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_close(_: Any, exc: Any = None) -> None:
            if not closed.done():
                closed.set_result(exc)

        connection.close_callbacks.add(on_close)
        channel.close_callbacks.add(on_close)

        async def on_message(message: Any) -> None:
            task = asyncio.create_task(self._process(channel, message))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

        await queue.consume(on_message, no_ack=False)
        reason = await closed  # until the connection or channel goes; then start again
        raise ConnectionError(f"the RabbitMQ connection closed: {reason or 'no reason given'}")

    async def drain(self, grace: float) -> None:
        await finish_within(set(self._running), grace)

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None

    async def _process(self, channel: Any, message: Any) -> None:
        body: bytes = message.body
        try:
            value: str | bytes = body.decode("utf-8")
        except UnicodeDecodeError:
            value = body
        headers = dict(message.headers or {})
        metadata = {
            "ConsumerTag": message.consumer_tag,
            "DeliveryTag": message.delivery_tag,
            "Redelivered": bool(message.redelivered),
            "Exchange": message.exchange,
            "RoutingKey": message.routing_key,
            "BasicProperties": {
                "MessageId": message.message_id,
                "CorrelationId": message.correlation_id,
                "ContentType": message.content_type,
                "Headers": {k: _plain(v) for k, v in headers.items()},
            },
        }
        data = TriggerData(value, "string" if isinstance(value, str) else "bytes", metadata)
        reason = f"New RabbitMQ message detected on '{self.queue_name}'."
        try:
            await self.invoker.invoke(
                self.function, data, reason, binding_data={**json_properties(body), **metadata}
            )
        except Exception:
            await self._failed(channel, message, headers)
            return
        await message.ack()

    async def _failed(self, channel: Any, message: Any, headers: dict[str, Any]) -> None:
        import aio_pika

        failures = int(_plain(headers.get(REQUEUE_COUNT_HEADER)) or 0) + 1
        if failures >= _MAX_FAILURES:
            await message.reject(requeue=False)  # to the dead-letter exchange, if any
            TRIGGER_STATS.poisoned(self.function.name, self.function.trigger.type)
            log.warning(
                "dfhost: function '%s': a message failed %d times; rejected (dead-lettered "
                "if queue '%s' has a dead-letter exchange)",
                self.function.name,
                failures,
                self.queue_name,
            )
            return
        copy = aio_pika.Message(
            message.body,
            headers={**headers, REQUEUE_COUNT_HEADER: failures},
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=message.delivery_mode,
            correlation_id=message.correlation_id,
            message_id=message.message_id,
            reply_to=message.reply_to,
            type=message.type,
            app_id=message.app_id,
        )
        # Published before the original is acknowledged: a crash in between runs it twice,
        # never zero times.
        await channel.default_exchange.publish(copy, routing_key=self.queue_name)
        await message.ack()


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value
