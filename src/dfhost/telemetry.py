"""OpenTelemetry traces: one trace per orchestration instance, continued across replays and hosts.

Off unless `configure_from_env` finds an exporter in the standard `OTEL_*` variables (or a test
calls `configure`); every hook then returns at once and nothing is recorded.

The shape of a trace:
- `POST orchestrators/NAME` (or an app's HTTP trigger): a SERVER span, child of the caller's
  W3C `traceparent` header;
- `orchestration:NAME`: the instance's execution, from its ExecutionStarted to its end, child
  of the span that started it (a request, or the parent orchestration for a sub-orchestration,
  which makes the child's whole tree a subtree of the parent's);
- under it, `episode:NAME` for each episode, `activity:NAME` for each execution, `timer` from
  its creation to its firing (with its lateness), and `entity:NAME op` for each operation an
  orchestrator sends to an entity.

How one trace survives replays and hosts: the ExecutionStarted event records the `traceparent`
of the span that started the instance (`HistoryEvent.trace_context`; every backend stores
history events whole). The orchestration span's ids are derived from that and the instance's
ids, so any host computes them, and its children can be emitted first: the orchestration span
itself is emitted when the execution ends, with its true start time. Spans of an episode are
emitted only after its commit, from the events it consumed and produced, so replaying old
events, or an episode whose lease was lost, emits nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from dfhost.history import TERMINAL_STATUSES, EventType, HistoryEvent, OrchestrationStatus
from dfhost.work import ActivityTask, EpisodeOutcome, EpisodeWork

__all__ = [
    "TelemetryConfigError",
    "activity_span",
    "configure",
    "configure_from_env",
    "continue_trace",
    "current_trace_context",
    "enabled",
    "episode_done",
    "link_outgoing",
    "request_span",
    "run_span",
    "shutdown",
]

log = logging.getLogger("dfhost")

_PROPAGATOR = TraceContextTextMapPropagator()
_MAX_REMEMBERED = 10_000
"""Instances whose trace this host remembers, so activities need not read their history."""

_tracer: trace.Tracer | None = None
_provider: Any = None
"""The SDK's TracerProvider while tracing is on (typed loosely: the SDK is imported lazily)."""
_forced_ids: ContextVar[tuple[int, int] | None] = ContextVar("dfhost_span_ids", default=None)
_remembered: OrderedDict[tuple[str, str], _Orchestration] = OrderedDict()


class TelemetryConfigError(Exception):
    """The OTEL_* variables ask for something this installation cannot do."""


# --- set-up ----------------------------------------------------------------------------------


def enabled() -> bool:
    """Whether spans are being recorded."""
    return _tracer is not None


def configure(processor: Any, *, resource: Any = None, sampler: Any = None) -> None:
    """Record spans through `processor` (an SDK `SpanProcessor`), replacing any earlier
    set-up. Tests pass a `SimpleSpanProcessor(InMemorySpanExporter())`."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

    class DerivedIds(IdGenerator):
        """Random ids, except for spans whose ids were derived beforehand (see module doc)."""

        def __init__(self) -> None:
            self._random = RandomIdGenerator()

        def generate_span_id(self) -> int:
            forced = _forced_ids.get()
            return forced[1] if forced else self._random.generate_span_id()

        def generate_trace_id(self) -> int:
            forced = _forced_ids.get()
            return forced[0] if forced else self._random.generate_trace_id()

    global _tracer, _provider
    shutdown()
    if resource is None:
        resource = Resource.create({})
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource.create({"service.name": "dfhost"}))
    provider = TracerProvider(resource=resource, sampler=sampler, id_generator=DerivedIds())
    provider.add_span_processor(processor)
    _provider = provider
    _tracer = provider.get_tracer("dfhost")


def configure_from_env(environ: Mapping[str, str] = os.environ) -> str | None:
    """Turn tracing on as the OTEL_* variables say; returns the exporters' names, or None
    when tracing stays off (no exporter configured, `OTEL_TRACES_EXPORTER=none`, or
    `OTEL_SDK_DISABLED=true`). Raises `TelemetryConfigError` for exporters that are not
    installed."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names and (
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        names = ["otlp"]
    names = [n for n in names if n != "none"]
    if not names:
        return None
    try:
        from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise TelemetryConfigError(
            f"tracing needs the OpenTelemetry SDK ({exc}): pip install 'dfhost[otel]'"
        ) from None
    processors = SynchronousMultiSpanProcessor()  # type: ignore[no-untyped-call]
    for name in names:
        processors.add_span_processor(BatchSpanProcessor(_exporter(name, environ)))
    configure(processors)
    return ", ".join(names)


