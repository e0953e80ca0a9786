"""The I/O of bindings: reading input bindings before a call (blob, redis) and sending what the
output bindings hold after it succeeded (queue, blob, rabbitMQ, redis, eventGrid), for every
kind of function: triggered ones, activities, HTTP and timer functions.

Outputs are sent only after the function succeeded, as the Functions host does; a send that
fails fails the invocation (a message trigger then retries it, so an output may be sent twice:
at least once, never lost). `app/bindings.py` decides what a value means; this module moves
the bytes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from dfhost.app.bindings import (
    BindingValueError,
    OutBinding,
    TriggerData,
    decode_input,
    output_items,
    resolve_expression,
)
from dfhost.app.functions import Binding, Function
from dfhost.config import QueueSettings, TriggerSettings, connection_setting
from dfhost.runtime.triggers.connections import Connections, ConnectionSettingError

__all__ = [
    "BindingIO",
    "close_shared_io",
    "declare_queue",
    "encode_queue_message",
    "has_io",
    "shared_io",
]

log = logging.getLogger("dfhost.triggers")

_OUTPUT_TYPES = frozenset({"queue", "blob", "rabbitMQ", "redis", "eventGrid"})
_INPUT_TYPES = frozenset({"blob", "redis"})


def has_io(function: Function) -> bool:
    """Whether calling `function` reads or writes anything through bindings."""
    return any(_is_output(b) or _is_input(function, b) for b in function.bindings)


def _is_output(b: Binding) -> bool:
    return b.direction == "out" and b.type in _OUTPUT_TYPES


def _is_input(function: Function, b: Binding) -> bool:
    return b is not function.trigger and b.direction == "in" and b.type in _INPUT_TYPES


def encode_queue_message(body: str | bytes, encoding: str) -> str:
    """A queue message's text as the extension writes it: base64 of the bytes (default), or
    the text itself with `messageEncoding: none`."""
    if encoding == "none":
        return body if isinstance(body, str) else body.decode("utf-8")
    raw = body.encode("utf-8") if isinstance(body, str) else body
    return base64.b64encode(raw).decode("ascii")


class BindingIO:
    """Reads inputs and sends outputs through `connections`."""

    def __init__(self, connections: Connections, queues: QueueSettings | None = None) -> None:
        self.connections = connections
        self.queues = queues or QueueSettings()
        self._created: set[tuple[str, str]] = set()
        self._declared: set[tuple[str, str]] = set()

    # --- inputs --------------------------------------------------------------------------
    async def fetch_inputs(
        self, function: Function, binding_data: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The values of `function`'s blob and redis input bindings, by binding name."""
        values: dict[str, Any] = {}
        for b in function.bindings:
            if not _is_input(function, b):
                continue
            try:
                if b.type == "blob":
                    values[b.name] = await self._read_blob(function, b, binding_data)
                else:
                    values[b.name] = await self._redis_input(b, binding_data)
            except (BindingValueError, ConnectionSettingError) as exc:
                raise BindingValueError(f"input binding {b.name!r}: {exc}") from None
        return values

    async def _read_blob(
        self, function: Function, b: Binding, binding_data: Mapping[str, Any]
    ) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        container, blob = _blob_path(b, binding_data)
        client = self.connections.blob_service(_connection(b)).get_blob_client(container, blob)
        try:
            download = await client.download_blob()
            data = await download.readall()
        except ResourceNotFoundError:
            return None  # as the host passes a missing input blob
        properties = download.properties
        metadata = {
            "BlobTrigger": f"{container}/{blob}",
            "Uri": client.url,
            "Properties": {"ContentLength": properties.size, "ETag": properties.etag},
            "Metadata": dict(properties.metadata or {}),
        }
        return decode_input(function, b, TriggerData(data, "bytes", metadata))

    async def _redis_input(self, b: Binding, binding_data: Mapping[str, Any]) -> Any:
        command = resolve_expression(str(b.settings.get("command") or ""), binding_data).split()
        if not command:
            raise BindingValueError('needs a "command", e.g. "GET {key}"')
        client = self.connections.redis(self.connections.redis_string(b.settings))
        return _text(await client.execute_command(*command))  # type: ignore[no-untyped-call]

    # --- outputs -------------------------------------------------------------------------
    async def deliver(
        self,
        function: Function,
        outputs: Mapping[str, OutBinding],
        result: Any,
        binding_data: Mapping[str, Any],
        *,
        return_is_output: bool = True,
    ) -> None:
        """Send every output binding's value. `result` is the function's return value, the
        value of a `$return` output binding (unless `return_is_output` is false: an
        activity's result is its own)."""
        for b in function.bindings:
            if not _is_output(b):
                continue
            if b.name == "$return":
                if not return_is_output:
                    continue
                value = result
            else:
                holder = outputs.get(b.name)
                value = holder.get() if holder is not None else None
            items = output_items(b, value)
            if not items:
                continue
            try:
                await self._send(b, items, binding_data)
            except (BindingValueError, ConnectionSettingError) as exc:
                raise BindingValueError(f"output binding {b.name!r}: {exc}") from None

    async def _send(self, b: Binding, items: list[Any], binding_data: Mapping[str, Any]) -> None:
        if b.type == "queue":
            await self._send_queue(b, items, binding_data)
        elif b.type == "blob":
            await self._write_blob(b, items[0], binding_data)
        elif b.type == "rabbitMQ":
            await self._publish(b, items, binding_data)
        elif b.type == "redis":
            await self._redis_output(b, items[0])
        else:
            await self._send_events(b, items)

    async def _send_queue(
        self, b: Binding, items: list[str | bytes], binding_data: Mapping[str, Any]
    ) -> None:
        from azure.core.exceptions import ResourceExistsError

        name = resolve_expression(_setting(b, "queueName"), binding_data).lower()
        connection = _connection(b)
        client = self.connections.queue_service(connection).get_queue_client(name)
        if (connection or "", name) not in self._created:
            with contextlib.suppress(ResourceExistsError):
                await client.create_queue()  # as the output binding does
            self._created.add((connection or "", name))
        for item in items:
            await client.send_message(encode_queue_message(item, self.queues.message_encoding))

    async def _write_blob(self, b: Binding, data: bytes, binding_data: Mapping[str, Any]) -> None:
        from azure.core.exceptions import ResourceExistsError

        container, blob = _blob_path(b, binding_data)
        connection = _connection(b)
        service = self.connections.blob_service(connection)
        if (connection or "", f"/{container}") not in self._created:
            with contextlib.suppress(ResourceExistsError):
                await service.get_container_client(container).create_container()
            self._created.add((connection or "", f"/{container}"))
        await service.get_blob_client(container, blob).upload_blob(data, overwrite=True)

    async def _publish(
        self, b: Binding, items: list[str | bytes], binding_data: Mapping[str, Any]
    ) -> None:
        import aio_pika

        raw = b.settings.get("queueName") or self.connections.rabbitmq_settings.queue_name
        if not raw:
            raise BindingValueError('needs a "queueName" (or host.json extensions.rabbitMQ)')
        name = resolve_expression(str(raw), binding_data)
        url = self.connections.amqp_url(b.settings)
        connection = await self.connections.amqp(url)
        async with connection.channel(publisher_confirms=True) as channel:
            if (url, name) not in self._declared:
                await declare_queue(connection, name)
                self._declared.add((url, name))
            for item in items:
                body = item.encode("utf-8") if isinstance(item, str) else item
                message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                await channel.default_exchange.publish(message, routing_key=name)

    async def _redis_output(self, b: Binding, arguments: list[str]) -> None:
        command = str(b.settings.get("command") or "").strip()
        if not command:
            raise BindingValueError('needs a "command", e.g. "SET"')
        client = self.connections.redis(self.connections.redis_string(b.settings))
        await client.execute_command(*command.split(), *arguments)  # type: ignore[no-untyped-call]

    async def _send_events(self, b: Binding, events: list[dict[str, Any]]) -> None:
        endpoint_setting = _setting(b, "topicEndpointUri")
        endpoint = connection_setting(endpoint_setting)
        if not endpoint:
            raise BindingValueError(f"app setting {endpoint_setting!r} (topicEndpointUri) unset")
        key_setting = b.settings.get("topicKeySetting")
        headers = {"content-type": "application/json"}
        if key_setting:
            key = connection_setting(str(key_setting))
            if not key:
                raise BindingValueError(f"app setting {key_setting!r} (topicKeySetting) unset")
            headers["aeg-sas-key"] = key
        if all("specversion" in e for e in events):
            headers["content-type"] = "application/cloudevents-batch+json; charset=utf-8"
        response = await self.connections.http().post(
            endpoint, content=json.dumps(events), headers=headers
        )
        if response.status_code >= 300:
            raise BindingValueError(
                f"the topic {endpoint} answered {response.status_code}: {response.text[:200]}"
            )


