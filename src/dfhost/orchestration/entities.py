"""Durable entities: instances of the task hub that run operations instead of an orchestrator.

An entity is the instance `@<lower-cased name>@<key>` (as DTFx names it). Its state is the JSON
text in the instance's `custom_status` (None while the entity does not exist, e.g. after
`destruct_on_exit()`); its `last_updated_at` is its last operation time. It has no history.
Operations reach it as inbox messages, as DTFx sends them: an EventRaised named "op" whose input
is a RequestMessage (`{"op", "signal", "input", "id", "parent", "parentExecution"}`).

Whoever sends an operation also asks for the instance to be created if it does not exist (in the
same transaction for orchestrators, whose episode outcome carries the message and a start; a
client retries the send after creating it), so operations never wait for a separate creation.

The engine claims an entity like an orchestration (the lease makes it one batch at a time), lets
`schedule` decide which operations may run given the entity's locks (the others wait in its
queue; see "locks" below), and calls `run_batch`: those operations, in order, through the SDK's
`Entity` in one call. The SDK does not undo what a failing operation did to the state, so each
operation runs inside a guard that snapshots the state first and puts it back if the operation
raises: the failed operation leaves the state unchanged, and the operations after it see that
state. The new state and the responses to callers (an EventRaised named by the request id, to
the caller's execution) are committed with the consumed operations, atomically."""

from __future__ import annotations

import inspect
import json
import logging
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, assert_never

from dfhost.history import EventType, HistoryEvent, Instance, OrchestrationStatus
from dfhost.orchestration.episode import (
    ActivityCall,
    EntityMessage,
    SubOrchestrationCall,
    TimerRequest,
    Work,
)
from dfhost.work import EpisodeOutcome, EpisodeWork, Message, StartRequest

__all__ = [
    "OPERATION_EVENT",
    "EntityId",
    "EntityStatus",
    "InvalidEntityIdError",
    "LockRequest",
    "Operation",
    "Release",
    "Schedule",
    "SchedulerState",
    "creation_request",
    "deliveries",
    "is_entity",
    "late_grant_releases",
    "request_of",
    "response",
    "run_batch",
    "schedule",
    "unreleased_locks",
]

log = logging.getLogger("dfhost.entities")

OPERATION_EVENT = "op"
"""The EventRaised name DTFx gives entity operation messages."""


class InvalidEntityIdError(ValueError):
    """The entity name or key cannot form an entity instance id."""


def is_entity(instance_id: str) -> bool:
    """Whether the instance id is an entity's (orchestration ids may not start with '@')."""
    return EntityId.parse(instance_id) is not None


