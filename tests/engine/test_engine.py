"""The engine on a real SQLite task hub, in-process: throughput shapes, generations, timers,
logs, and bad input that must fail cleanly instead of crashing the host."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dfhost.app.functions import FunctionApp
from dfhost.app.loader import load_app
from dfhost.client import DurableClient
from dfhost.history import EventType, HistoryEvent, Instance, OrchestrationStatus, utcnow
from dfhost.logs import configure_console
from dfhost.runtime.engine import Engine
from dfhost.store import InstanceHolder, Store, StoreError, open_store
from dfhost.work import Message
from tests.e2e.harness import APPS
from tests.waiting import eventually


@pytest.fixture(scope="module")
def app() -> FunctionApp:
    loaded = load_app(APPS / "e2e_v2")
    assert loaded.errors == []
    return loaded


@pytest.fixture
async def hub(tmp_path: Path, app: FunctionApp) -> AsyncIterator[tuple[Store, DurableClient]]:
    os.environ["DFHOST_E2E_STATE"] = str(tmp_path)
    store = open_store(f"sqlite:///{tmp_path / 'hub.sqlite3'}")
    await store.start()
    engine = Engine(app, store)
    await engine.start()
    yield store, DurableClient(store, app)
    await engine.stop()
    await store.close()


async def run(client: DurableClient, name: str, input_text: str | None = None) -> Instance:
    iid = await client.start_new(name, input_text=input_text)
    status = await client.wait_for_completion(iid, timeout=60)
    assert status is not None, f"{name} did not finish"
    return status


async def test_fan_out_of_a_thousand_activities(hub: tuple[Store, DurableClient]) -> None:
    _, client = hub
    status = await run(client, "fanout", "1000")
    assert status.status is OrchestrationStatus.COMPLETED
    assert status.output == str(sum(2 * i for i in range(1000)))


async def test_a_hundred_generations_keep_only_the_last_history(
    hub: tuple[Store, DurableClient],
) -> None:
    _, client = hub
    status = await run(client, "counter", '{"n": 0, "until": 100}')
    assert status.status is OrchestrationStatus.COMPLETED
    assert status.output == "100"
    history = await client.get_history(status.instance_id)
    starts = [e for e in history if e.type is EventType.EXECUTION_STARTED]
    assert len(starts) == 1
    assert starts[0].input == '{"n": 99, "until": 100}'
    assert [e.result for e in history if e.type is EventType.TASK_COMPLETED] == ["198"]


async def test_timers_fire_in_due_order(hub: tuple[Store, DurableClient]) -> None:
    _, client = hub
    status = await run(client, "timers_in_order")
    assert status.output == '["first", "second", "third"]'
    history = await client.get_history(status.instance_id)
    fired = [e for e in history if e.type is EventType.TIMER_FIRED]
    assert [e.fire_at for e in fired] == sorted(e.fire_at for e in fired if e.fire_at)
    for event in fired:
        episode = next(
            e
            for e in history
            if e.type is EventType.ORCHESTRATOR_STARTED and e.timestamp >= event.timestamp
        )
        assert event.fire_at is not None and episode.timestamp >= event.fire_at


async def test_calling_an_unknown_activity_fails_the_orchestration(
    hub: tuple[Store, DurableClient],
) -> None:
    # As on Azure, where the extension refuses the call: no try/except can catch it.
    _, client = hub
    status = await run(client, "calls_unknown")
    assert status.status is OrchestrationStatus.FAILED
    output = json.loads(status.output or "")
    assert output.startswith(
        "Orchestrator function 'calls_unknown' failed: The function 'no_such_activity' doesn't "
        "exist, is disabled, or is not an activity function. Additional info: The following are "
        "the known activity functions: '"
    )
    assert "'say_hello', 'double', 'boom'" in output


async def test_unserializable_result_is_a_task_failure(hub: tuple[Store, DurableClient]) -> None:
    _, client = hub
    status = await run(client, "calls_unserializable")
    assert status.status is OrchestrationStatus.COMPLETED
    # The SDK's serializer explains what's wrong with the value.
    assert "Activity function 'unserializable' failed" in (status.output or "")
    assert "<class 'set'> does not expose a `to_json` function" in (status.output or "")


async def test_unknown_orchestrator_in_the_store_fails_clearly(
    hub: tuple[Store, DurableClient],
) -> None:
    store, _ = hub
    renamed = DurableClient(store)  # no app: starts any name, as an older deployment would
    iid = await renamed.start_new("renamed_away")
    status = await renamed.wait_for_completion(iid, timeout=10)
    assert status is not None and status.status is OrchestrationStatus.FAILED
    assert "'renamed_away' doesn't exist" in (status.output or "")


async def test_malformed_history_row_fails_the_instance(
    tmp_path: Path, hub: tuple[Store, DurableClient]
) -> None:
    _, client = hub
    iid = await client.start_new("waiter")
    await eventually(
        lambda: client.get_status(iid),
        lambda s: s is not None and s.status is OrchestrationStatus.RUNNING,
        timeout=4,
    )
    with sqlite3.connect(tmp_path / "hub.sqlite3") as db:
        db.execute("UPDATE history SET event = '{broken' WHERE instance_id = ? AND seq = 1", (iid,))
    assert await client.raise_event(iid, "Go", '"now"') == "sent"
    status = await client.wait_for_completion(iid, timeout=10)
    assert status is not None and status.status is OrchestrationStatus.FAILED
    assert iid in (status.output or "")


async def test_replayed_orchestrator_logs_are_dropped(hub: tuple[Store, DurableClient]) -> None:
    _, client = hub
    console = io.StringIO()
    configure_console(stream=console)
    try:
        status = await run(client, "chatty")
    finally:
        root = logging.getLogger()
        root.handlers[:] = [h for h in root.handlers if not getattr(h, "_dfhost", False)]
    assert status.output == '"ok"'
    lines = console.getvalue().splitlines()
    # Three episodes replay "chatty starts" three times; only the live run is shown, tagged
    # with the function and instance.
    for message in ("chatty starts", "chatty after first", "chatty done"):
        shown = [line for line in lines if line.endswith(message)]
        assert len(shown) == 1, lines
        assert f"chatty ({status.instance_id}): {message}" in shown[0]
    executing = [line for line in lines if "Executing 'Functions.chatty'" in line]
    executed = [line for line in lines if "Executed 'Functions.chatty' (Succeeded" in line]
    assert len(executing) == len(executed) == 3


class _NullStream:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


async def test_a_chain_runs_without_claim_rounds_or_history_reloads(
    hub: tuple[Store, DurableClient],
) -> None:
    """Each activity is leased by the commit that schedules it, each result's episode by the
    transaction that records it, and each episode gets only the history it lacks."""
    store, client = hub
    seen: dict[str, list[object]] = {
        "claimed": [],
        "chained": [],
        "activities": [],
        "loads": [],
        "held": [],
    }
    claim_episodes, claim_activities = store.claim_episodes, store.claim_activities
    complete, get_history = store.complete_activity, store.get_history
    assert isinstance(store, InstanceHolder)
    commit = store.commit_episode_holding

    async def spy_commit(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("completes") is not None:
            seen["held"].append(len(args[1].history))
        return await commit(*args, **kwargs)

    async def spy_claim_episodes(*args: Any, **kwargs: Any) -> Any:
        works = await claim_episodes(*args, **kwargs)
        seen["claimed"] += [w.history_start for w in works]
        return works

    async def spy_claim_activities(*args: Any, **kwargs: Any) -> Any:
        tasks = await claim_activities(*args, **kwargs)
        seen["activities"] += tasks
        return tasks

    async def spy_complete(*args: Any, **kwargs: Any) -> Any:
        done = await complete(*args, **kwargs)
        if len(args) + len(kwargs) > 2:  # with a claim
            work = None if done is None else done.work
            seen["chained"].append(None if work is None else work.history_start)
        return done

    async def spy_get_history(instance_id: str) -> Any:
        seen["loads"].append(instance_id)
        return await get_history(instance_id)

    store.claim_episodes = spy_claim_episodes  # type: ignore[method-assign]
    store.claim_activities = spy_claim_activities  # type: ignore[method-assign]
    store.complete_activity = spy_complete  # type: ignore[method-assign]
    store.get_history = spy_get_history  # type: ignore[method-assign]
    store.commit_episode_holding = spy_commit  # type: ignore[method-assign]
    status = await run(client, "chain")
    assert status.output == '["Hello Tokyo!", "Hello Seattle!", "Hello London!"]'
    assert seen["claimed"] == [0]  # only the first episode waited for a claim round
    assert seen["activities"] == []
    assert seen["loads"] == []
    # An episode adds 4 events (OrchestratorStarted, the ExecutionStarted or TaskCompleted it
    # delivers, TaskScheduled, OrchestratorCompleted).
    # The instance stays leased to the host while its activity runs, and the episode that
    # takes the result commits with it: no transaction to record the result or lease again.
    assert seen["held"] == [4, 8, 12]
    assert seen["chained"] == []


class WithoutHolds:
    """A store seen without its `InstanceHolder` side."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if name == "commit_episode_holding":
            raise AttributeError(name)
        return getattr(self._store, name)


