"""`dfhost.orchestration.entities.run_batch` on hand-made inboxes: batches, rollback of failed
operations, deletion, responses to callers; and the client's checks of entity ids."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dfhost.app.functions import FunctionApp
from dfhost.app.loader import load_app
from dfhost.client import DurableClient, UnknownEntityError
from dfhost.history import EventType, HistoryEvent, Instance, OrchestrationStatus
from dfhost.ids import InvalidInstanceIdError
from dfhost.orchestration.entities import EntityId, Operation, run_batch
from dfhost.store import open_store
from dfhost.work import EpisodeOutcome, EpisodeWork, Message

APPS = Path(__file__).resolve().parents[1] / "apps"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
T1 = datetime(2024, 1, 1, 0, 0, 5, tzinfo=UTC)

pytestmark = pytest.mark.filterwarnings(
    "ignore:azure.functions df_loads was called without expected_type:DeprecationWarning"
)


@pytest.fixture(scope="module", params=["entities_v1", "entities_v2"])
def app(request: pytest.FixtureRequest) -> FunctionApp:
    loaded = load_app(APPS / request.param)
    assert loaded.errors == []
    return loaded


def call(name: str, value: Any = None, *, request_id: str | None = None) -> Operation:
    """An operation from an orchestrator (`call_entity`), answered to `caller`/`exec-1`."""
    return Operation(
        name=name,
        input=json.dumps(value),
        signal=False,
        request_id=request_id or f"req-{name}",
        parent_instance_id="caller",
        parent_execution_id="exec-1",
    )


def signal(name: str, value: Any = None) -> Operation:
    return Operation.signal_from_client(name, json.dumps(value))


def batch(
    app: FunctionApp, entity: str, state: Any, *operations: Operation, raw_state: str | None = None
) -> EpisodeOutcome:
    """Run one batch of `operations` for `@entity@k` whose state is `state` (None: none)."""
    entity_id = EntityId.of(entity, "k")
    instance = Instance(
        instance_id=entity_id.instance_id,
        name=entity_id.name,
        execution_id="e",
        status=OrchestrationStatus.RUNNING,
        created_at=T0,
        last_updated_at=T0,
        custom_status=raw_state if raw_state is not None else _state_text(state),
    )
    started = HistoryEvent(type=EventType.EXECUTION_STARTED, timestamp=T0)
    messages = [Message(instance_id=entity_id.instance_id, event=started)]
    messages += [op.message(entity_id, T0) for op in operations]
    work = EpisodeWork(instance=instance, history=[], messages=messages, lease_token=1)
    function = app.entity(entity)
    return run_batch(function.handler if function else None, entity_id, work, T1)


def _state_text(state: Any) -> str | None:
    return None if state is None else json.dumps(state)


def state_of(outcome: EpisodeOutcome) -> Any:
    text = outcome.instance.custom_status
    return None if text is None else json.loads(text)


def responses(outcome: EpisodeOutcome) -> dict[str, Any]:
    """Request id -> (the SDK's ResponseMessage as a dict), for every response sent."""
    found = {}
    for message in outcome.messages:
        assert (message.instance_id, message.execution_id) == ("caller", "exec-1")
        assert message.event.type is EventType.EVENT_RAISED
        found[message.event.name or ""] = json.loads(message.event.input or "")
    return found


def test_a_batch_runs_every_operation_in_order(app: FunctionApp) -> None:
    outcome = batch(app, "Counter", None, signal("add", 2), call("get"), signal("add", 3))
    assert state_of(outcome) == 5
    assert outcome.instance.status is OrchestrationStatus.RUNNING
    assert outcome.instance.last_updated_at == T1
    assert outcome.new_events == []
    # Signals get no response; the call's result is JSON text inside the JSON response.
    assert responses(outcome) == {"req-get": {"result": "2"}}


def test_a_failed_operation_leaves_the_state_and_later_ones_still_apply(
    app: FunctionApp,
) -> None:
    outcome = batch(app, "counter", 10, call("fail"), call("get", request_id="a"), signal("add", 1))
    assert state_of(outcome) == 11  # not 1011: "fail" added 1000 before raising
    assert responses(outcome) == {
        "req-fail": {"result": '"nope"', "exceptionType": "Error"},
        "a": {"result": "10"},
    }


def test_a_failed_operation_that_changed_the_state_in_place_is_undone(
    app: FunctionApp,
) -> None:
    outcome = batch(
        app,
        "Ledger",
        ["a"],
        call("push", "b", request_id="1"),
        call("push_then_fail", "x", request_id="2"),
        call("push", "c", request_id="3"),
    )
    assert state_of(outcome) == ["a", "b", "c"]
    answers = responses(outcome)
    assert answers["1"] == {"result": "2"} and answers["3"] == {"result": "3"}
    assert answers["2"]["exceptionType"] == "Error"
    assert json.loads(answers["2"]["result"]) == "refused after changing the state in place"


def test_a_failure_before_any_change_keeps_the_stored_text(app: FunctionApp) -> None:
    outcome = batch(app, "counter", None, call("fail"), raw_state="41")
    assert outcome.instance.custom_status == "41"


def test_destruct_on_exit_deletes_the_state(app: FunctionApp) -> None:
    assert batch(app, "counter", 3, signal("delete")).instance.custom_status is None
    # An operation after the deletion, in the same batch, starts from nothing.
    assert state_of(batch(app, "counter", 3, signal("delete"), signal("add", 4))) == 4


def test_inputs_are_decoded_as_the_sdk_expects(app: FunctionApp) -> None:
    outcome = batch(app, "ledger", None, signal("push", {"a": [1, "x"]}), signal("push", None))
    assert state_of(outcome) == [{"a": [1, "x"]}, None]


def test_operations_for_a_missing_entity_function_fail_and_change_nothing(
    app: FunctionApp,
) -> None:
    outcome = batch(app, "Ghost", 1, call("get"), signal("add", 1))
    assert state_of(outcome) == 1
    answer = responses(outcome)["req-get"]
    assert answer["exceptionType"] == "Error"
    assert "'ghost' doesn't exist" in json.loads(answer["result"])


def test_other_messages_are_consumed_without_running_anything(app: FunctionApp) -> None:
    outcome = batch(app, "counter", 5)
    assert state_of(outcome) == 5
    assert outcome.instance.last_updated_at == T0  # no operation ran
    assert outcome.messages == []


def test_a_state_that_does_not_serialize_fails_the_batch_and_keeps_the_old_state(
    app: FunctionApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    function = app.entity("counter")
    assert function is not None

    def unserializable(context: Any) -> None:
        context.set_state(object())

    handler = function.handler
    monkeypatch.setattr(handler, "entity_function", unserializable)
    outcome = batch(app, "counter", 2, call("get"))
    assert state_of(outcome) == 2
    answer = responses(outcome)["req-get"]
    assert "failed: TypeError" in json.loads(answer["result"])


def test_entity_ids() -> None:
    entity = EntityId.of("Counter", "Key@1")
    assert entity.instance_id == "@counter@Key@1"
    assert EntityId.parse("@counter@Key@1") == entity
    assert EntityId.parse("@counter@") == EntityId("counter", "")
    assert [EntityId.parse(i) for i in ("counter@k", "@counter", "@@k")] == [None] * 3
    with pytest.raises(ValueError, match="must not contain '@'"):
        EntityId.of("a@b", "k")


async def test_the_client_refuses_bad_entity_ids_and_reserved_instance_ids(
    app: FunctionApp,
) -> None:
    client = DurableClient(open_store("sqlite://:memory:"), app)  # refused before any I/O
    with pytest.raises(InvalidInstanceIdError, match="must not contain '@'"):
        await client.signal_entity("a@b", "k", "add", "1")
    with pytest.raises(InvalidInstanceIdError, match="invalid characters"):
        await client.signal_entity("counter", "a/b", "add", "1")
    with pytest.raises(UnknownEntityError, match=r"known entity functions: .*Ledger"):
        await client.signal_entity("nope", "k", "add", "1")
    with pytest.raises(InvalidInstanceIdError, match="reserved for entities"):
        await client.start_new("CounterOrchestrator", "@counter@k")


def test_responses_are_sent_to_the_calling_execution(app: FunctionApp) -> None:
    outcome = batch(app, "counter", 1, replace(call("get"), parent_execution_id="exec-2"))
    (message,) = outcome.messages
    assert (message.instance_id, message.execution_id) == ("caller", "exec-2")