@dataclass(frozen=True, slots=True)
class EntityId:
    name: str
    """Lower-cased, as in the instance id: entity names are case-insensitive."""
    key: str

    @classmethod
    def of(cls, name: str, key: str) -> EntityId:
        if not name:
            raise InvalidEntityIdError("The entity name must not be empty.")
        if "@" in name:
            raise InvalidEntityIdError(f"The entity name '{name}' must not contain '@'.")
        return cls(name.lower(), key)

    @classmethod
    def parse(cls, instance_id: str) -> EntityId | None:
        """The entity of an instance id, None if it is not one."""
        if not instance_id.startswith("@"):
            return None
        name, at, key = instance_id[1:].partition("@")
        if not at or not name:
            return None
        return cls(name, key)

    @property
    def instance_id(self) -> str:
        return f"@{self.name}@{self.key}"


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation message for an entity."""

    name: str
    input: str | None
    """JSON text of the input."""
    signal: bool
    request_id: str
    parent_instance_id: str | None = None
    parent_execution_id: str | None = None
    """Where a call's response goes; None for signals from clients."""

    @classmethod
    def signal_from_client(cls, name: str, input_text: str | None) -> Operation:
        return cls(name, input_text, True, str(uuid.uuid4()))

    def request_message(self) -> str:
        """The DTFx RequestMessage JSON."""
        return json.dumps(
            {
                "op": self.name,
                "signal": self.signal,
                "input": self.input,
                "id": self.request_id,
                "parent": self.parent_instance_id,
                "parentExecution": self.parent_execution_id,
            },
            separators=(",", ":"),
        )

    def message(self, entity: EntityId, now: datetime) -> Message:
        event = HistoryEvent(
            type=EventType.EVENT_RAISED,
            timestamp=now,
            name=OPERATION_EVENT,
            input=self.request_message(),
        )
        return Message(instance_id=entity.instance_id, event=event)

    @classmethod
    def from_event(cls, event: HistoryEvent) -> Operation | None:
        """The operation an inbox event carries; None if it is not one (or is malformed)."""
        if event.type is not EventType.EVENT_RAISED or event.name != OPERATION_EVENT:
            return None
        data = _json_object(event.input)
        return None if data is None else cls.of(data)

    @classmethod
    def of(cls, data: dict[str, Any]) -> Operation | None:
        """The operation of a RequestMessage; None if it is none (a lock request)."""
        if not isinstance(data.get("op"), str):
            return None
        text = data.get("input")
        return cls(
            name=data["op"],
            input=text if isinstance(text, str) else None,
            signal=bool(data.get("signal")),
            request_id=str(data.get("id") or ""),
            parent_instance_id=_optional_str(data.get("parent")),
            parent_execution_id=_optional_str(data.get("parentExecution")),
        )


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class EntityStatus:
    """What the management API shows of an entity."""

    entity: EntityId
    state: str | None
    """JSON text; None when the entity does not exist (never created, or deleted)."""
    last_operation_at: datetime
    locked_by: str | None = None
    """The orchestration holding its lock."""
    backlog: int = 0
    """Operations and lock requests waiting in its queue for the lock."""

    @classmethod
    def of(cls, instance: Instance) -> EntityStatus | None:
        entity = EntityId.parse(instance.instance_id)
        if entity is None:
            return None
        locks = SchedulerState.of(instance)
        return cls(
            entity,
            instance.custom_status,
            instance.last_updated_at,
            locks.locked_by,
            len(locks.queue),
        )


def creation_request(entity: EntityId, now: datetime) -> StartRequest:
    """Creates the entity's instance unless it exists (its ExecutionStarted is ignored)."""
    return StartRequest(
        instance_id=entity.instance_id,
        name=entity.name,
        execution_id=uuid.uuid4().hex,
        created_at=now,
    )


def deliveries(
    caller: Instance, now: datetime, work: Sequence[Work]
) -> tuple[list[Message], list[StartRequest]]:
    """The operation messages for an orchestrator episode's entity calls and signals, and the
    starts that create the entities that do not exist yet (once each)."""
    messages: list[Message] = []
    starts: dict[str, StartRequest] = {}
    for item in work:
        match item:
            case EntityMessage():
                entity = EntityId.parse(item.instance_id)
                if entity is None:  # the SDK always builds '@name@key'
                    log.error(
                        "dfhost: %s sent to %r, not an entity", item.operation, item.instance_id
                    )
                    continue
                operation = Operation(
                    name=item.operation,
                    input=item.input,
                    signal=item.signal,
                    request_id=item.request_id,
                    parent_instance_id=caller.instance_id,
                    parent_execution_id=caller.execution_id,
                )
                messages.append(operation.message(entity, now))
                starts.setdefault(entity.instance_id, creation_request(entity, now))
            case ActivityCall() | TimerRequest() | SubOrchestrationCall():
                pass  # for the engine (see `outcome.py`)
            case _:
                assert_never(item)
    return messages, list(starts.values())


# --- running a batch --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Result:
    is_error: bool
    result: str
    """JSON text (the error message as a JSON string when `is_error`)."""