async def test_a_chain_without_holds_claims_each_episode_with_its_result(
    tmp_path: Path, app: FunctionApp
) -> None:
    """With a store that does not hold instances: the result's transaction leases the
    episode, which gets the history from its predecessor's TaskScheduled on (the one event
    it checks its cached session against)."""
    os.environ["DFHOST_E2E_STATE"] = str(tmp_path)
    store = open_store(f"sqlite:///{tmp_path / 'hub.sqlite3'}")
    await store.start()
    engine = Engine(app, WithoutHolds(store))
    await engine.start()
    chained: list[int | None] = []
    complete = store.complete_activity

    async def spy_complete(*args: Any, **kwargs: Any) -> Any:
        done = await complete(*args, **kwargs)
        if len(args) + len(kwargs) > 2:  # with a claim
            work = None if done is None else done.work
            chained.append(None if work is None else work.history_start)
        return done

    store.complete_activity = spy_complete  # type: ignore[method-assign]
    try:
        status = await run(DurableClient(store, app), "chain")
    finally:
        await engine.stop()
        await store.close()
    assert status.output == '["Hello Tokyo!", "Hello Seattle!", "Hello London!"]'
    assert chained == [2, 6, 10]


async def test_an_event_for_a_held_instance_does_not_wait_for_its_activity(
    hub: tuple[Store, DurableClient], tmp_path: Path
) -> None:
    """The instance is held while its one activity runs; an event raised meanwhile is
    processed once the hold ends, though the activity is still blocked."""
    _, client = hub
    iid = await client.start_new("event_or_activity", input_text='"held-release"')
    started = tmp_path / "held-release.started"

    async def activity_started() -> bool:  # then the hold began
        return started.exists()

    await eventually(activity_started, timeout=10)
    try:
        await client.raise_event(iid, "Go", '"now"')
        status = await client.wait_for_completion(iid, timeout=10)
        assert status is not None and status.output == '"event"'
    finally:
        (tmp_path / "held-release").write_text("done")


