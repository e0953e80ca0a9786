"""Azure Queue Storage triggers, with the extension's semantics (host.json `extensions.queues`).

Each function's listener fetches up to `batchSize` messages at once and fetches again when the
messages in progress fall to `newBatchThreshold`, so at most batchSize + newBatchThreshold run
at once. An empty queue is polled again after a delay that doubles from 100 ms up to
`maxPollingInterval`. A message being processed stays hidden (`dfhost.messageLease`, renewed
at half of it), and is deleted only after the function and its output bindings succeeded: a
host that crashes loses nothing, the message comes back when its lease runs out. A failed
message is hidden for `visibilityTimeout` before its next try; after `maxDequeueCount` tries it
moves to `<queue>-poison`, as in Azure.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from datetime import datetime
from typing import Any

from dfhost.app.bindings import TriggerData, json_properties, resolve_expression
from dfhost.app.functions import Function
from dfhost.config import QueueSettings
from dfhost.runtime.triggers.connections import Connections
from dfhost.runtime.triggers.invoker import TriggerInvoker
from dfhost.runtime.triggers.listener import Listener
from dfhost.runtime.triggers.stats import TRIGGER_STATS

__all__ = ["QueueListener"]

log = logging.getLogger("dfhost.triggers")

_MIN_POLL = 0.1
_MAX_BATCH = 32  # the service's limit per receive


class QueueListener(Listener):
    """Runs one queue-triggered function."""

    def __init__(
        self,
        function: Function,
        invoker: TriggerInvoker,
        connections: Connections,
        settings: QueueSettings,
    ) -> None:
        super().__init__(function)
        self.invoker = invoker
        self.settings = settings
        raw = str(function.trigger.settings.get("queueName") or "")
        if not raw:
            raise ValueError('has no "queueName"')
        self.queue_name = resolve_expression(raw, {}).lower()
        connection = function.trigger.settings.get("connection")
        service = connections.queue_service(str(connection) if connection else None)
        self.queue = service.get_queue_client(self.queue_name)
        self.poison = service.get_queue_client(f"{self.queue_name}-poison")
        self.capacity = settings.batch_size + settings.threshold
        self._running: set[asyncio.Task[None]] = set()

    def describe(self) -> str:
        return f"queue '{self.queue_name}'"

    async def run(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            await self.queue.create_queue()
        delay = _MIN_POLL
        while True:
            if len(self._running) > self.settings.threshold:
                await asyncio.wait(set(self._running), return_when=asyncio.FIRST_COMPLETED)
                continue
            wanted = min(self.settings.batch_size, _MAX_BATCH, self.capacity - len(self._running))
            try:
                messages = await self._receive(wanted)
            except Exception as exc:
                self.report_error("could not read the queue", exc)
                messages = []
            for message in messages:
                task = asyncio.create_task(self._process(message))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            if messages:
                delay = _MIN_POLL
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.max_polling_interval)

    async def _receive(self, count: int) -> list[Any]:
        pager = self.queue.receive_messages(
            messages_per_page=count,
            max_messages=count,
            visibility_timeout=max(1, round(self.settings.message_lease)),
        )
        return [message async for message in pager]

    async def drain(self, grace: float) -> None:
        if self._running:
            await asyncio.wait(set(self._running), timeout=grace)

    # --- one message ---------------------------------------------------------------------
    async def _process(self, message: Any) -> None:
        name = self.function.name
        state = _Held(message.pop_receipt)
        if message.dequeue_count > self.settings.max_dequeue_count:
            # Tried as often as allowed already (its host died while running it): give up.
            await self._poison(message, state)
            return
        renewal = asyncio.create_task(self._renew(message, state))
        failed = True
        try:
            body = self._decode(message.content)
            data = TriggerData(
                body, "string" if isinstance(body, str) else "bytes", self._metadata(message, body)
            )
            binding_data = {**json_properties(body), **data.metadata}
            reason = f"New queue message detected on '{self.queue_name}'."
            await self.invoker.invoke(self.function, data, reason, binding_data=binding_data)
            failed = False
        except _NotBase64Error as exc:
            self.report_error(f"message {message.id} of function {name!r} not run", exc)
        except Exception:
            pass  # logged by the invoker; tried again below
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
        try:
            if not failed:
                await self.queue.delete_message(message.id, state.pop_receipt)
            elif message.dequeue_count >= self.settings.max_dequeue_count:
                await self._poison(message, state)
            else:
                await self.queue.update_message(
                    message.id,
                    state.pop_receipt,
                    visibility_timeout=round(self.settings.visibility_timeout),
                )
        except Exception as exc:
            # The message comes back when its lease runs out: it runs again, nothing is lost.
            self.report_error(f"could not settle message {message.id} of function {name!r}", exc)

    async def _poison(self, message: Any, state: _Held) -> None:
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            await self.poison.create_queue()
        await self.poison.send_message(message.content)
        await self.queue.delete_message(message.id, state.pop_receipt)
        TRIGGER_STATS.poisoned(self.function.name, self.function.trigger.type)
        log.warning(
            "dfhost: function '%s': message %s failed %d times; moved to queue '%s-poison'",
            self.function.name,
            message.id,
            message.dequeue_count,
            self.queue_name,
        )

    async def _renew(self, message: Any, state: _Held) -> None:
        lease = max(1, round(self.settings.message_lease))
        while True:
            await asyncio.sleep(lease / 2)
            try:
                updated = await self.queue.update_message(
                    message.id, state.pop_receipt, visibility_timeout=lease
                )
                state.pop_receipt = updated.pop_receipt or state.pop_receipt
            except Exception as exc:
                self.report_error(f"could not renew the lease of message {message.id}", exc)

    def _decode(self, content: str) -> str | bytes:
        if self.settings.message_encoding == "none":
            return content
        try:
            raw = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise _NotBase64Error(
                "it is not base64 text (host.json extensions.queues.messageEncoding is base64; "
                "none takes messages as they are)"
            ) from None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw

    def _metadata(self, message: Any, body: str | bytes) -> dict[str, Any]:
        return {
            "QueueTrigger": body if isinstance(body, str) else body.decode("latin-1"),
            "Id": message.id,
            "DequeueCount": int(message.dequeue_count),
            "InsertionTime": _iso(message.inserted_on),
            "ExpirationTime": _iso(message.expires_on),
            "NextVisibleTime": _iso(message.next_visible_on),
            "PopReceipt": message.pop_receipt,
        }


class _NotBase64Error(ValueError):
    pass


class _Held:
    __slots__ = ("pop_receipt",)

    def __init__(self, pop_receipt: str) -> None:
        self.pop_receipt = pop_receipt


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
