"""Durable client operations over the task hub: what `DurableOrchestrationClient` asks the
extension to do, minus HTTP. The management API, the dashboard, the CLI and tests all use it.

Every operation goes through the `Store`; the store wakes the engines itself, so starting an
instance or raising an event here is picked up without any further signal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
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
from dfhost.orchestration.entities import EntityId, EntityStatus, Operation, creation_request
from dfhost.orchestration.limits import check_payload
from dfhost.store import DeliveryResult, InstancePage, InstanceQuery, Store, TimerStatus
from dfhost.wire import UnsafeJsonError, check_json_text
from dfhost.work import Message, StartRequest

if TYPE_CHECKING:
    from dfhost.app.functions import FunctionApp

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_NAME_LENGTH",
    "DurableClient",
    "InstanceExistsError",
    "InstanceNotFoundError",
    "InvalidArgumentError",
    "InvalidInstanceIdError",
    "UnknownEntityError",
    "UnknownOrchestratorError",
    "check_filter",
    "entity_key_pattern",
    "instance_id_pattern",
    "lookup_id_pattern",
    "text_pattern",
    "validate_instance_id",
]

log = logging.getLogger("dfhost.client")

MAX_ID_LENGTH = 256
"""Characters in an instance id (an entity's `@name@key` included), as the extension allows."""
MAX_NAME_LENGTH = 256
"""Characters in the other names and filters a caller gives: versions, event and operation
names, id prefixes, orchestrator names."""

# Control characters (C0, DEL, C1): NUL is refused by PostgreSQL and Azure Storage, the rest
# by Azure Storage keys, and every one of them forges log lines and confuses terminals.
_CONTROL = "\\x00-\\x1f\\x7f-\\x9f"
# DTFx/Azure Storage refuse these in instance ids (not valid in table keys or URLs).
_FORBIDDEN = "/\\\\#?"
# What str.strip() removes and controls do not already cover: no id starts or ends with it.
_SPACE = " \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"


def _id_regex(first_excluded: str, allow_empty: bool, max_length: int) -> str:
    """A regex (Python's and ECMAScript's alike, so the OpenAPI document can publish it) for
    ids: no control or forbidden character, none of `_SPACE` at either end, not `.` or `..`
    (a URL path would resolve them), at most `max_length` characters."""
    inner = f"[^{_FORBIDDEN}{_CONTROL}]"
    edge = f"[^{_FORBIDDEN}{_CONTROL}{_SPACE}]"
    edge_no_dot = f"[^.{_FORBIDDEN}{_CONTROL}{_SPACE}]"
    first = f"[^{first_excluded}{_FORBIDDEN}{_CONTROL}{_SPACE}]"
    first_no_dot = f"[^.{first_excluded}{_FORBIDDEN}{_CONTROL}{_SPACE}]"
    forms = [
        f"{first_no_dot}{edge}?",  # one or two characters, not starting with a dot
        f"\\.{edge_no_dot}",  # two, starting with a dot: not ".."
        f"{first}{inner}{{1,{max_length - 2}}}{edge}",
    ]
    if allow_empty:
        forms.insert(0, "")
    return f"^(?:{'|'.join(forms)})$"


def instance_id_pattern() -> str:
    """The instance ids a caller may create (orchestrations; entities are `@name@key`)."""
    return _id_regex("@", allow_empty=False, max_length=MAX_ID_LENGTH)


def entity_key_pattern(longest_name: int) -> str:
    """Entity keys (empty allowed: `$` in a URL); with the name, the id `@name@key` must fit
    `MAX_ID_LENGTH`, so the longest possible key depends on the entity name."""
    return _id_regex("", allow_empty=True, max_length=max(2, MAX_ID_LENGTH - 2 - longest_name))


def lookup_id_pattern(orchestration: bool) -> str:
    """Ids to look up: any text without control characters; for orchestration operations
    (events, terminate, ...) not an entity's id either (starting with '@')."""
    first = f"[^@{_CONTROL}]" if orchestration else f"[^{_CONTROL}]"
    return f"^{first}[^{_CONTROL}]*$"


def text_pattern(min_length: int = 0, max_length: int | None = MAX_NAME_LENGTH) -> str:
    """Names and filters: any text without control characters, of a bounded length."""
    return f"^[^{_CONTROL}]{{{min_length},{'' if max_length is None else max_length}}}$"


_INSTANCE_ID = re.compile(instance_id_pattern())
_ENTITY_PART = re.compile(_id_regex("", allow_empty=True, max_length=MAX_ID_LENGTH))
_CONTROL_CHAR = re.compile(f"[{_CONTROL}]")
_BAD_ID_CHAR = re.compile(f"[{_FORBIDDEN}{_CONTROL}]")


class InvalidArgumentError(ValueError):
    """An id, name or payload a caller gave cannot be stored, addressed or shown again
    (the HTTP API answers 400 with this message)."""


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


class InvalidInstanceIdError(InvalidArgumentError):
    """The requested instance id cannot be stored or addressed by URL."""


class UnknownEntityError(Exception):
    """The name is not an entity of the app."""

    def __init__(self, name: str, known: list[str]) -> None:
        listed = ", ".join(known) if known else "(none)"
        super().__init__(
            f"The function '{name}' doesn't exist, is disabled, or is not an entity function. "
            f"Additional info: The following are the known entity functions: {listed}."
        )


def _shown(text: str) -> str:
    """A refused value in a message: escaped, and cut when long."""
    cut = text if len(text) <= 60 else f"{text[:60]}..."
    return ascii(cut) if _CONTROL_CHAR.search(cut) else f"'{cut}'"


def _id_problem(instance_id: str, what: str, pattern: re.Pattern[str], max_length: int) -> None:
    if pattern.fullmatch(instance_id):
        return
    shown = _shown(instance_id)
    if not instance_id:
        raise InvalidInstanceIdError(f"{what} must not be empty.")
    if len(instance_id) > max_length:
        raise InvalidInstanceIdError(f"{what} {shown} is longer than {max_length} characters.")
    bad = sorted(set(_BAD_ID_CHAR.findall(instance_id)))
    if bad:
        listed = " ".join(ascii(c) for c in bad)
        raise InvalidInstanceIdError(f"{what} {shown} contains invalid characters: {listed}.")
    if instance_id in (".", ".."):
        raise InvalidInstanceIdError(f"{what} must not be '.' or '..'.")
    if instance_id != instance_id.strip():
        raise InvalidInstanceIdError(f"{what} {shown} starts or ends with white space.")
    raise InvalidInstanceIdError(f"{what} {shown} starts with '@', which is reserved for entities.")


def validate_instance_id(instance_id: str) -> None:
    """Raise `InvalidInstanceIdError` for an id that a new orchestration may not have (see
    `instance_id_pattern`)."""
    _id_problem(instance_id, "Instance ID", _INSTANCE_ID, MAX_ID_LENGTH)


def _findable(instance_id: str) -> bool:
    """Whether an instance may have this id, to look it up: an id over the length limit
    cannot (False: not found, without asking the store, whose keys may not take it); one with
    a control character is refused (`InvalidInstanceIdError`: NUL makes PostgreSQL fail)."""
    _check_text(instance_id, "Instance ID", None, InvalidInstanceIdError)
    return len(instance_id) <= MAX_ID_LENGTH


def _check_orchestration_id(instance_id: str) -> None:
    """Orchestration operations (events, terminate, suspend, resume, rewind, restart) do not
    apply to an entity, whose messages are operations."""
    if instance_id.startswith("@"):
        raise InvalidInstanceIdError(
            f"Instance ID {_shown(instance_id)} is an entity's (it starts with '@'): "
            "orchestration operations do not apply to it; signal the entity instead."
        )


def _check_text(
    text: str | None,
    what: str,
    max_length: int | None = MAX_NAME_LENGTH,
    error: type[InvalidArgumentError] = InvalidArgumentError,
) -> None:
    """Names and filters: no control characters, at most `max_length` characters."""
    if text is None:
        return
    if max_length is not None and len(text) > max_length:
        raise error(f"{what} {_shown(text)} is longer than {max_length} characters.")
    found = _CONTROL_CHAR.search(text)
    if found is not None:
        raise error(f"{what} {_shown(text)} contains a control character ({found.group()!a}).")


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
    _check_text(name, "The entity name", None, InvalidInstanceIdError)
    _check_text(key, "The entity key", None, InvalidInstanceIdError)
    return entity


def check_filter(instance_id_prefix: str | None, name: str | None) -> None:
    """Raise `InvalidArgumentError` for instance filters that no stored instance could match
    and a backend may not even take (NUL)."""
    _check_text(instance_id_prefix, "instanceIdPrefix", MAX_ID_LENGTH)
    _check_text(name, "The name filter")


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
    ) -> str:
        """Create an instance of orchestrator `name` and return its id.

        `input_text` is JSON text, as the orchestrator's `get_input()` will `df_loads` it. A
        finished instance with the same id is replaced; an unfinished one raises
        `InstanceExistsError`.
        """
        if self.app is not None and self.app.orchestrator(name) is None:
            known = sorted(f.name for f in self.app.of_kind("orchestrator"))
            raise UnknownOrchestratorError(name, known)
        _check_text(name, "The orchestrator name")
        _check_text(version, "The version")
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
            if instance is not None and self.app.orchestrator(instance.name) is None:
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
        _check_text(event_name, "The event name")
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
        _check_orchestration_id(instance_id)
        output = json.dumps(reason)
        check_payload(output, "reason", self.payload_bytes)
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
        _id_problem(name, "The entity name", _ENTITY_PART, MAX_ID_LENGTH)
        _id_problem(key, "The entity key", _ENTITY_PART, MAX_ID_LENGTH)
        if len(entity.instance_id) > MAX_ID_LENGTH:
            raise InvalidInstanceIdError(
                f"The entity id {_shown(entity.instance_id)} (@name@key) is longer than "
                f"{MAX_ID_LENGTH} characters."
            )
        if self.app is not None and self.app.entity(name) is None:
            known = sorted(f.name for f in self.app.of_kind("entity"))
            raise UnknownEntityError(name, known)
        return entity

    async def signal_entity(
        self, name: str, key: str, operation: str, input_text: str | None
    ) -> None:
        """Enqueue an operation (`input_text` is JSON text) for the entity, which is created
        if it does not exist; its engine runs it in order with the others."""
        entity = self.entity_id(name, key)
        _check_text(operation, "The operation name")
        check_payload(input_text, "entity operation input", self.payload_bytes)
        _check_json(input_text, "The entity operation input")
        message = Operation.signal_from_client(operation, input_text).message(entity, self.clock())
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