async def test_a_failed_commit_releases_the_instance_and_the_episode_runs_again(
    hub: tuple[Store, DurableClient],
) -> None:
    store, client = hub
    assert isinstance(store, InstanceHolder)  # the engine commits with the holding variant
    commit = store.commit_episode_holding
    failures: list[str] = []

    async def flaky_commit(owner: str, work: Any, outcome: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append(work.instance.instance_id)
            raise StoreError("disk I/O error")
        return await commit(owner, work, outcome, **kwargs)

    store.commit_episode_holding = flaky_commit  # type: ignore[method-assign]
    status = await run(client, "chain")  # within 60 s: far less than the 5-minute lease
    assert status.output == '["Hello Tokyo!", "Hello Seattle!", "Hello London!"]'
    assert failures == [status.instance_id]


async def test_work_left_behind_for_want_of_capacity_is_claimed_when_capacity_frees(
    tmp_path: Path, app: FunctionApp
) -> None:
    """Chains outnumbering the engine's slots all finish: finishing work wakes the dispatch
    loop whenever its last claim may have left some behind (a lost wake-up stalls the hub)."""
    os.environ["DFHOST_E2E_STATE"] = str(tmp_path)
    store = open_store(f"sqlite:///{tmp_path / 'hub.sqlite3'}")
    await store.start()
    engine = Engine(app, store)
    engine.max_episodes = engine.max_activities = 3
    await engine.start()
    try:
        client = DurableClient(store, app)
        ids = [await client.start_new("chain") for _ in range(40)]
        for iid in ids:
            status = await client.wait_for_completion(iid, timeout=60)
            assert status is not None and status.status is OrchestrationStatus.COMPLETED
    finally:
        await engine.stop()
        await store.close()


async def test_a_message_that_comes_due_during_a_slow_claim_is_not_lost(
    hub: tuple[Store, DurableClient],
) -> None:
    """The claim round reads the task hub as of one instant; the next due time must be
    computed for that same instant, or a message that became visible while the claim was
    queued (a timer, or an instance whose lease ended) would wait for an unrelated wake-up."""
    store, client = hub
    iid = await client.start_new("waiter")
    await eventually(
        lambda: client.get_status(iid),
        lambda s: s is not None and s.status is OrchestrationStatus.RUNNING,
        timeout=20,
    )
    claim = store.claim_episodes

    async def slow_claim(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.1)  # a busy task hub: the claim runs after the message is due
        return await claim(*args, **kwargs)

    store.claim_episodes = slow_claim  # type: ignore[method-assign]
    go = HistoryEvent(type=EventType.EVENT_RAISED, timestamp=utcnow(), name="Go", input='"late"')
    due = utcnow() + timedelta(milliseconds=30)
    await store.send_message(Message(instance_id=iid, event=go, visible_at=due))
    status = await client.wait_for_completion(iid, timeout=5)
    assert status is not None and status.output == '"late"'


async def test_waiting_for_completion_answers_when_this_host_finishes_it(
    hub: tuple[Store, DurableClient],
) -> None:
    """The commit that ends the instance wakes the waiter: no polling interval to wait out."""
    _, client = hub
    iid = await client.start_new("chain")
    # A 60 s poll would outlast the bound: only the store's signal can answer within it.
    waiting = client.wait_for_completion(iid, timeout=120, interval=60)
    status = await asyncio.wait_for(waiting, 10)
    assert status is not None and status.status is OrchestrationStatus.COMPLETED


@pytest.mark.parametrize(
    ("host_json", "env"),
    [
        ({"extensions": {"durableTask": {"ExtendedSessionsEnabled": False}}}, {}),
        ({}, {"AzureFunctionsJobHost__extensions__durableTask__extendedSessionsEnabled": "false"}),
    ],
    ids=["other casing", "environment override"],
)
async def test_extended_sessions_can_be_turned_off(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    host_json: dict[str, Any],
    env: dict[str, str],
) -> None:
    # Both were ignored before host.json was read in one place (dfhost.config).
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0", **host_json}))
    (tmp_path / "function_app.py").write_text(
        "import azure.durable_functions as df\n"
        "app = df.DFApp()\n"
        "@app.orchestration_trigger(context_name='context')\n"
        "def orch(context):\n"
        "    return 1\n"
    )
    store = open_store(f"sqlite:///{tmp_path / 'hub.sqlite3'}")
    assert Engine(load_app(tmp_path), store).sessions is None
    monkeypatch.delenv(next(iter(env), "UNSET_NAME"), raising=False)
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0"}))
    assert Engine(load_app(tmp_path), store).sessions is not None
