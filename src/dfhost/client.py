"""Durable client operations over the task hub: what `DurableOrchestrationClient` asks the
extension to do, minus HTTP. The management API, the dashboard, the CLI and tests all use it.

Every operation goes through the `Store`; the store wakes the engines itself, so starting an
instance or raising an event here is picked up without any further signal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from dfhost import telemetry
from dfhost.config import Limits
from dfhost.history import (
    TERMINAL_STATUSES,
    EventType,
    HistoryEvent,
    Instance,
    OrchestrationStatus,
    utcnow,
)
from dfhost.ids import (
    ENTITY_PART,
    MAX_ID_LENGTH,
    InvalidArgumentError,
    InvalidInstanceIdError,
    check_id,
    check_text,
    shown,
    validate_instance_id,
)
from dfhost.orchestration.entities import (
    EntityId,
    EntityStatus,
    Operation,
    Release,
    creation_request,
)
from dfhost.orchestration.limits import check_payload
from dfhost.store import DeliveryResult, InstancePage, InstanceQuery, Store, TimerStatus
from dfhost.wire import UnsafeJsonError, check_json_text
from dfhost.work import Message, StartRequest

if TYPE_CHECKING:
    from dfhost.app.functions import FunctionApp

__all__ = [
    "DurableClient",
    "InstanceExistsError",
    "InstanceNotFoundError",
    "UnknownEntityError",
    "UnknownOrchestratorError",
    "check_filter",
]

log = logging.getLogger("dfhost.client")


class UnknownOrchestratorError(Exception):
    """The name is not an orchestrator of the app."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        listed = ", ".join(known) if known else "(none)"
        super().__init__(
            f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator "
            f"function. Additional info: The following are the known orchestrator functions: "
            f"{listed}."
        )


class InstanceExistsError(Exception):
    """An unfinished instance already has the requested id (the singleton pattern's refusal)."""

    def __init__(self, instance_id: str, status: OrchestrationStatus) -> None:
        self.instance_id = instance_id
        self.status = status
        super().__init__(
            f"An Orchestration instance with the status {status.value} already exists "
            f"(instance ID '{instance_id}')."
        )


