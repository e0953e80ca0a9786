"""How the Azure Storage task hub lays out its data: object names, keys, rows, queue messages.

Pure functions and records only; `account`, `instances` and `queues` do the I/O.
Every text written to a queue is ASCII JSON, so its size in bytes is its length.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dfhost.history import HistoryEvent, Instance, OrchestrationStatus, format_time, parse_time
from dfhost.store import StoreError
from dfhost.work import ActivityTask, Message, StartRequest

__all__ = [
    "BIG_FIELDS",
    "PART_CHARS",
    "Envelope",
    "HubNames",
    "InstanceRow",
    "OrderClock",
    "WorkItem",
    "decode_key",
    "dumps",
    "encode_key",
    "join_parts",
    "partition_of",
    "row_entity",
    "row_from_entity",
    "split_parts",
    "start_request_from_dict",
    "start_request_to_dict",
]

PART_CHARS = 30_000
"""Characters per string property: the service allows 64 KiB of UTF-16 per property."""
_MAX_KEY_CHARS = 400
"""Keys may hold 1 KiB of UTF-16; escaping can triple an id's length."""
_FORBIDDEN_KEY_CHARS = frozenset("/\\#?~") | {chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))}


def dumps(value: Any) -> str:
    """Compact ASCII JSON (queue messages are sized in bytes, table strings in UTF-16)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


@dataclass(frozen=True, slots=True)
class HubNames:
    """The storage objects of one task hub. Names carry a `dfh` tag so that a Functions host's
    own task hub of the same name in the same account is never touched."""

    hub: str
    partitions: int

    @property
    def instances_table(self) -> str:
        return f"{self.hub}dfhInstances"

    @property
    def history_table(self) -> str:
        return f"{self.hub}dfhHistory"

    @property
    def timers_table(self) -> str:
        return f"{self.hub}dfhTimers"

    def control_queue(self, partition: int) -> str:
        return f"{self.hub.lower()}-dfh-control-{partition:02d}"

    @property
    def workitem_queue(self) -> str:
        return f"{self.hub.lower()}-dfh-workitems"

    @property
    def leases_container(self) -> str:
        return f"{self.hub.lower()}-dfh-leases"

    @property
    def payloads_container(self) -> str:
        return f"{self.hub.lower()}-dfh-payloads"


def encode_key(text: str) -> str:
    """A table key for `text`: characters keys may not hold (and `~`) become `~XX`.

    Each character maps to its own code, so one text is a prefix of another exactly when its
    key is a prefix of the other's key: id-prefix filters become key ranges.
    """
    if not any(c in _FORBIDDEN_KEY_CHARS for c in text):
        key = text
    else:
        key = "".join(f"~{ord(c):02X}" if c in _FORBIDDEN_KEY_CHARS else c for c in text)
    if len(key) > _MAX_KEY_CHARS:
        raise StoreError(f"id {text[:40]!r}... is too long for the Azure Storage task hub")
    return key


def decode_key(key: str) -> str:
    if "~" not in key:
        return key
    return re.sub(r"~([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), key)


def partition_of(instance_id: str, partitions: int) -> int:
    """The control queue of an instance: a stable hash, the same in every process."""
    return zlib.crc32(instance_id.encode("utf-8", "surrogatepass")) % partitions


def split_parts(name: str, text: str, max_parts: int) -> dict[str, str] | None:
    """`text` as properties `name0`, `name1`, ...; None if it needs more than `max_parts`."""
    count = max(1, -(-len(text) // PART_CHARS))
    if count > max_parts:
        return None
    return {f"{name}{i}": text[i * PART_CHARS : (i + 1) * PART_CHARS] for i in range(count)}


def join_parts(entity: Mapping[str, Any], name: str) -> str | None:
    """Inverse of `split_parts`; None if `name0` is absent."""
    if f"{name}0" not in entity:
        return None
    parts: list[str] = []
    index = 0
    while (part := entity.get(f"{name}{index}")) is not None:
        parts.append(str(part))
        index += 1
    return "".join(parts)


class OrderClock:
    """Strictly increasing integers near the wall clock in nanoseconds: the send order of
    queue messages, so a consumer can put what it received back in order."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(time.time_ns(), self._last + 1)
        return self._last