def _exporter(name: str, environ: Mapping[str, str]) -> Any:
    from importlib.metadata import entry_points

    entry = name
    if name == "otlp":
        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        if protocol.strip() not in ("http/protobuf", "grpc"):
            raise TelemetryConfigError(
                f"OTLP protocol {protocol!r} is not supported (use http/protobuf or grpc)"
            )
        entry = "otlp_proto_grpc" if protocol.strip() == "grpc" else "otlp_proto_http"
    found = list(entry_points(group="opentelemetry_traces_exporter", name=entry))
    if not found:
        package = {
            "otlp_proto_http": "'dfhost[otel]'",
            "otlp_proto_grpc": "opentelemetry-exporter-otlp-proto-grpc",
        }.get(entry, f"the package that provides the {name!r} exporter")
        raise TelemetryConfigError(
            f"OTEL_TRACES_EXPORTER asks for {name!r}, which is not installed: pip install {package}"
        )
    return found[0].load()()


def shutdown() -> None:
    """Flush what is buffered and turn tracing off."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    _remembered.clear()
    if provider is not None:
        provider.shutdown()


# --- requests and the contexts they start --------------------------------------------------


@contextmanager
def request_span(
    method: str, route: str, headers: Mapping[str, str]
) -> Iterator[Callable[[int], None]]:
    """Run an HTTP request's handling as a SERVER span, child of its `traceparent` header;
    yields a function that records the response's status code.

    With tracing off, a caller's valid `traceparent` is still made current, so instances it
    starts carry it (for hosts that trace) and the SDK's client calls pass it on.
    """
    if _tracer is None:
        if "traceparent" not in headers:
            yield _ignore_status
            return
        token = otel_context.attach(_PROPAGATOR.extract(headers))
        try:
            yield _ignore_status
        finally:
            otel_context.detach(token)
        return
    attributes = {"http.request.method": method, "http.route": route}
    with _tracer.start_as_current_span(
        f"{method} {route}",
        context=_PROPAGATOR.extract(headers),
        kind=trace.SpanKind.SERVER,
        attributes=attributes,
    ) as span:

        def status(code: int) -> None:
            span.set_attribute("http.response.status_code", code)
            if code >= 500:
                span.set_status(trace.StatusCode.ERROR)

        yield status


def _ignore_status(code: int) -> None:
    pass


@contextmanager
def run_span(name: str, attributes: Mapping[str, str | bool | int | float]) -> Iterator[None]:
    """A root span around work that is not part of an orchestration (a timer-triggered
    function's run), current while it runs so that instances it starts join its trace."""
    if _tracer is None:
        yield
        return
    with _tracer.start_as_current_span(name, attributes=attributes):
        yield


@contextmanager
def continue_trace(traceparent: str | None) -> Iterator[None]:
    """Make the span `traceparent` names current, as the parent of the spans started within
    (in a worker process: the host's activity span); recording stays as configured here."""
    if not traceparent:
        yield
        return
    token = otel_context.attach(_PROPAGATOR.extract({"traceparent": traceparent}))
    try:
        yield
    finally:
        otel_context.detach(token)


def current_trace_context() -> str | None:
    """The `traceparent` of the current span, if any: what an instance started now records."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return _traceparent(ctx.trace_id, ctx.span_id, int(ctx.trace_flags))


def _traceparent(trace_id: int, span_id: int, flags: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"


def _parse(traceparent: str | None) -> trace.SpanContext | None:
    if not traceparent:
        return None
    ctx = trace.get_current_span(_PROPAGATOR.extract({"traceparent": traceparent}))
    span_context = ctx.get_span_context()
    return span_context if span_context.is_valid else None


# --- orchestrations --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Orchestration:
    """Where one execution's spans go: its orchestration span's (derived) ids and parent."""

    trace_id: int
    span_id: int
    parent: trace.SpanContext | None
    started: HistoryEvent

    @classmethod
    def of(cls, started: HistoryEvent, instance_id: str, execution_id: str) -> _Orchestration:
        parent = _parse(started.trace_context)
        digest = hashlib.sha256(f"{instance_id}\n{execution_id}".encode()).digest()
        trace_id = parent.trace_id if parent else int.from_bytes(digest[8:24]) or 1
        span_id = int.from_bytes(digest[:8]) or 1
        return cls(trace_id, span_id, parent, started)

    @property
    def flags(self) -> trace.TraceFlags:
        return self.parent.trace_flags if self.parent else trace.TraceFlags(1)

    def context(self) -> otel_context.Context:
        """A context whose current span is the orchestration span, for its children."""
        span_context = trace.SpanContext(
            self.trace_id, self.span_id, is_remote=True, trace_flags=self.flags
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(span_context))

    def traceparent(self) -> str:
        return _traceparent(self.trace_id, self.span_id, int(self.flags))


def _orchestration_of(work: EpisodeWork) -> _Orchestration | None:
    inst = work.instance
    key = (inst.instance_id, inst.execution_id)
    known = _remembered.get(key)
    if known is not None:
        return known
    started = _execution_started(work.history, [m.event for m in work.messages])
    if started is None:
        return None
    return _remember(key, started)


def _remember(key: tuple[str, str], started: HistoryEvent) -> _Orchestration:
    orchestration = _Orchestration.of(started, *key)
    _remembered[key] = orchestration
    while len(_remembered) > _MAX_REMEMBERED:
        _remembered.popitem(last=False)
    return orchestration


def _execution_started(
    history: Sequence[HistoryEvent], inbound: Sequence[HistoryEvent]
) -> HistoryEvent | None:
    for e in history[:2]:
        if e.type is EventType.EXECUTION_STARTED:
            return e
    return next((e for e in inbound if e.type is EventType.EXECUTION_STARTED), None)


def link_outgoing(work: EpisodeWork, outcome: EpisodeOutcome) -> EpisodeOutcome:
    """Before an episode commits: sub-orchestrations it starts, and operations it sends to
    entities, continue its trace as children of its orchestration span."""
    if _tracer is None or (not outcome.starts and not outcome.messages):
        return outcome
    orchestration = _orchestration_of(work)
    if orchestration is None or work.instance.instance_id.startswith("@"):
        return outcome
    parent = orchestration.traceparent()
    starts = [
        replace(s, trace_context=parent)
        if s.trace_context is None and not s.instance_id.startswith("@")
        else s
        for s in outcome.starts
    ]
    messages = [
        replace(m, event=replace(m.event, trace_context=parent))
        if m.instance_id.startswith("@")
        and m.event.type is EventType.EVENT_RAISED
        and m.event.trace_context is None
        else m
        for m in outcome.messages
    ]
    return replace(outcome, starts=starts, messages=messages)


def episode_done(
    work: EpisodeWork,
    outcome: EpisodeOutcome,
    *,
    started_ns: int,
    now: datetime,
    host: str,
) -> None:
    """After an episode committed `outcome` for `work` (what it consumed, with the whole
    history): emit its span, the spans of the timers it received, of the entity operations it
    ran, and of its execution if that ended."""
    if _tracer is None:
        return
    inst = work.instance
    end_ns = time.time_ns()
    if inst.instance_id.startswith("@"):
        _entity_operations(inst.name, inst.instance_id, work, started_ns, end_ns)
        return
    if not outcome.new_events and not outcome.reset_history:
        return  # late messages for a finished instance, consumed without a replay
    orchestration = _orchestration_of(work)
    if orchestration is None:
        return
    parent = orchestration.context()
    ids = {"durabletask.task.instance_id": inst.instance_id, "dfhost.host": host}
    _tracer.start_span(
        f"episode:{inst.name}",
        context=parent,
        start_time=started_ns,
        attributes={
            **ids,
            "durabletask.task.execution_id": inst.execution_id,
            "dfhost.replayed_events": len(work.history),
            "dfhost.new_events": len(outcome.new_events),
            "durabletask.runtime_status": outcome.instance.status.value,
        },
    ).end(end_ns)
    fired = [
        m.event
        for m in work.messages
        if m.event.type is EventType.TIMER_FIRED
        and m.execution_id in (None, inst.execution_id)
        and m.event.timer_id is not None
    ]
    if fired:
        created = {e.event_id: e for e in work.history if e.type is EventType.TIMER_CREATED}
        for event in fired:
            timer = created.get(event.timer_id) if event.timer_id is not None else None
            if timer is None:
                continue
            due = event.fire_at or event.timestamp
            span = _tracer.start_span(
                "timer",
                context=parent,
                start_time=_ns(timer.timestamp),
                attributes={
                    **ids,
                    "durabletask.fire_at": due.isoformat(),
                    "dfhost.timer.lateness_ms": max(0.0, (now - due).total_seconds() * 1000),
                },
            )
            span.end(max(_ns(now), _ns(timer.timestamp)))
    if _execution_ended(work, outcome):
        _end_orchestration(orchestration, inst.instance_id, inst.name, outcome, now)


def _execution_ended(work: EpisodeWork, outcome: EpisodeOutcome) -> bool:
    if work.instance.status in TERMINAL_STATUSES:
        return False  # a rewind, or late messages: its span was emitted when it ended
    after = outcome.instance
    return after.status in TERMINAL_STATUSES or after.execution_id != work.instance.execution_id


def _end_orchestration(
    orchestration: _Orchestration,
    instance_id: str,
    name: str,
    outcome: EpisodeOutcome,
    now: datetime,
) -> None:
    assert _tracer is not None
    after = outcome.instance
    status = (
        after.status if after.status in TERMINAL_STATUSES else OrchestrationStatus.CONTINUED_AS_NEW
    )
    context = (
        trace.set_span_in_context(trace.NonRecordingSpan(orchestration.parent))
        if orchestration.parent is not None
        else otel_context.Context()
    )
    start = orchestration.started.timestamp
    token = _forced_ids.set((orchestration.trace_id, orchestration.span_id))
    try:
        span = _tracer.start_span(
            f"orchestration:{name}",
            context=context,
            kind=trace.SpanKind.SERVER,
            start_time=_ns(start),
            attributes={
                "durabletask.type": "orchestration",
                "durabletask.task.name": name,
                "durabletask.task.instance_id": instance_id,
                "durabletask.task.execution_id": orchestration.started.execution_id or "",
                "durabletask.runtime_status": status.value,
            },
        )
    finally:
        _forced_ids.reset(token)
    if status is OrchestrationStatus.FAILED:
        span.set_status(trace.StatusCode.ERROR, _failure_text(after.output))
    span.end(max(_ns(now), _ns(start)))


def _failure_text(output: str | None) -> str:
    import json

    try:
        value = json.loads(output) if output else ""
    except ValueError:
        value = output
    return str(value)[:500]


def _entity_operations(
    name: str, instance_id: str, consumed: EpisodeWork, start_ns: int, end_ns: int
) -> None:
    """One span per operation of an entity batch, in the trace of the orchestration that
    sent it (operations from clients, which carry no trace context, are not traced)."""
    import json

    assert _tracer is not None
    for message in consumed.messages:
        event = message.event
        parent = _parse(event.trace_context)
        if parent is None or event.type is not EventType.EVENT_RAISED:
            continue
        try:
            request = json.loads(event.input or "{}")
        except ValueError:
            continue
        operation = str(request.get("op", "")) if isinstance(request, dict) else ""
        _tracer.start_span(
            f"entity:{name} {operation}".rstrip(),
            context=trace.set_span_in_context(trace.NonRecordingSpan(parent)),
            start_time=start_ns,
            attributes={
                "durabletask.type": "entity",
                "durabletask.entity.operation": operation,
                "durabletask.task.instance_id": instance_id,
                "dfhost.entity.signal": bool(isinstance(request, dict) and request.get("signal")),
            },
        ).end(end_ns)


# --- activities ------------------------------------------------------------------------------


@asynccontextmanager
async def activity_span(
    task: ActivityTask, load_history: Callable[[str], Awaitable[list[HistoryEvent]]]
) -> AsyncIterator[Callable[[HistoryEvent], None]]:
    """Run one activity execution as the current span `activity:NAME`, child of its
    orchestration span; yields a function to record its result event (TaskCompleted or
    TaskFailed). `load_history` reads the instance's history when this host does not know
    its trace yet (its episodes ran elsewhere)."""
    if _tracer is None:
        yield _ignore_result
        return
    key = (task.instance_id, task.execution_id)
    orchestration = _remembered.get(key)
    if orchestration is None:
        orchestration = await _load_orchestration(key, load_history)
    span = _tracer.start_span(
        f"activity:{task.name}",
        context=orchestration.context() if orchestration is not None else None,
        attributes={
            "durabletask.type": "activity",
            "durabletask.task.name": task.name,
            "durabletask.task.instance_id": task.instance_id,
            "durabletask.task.task_id": task.task_scheduled_id,
        },
    )

    def result(event: HistoryEvent) -> None:
        if event.type is EventType.TASK_FAILED:
            span.set_status(trace.StatusCode.ERROR, (event.reason or "")[:500])

    try:
        with trace.use_span(span, end_on_exit=False):
            yield result
    finally:
        span.end()


def _ignore_result(event: HistoryEvent) -> None:
    pass


async def _load_orchestration(
    key: tuple[str, str], load_history: Callable[[str], Awaitable[list[HistoryEvent]]]
) -> _Orchestration | None:
    try:
        history = await load_history(key[0])
    except Exception:  # tracing is never worth failing an activity over
        log.debug("dfhost: could not read the history of %s for tracing", key[0], exc_info=True)
        return None
    started = _execution_started(history, [])
    if started is None or started.execution_id not in (None, key[1]):
        return None  # the execution ended meanwhile; its trace no longer matters
    return _remember(key, started)


def _ns(value: datetime) -> int:
    return int(value.timestamp() * 1_000_000_000)