def run_batch(
    handler: Callable[..., Any] | None, entity: EntityId, work: EpisodeWork, now: datetime
) -> EpisodeOutcome:
    """Run the operations in the entity's inbox, in order, through the entity function's
    `handler` (what `df.Entity.create` made; None: the app has no such entity), and say what to
    commit.

    Runs user code: call it in a worker thread. Never raises because of user code.
    """
    instance = work.instance
    operations: list[Operation] = []
    for message in work.messages:
        operation = Operation.from_event(message.event)
        if operation is not None:
            operations.append(operation)
        elif message.event.type is not EventType.EXECUTION_STARTED:
            log.warning(
                "dfhost: entity %s ignores a %s message (entities run operations only)",
                instance.instance_id,
                message.event.type.name,
            )
    running = replace(instance, status=OrchestrationStatus.RUNNING)
    if not operations:
        return EpisodeOutcome(instance=running, new_events=[])
    state = instance.custom_status
    if handler is None:
        error = f"The entity function '{entity.name}' doesn't exist in this app."
        log.error(
            "dfhost: %s %d operation(s) for %s fail.", error, len(operations), instance.instance_id
        )
        results = [_Result(True, json.dumps(error))] * len(operations)
    else:
        state, results = _execute(handler, entity, state, operations)
    responses = [
        _response(operation, result, now)
        for operation, result in zip(operations, results, strict=True)
        if not operation.signal and operation.parent_instance_id is not None
    ]
    return EpisodeOutcome(
        instance=replace(running, custom_status=state, last_updated_at=now),
        new_events=[],
        messages=responses,
    )


def _response(operation: Operation, result: _Result, now: datetime) -> Message:
    return response(operation, result.result, "Error" if result.is_error else None, now)


def response(operation: Operation, result: str, error_type: str | None, now: datetime) -> Message:
    """The response to a call: `result` is JSON text (the error message as a JSON string when
    `error_type` says the operation failed)."""
    # The SDKs' ResponseMessage: any `exceptionType` means failure.
    body: dict[str, str] = {"result": result}
    if error_type is not None:
        body["exceptionType"] = error_type or "Error"
    event = HistoryEvent(
        type=EventType.EVENT_RAISED,
        timestamp=now,
        name=operation.request_id,
        input=json.dumps(body),
    )
    assert operation.parent_instance_id is not None
    return Message(
        instance_id=operation.parent_instance_id,
        execution_id=operation.parent_execution_id,
        event=event,
    )


def _execute(
    handler: Callable[..., Any], entity: EntityId, state: str | None, operations: list[Operation]
) -> tuple[str | None, list[_Result]]:
    """(new state, one result per operation); the state is unchanged if the batch fails."""
    from azure.durable_functions.entity import Entity
    from azure.durable_functions.models.DurableEntityContext import DurableEntityContext

    user_function = getattr(handler, "entity_function", None)
    if user_function is None:  # load_app refuses such entities; be safe anyway
        error = f"entity '{entity.name}' was not created with df.Entity.create"
        return state, [_Result(True, json.dumps(error))] * len(operations)
    batch = {
        "self": {"name": entity.name, "key": entity.key},
        "exists": state is not None,
        "state": state,
        # Operation inputs are double-encoded: the SDK json.loads them, then df_loads.
        "batch": [
            {"name": op.name, "input": json.dumps(op.input or "null"), "isSignal": op.signal}
            for op in operations
        ],
    }
    try:
        context, items = DurableEntityContext.from_json(json.dumps(batch))
        output = json.loads(Entity(_guarded(user_function)).handle(context, items))
        results = [_Result(bool(r["isError"]), str(r["result"])) for r in output["results"]]
        if len(results) != len(operations):
            raise RuntimeError(f"{len(results)} results for {len(operations)} operations")
        new_state = output["entityState"] if output["entityExists"] else None
    except Exception as exc:  # e.g. a final state that does not serialize
        error = f"the batch of entity {entity.instance_id} failed: {type(exc).__name__}: {exc}"
        logging.getLogger("function").error("%s", error, exc_info=exc)
        return state, [_Result(True, json.dumps(error))] * len(operations)
    if new_state is not None and not isinstance(new_state, str):
        new_state = json.dumps(new_state)
    return new_state, results


def _guarded(user_function: Callable[[Any], Any]) -> Callable[[Any], None]:
    """The user's entity function, with the state put back when an operation raises."""
    from azure.durable_functions.models.utils.df_serialization import df_dumps

    def operation(context: Any) -> None:
        # The state is either the raw JSON text the batch started with (immutable: kept as
        # is) or a live value an earlier operation set (copied as JSON text, since the
        # operation may change it in place).
        raw = context._state_is_raw or context._state is None
        try:
            saved = context._state if raw else df_dumps(context._state)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"the entity state is not JSON-serializable: {exc}") from exc
        exists = context._exists
        try:
            result = user_function(context)
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                raise TypeError("entity functions must be plain functions (def, not async def)")
        except Exception as exc:
            context._state = saved
            context._state_is_raw = saved is not None
            context._exists = exists
            user_frames = exc.__traceback__.tb_next if exc.__traceback__ else None
            details = "".join(
                traceback.format_exception(type(exc), exc, user_frames or exc.__traceback__)
            ).rstrip()
            logging.getLogger("function").error(
                "Entity operation '%s' failed: %s: %s\n%s",
                context._operation,
                type(exc).__name__,
                exc,
                details,
            )
            raise

    return operation


