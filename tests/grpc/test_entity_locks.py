"""Entity locks (critical sections) of Durable Task SDK orchestrations on `dfhost serve`: the
task hub, not the worker, decides which operations run while an entity is locked."""

from __future__ import annotations

import json
from typing import Any

import pytest
from durabletask import client, entities, task, worker

from tests.grpc.conftest import ServeProcess
from tests.waiting import eventually_blocking

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

JOURNAL = entities.EntityInstanceId("journal", "j")


def journal(ctx: entities.EntityContext, value: Any) -> Any:
    lines: list[str] = ctx.get_state(list, [])
    if ctx.operation == "append":
        ctx.set_state([*lines, value])
    return len(lines)


def critical(ctx: task.OrchestrationContext, tag: str) -> Any:
    """Writes two lines under the journal's lock, with a wait for the test between them."""
    with (yield ctx.lock_entities([JOURNAL])):
        yield ctx.call_entity(JOURNAL, "append", f"{tag}-start")
        yield ctx.wait_for_external_event("go")
        yield ctx.call_entity(JOURNAL, "append", f"{tag}-end")
    return tag


def fails_locked(ctx: task.OrchestrationContext, _: Any) -> Any:
    with (yield ctx.lock_entities([JOURNAL])):
        yield ctx.call_entity(JOURNAL, "append", "doomed")
        raise ValueError("failed inside the critical section")


def _worker(address: str) -> worker.TaskHubGrpcWorker:
    w = worker.TaskHubGrpcWorker(host_address=address)
    w.add_entity(journal)
    w.add_orchestrator(critical)
    w.add_orchestrator(fails_locked)
    return w


def _journal(c: client.TaskHubGrpcClient) -> entities.EntityMetadata | None:
    return c.get_entity(JOURNAL)


def _lines(c: client.TaskHubGrpcClient) -> list[str] | None:
    found = _journal(c)
    raw = None if found is None else found.get_state()
    return None if raw is None else list(json.loads(raw))


def _wait_for_backlog(c: client.TaskHubGrpcClient, size: int) -> None:
    eventually_blocking(
        lambda: _journal(c), lambda e: e is not None and e.backlog_queue_size == size, timeout=30
    )


def _completed(c: client.TaskHubGrpcClient, instance_id: str) -> None:
    state = c.wait_for_orchestration_completion(instance_id, timeout=60)
    assert state is not None
    assert state.runtime_status == client.OrchestrationStatus.COMPLETED, state.failure_details


def test_critical_sections_on_one_entity_run_one_after_the_other(served: ServeProcess) -> None:
    c = client.TaskHubGrpcClient(host_address=served.address)
    with _worker(served.address) as w:
        w.start()  # type: ignore[no-untyped-call]
        first = c.schedule_new_orchestration(critical, input="A")
        eventually_blocking(lambda: _lines(c), lambda v: v == ["A-start"], timeout=30)
        found = _journal(c)
        assert found is not None and found._locked_by == first

        # While A holds the lock, B's lock request and a client's signal wait in its queue.
        second = c.schedule_new_orchestration(critical, input="B")
        _wait_for_backlog(c, 1)
        c.signal_entity(JOURNAL, "append", "outside")
        _wait_for_backlog(c, 2)
        assert _lines(c) == ["A-start"]
        # A runs: its lock is no orphan.
        assert c.clean_entity_storage().orphaned_locks_released == 0

        c.raise_orchestration_event(first, "go")
        _completed(c, first)
        # The release granted B the lock: the signal waits for B's release too.
        eventually_blocking(
            lambda: _lines(c), lambda v: v == ["A-start", "A-end", "B-start"], timeout=30
        )
        c.raise_orchestration_event(second, "go")
        _completed(c, second)
        expected = ["A-start", "A-end", "B-start", "B-end", "outside"]
        eventually_blocking(lambda: _lines(c), lambda v: v == expected, timeout=30)
        found = _journal(c)
        assert found is not None and not found._locked_by and found.backlog_queue_size == 0


def test_an_orchestration_failing_in_its_critical_section_releases_the_lock(
    served: ServeProcess,
) -> None:
    c = client.TaskHubGrpcClient(host_address=served.address)
    with _worker(served.address) as w:
        w.start()  # type: ignore[no-untyped-call]
        failing = c.schedule_new_orchestration(fails_locked)
        state = c.wait_for_orchestration_completion(failing, timeout=60)
        assert state is not None and state.runtime_status == client.OrchestrationStatus.FAILED
        assert state.failure_details is not None
        assert "failed inside the critical section" in state.failure_details.message

        c.signal_entity(JOURNAL, "append", "after")
        eventually_blocking(lambda: _lines(c), lambda v: v == ["doomed", "after"], timeout=30)
        next_one = c.schedule_new_orchestration(critical, input="C")
        eventually_blocking(
            lambda: _lines(c), lambda v: v == ["doomed", "after", "C-start"], timeout=30
        )
        c.raise_orchestration_event(next_one, "go")
        _completed(c, next_one)
    found = _journal(c)
    assert found is not None and not found._locked_by
    assert _lines(c) == ["doomed", "after", "C-start", "C-end"]


def test_a_terminated_orchestration_releases_its_lock_and_withdraws_its_request(
    served: ServeProcess,
) -> None:
    c = client.TaskHubGrpcClient(host_address=served.address)
    with _worker(served.address) as w:
        w.start()  # type: ignore[no-untyped-call]
        holder = c.schedule_new_orchestration(critical, input="T")
        eventually_blocking(lambda: _lines(c), lambda v: v == ["T-start"], timeout=30)
        waiting = c.schedule_new_orchestration(critical, input="W")
        _wait_for_backlog(c, 1)
        c.signal_entity(JOURNAL, "append", "after")
        _wait_for_backlog(c, 2)

        # The waiting one's request leaves the queue; the holder's end frees the entity.
        c.terminate_orchestration(waiting)
        _wait_for_backlog(c, 1)
        c.terminate_orchestration(holder)
        eventually_blocking(lambda: _lines(c), lambda v: v == ["T-start", "after"], timeout=30)
    found = _journal(c)
    assert found is not None and not found._locked_by and found.backlog_queue_size == 0