class InstanceNotFoundError(LookupError):
    """No instance has the id."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        super().__init__(f"No instance with ID '{instance_id}' found.")


class UnknownEntityError(Exception):
    """The name is not an entity of the app."""

    def __init__(self, name: str, known: list[str]) -> None:
        listed = ", ".join(known) if known else "(none)"
        super().__init__(
            f"The function '{name}' doesn't exist, is disabled, or is not an entity function. "
            f"Additional info: The following are the known entity functions: {listed}."
        )


def _findable(instance_id: str) -> bool:
    """Whether an instance may have this id, to look it up: an id over the length limit
    cannot (False: not found, without asking the store, whose keys may not take it); one with
    a control character is refused (`InvalidInstanceIdError`: NUL makes PostgreSQL fail)."""
    check_text(instance_id, "Instance ID", None, InvalidInstanceIdError)
    return len(instance_id) <= MAX_ID_LENGTH


def _check_orchestration_id(instance_id: str) -> None:
    """Orchestration operations (events, terminate, suspend, resume, rewind, restart) do not
    apply to an entity, whose messages are operations."""
    if instance_id.startswith("@"):
        raise InvalidInstanceIdError(
            f"Instance ID {shown(instance_id)} is an entity's (it starts with '@'): "
            "orchestration operations do not apply to it; signal the entity instead."
        )


def _check_reason(reason: str | None) -> None:
    """A reason is free text, lines and tabs included; NUL cannot be stored (PostgreSQL)."""
    if reason is not None and "\x00" in reason:
        raise InvalidArgumentError("The reason contains a NUL character ('\\x00').")


def _entity(name: str, key: str) -> EntityId:
    """The entity to look up; `InvalidInstanceIdError` for a name that cannot be one or a
    control character (`_findable` says whether its id may exist)."""
    try:
        entity = EntityId.of(name, key)
    except ValueError as exc:
        raise InvalidInstanceIdError(str(exc)) from None
    check_text(name, "The entity name", None, InvalidInstanceIdError)
    check_text(key, "The entity key", None, InvalidInstanceIdError)
    return entity


def check_filter(instance_id_prefix: str | None, name: str | None) -> None:
    """Raise `InvalidArgumentError` for instance filters that no stored instance could match
    and a backend may not even take (NUL)."""
    check_text(instance_id_prefix, "instanceIdPrefix", MAX_ID_LENGTH)
    check_text(name, "The name filter")


def _check_query(q: InstanceQuery) -> None:
    check_filter(q.instance_id_prefix, q.name)


def _check_json(text: str | None, what: str) -> None:
    try:
        check_json_text(text, what)
    except UnsafeJsonError as exc:
        raise InvalidArgumentError(str(exc)) from None


class DurableClient:
    """Start, query and control orchestration instances in one task hub."""

    def __init__(
        self,
        store: Store,
        app: FunctionApp | None = None,
        clock: Callable[[], datetime] = utcnow,
        default_version: str | None = None,
        payload_bytes: int | None = None,
    ) -> None:
        """`payload_bytes` limits inputs and event data (default: the app's host.json, see
        `dfhost.orchestration.limits`); a larger one raises `PayloadTooLargeError`."""
        self.store = store
        self.app = app
        self.clock = clock
        self.default_version = default_version
        if payload_bytes is None:
            payload_bytes = (app.settings.limits if app is not None else Limits()).payload_bytes
        self.payload_bytes = payload_bytes

    async def start_new(
        self,
        name: str,
        instance_id: str | None = None,
        input_text: str | None = None,
        version: str | None = None,
        *,
        start_at: datetime | None = None,
    ) -> str:
        """Create an instance of orchestrator `name` and return its id.

        `input_text` is JSON text, as the orchestrator's `get_input()` will `df_loads` it. A
        finished instance with the same id is replaced; an unfinished one raises
        `InstanceExistsError`. `start_at`: its first episode waits until then (Pending).
        """
        if self.app is not None and not self.app.runs_orchestrator(name):
            known = sorted(f.name for f in self.app.of_kind("orchestrator"))
            raise UnknownOrchestratorError(name, known)
        check_text(name, "The orchestrator name")
        check_text(version, "The version")
        if instance_id is None:
            instance_id = uuid.uuid4().hex
        else:
            validate_instance_id(instance_id)
        check_payload(input_text, "orchestration input", self.payload_bytes)
        _check_json(input_text, "The orchestration input")
        request = StartRequest(
            instance_id=instance_id,
            name=name,
            execution_id=uuid.uuid4().hex,
            created_at=self.clock(),
            input=input_text,
            version=version if version is not None else self.default_version,
            trace_context=telemetry.current_trace_context(),
            visible_at=start_at,
        )
        # The conflicting instance may finish or be purged between the refusal and our look at
        # it; then the id is free and trying again is what the caller wanted.
        for _ in range(3):
            if await self.store.create_instance(request):
                return instance_id
            existing = await self.store.get_instance(instance_id)
            if existing is not None and existing.status not in TERMINAL_STATUSES:
                raise InstanceExistsError(instance_id, existing.status)
        raise InstanceExistsError(instance_id, OrchestrationStatus.RUNNING)

    async def ensure_running(
        self, instance_id: str, name: str, input_text: str | None = None
    ) -> bool:
        """Start `name` as `instance_id` unless an unfinished instance already holds the id;
        returns whether it started one. Atomic, so any number of hosts starting at once (and
        every restart) leave exactly one instance running."""
        try:
            await self.start_new(name, instance_id, input_text)
        except InstanceExistsError:
            return False
        return True

    async def restart(self, instance_id: str, new_instance_id: bool) -> str:
        """Start the instance's orchestrator again with its input (and version); returns the
        new instance's id. With `new_instance_id` False the id is reused, which replaces a
        finished instance and raises `InstanceExistsError` for an unfinished one."""
        _check_orchestration_id(instance_id)
        instance = await self.get_status(instance_id)
        if instance is None:
            raise InstanceNotFoundError(instance_id)
        return await self.start_new(
            instance.name,
            None if new_instance_id else instance_id,
            instance.input,
            instance.version,
        )

    async def rewind(self, instance_id: str, reason: str | None) -> DeliveryResult:
        """Ask the engine to re-run the failed work of a Failed instance
        (`dfhost.orchestration.rewind`); "gone" for an instance in any other status. With an
        app, an instance whose orchestrator is not in it raises `UnknownOrchestratorError`: it
        could not replay."""
        _check_orchestration_id(instance_id)
        _check_reason(reason)
        check_payload(reason, "reason", self.payload_bytes)
        if self.app is not None:
            instance = await self.get_status(instance_id)
            if instance is not None and not self.app.runs_orchestrator(instance.name):
                known = sorted(f.name for f in self.app.of_kind("orchestrator"))
                raise UnknownOrchestratorError(instance.name, known)
        return await self._send(
            instance_id,
            HistoryEvent(type=EventType.EXECUTION_REWOUND, timestamp=self.clock(), reason=reason),
        )

    async def get_status(self, instance_id: str) -> Instance | None:
        if not _findable(instance_id):
            return None
        return await self.store.get_instance(instance_id)

    async def get_history(self, instance_id: str) -> list[HistoryEvent]:
        """The current execution's history; empty for unknown instances."""
        if not _findable(instance_id):
            return []
        return await self.store.get_history(instance_id)

    async def query(self, q: InstanceQuery) -> InstancePage:
        _check_query(q)
        return await self.store.query_instances(q)

    async def count(self, q: InstanceQuery) -> int:
        _check_query(q)
        return await self.store.count_instances(q)

    async def count_by_status(self, q: InstanceQuery) -> dict[OrchestrationStatus, int]:
        """How many instances match `q`'s other filters, per runtime status (`q.statuses` is
        ignored). One indexed count per status: as fast as a GROUP BY on both backends."""
        _check_query(q)
        return {
            status: await self.store.count_instances(replace(q, statuses=(status,)))
            for status in OrchestrationStatus
        }

    async def timer_status(self, function: str) -> TimerStatus | None:
        """The schedule status (last and next run) recorded for a timer-triggered function;
        None when it keeps none (`useMonitor` off) or has not started yet."""
        return await self.store.get_timer_status(function)

    async def raise_event(
        self, instance_id: str, event_name: str, data_text: str | None
    ) -> DeliveryResult:
        """Deliver an external event; `data_text` is JSON text (None: the event has no data)."""
        _check_orchestration_id(instance_id)
        check_text(event_name, "The event name")
        check_payload(data_text, "event data", self.payload_bytes)
        _check_json(data_text, "The event data")
        return await self._send(
            instance_id,
            HistoryEvent(
                type=EventType.EVENT_RAISED,
                timestamp=self.clock(),
                name=event_name,
                input=data_text,
            ),
        )

    async def terminate(self, instance_id: str, reason: str | None) -> DeliveryResult:
        # DTFx carries the reason as the event's JSON input and makes it the instance output.
        return await self.terminate_with_output(instance_id, json.dumps(reason))

    async def terminate_with_output(self, instance_id: str, output: str) -> DeliveryResult:
        """Terminate with `output` (JSON text) as the instance's output, as a Durable Task
        client gives it."""
        _check_orchestration_id(instance_id)
        check_payload(output, "reason", self.payload_bytes)
        _check_json(output, "The termination output")
        return await self._send(
            instance_id,
            HistoryEvent(type=EventType.EXECUTION_TERMINATED, timestamp=self.clock(), input=output),
        )

    async def suspend(self, instance_id: str, reason: str | None) -> DeliveryResult:
        return await self._control(instance_id, EventType.EXECUTION_SUSPENDED, reason)

    async def resume(self, instance_id: str, reason: str | None) -> DeliveryResult:
        return await self._control(instance_id, EventType.EXECUTION_RESUMED, reason)

    async def _control(
        self, instance_id: str, kind: EventType, reason: str | None
    ) -> DeliveryResult:
        """Send a suspend or resume, whose reason the history keeps as is: within the payload
        limit, like everything a caller stores (the management API's comes in a URL, which is
        short anyway; the dashboard's in a form)."""
        _check_orchestration_id(instance_id)
        _check_reason(reason)
        check_payload(reason, "reason", self.payload_bytes)
        return await self._send(
            instance_id, HistoryEvent(type=kind, timestamp=self.clock(), reason=reason)
        )

    async def purge(self, instance_id: str) -> int:
        """Delete an instance and its history; returns 1, or 0 if it did not exist."""
        if not _findable(instance_id):
            return 0
        purged = await self.store.purge_instance(instance_id)
        if purged:
            log.info("dfhost: purged instance %s", instance_id)
        return purged

    async def purge_many(self, q: InstanceQuery) -> int:
        _check_query(q)
        purged = await self.store.purge_instances(q)
        if purged:
            log.info("dfhost: purged %d instance%s", purged, "" if purged == 1 else "s")
        return purged

    # --- entities (see dfhost.orchestration.entities) -------------------------------------

    def entity_id(self, name: str, key: str) -> EntityId:
        """The entity `name` (any case) and `key`; with an app, `name` must be one of its
        entities. Raises `InvalidInstanceIdError` or `UnknownEntityError`."""
        entity = _entity(name, key)
        check_id(name, "The entity name", ENTITY_PART, MAX_ID_LENGTH)
        check_id(key, "The entity key", ENTITY_PART, MAX_ID_LENGTH)
        if len(entity.instance_id) > MAX_ID_LENGTH:
            raise InvalidInstanceIdError(
                f"The entity id {shown(entity.instance_id)} (@name@key) is longer than "
                f"{MAX_ID_LENGTH} characters."
            )
        if self.app is not None and self.app.entity(name) is None:
            known = sorted(f.name for f in self.app.of_kind("entity"))
            raise UnknownEntityError(name, known)
        return entity

    async def signal_entity(
        self,
        name: str,
        key: str,
        operation: str,
        input_text: str | None,
        *,
        visible_at: datetime | None = None,
    ) -> None:
        """Enqueue an operation (`input_text` is JSON text) for the entity, which is created
        if it does not exist; its engine runs it in order with the others (not before
        `visible_at`, if given)."""
        entity = self.entity_id(name, key)
        check_text(operation, "The operation name")
        check_payload(input_text, "entity operation input", self.payload_bytes)
        _check_json(input_text, "The entity operation input")
        message = Operation.signal_from_client(operation, input_text).message(entity, self.clock())
        if visible_at is not None:
            message = replace(message, visible_at=visible_at)
        # The send fails only before the entity's first operation (or after a purge): create
        # it then, and send again.
        for _ in range(3):
            if await self.store.send_message(message) == "sent":
                return
            await self.store.create_instance(creation_request(entity, self.clock()))
        raise RuntimeError(f"could not deliver '{operation}' to entity {entity.instance_id}")

    async def read_entity(self, name: str, key: str) -> EntityStatus | None:
        """The entity's status, None if it was never created; `state` is None while it does
        not exist (deleted)."""
        entity = _entity(name, key)
        instance = await self.get_status(entity.instance_id)
        return None if instance is None else EntityStatus.of(instance)

    async def list_entities(
        self,
        name: str | None = None,
        *,
        top: int = 100,
        continuation: str | None = None,
        operated_from: datetime | None = None,
        operated_to: datetime | None = None,
    ) -> tuple[list[EntityStatus], str | None]:
        """One page of the entities that exist (of entity `name`, or all), with the token of
        the next page. A page holds at most `top`; it may hold fewer (deleted entities and
        the time filters are applied to each page of instances)."""
        prefix = "@" if name is None else _entity(name, "").instance_id
        if len(prefix) > MAX_ID_LENGTH:
            return [], None  # no entity's id is that long
        q = InstanceQuery(instance_id_prefix=prefix, top=top, continuation=continuation)
        while True:
            page = await self.store.query_instances(q)
            found = [
                status
                for instance in page.instances
                if (status := EntityStatus.of(instance)) is not None
                and status.state is not None
                and (operated_from is None or status.last_operation_at >= operated_from)
                and (operated_to is None or status.last_operation_at <= operated_to)
            ]
            if found or page.continuation is None:
                return found, page.continuation
            q = replace(q, continuation=page.continuation)

    async def release_orphaned_locks(
        self, *, top: int = 100, continuation: str | None = None
    ) -> tuple[int, str | None]:
        """Release the entity locks held by orchestrations that no longer run (finished, or
        purged), in one page of entities: (the locks released, the token of the next page).
        The release is an ordinary message, so it is processed in order with the entity's
        other messages: a release the holder sent before it ended is not undone."""
        q = InstanceQuery(instance_id_prefix="@", top=top, continuation=continuation)
        page = await self.store.query_instances(q)
        released = 0
        for instance in page.instances:
            status = EntityStatus.of(instance)
            if status is None or status.locked_by is None:
                continue
            holder = await self.store.get_instance(status.locked_by)
            if holder is not None and holder.status not in TERMINAL_STATUSES:
                continue
            # The holder is matched by instance id, as DTFx does: no critical section id.
            release = Release("", status.locked_by).message(instance.instance_id, self.clock())
            if await self.store.send_message(release) == "sent":
                released += 1
        return released, page.continuation

    async def wait_for_completion(
        self,
        instance_id: str,
        timeout: float,  # noqa: ASYNC109 - a polling deadline, not a cancel scope
        interval: float = 0.1,
    ) -> Instance | None:
        """Wait until the instance is finished or `timeout` seconds passed (wall clock): at
        once when this process finishes it, else at the next poll, every `interval` seconds.

        Returns the last status seen (possibly still running), or None if it does not exist.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        interval = max(0.001, interval)
        while True:
            # Watched before the status is read, so an end committed in between is not missed.
            finished = self.store.watch_finish(instance_id)
            try:
                instance = await self.get_status(instance_id)
                if instance is None or instance.status in TERMINAL_STATUSES:
                    return instance
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return instance
                await asyncio.wait({finished}, timeout=min(interval, remaining))
            finally:
                finished.cancel()

    async def _send(self, instance_id: str, event: HistoryEvent) -> DeliveryResult:
        if not _findable(instance_id):
            return "not_found"
        return await self.store.send_message(Message(instance_id=instance_id, event=event))