# --- locks: critical sections -----------------------------------------------------------------
#
# As DTFx does: an orchestration locks a sorted set of entities by sending a lock request to the
# first; each entity, once it is free, records the orchestration as its holder and forwards the
# request to the next one, and the last sends the grant to the orchestration. While an entity is
# locked, only the holder's operations run; the others' operations and lock requests wait in its
# queue, in arrival order, until the holder's release. The entity's scheduler state (holder and
# queue) is kept in its instance's `input`, which entities do not otherwise use (DTFx keeps it in
# the input of the entity's orchestration too), so it commits with the batch on every backend.

RELEASE_EVENT = "release"
"""The EventRaised name of DTFx's release message (`{"parent", "id"}`)."""
WAKE_EVENT = "dfhost.continue"
"""An entity's message to itself: operations it put back in its queue wait to run."""
LOCK_GRANTED = "Lock Acquisition Completed"
"""The result of DTFx's response to a lock request."""


@dataclass(frozen=True, slots=True)
class LockRequest:
    """A request to lock `lock_set` (entity instance ids, sorted), at `lock_set[position]`."""

    critical_section_id: str
    parent_instance_id: str
    parent_execution_id: str | None
    lock_set: tuple[str, ...]
    position: int

    @property
    def target(self) -> str:
        return self.lock_set[self.position]

    def data(self) -> dict[str, Any]:
        """DTFx's RequestMessage of a lock request (no operation; the lock set, the position)."""
        return {
            "op": None,
            "id": self.critical_section_id,
            "parent": self.parent_instance_id,
            "parentExecution": self.parent_execution_id,
            "lockset": list(self.lock_set),
            "pos": self.position,
        }

    def request_message(self) -> str:
        return json.dumps(self.data(), separators=(",", ":"))

    def message(self, now: datetime) -> Message:
        """The request, on its way to the entity at its position."""
        event = HistoryEvent(
            type=EventType.EVENT_RAISED,
            timestamp=now,
            name=OPERATION_EVENT,
            input=self.request_message(),
        )
        return Message(instance_id=self.target, event=event)

    def granted(self, now: datetime) -> Message:
        """The response that tells the orchestration it holds every lock of the set (named by
        the critical section id, as a call's response is by its request id)."""
        event = HistoryEvent(
            type=EventType.EVENT_RAISED,
            timestamp=now,
            name=self.critical_section_id,
            input=json.dumps({"result": LOCK_GRANTED}),
        )
        return Message(
            instance_id=self.parent_instance_id,
            execution_id=self.parent_execution_id,
            event=event,
        )

    @classmethod
    def of(cls, data: dict[str, Any]) -> LockRequest | None:
        lock_set, position = data.get("lockset"), data.get("pos")
        parent = _optional_str(data.get("parent"))
        if (
            data.get("op") is not None
            or not isinstance(lock_set, list)
            or not all(isinstance(e, str) for e in lock_set)
            or not isinstance(position, int)
            or not 0 <= position < len(lock_set)
            or parent is None
        ):
            return None
        return cls(
            str(data.get("id") or ""),
            parent,
            _optional_str(data.get("parentExecution")),
            tuple(lock_set),
            position,
        )


