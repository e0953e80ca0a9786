"""Redis triggers of the Azure Functions Redis extension, with its semantics.

- `redisPubSubTrigger` subscribes to `channel` (a pattern when it holds `*`, `?` or `[`): each
  message runs the function with the message text. Pub/sub keeps nothing: a message published
  while no host listens is never seen, as in Azure.
- `redisListTrigger` polls `key` every `pollingIntervalInMs` (default 1000) and pops up to
  `maxBatchSize` (default 16) elements, from the start unless `listPopFromBeginning` is false.
  A popped element is gone from the list, as with the extension: a host that dies while
  running it loses it (use a stream when that matters).
- `redisStreamTrigger` reads `key` as consumer group `consumerGroup` (default: the function's
  name), created at the stream's start, as consumer `<host id>`, up to `maxBatchSize` entries
  every `pollingIntervalInMs`. An entry is acknowledged (XACK) after the function succeeded;
  entries a dead consumer left pending for a minute are claimed and run again (XAUTOCLAIM), so
  nothing is lost; an entry that failed `maxDequeueCount` times (5) is acknowledged unprocessed.
  The function gets `{"Id": ..., "Values": {field: value}}` as JSON text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from dfhost.app.bindings import TriggerData, json_properties, resolve_expression
from dfhost.app.functions import Function
from dfhost.runtime.shutdown import finish_within
from dfhost.runtime.triggers.connections import Connections
from dfhost.runtime.triggers.invoker import TriggerInvoker
from dfhost.runtime.triggers.listener import Listener
from dfhost.runtime.triggers.stats import TRIGGER_STATS

__all__ = ["RedisListener"]

log = logging.getLogger("dfhost.triggers")

_CLAIM_IDLE_MS = 60_000
_MAX_FAILURES = 5


class RedisListener(Listener):
    """Runs one Redis-triggered function (pub/sub, list or stream)."""

    def __init__(
        self,
        function: Function,
        invoker: TriggerInvoker,
        connections: Connections,
        consumer: str,
    ) -> None:
        super().__init__(function)
        self.invoker = invoker
        settings = function.trigger.settings
        self.kind = function.trigger.type
        self.client = connections.redis(connections.redis_string(settings))
        target = (
            settings.get("channel") if self.kind == "redisPubSubTrigger" else settings.get("key")
        )
        if not target:
            what = "channel" if self.kind == "redisPubSubTrigger" else "key"
            raise ValueError(f'has no "{what}"')
        self.target = resolve_expression(str(target), {})
        self.interval = _number(settings.get("pollingIntervalInMs"), 1000) / 1000
        self.batch = int(_number(settings.get("maxBatchSize"), 16))
        self.from_start = str(settings.get("listPopFromBeginning", "true")).lower() != "false"
        self.group = str(settings.get("consumerGroup") or function.name)
        self.consumer = consumer
        self._running: set[asyncio.Task[None]] = set()
        self._failures: dict[bytes, int] = {}

    def describe(self) -> str:
        what = {"redisPubSubTrigger": "channel", "redisListTrigger": "list"}.get(
            self.kind, "stream"
        )
        return f"Redis {what} '{self.target}'"

    async def run(self) -> None:
        if self.kind == "redisPubSubTrigger":
            await self._subscribe()
        elif self.kind == "redisListTrigger":
            await self._poll_list()
        else:
            await self._read_stream()

    async def drain(self, grace: float) -> None:
        await finish_within(set(self._running), grace)

    async def _invoke(self, value: str | bytes, reason: str, metadata: dict[str, Any]) -> None:
        data = TriggerData(value, "string" if isinstance(value, str) else "bytes", metadata)
        await self.invoker.invoke(
            self.function, data, reason, binding_data={**json_properties(value), **metadata}
        )

    # --- pub/sub -------------------------------------------------------------------------
    async def _subscribe(self) -> None:
        pubsub = self.client.pubsub()
        pattern = any(c in self.target for c in "*?[")
        try:
            if pattern:
                await pubsub.psubscribe(self.target)
            else:
                await pubsub.subscribe(self.target)
            async for message in pubsub.listen():
                if message.get("type") not in ("message", "pmessage"):
                    continue
                channel = _text(message.get("channel"))
                text = _text(message.get("data"))
                metadata = {"SubscriptionChannel": self.target, "Channel": channel}
                reason = f"New Redis pub/sub message on channel '{channel}'."
                self._spawn(self._quietly(self._invoke(text, reason, metadata)))
        finally:
            await pubsub.aclose()

    # --- lists ---------------------------------------------------------------------------
    async def _poll_list(self) -> None:
        while True:
            if self.from_start:
                popped = await self.client.lpop(self.target, self.batch)
            else:
                popped = await self.client.rpop(self.target, self.batch)
            if not popped:
                await asyncio.sleep(self.interval)
                continue
            reason = f"New element in Redis list '{self.target}'."
            jobs = [
                self._quietly(self._invoke(_text(v), reason, {"Key": self.target})) for v in popped
            ]
            await asyncio.gather(*jobs)

    # --- streams -------------------------------------------------------------------------
    async def _read_stream(self) -> None:
        from redis.exceptions import ResponseError

        try:
            await self.client.xgroup_create(self.target, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        while True:
            # Entries a dead consumer (or a failed try) left pending, then new ones.
            claim: Any = await self.client.xautoclaim(
                self.target, self.group, self.consumer, _CLAIM_IDLE_MS, "0-0", count=self.batch
            )
            entries = [e for e in claim[1] if e[1] is not None]
            if not entries:
                response: Any = await self.client.xreadgroup(
                    self.group, self.consumer, {self.target: ">"}, count=self.batch
                )
                entries = [e for _, stream_entries in response for e in stream_entries]
            if not entries:
                await asyncio.sleep(self.interval)
                continue
            await asyncio.gather(*(self._entry(entry_id, fields) for entry_id, fields in entries))

    async def _entry(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        ident = _text(entry_id)
        payload = json.dumps(
            {"Id": ident, "Values": {_text(k): _text(v) for k, v in fields.items()}}
        )
        reason = f"New entry in Redis stream '{self.target}'."
        try:
            await self._invoke(payload, reason, {"Key": self.target, "Id": ident})
        except Exception:
            failures = self._failures.get(entry_id, 0) + 1
            if failures < _MAX_FAILURES:
                self._failures[entry_id] = failures
                return  # stays pending: claimed and tried again after a minute
            TRIGGER_STATS.poisoned(self.function.name, self.kind)
            log.warning(
                "dfhost: function '%s': stream entry %s failed %d times; acknowledged unprocessed",
                self.function.name,
                ident,
                failures,
            )
        self._failures.pop(entry_id, None)
        await self.client.xack(self.target, self.group, entry_id)

    # --- shared --------------------------------------------------------------------------
    def _spawn(self, job: Any) -> None:
        task = asyncio.create_task(job)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    @staticmethod
    async def _quietly(job: Any) -> None:
        # Logged by the invoker; no retry for pub/sub and list messages, as in Azure.
        with contextlib.suppress(Exception):
            await job


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _number(value: Any, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if number > 0 else default