async def declare_queue(connection: Any, name: str) -> None:
    """Make sure RabbitMQ queue `name` exists: used as it is when it does (whatever its
    arguments), else created durable."""
    import aio_pika.exceptions

    channel = await connection.channel()
    try:
        await channel.declare_queue(name, passive=True)
    except aio_pika.exceptions.ChannelClosed:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(channel.close())


def _setting(b: Binding, key: str) -> str:
    value = b.settings.get(key)
    if not value:
        raise BindingValueError(f'needs a "{key}"')
    return str(value)


def _connection(b: Binding) -> str | None:
    value = b.settings.get("connection")
    return str(value) if value else None


def _blob_path(b: Binding, binding_data: Mapping[str, Any]) -> tuple[str, str]:
    path = resolve_expression(_setting(b, "path"), binding_data).strip("/")
    container, _, blob = path.partition("/")
    if not container or not blob:
        raise BindingValueError(f"blob path {path!r} must be container/blob")
    return container, blob


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    if isinstance(value, list):
        return json.dumps([_text(v) for v in value])
    return value


_shared: tuple[asyncio.AbstractEventLoop, BindingIO] | None = None


def shared_io(settings: TriggerSettings) -> BindingIO:
    """This event loop's `BindingIO`, made on first use: the one activities, HTTP and timer
    functions and the trigger listeners share (clients belong to one loop)."""
    global _shared
    loop = asyncio.get_running_loop()
    if _shared is None or _shared[0] is not loop:
        _shared = (loop, BindingIO(Connections(settings.rabbitmq), settings.queues))
    return _shared[1]


async def close_shared_io() -> None:
    global _shared
    if _shared is not None:
        io = _shared[1]
        _shared = None
        await io.connections.close()