@dataclass(frozen=True, slots=True)
class Release:
    """An orchestration's release of the lock it holds on an entity (or asked for)."""

    critical_section_id: str
    parent_instance_id: str

    def request_message(self) -> str:
        return json.dumps(
            {"parent": self.parent_instance_id, "id": self.critical_section_id},
            separators=(",", ":"),
        )

    def message(self, entity_instance_id: str, now: datetime) -> Message:
        event = HistoryEvent(
            type=EventType.EVENT_RAISED,
            timestamp=now,
            name=RELEASE_EVENT,
            input=self.request_message(),
        )
        return Message(instance_id=entity_instance_id, event=event)

    @classmethod
    def from_event(cls, event: HistoryEvent) -> Release | None:
        if event.type is not EventType.EVENT_RAISED or event.name != RELEASE_EVENT:
            return None
        data = _json_object(event.input)
        parent = _optional_str(data.get("parent")) if data is not None else None
        if data is None or parent is None:
            return None
        return cls(str(data.get("id") or ""), parent)


Request = Operation | LockRequest


def _json_object(text: str | None) -> dict[str, Any] | None:
    try:
        data = json.loads(text or "")
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _request_of(data: dict[str, Any]) -> Request | None:
    return Operation.of(data) or LockRequest.of(data)


def request_of(event: HistoryEvent) -> Request | None:
    """The operation or lock request an inbox event carries; None if it is neither."""
    if event.type is not EventType.EVENT_RAISED or event.name != OPERATION_EVENT:
        return None
    data = _json_object(event.input)
    return None if data is None else _request_of(data)