# --- instance rows ---------------------------------------------------------------------------

BIG_FIELDS = ("input", "output", "custom_status", "failure_details")
"""Instance fields that may exceed a property; longer values live in payload blobs."""
_PROPERTY_OF = {
    "input": "Input",
    "output": "Output",
    "custom_status": "CustomStatus",
    "failure_details": "FailureDetails",
}


@dataclass(slots=True, kw_only=True)
class InstanceRow:
    """An instance's row in the Instances table: the queryable state and everything the task
    hub needs to keep episodes exactly-once (see `dfhost.store.azure`)."""

    instance: Instance
    generation: str
    """Set when the instance is created (or replaced); stamps its work and messages."""
    partition: int
    etag: str = ""
    epoch: int = 0
    """Bumped when pending work is dropped: timers and activities of older epochs are void."""
    history_epoch: int = 0
    history_seq: int = 0
    history_head: str = ""
    """Row key of the last history chunk of the current history ("" when empty)."""
    start_pending: bool = False
    """The ExecutionStarted is not yet consumed: it is delivered from this row."""
    scheduled_start: datetime | None = None
    parent_execution_id: str | None = None
    parent_task_id: int | None = None
    created_by: str | None = None
    """The outbox item that created this instance (a sub-orchestration start)."""
    pending_outbox: str = ""
    """Row key of a history chunk whose outbox may not be fully delivered."""
    commit: str = ""
    """Unique per write: tells a writer whose reply was lost whether its write landed."""
    cancelled: list[int] = field(default_factory=list)
    consumed: dict[str, float] = field(default_factory=dict)
    """Ids of consumed messages that have no event id to dedupe by -> when (Unix time)."""
    blobs: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Big field -> (payload blob, its text): unchanged texts keep their blob."""
    trace_context: str | None = None
    """The pending ExecutionStarted's `trace_context`."""

    def started_message(self, number: int) -> Message:
        """The ExecutionStarted this row stands for."""
        inst = self.instance
        request = StartRequest(
            instance_id=inst.instance_id,
            name=inst.name,
            execution_id=inst.execution_id,
            created_at=inst.created_at,
            input=inst.input,
            version=inst.version,
            parent_instance_id=inst.parent_instance_id,
            parent_execution_id=self.parent_execution_id,
            parent_task_id=self.parent_task_id,
            visible_at=self.scheduled_start,
            trace_context=self.trace_context,
        )
        return Message(
            instance_id=inst.instance_id,
            execution_id=inst.execution_id,
            event=request.started_event(),
            visible_at=self.scheduled_start,
            message_id=number,
        )


