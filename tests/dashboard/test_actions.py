"""The dashboard's actions: each one through the client, its clear error when it does not
apply, the redirect with a one-time message, and bulk actions on the list's filter."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from dfhost.client import DurableClient
from dfhost.history import EventType, OrchestrationStatus
from tests.builders import fixed_clock
from tests.web.conftest import finish, pending

from .conftest import FORM, JSON, Dash, flash_of

Status = OrchestrationStatus


async def test_start_redirects_to_the_new_instance_with_a_message(dash: Dash) -> None:
    response = await dash.act(action="start", name="chain", instance_id="s1", input='{"a": 1}')
    assert response.headers["location"].startswith("/dashboard/instance?id=s1&flash=")
    html = await dash.follow(response)
    assert flash_of(html) == "ok: Started 's1' (chain)."
    instance = await dash.client.get_status("s1")
    assert instance is not None and instance.input == '{"a": 1}'
    # The message is shown once: the same address again has none.
    again = await dash.page(response.headers["location"])
    assert 'class="flash' not in again


async def test_start_refuses_bad_input_with_one_line(dash: Dash) -> None:
    message = await dash.act_json(400, action="start", name="chain", input="{nope")
    assert message.startswith("input is not valid JSON: Expecting property name")
    message = await dash.act_json(400, action="start", name="missing")
    assert "The function 'missing' doesn't exist" in message
    message = await dash.act_json(400, action="start", name="chain", instance_id="a/b")
    assert "contains invalid characters" in message
    assert await dash.act_json(400, action="start", name=" ") == "an orchestrator name is required"
    await dash.client.start_new("chain", "taken")
    message = await dash.act_json(409, action="start", name="chain", instance_id="taken")
    assert "already exists" in message
    # As a form post the refusal comes back as the page's error message.
    response = await dash.act(action="start", name="chain", input="[1,")
    assert flash_of(await dash.follow(response)).startswith("err: input is not valid JSON")


async def test_raise_event_delivers_json_data(dash: Dash) -> None:
    await dash.client.start_new("waiter", "w1")
    message = await dash.act_json(
        200, action="raise", instance_id="w1", event_name="Go", event_data='{"ok": true}'
    )
    assert message == "Raised event 'Go' on 'w1'."
    raised = [m.event for m in await pending(dash.store, "w1")]
    assert [(e.type, e.name, e.input) for e in raised[1:]] == [
        (EventType.EVENT_RAISED, "Go", '{"ok": true}')
    ]
    message = await dash.act_json(
        400, action="raise", instance_id="w1", event_name="Go", event_data="{bad"
    )
    assert message.startswith("event data is not valid JSON")
    message = await dash.act_json(400, action="raise", instance_id="w1", event_name="")
    assert message == "an event name is required"


async def test_actions_on_unknown_or_finished_instances_say_why(dash: Dash) -> None:
    message = await dash.act_json(404, action="terminate", instance_id="ghost")
    assert message == "No instance with ID 'ghost' found."
    await dash.client.start_new("chain", "over")
    await finish(dash.store, "over", Status.COMPLETED)
    for action in ("terminate", "suspend", "resume", "rewind"):
        message = await dash.act_json(410, action=action, instance_id="over")
        assert message == "Instance 'over' is Completed: the action does not apply to it."
    message = await dash.act_json(410, action="raise", instance_id="over", event_name="E")
    assert "is Completed" in message


async def test_terminate_suspend_and_resume_send_their_events_with_the_reason(dash: Dash) -> None:
    await dash.client.start_new("waiter", "w2")
    for action in ("suspend", "resume", "terminate"):
        await dash.act_json(200, action=action, instance_id="w2", reason=f"{action} it")
    events = [m.event for m in await pending(dash.store, "w2")][1:]
    assert [e.type for e in events] == [
        EventType.EXECUTION_SUSPENDED,
        EventType.EXECUTION_RESUMED,
        EventType.EXECUTION_TERMINATED,
    ]
    assert events[0].reason == "suspend it"
    assert events[2].input == json.dumps("terminate it")


async def test_rewind_applies_to_failed_instances(dash: Dash) -> None:
    await dash.client.start_new("failing", "bad")
    await finish(dash.store, "bad", Status.FAILED, '"boom"')
    message = await dash.act_json(200, action="rewind", instance_id="bad", reason="fixed")
    assert message == "Rewind requested for 'bad'."


async def test_restart_under_a_new_or_the_same_id(dash: Dash) -> None:
    await dash.client.start_new("chain", "r1", '"in"')
    message = await dash.act_json(409, action="restart", instance_id="r1")  # same id, running
    assert "Terminate it first" in message
    response = await dash.act(action="restart", instance_id="r1", new_id="on")
    new_id = response.headers["location"].split("id=", 1)[1].split("&", 1)[0]
    assert new_id != "r1"
    restarted = await dash.client.get_status(new_id)
    assert restarted is not None and restarted.input == '"in"' and restarted.name == "chain"
    await finish(dash.store, "r1", Status.COMPLETED)
    assert await dash.act_json(200, action="restart", instance_id="r1") == (
        "Restarted 'r1' as 'r1'."
    )
    assert await dash.act_json(404, action="restart", instance_id="ghost") == (
        "No instance with ID 'ghost' found."
    )


async def test_purge_deletes_the_instance_and_goes_back_to_the_list(dash: Dash) -> None:
    await dash.client.start_new("chain", "p1")
    response = await dash.act(action="purge", instance_id="p1")
    assert response.headers["location"].startswith("/dashboard/?flash=")
    assert flash_of(await dash.follow(response)) == "ok: Purged 'p1' and its history."
    assert await dash.client.get_status("p1") is None
    assert await dash.act_json(404, action="purge", instance_id="p1") == (
        "No instance with ID 'p1' found."
    )


async def test_run_now_calls_the_timer_runner(dash: Dash) -> None:
    assert await dash.act_json(200, action="run", function="tick") == (
        "Started timer function 'tick'."
    )
    dash.timers.result = "busy"
    assert "running already" in await dash.act_json(409, action="run", function="tick")
    dash.timers.result = "not_found"
    assert "No timer-triggered function named 'nope'" in await dash.act_json(
        404, action="run", function="nope"
    )
    assert dash.timers.calls == ["tick", "tick", "nope"]


async def test_bulk_actions_apply_to_the_filter_and_the_statuses_they_concern(dash: Dash) -> None:
    for iid, name in (("wa", "waiter"), ("wb", "waiter"), ("wc", "waiter"), ("ch", "chain")):
        await dash.client.start_new(name, iid)
    await finish(dash.store, "wc", Status.COMPLETED)
    response = await dash.act(action="bulk", bulk="terminate", name="waiter", reason="bulk")
    assert response.headers["location"].startswith("/dashboard/?name=waiter&flash=")
    assert flash_of(await dash.follow(response)) == "ok: Bulk terminate: 2 instance(s)."
    for iid in ("wa", "wb"):
        events = [m.event for m in await pending(dash.store, iid)]
        assert events[-1].type is EventType.EXECUTION_TERMINATED
    assert [m.event.type for m in await pending(dash.store, "ch")] == [EventType.EXECUTION_STARTED]

    # Purge deletes finished instances only, and only those the page showed (as_of).
    message = await dash.act_json(200, action="bulk", bulk="purge", name="waiter")
    assert message == "Purged 1 finished instance(s) and their history."
    assert await dash.client.get_status("wc") is None
    assert await dash.client.get_status("wa") is not None


async def test_bulk_actions_leave_out_instances_created_after_the_page_was_shown(
    dash: Dash,
) -> None:
    shown_at = datetime(2026, 3, 1, tzinfo=UTC)
    for n, iid in enumerate(("old", "new")):
        client = DurableClient(
            dash.store, dash.client.app, clock=fixed_clock(shown_at + timedelta(seconds=2 * n - 1))
        )
        await client.start_new("waiter", iid)
    message = await dash.act_json(
        200, action="bulk", bulk="suspend", status="Pending", as_of=shown_at.isoformat()
    )
    assert message == "Bulk suspend: 1 instance(s)."
    assert [m.event.type for m in await pending(dash.store, "new")] == [EventType.EXECUTION_STARTED]


async def test_bulk_refuses_what_does_not_apply(dash: Dash) -> None:
    message = await dash.act_json(200, action="bulk", bulk="resume", status="Running")
    assert message == "Bulk resume applies to none of the selected statuses."
    assert await dash.act_json(400, action="bulk", bulk="explode") == (
        "unknown bulk action 'explode'"
    )
    message = await dash.act_json(400, action="bulk", bulk="purge", status="Nope")
    assert message.startswith("status 'Nope' is not one of")


async def test_malformed_action_requests_are_refused(dash: Dash) -> None:
    assert await dash.act_json(400, action="explode") == "unknown action 'explode'"
    response = await dash.http.post(
        "/dashboard/actions", json={"action": "purge"}, headers={"accept": "application/json"}
    )
    assert response.status_code == 400
    assert "form posts" in response.json()["message"]
    response = await dash.http.post("/dashboard/actions", content=b"\xff\xfe", headers=FORM)
    assert response.status_code == 400 and "UTF-8" in response.text
    # Only POST changes anything.
    assert (await dash.http.get("/dashboard/actions?action=purge&instance_id=x")).status_code == 405
    assert JSON["accept"] == "application/json"