@dataclass(frozen=True, slots=True)
class SchedulerState:
    """An entity's lock holder and the requests waiting for it to be free."""

    locked_by: str | None = None
    """The instance id of the orchestration holding the lock."""
    queue: tuple[Request, ...] = ()

    @classmethod
    def of(cls, instance: Instance) -> SchedulerState:
        if instance.input is None:
            return cls()
        data = _json_object(instance.input)
        if data is None:
            log.error("dfhost: entity %s has an unreadable lock state", instance.instance_id)
            return cls()
        queue: list[Request] = []
        for item in data.get("queue") or []:
            request = _request_of(item) if isinstance(item, dict) else None
            if request is None:
                log.error(
                    "dfhost: entity %s drops an unreadable queued request", instance.instance_id
                )
            else:
                queue.append(request)
        return cls(_optional_str(data.get("lockedBy")), tuple(queue))

    def stored(self) -> str | None:
        """The instance's `input`: None when free with nothing waiting."""
        if self.locked_by is None and not self.queue:
            return None
        queue = [
            json.loads(r.request_message()) if isinstance(r, Operation) else r.data()
            for r in self.queue
        ]
        return json.dumps({"lockedBy": self.locked_by, "queue": queue}, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Schedule:
    """What an entity's batch does with its inbox: the operations that run now, and the rest."""

    entity: EntityId
    operations: list[Message]
    """The operation messages to run now, in order (inbox messages, or queued ones rebuilt)."""
    state: SchedulerState
    """The holder and queue once every operation in `operations` ran."""
    messages: list[Message]
    """Lock requests forwarded to the next entity of their set, grants to orchestrations."""
    starts: list[StartRequest]
    """The next entities of lock sets, created if need be."""

    def finish(self, outcome: EpisodeOutcome, answered: int, now: datetime) -> EpisodeOutcome:
        """The batch's `outcome`, where the first `answered` of `operations` ran, with the
        scheduler's state and messages. Operations that did not run go back to the front of the
        queue (as DTFx puts them back), and the entity wakes itself to run them."""
        unanswered = [
            op
            for message in self.operations[answered:]
            if (op := Operation.from_event(message.event)) is not None
        ]
        state = replace(self.state, queue=(*unanswered, *self.state.queue))
        messages = [*outcome.messages, *self.messages]
        if unanswered:
            wake = HistoryEvent(type=EventType.EVENT_RAISED, timestamp=now, name=WAKE_EVENT)
            messages.append(Message(instance_id=self.entity.instance_id, event=wake))
        return replace(
            outcome,
            instance=replace(outcome.instance, input=state.stored()),
            messages=messages,
            starts=[*outcome.starts, *self.starts],
        )


def schedule(entity: EntityId, work: EpisodeWork, now: datetime) -> Schedule:
    """Which of the entity's queued and inbox requests run in this batch, given its locks."""
    state = SchedulerState.of(work.instance)
    locked_by = state.locked_by
    queue = list(state.queue)
    run: list[Message] = []
    messages: list[Message] = []
    starts: dict[str, StartRequest] = {}

    def may_run(request: Request) -> bool:
        # The holder's requests never wait (a lock request of the holder is granted again: it
        # cannot wait for itself).
        return locked_by is None or request.parent_instance_id == locked_by

    def admit(request: Request, message: Message | None) -> None:
        nonlocal locked_by
        if isinstance(request, Operation):
            run.append(message or request.message(entity, now))
            return
        locked_by = request.parent_instance_id
        if request.position + 1 < len(request.lock_set):
            forward = replace(request, position=request.position + 1)
            next_entity = EntityId.parse(forward.target)
            if next_entity is None:  # checked when the orchestration sent it
                log.error("dfhost: lock set %s has a non-entity id", request.lock_set)
                return
            messages.append(forward.message(now))
            starts.setdefault(forward.target, creation_request(next_entity, now))
        else:
            messages.append(request.granted(now))

    def drain() -> None:
        while queue and may_run(queue[0]):
            admit(queue.pop(0), None)

    drain()
    for message in work.messages:
        event = message.event
        release = Release.from_event(event)
        if release is not None:
            if locked_by is not None and release.parent_instance_id == locked_by:
                locked_by = None
                drain()
            else:
                # A request not granted yet (its orchestration ended waiting) is withdrawn.
                queue = [
                    r
                    for r in queue
                    if not (
                        isinstance(r, LockRequest)
                        and r.critical_section_id == release.critical_section_id
                    )
                ]
            continue
        request = request_of(event)
        if request is None:
            if event.type is not EventType.EXECUTION_STARTED and event.name != WAKE_EVENT:
                log.warning(
                    "dfhost: entity %s ignores a %s message (entities run operations only)",
                    entity.instance_id,
                    event.type.name,
                )
            continue
        if isinstance(request, LockRequest) and request.target != entity.instance_id:
            log.error(
                "dfhost: entity %s ignores a lock request for %s",
                entity.instance_id,
                request.target,
            )
            continue
        # Free, the queue is empty (drained): only what arrives while locked can wait.
        if may_run(request):
            admit(request, message)
        else:
            queue.append(request)
    return Schedule(
        entity, run, SchedulerState(locked_by, tuple(queue)), messages, list(starts.values())
    )


def _lock_requests(instance_id: str, history: Sequence[HistoryEvent]) -> list[LockRequest]:
    """The lock requests `instance_id` sent, by their EventSent in its history."""
    found: list[LockRequest] = []
    for event in history:
        if event.type is EventType.EVENT_SENT and event.name == OPERATION_EVENT:
            data = _json_object(event.input)
            request = LockRequest.of(data) if data is not None else None
            if request is not None and request.parent_instance_id == instance_id:
                found.append(request)
    return found


def late_grant_releases(
    instance_id: str, history: Sequence[HistoryEvent], inbox: Sequence[Message], now: datetime
) -> list[Message]:
    """Releases for the grants that reach a finished execution: its lock request went on down
    its set after it ended (and after the releases of its end), so every entity of the set
    is released again (a release from an orchestration that holds nothing changes nothing)."""
    granted = {m.event.name for m in inbox if m.event.type is EventType.EVENT_RAISED}
    return [
        Release(request.critical_section_id, instance_id).message(target, now)
        for request in _lock_requests(instance_id, history)
        if request.critical_section_id in granted
        for target in request.lock_set
    ]


def unreleased_locks(
    instance_id: str, history: Sequence[HistoryEvent], now: datetime
) -> list[Message]:
    """Releases of the locks an ending execution of `instance_id` asked for (its lock requests'
    EventSent in `history`) and did not release: the SDKs release them when an orchestration
    ends, but a terminate, or a failure dfhost decides, does not run the orchestrator. A
    request still on its way down its set is withdrawn where it waits."""
    held: dict[tuple[str, str], None] = {}
    for request in _lock_requests(instance_id, history):
        for target in request.lock_set:
            held[(target, request.critical_section_id)] = None
    for event in history:
        if event.type is EventType.EVENT_SENT and event.name == RELEASE_EVENT and event.instance_id:
            data = _json_object(event.input)
            if data is not None:
                held.pop((event.instance_id, str(data.get("id") or "")), None)
    return [Release(section, instance_id).message(target, now) for target, section in held]