def _opt_time(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


def row_entity(row: InstanceRow, blob_fields: Mapping[str, str]) -> dict[str, Any]:
    """The row as a table entity. `blob_fields` names the payload blob of each big field
    that does not fit a property (its text is then not written to the row)."""
    inst = row.instance
    entity: dict[str, Any] = {
        "PartitionKey": encode_key(inst.instance_id),
        "RowKey": "",
        "Name": inst.name,
        "ExecutionId": inst.execution_id,
        "Status": inst.status.value,
        "CreatedAt": format_time(inst.created_at),
        "LastUpdatedAt": format_time(inst.last_updated_at),
        "Tags": dumps(inst.tags),
        "Generation": row.generation,
        "Partition": row.partition,
        "Epoch": row.epoch,
        "HistoryEpoch": row.history_epoch,
        "HistorySeq": row.history_seq,
        "HistoryHead": row.history_head,
        "StartPending": row.start_pending,
        "PendingOutbox": row.pending_outbox,
        "Commit": row.commit,
    }
    optional: dict[str, Any] = {
        "Version": inst.version,
        "ParentInstanceId": inst.parent_instance_id,
        "ScheduledStart": _opt_time(row.scheduled_start),
        "ParentExecutionId": row.parent_execution_id,
        "ParentTaskId": row.parent_task_id,
        "CreatedBy": row.created_by,
        "TraceContext": row.trace_context,
        # Ids leave the list as their timers come back; a property holds ~4000 of them.
        "Cancelled": dumps(row.cancelled[-4000:]) if row.cancelled else None,
    }
    entity.update({k: v for k, v in optional.items() if v is not None})
    for name in BIG_FIELDS:
        prop = _PROPERTY_OF[name]
        if name in blob_fields:
            entity[f"{prop}Blob"] = blob_fields[name]
        elif (value := getattr(inst, name)) is not None:
            entity[prop] = value
    if row.consumed:
        parts = split_parts("Consumed", dumps(row.consumed), 4)
        if parts is None:  # keep the newest ids that fit
            newest = sorted(row.consumed.items(), key=lambda kv: kv[1])[-2000:]
            row.consumed = dict(newest)
            parts = split_parts("Consumed", dumps(row.consumed), 4) or {}
        entity.update(parts)
    return entity


def row_from_entity(entity: Mapping[str, Any]) -> tuple[InstanceRow, dict[str, str]]:
    """The row, and the payload blob of each big field stored in one (to be read)."""
    blob_fields = {
        name: str(entity[f"{_PROPERTY_OF[name]}Blob"])
        for name in BIG_FIELDS
        if entity.get(f"{_PROPERTY_OF[name]}Blob")
    }

    def text(prop: str) -> str | None:
        value = entity.get(prop)
        return None if value is None else str(value)

    instance = Instance(
        instance_id=decode_key(str(entity["PartitionKey"])),
        name=str(entity["Name"]),
        execution_id=str(entity["ExecutionId"]),
        status=OrchestrationStatus(entity["Status"]),
        created_at=parse_time(str(entity["CreatedAt"])),
        last_updated_at=parse_time(str(entity["LastUpdatedAt"])),
        version=text("Version"),
        input=text("Input"),
        output=text("Output"),
        custom_status=text("CustomStatus"),
        parent_instance_id=text("ParentInstanceId"),
        failure_details=text("FailureDetails"),
        tags=json.loads(str(entity.get("Tags") or "{}")),
    )
    scheduled = text("ScheduledStart")
    consumed = join_parts(entity, "Consumed")
    metadata = getattr(entity, "metadata", None) or {}
    row = InstanceRow(
        instance=instance,
        generation=str(entity["Generation"]),
        partition=int(entity["Partition"]),
        etag=str(metadata.get("etag") or ""),
        epoch=int(entity.get("Epoch") or 0),
        history_epoch=int(entity.get("HistoryEpoch") or 0),
        history_seq=int(entity.get("HistorySeq") or 0),
        history_head=str(entity.get("HistoryHead") or ""),
        start_pending=bool(entity.get("StartPending")),
        scheduled_start=None if scheduled is None else parse_time(scheduled),
        parent_execution_id=text("ParentExecutionId"),
        parent_task_id=None if entity.get("ParentTaskId") is None else int(entity["ParentTaskId"]),
        created_by=text("CreatedBy"),
        trace_context=text("TraceContext"),
        pending_outbox=str(entity.get("PendingOutbox") or ""),
        commit=str(entity.get("Commit") or ""),
        cancelled=[int(i) for i in json.loads(str(entity.get("Cancelled") or "[]"))],
        consumed={str(k): float(v) for k, v in json.loads(consumed or "{}").items()},
    )
    return row, blob_fields


# --- queue messages --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """A control-queue message: an event for an instance, or a wake-up ("w") that only says
    "look at this instance's row" (its ExecutionStarted is kept there)."""

    kind: str
    """"m" (a message) or "w" (a wake-up)."""
    id: str
    """Unique, and the same in every copy: consumers dedupe by it."""
    instance_id: str
    order: int
    visible_at: datetime | None = None
    event: HistoryEvent | None = None
    execution_id: str | None = None
    generation: str | None = None
    """Set on messages that are void once the instance is replaced."""
    epoch: int | None = None
    """Set on messages (timers, activity results) that are void once the epoch moves on."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"k": self.kind, "i": self.id, "x": self.instance_id, "t": self.order}
        if self.visible_at is not None:
            out["v"] = format_time(self.visible_at)
        if self.event is not None:
            out["e"] = self.event.to_dict()
        for key, value in (("xe", self.execution_id), ("g", self.generation), ("p", self.epoch)):
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Envelope:
        """Raises ValueError on malformed data."""
        try:
            kind = str(data["k"])
            if kind not in ("m", "w"):
                raise ValueError(f"unknown kind {kind!r}")
            event = None if data.get("e") is None else HistoryEvent.from_dict(data["e"])
            if kind == "m" and event is None:
                raise ValueError("a message without an event")
            return cls(
                kind=kind,
                id=str(data["i"]),
                instance_id=str(data["x"]),
                order=int(data["t"]),
                visible_at=None if data.get("v") is None else parse_time(str(data["v"])),
                event=event,
                execution_id=None if data.get("xe") is None else str(data["xe"]),
                generation=None if data.get("g") is None else str(data["g"]),
                epoch=None if data.get("p") is None else int(data["p"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed queue message: {exc!r}") from exc

    def message(self, number: int) -> Message:
        assert self.event is not None
        return Message(
            instance_id=self.instance_id,
            event=self.event,
            execution_id=self.execution_id,
            visible_at=self.visible_at,
            message_id=number,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkItem:
    """A work-item-queue message: one activity to run."""

    id: str
    instance_id: str
    execution_id: str
    task_scheduled_id: int
    name: str
    input: str | None
    scheduled_at: datetime
    generation: str
    epoch: int
    order: int

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "i": self.id,
            "x": self.instance_id,
            "xe": self.execution_id,
            "n": self.task_scheduled_id,
            "f": self.name,
            "s": format_time(self.scheduled_at),
            "g": self.generation,
            "p": self.epoch,
            "t": self.order,
        }
        if self.input is not None:
            out["in"] = self.input
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkItem:
        try:
            return cls(
                id=str(data["i"]),
                instance_id=str(data["x"]),
                execution_id=str(data["xe"]),
                task_scheduled_id=int(data["n"]),
                name=str(data["f"]),
                input=None if data.get("in") is None else str(data["in"]),
                scheduled_at=parse_time(str(data["s"])),
                generation=str(data["g"]),
                epoch=int(data["p"]),
                order=int(data["t"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed work item: {exc!r}") from exc

    def task(self, task_id: int, lease_token: int) -> ActivityTask:
        return ActivityTask(
            instance_id=self.instance_id,
            execution_id=self.execution_id,
            task_scheduled_id=self.task_scheduled_id,
            name=self.name,
            input=self.input,
            scheduled_at=self.scheduled_at,
            task_id=task_id,
            lease_token=lease_token,
        )


def start_request_to_dict(request: StartRequest) -> dict[str, Any]:
    out: dict[str, Any] = {
        "x": request.instance_id,
        "n": request.name,
        "xe": request.execution_id,
        "c": format_time(request.created_at),
    }
    optional = {
        "in": request.input,
        "ver": request.version,
        "pi": request.parent_instance_id,
        "pe": request.parent_execution_id,
        "pt": request.parent_task_id,
        "v": _opt_time(request.visible_at),
        "tc": request.trace_context,
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    return out


def start_request_from_dict(data: Mapping[str, Any]) -> StartRequest:
    try:
        return StartRequest(
            instance_id=str(data["x"]),
            name=str(data["n"]),
            execution_id=str(data["xe"]),
            created_at=parse_time(str(data["c"])),
            input=data.get("in"),
            version=data.get("ver"),
            parent_instance_id=data.get("pi"),
            parent_execution_id=data.get("pe"),
            parent_task_id=data.get("pt"),
            visible_at=None if data.get("v") is None else parse_time(str(data["v"])),
            trace_context=data.get("tc"),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed start request: {exc!r}") from exc
