"""Traces, read back from the OpenTelemetry in-memory exporter: the span tree of each pattern,
no duplicates although every episode replays the whole history, one trace per orchestration
(sub-orchestrations included) and across two hosts."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
import pytest
from opentelemetry.trace import StatusCode

from dfhost import telemetry
from dfhost.history import EventType
from dfhost.testing import TestHost
from tests.observability.conftest import APP, Recorder
from tests.waiting import eventually

START = "POST /runtime/webhooks/durabletask/orchestrators/{functionName}"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"


def names(spans: list[Any]) -> Counter[str]:
    return Counter(s.name for s in spans)


def one(spans: list[Any], name: str) -> Any:
    [span] = [s for s in spans if s.name == name]
    return span


def assert_one_tree(spans: list[Any]) -> None:
    """One trace, no span twice, and every parent is a span of the trace (or the caller's)."""
    assert len({s.context.trace_id for s in spans}) == 1
    ids = [s.context.span_id for s in spans]
    assert len(ids) == len(set(ids)), names(spans)
    for span in spans:
        if span.parent is not None and span.parent.span_id != 0x00F067AA0BA902B7:
            assert span.parent.span_id in ids, span.name


def children(spans: list[Any], parent: Any) -> Counter[str]:
    return Counter(s.name for s in spans if s.parent and s.parent.span_id == parent.context.span_id)


async def start(host: TestHost, name: str, instance_id: str, body: str = "null") -> None:
    url = f"{host.origin}/runtime/webhooks/durabletask/orchestrators/{name}/{instance_id}"
    async with httpx.AsyncClient() as http:
        response = await http.post(
            url, content=body, headers={"traceparent": CALLER, "content-type": "application/json"}
        )
    assert response.status_code == 202, response.text


async def test_chain(recorder: Recorder) -> None:
    async with TestHost(APP) as host:
        await start(host, "chain", "c1")
        assert (await host.wait("c1", timeout=10)).output == 8
    spans = recorder.spans()
    assert_one_tree(spans)
    assert {s.context.trace_id for s in spans} == {int(CALLER_TRACE, 16)}
    request = one(spans, START)
    orchestration = one(spans, "orchestration:chain")
    assert orchestration.parent.span_id == request.context.span_id
    assert orchestration.attributes["durabletask.runtime_status"] == "Completed"
    # Four episodes (start and three results), each replaying all before it: no duplicates.
    assert children(spans, orchestration) == {"episode:chain": 4, "activity:double": 3}
    assert names(spans) == {
        START: 1,
        "orchestration:chain": 1,
        "episode:chain": 4,
        "activity:double": 3,
    }
    replayed = sorted(
        s.attributes["dfhost.replayed_events"] for s in spans if s.name == "episode:chain"
    )
    assert replayed[0] == 0 and replayed == sorted(set(replayed))
    assert orchestration.start_time <= min(s.start_time for s in spans if s.name.startswith("ep"))


async def test_fan_out(recorder: Recorder) -> None:
    async with TestHost(APP) as host:
        await start(host, "fanout", "f1")
        assert (await host.wait("f1", timeout=10)).output == 12
    spans = recorder.spans()
    assert_one_tree(spans)
    orchestration = one(spans, "orchestration:fanout")
    found = children(spans, orchestration)
    assert found["activity:double"] == 4
    assert 2 <= found["episode:fanout"] <= 5  # results may arrive together
    assert set(found) == {"activity:double", "episode:fanout"}


async def test_sub_orchestration_is_a_subtree(recorder: Recorder) -> None:
    async with TestHost(APP) as host:
        await start(host, "parent", "p1")
        assert (await host.wait("p1", timeout=10)).output == 9
    spans = recorder.spans()
    assert_one_tree(spans)
    parent = one(spans, "orchestration:parent")
    child = one(spans, "orchestration:chain")
    assert child.parent.span_id == parent.context.span_id
    assert child.attributes["durabletask.task.instance_id"] == "p1-c"
    assert children(spans, child) == {"episode:chain": 4, "activity:double": 3}
    assert children(spans, parent) == {"episode:parent": 2, "orchestration:chain": 1}


async def test_retry_and_timer(recorder: Recorder) -> None:
    async with TestHost(APP) as host:
        await start(host, "retry", "r1")
        assert (await host.wait("r1", timeout=10)).output == "ok"
        await start(host, "sleeper", "s1", "3600")
        assert (await host.wait("s1", timeout=10)).output == 42
    spans = recorder.spans()
    retry = [s for s in spans if s.context.trace_id == int(CALLER_TRACE, 16)]
    attempts = sorted((s for s in spans if s.name == "activity:flaky"), key=lambda s: s.start_time)
    assert [a.status.status_code for a in attempts] == [StatusCode.ERROR, StatusCode.UNSET]
    assert "first try of r1 fails" in (attempts[0].status.description or "")
    # The retry waits on a durable timer (1 s), and the sleeper on one of an hour.
    timers = [s for s in retry if s.name == "timer"]
    assert len(timers) == 2
    long = max(timers, key=lambda s: s.end_time - s.start_time)
    assert long.end_time - long.start_time >= 3600 * 10**9
    assert long.attributes["dfhost.timer.lateness_ms"] >= 0
    assert long.parent.span_id == one(spans, "orchestration:sleeper").context.span_id


async def test_entity_operations_join_the_callers_trace(recorder: Recorder) -> None:
    async with TestHost(APP) as host:
        await start(host, "counting", "e1")
        assert (await host.wait("e1", timeout=10)).output == 2
    spans = recorder.spans()
    assert_one_tree(spans)
    orchestration = one(spans, "orchestration:counting")
    assert children(spans, orchestration)["entity:counter add"] == 1
    assert children(spans, orchestration)["entity:counter get"] == 1


async def test_one_trace_across_two_hosts(recorder: Recorder, tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    async with TestHost(APP, store_url=url, auto_advance=False) as first:
        await start(first, "sleeper", "x1", "3600")
        await eventually(
            lambda: first.history("x1"),
            lambda events: any(e.type is EventType.TIMER_CREATED for e in events),
            timeout=10,
            what="the timer scheduled",
        )
    first_spans = recorder.spans()
    recorder.new_host()  # another process: it knows nothing of the instance's trace
    async with TestHost(APP, store_url=url, auto_advance=False) as second:
        await second.advance(timedelta(hours=1, seconds=1))
        assert (await second.wait("x1", timeout=10)).output == 42
    spans = recorder.spans()
    second_spans = spans[len(first_spans) :]
    assert_one_tree(spans)
    assert {s.context.trace_id for s in second_spans} == {int(CALLER_TRACE, 16)}
    orchestration = one(second_spans, "orchestration:sleeper")
    assert orchestration.parent.span_id == one(first_spans, START).context.span_id
    assert children(spans, orchestration) == {
        "episode:sleeper": 3,
        "timer": 1,
        "activity:double": 1,
    }
    assert names(first_spans)["episode:sleeper"] == 1


async def test_tracing_off_records_nothing_and_keeps_the_callers_context() -> None:
    async with TestHost(APP) as host:
        await start(host, "chain", "n1")
        await host.wait("n1", timeout=10)
        history = await host.history("n1")
    assert not telemetry.enabled()
    [started] = [e for e in history if e.type is EventType.EXECUTION_STARTED]
    assert started.trace_context == CALLER


def test_configuration_from_the_environment() -> None:
    try:
        assert telemetry.configure_from_env({}) is None
        assert telemetry.configure_from_env({"OTEL_TRACES_EXPORTER": "none"}) is None
        endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
        assert telemetry.configure_from_env({**endpoint, "OTEL_SDK_DISABLED": "true"}) is None
        assert not telemetry.enabled()
        assert telemetry.configure_from_env(endpoint) == "otlp"
        assert telemetry.enabled()
        grpc = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        with pytest.raises(telemetry.TelemetryConfigError, match="otlp-proto-grpc"):
            telemetry.configure_from_env(grpc)
        with pytest.raises(telemetry.TelemetryConfigError, match="not installed"):
            telemetry.configure_from_env({"OTEL_TRACES_EXPORTER": "nosuch"})
    finally:
        telemetry.shutdown()


async def test_activities_in_worker_processes_stay_in_the_instances_trace(
    recorder: Recorder, tmp_path: Any
) -> None:
    from dfhost.app.loader import load_app
    from dfhost.client import DurableClient
    from dfhost.runtime.engine import Engine
    from dfhost.runtime.workers import WorkerPool
    from dfhost.store import open_store

    app = load_app(APP)
    store = open_store(f"sqlite:///{tmp_path / 'hub.sqlite3'}")
    await store.start()
    pool = WorkerPool(app.root, 1, 2)
    await pool.start()
    engine = Engine(app, store, workers=pool)
    await engine.start()
    try:
        client = DurableClient(store, app)
        iid = await client.start_new("chain", "w1")
        status = await client.wait_for_completion(iid, timeout=30, interval=0.05)
        assert status is not None and status.output == "8"
        # User code's spans in the worker are children of the host's activity span.
        iid = await client.start_new("whose_span", "w2")
        status = await client.wait_for_completion(iid, timeout=30, interval=0.05)
        assert status is not None and status.output is not None
    finally:
        await engine.stop()
        await pool.close()
        await store.close()
    spans = recorder.spans()
    orchestration = one(spans, "orchestration:chain")
    assert_one_tree([s for s in spans if s.context.trace_id == orchestration.context.trace_id])
    assert children(spans, orchestration) == {"episode:chain": 4, "activity:double": 3}
    activity = one(spans, "activity:current_span")
    parent = f"{activity.context.trace_id:032x}-{activity.context.span_id:016x}"
    assert json.loads(status.output) == parent
