"""The dashboard's pages, in process: the list with its filters, counts and paging, the instance
page, the functions page, downloads, and what every page answers to bad input."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest

from dfhost.app.functions import FunctionApp
from dfhost.app.loader import load_app
from dfhost.client import DurableClient
from dfhost.history import EventType, HistoryEvent, OrchestrationStatus, utcnow
from dfhost.runtime.engine import Engine
from dfhost.store import Claim, Store, TimerStatus
from dfhost.web import build_app
from dfhost.work import EpisodeOutcome, StartRequest
from tests.builders import fixed_clock
from tests.web.conftest import asgi, finish

from .conftest import APPS, Dash, FakeTimers, history_table, instance_links, text_of

Status = OrchestrationStatus
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def some_instances(dash: Dash) -> None:
    """pending (chain), done (chain, Completed), broken (failing, Failed), each a second apart."""
    for n, (iid, name) in enumerate(
        (("pending", "chain"), ("done", "chain"), ("broken", "failing"))
    ):
        client = DurableClient(
            dash.store, dash.client.app, clock=fixed_clock(T0 + timedelta(seconds=n))
        )
        await client.start_new(name, iid)
    await finish(dash.store, "done", Status.COMPLETED, '"ok"')
    await finish(dash.store, "broken", Status.FAILED, '"it broke"')


async def test_the_list_shows_instances_newest_first_with_counts_per_status(dash: Dash) -> None:
    await some_instances(dash)
    html = await dash.page("/dashboard/")
    assert instance_links(html) == ["broken", "done", "pending"]
    text = text_of(html)
    for expected in ("All 3", "Pending 1", "Completed 1", "Failed 1", "Running 0"):
        assert expected in text
    assert "Rows 1\N{EN DASH}3 of 3" in text


async def test_filters_are_applied_and_kept_in_the_url(dash: Dash) -> None:
    await some_instances(dash)
    html = await dash.page("/dashboard/?status=Failed")
    assert instance_links(html) == ["broken"]
    assert 'value="Failed" checked' in html
    # The counts stay per status, for the other filters, so each chip says what it would show.
    assert "Completed 1" in text_of(html)

    assert instance_links(await dash.page("/dashboard/?status=Pending,Completed")) == [
        "done",
        "pending",
    ]
    html = await dash.page("/dashboard/?name=chain")
    assert instance_links(html) == ["done", "pending"]
    assert 'name="name" value="chain"' in html
    assert instance_links(await dash.page("/dashboard/?prefix=pe")) == ["pending"]
    assert instance_links(await dash.page("/dashboard/?name=chain&status=Completed")) == ["done"]
    html = await dash.page("/dashboard/?name=nothing")
    assert "No instance matches this filter." in text_of(html)
    # The status chips keep the other filters in their links.
    assert 'href="/dashboard/?status=Failed&amp;name=chain"' in await dash.page(
        "/dashboard/?name=chain"
    )


async def test_the_time_range_filter_is_inclusive_and_in_utc(dash: Dash) -> None:
    await some_instances(dash)
    html = await dash.page("/dashboard/?from=2026-03-01T12:00:01&to=2026-03-01T12:00:02")
    assert instance_links(html) == ["broken", "done"]
    assert 'name="from" value="2026-03-01T12:00:01"' in html
    # datetime-local without seconds, and ISO with an offset, are read too.
    assert instance_links(await dash.page("/dashboard/?to=2026-03-01T12:00")) == ["pending"]
    offset = quote("2026-03-01T13:00:01+01:00")
    html = await dash.page(f"/dashboard/?from={offset}")
    assert instance_links(html) == ["broken", "done"]
    assert 'name="from" value="2026-03-01T12:00:01"' in html  # shown in UTC


async def test_a_bad_filter_is_refused_with_one_line(dash: Dash) -> None:
    await some_instances(dash)
    html = await dash.page("/dashboard/?status=Sleeping", status=400)
    assert "status 'Sleeping' is not one of: Pending, Running" in text_of(html)
    html = await dash.page("/dashboard/?from=yesterday", status=400)
    assert "'from' 'yesterday' is not a date and time" in text_of(html)
    assert "Traceback" not in html


async def test_pages_through_many_instances_by_continuation(dash: Dash) -> None:
    for n in range(45):
        client = DurableClient(
            dash.store, dash.client.app, clock=fixed_clock(T0 + timedelta(seconds=n))
        )
        await client.start_new("chain", f"i{n:02d}")
    html = await dash.page("/dashboard/?top=20")
    seen = instance_links(html)
    assert seen == [f"i{n:02d}" for n in range(44, 24, -1)]
    pages = 1
    while match := re.search(r'<a class="button" href="([^"]+)" rel="next">', html):
        html = await dash.page(match.group(1).replace("&amp;", "&"))
        seen += instance_links(html)
        pages += 1
    assert pages == 3
    assert seen == [f"i{n:02d}" for n in range(44, -1, -1)]
    assert "Rows 41\N{EN DASH}45 of 45" in text_of(html)
    assert "« First page" in html

    html = await dash.page("/dashboard/?after=not-a-token&page=4")
    assert "That page link is no longer valid" in text_of(html)
    assert len(instance_links(html)) == 45


async def test_auto_refresh_is_chosen_in_the_url(dash: Dash) -> None:
    assert 'data-refresh="5"' in await dash.page("/dashboard/?refresh=5")
    assert 'data-refresh="0"' in await dash.page("/dashboard/?refresh=7")
    assert 'data-refresh="0"' in await dash.page("/dashboard/")


async def test_the_instance_page_shows_input_output_custom_status_and_the_error(
    dash: Dash,
) -> None:
    await dash.client.start_new("failing", "f1", '{"city": "Oslo"}')
    await finish(dash.store, "f1", Status.FAILED, json.dumps("Orchestrator function failed: boom"))
    instance = await dash.client.get_status("f1")
    assert instance is not None
    html = await dash.page("/dashboard/instance?id=f1")
    text = text_of(html)
    assert "Failed" in text and "failing" in text
    assert '"city": "Oslo"' in text  # pretty-printed input
    assert "Orchestrator function failed: boom" in text
    assert 'id="rewind"' in html and 'id="terminate"' not in html  # actions fit the status


async def test_failure_details_are_shown_as_the_stack(dash: Dash) -> None:
    await dash.client.start_new("failing", "f2")
    now = utcnow()
    events = [
        HistoryEvent(type=EventType.TASK_SCHEDULED, timestamp=now, event_id=0, name="boom"),
        HistoryEvent(
            type=EventType.TASK_FAILED,
            timestamp=now,
            task_scheduled_id=0,
            reason="Activity function 'boom' failed: ValueError: kaboom",
            details='Traceback (most recent call last):\n  File "app.py", line 40',
        ),
    ]
    await finish(dash.store, "f2", Status.FAILED, '"failed"', events)
    html = await dash.page("/dashboard/instance?id=f2&htype=failures")
    text = text_of(html)
    assert "Activity function 'boom' failed: ValueError: kaboom" in text
    assert 'File "app.py", line 40' in text
    rows = history_table(html)
    assert "TaskScheduled" not in rows
    assert "TaskFailed" in rows and "ExecutionCompleted" in rows


async def test_the_history_is_paged_and_filtered_by_event_type(dash: Dash) -> None:
    await dash.client.start_new("fanout", "big")
    now = utcnow()
    events = [
        HistoryEvent(type=EventType.TASK_SCHEDULED, timestamp=now, event_id=n, name="double")
        for n in range(230)
    ]
    events += [
        HistoryEvent(
            type=EventType.TASK_COMPLETED, timestamp=now, task_scheduled_id=n, result=str(2 * n)
        )
        for n in range(230)
    ]
    await finish(dash.store, "big", Status.COMPLETED, "0", events)
    html = await dash.page("/dashboard/instance?id=big")
    text = text_of(html)
    assert "463 events" in text  # episode start, ExecutionStarted, 460 tasks, completion
    assert "page 1 of 5" in text
    # The timeline draws the first 200 tasks and says how many it left out.
    assert "30 more task(s) not drawn" in text
    html = await dash.page("/dashboard/instance?id=big&htype=TaskCompleted&hpage=2")
    assert "page 2 of 3 (230 events)" in text_of(html)
    rows = history_table(html)
    assert "double (of #100)" in rows and "double (of #199)" in rows
    assert "double (of #99)" not in rows and "double (of #200)" not in rows
    assert "TaskScheduled" not in rows
    # Out-of-range pages show the last one.
    html = await dash.page("/dashboard/instance?id=big&htype=TaskCompleted&hpage=99")
    assert "page 3 of 3" in text_of(html)


async def test_parent_and_child_link_to_each_other_and_the_timeline_shows_the_child(
    dash: Dash,
) -> None:
    await dash.client.start_new("parent", "mom")
    now = utcnow()
    child = StartRequest(
        instance_id="kid",
        name="chain",
        execution_id="k1",
        created_at=now,
        parent_instance_id="mom",
        parent_execution_id="m1",
        parent_task_id=0,
    )
    await dash.store.create_instance(child)
    events = [
        HistoryEvent(
            type=EventType.SUB_ORCHESTRATION_CREATED,
            timestamp=now,
            event_id=0,
            name="chain",
            instance_id="kid",
        ),
        HistoryEvent(
            type=EventType.SUB_ORCHESTRATION_COMPLETED,
            timestamp=now + timedelta(seconds=2),
            task_scheduled_id=0,
            result="[]",
        ),
    ]
    await finish(dash.store, "mom", Status.COMPLETED, "{}", events)
    html = await dash.page("/dashboard/instance?id=mom")
    assert html.count('href="/dashboard/instance?id=kid"') >= 2  # sub-orchestrations, timeline
    assert "sub-orch." in html
    kid = await dash.page("/dashboard/instance?id=kid")
    assert 'href="/dashboard/instance?id=mom"' in kid
    assert "Parent" in text_of(kid)


async def test_a_running_instance_says_what_it_waits_for(dash: Dash) -> None:
    await dash.client.start_new("approval", "ask")
    now = utcnow()
    due = now - timedelta(minutes=3)
    (item,) = await dash.store.claim_episodes(
        Claim(owner="tests", now=now, lease_until=now + timedelta(minutes=1)), 10
    )
    await dash.store.commit_episode(
        "tests",
        item,
        EpisodeOutcome(
            instance=replace(item.instance, status=Status.RUNNING, last_updated_at=now),
            new_events=[
                HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=now),
                *(m.event for m in item.messages),
                HistoryEvent(type=EventType.TIMER_CREATED, timestamp=now, event_id=0, fire_at=due),
                HistoryEvent(type=EventType.ORCHESTRATOR_COMPLETED, timestamp=now),
            ],
        ),
    )
    text = text_of(await dash.page("/dashboard/instance?id=ask"))
    assert "Waiting on" in text
    assert "overdue by 3m00s" in text
    assert "may be waiting for one too" in text


async def test_a_missing_instance_is_a_404_page_and_go_finds_instances(dash: Dash) -> None:
    await some_instances(dash)
    html = await dash.page("/dashboard/instance?id=nope", status=404)
    assert "No instance with ID nope" in text_of(html)
    await dash.page("/dashboard/instance", status=404)

    response = await dash.http.get("/dashboard/go?id=done")
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/instance?id=done"
    response = await dash.http.get("/dashboard/go?id=do")
    assert response.headers["location"] == "/dashboard/?prefix=do"


async def test_the_history_downloads_as_json(dash: Dash) -> None:
    await some_instances(dash)
    response = await dash.http.get("/dashboard/instance/history.json?id=done")
    assert response.status_code == 200
    assert 'filename="history-done.json"' in response.headers["content-disposition"]
    body = response.json()
    assert body["instance"]["runtimeStatus"] == "Completed"
    assert [e["type"] for e in body["history"]][-1] == int(EventType.EXECUTION_COMPLETED)
    missing = await dash.http.get("/dashboard/instance/history.json?id=nope")
    assert missing.status_code == 404


async def test_the_functions_page_lists_every_function_with_trigger_and_bindings(
    dash: Dash,
) -> None:
    html = await dash.page("/dashboard/functions")
    text = text_of(html)
    for name in ("chain", "say_hello", "http_start"):
        assert name in text
    assert "orchestrationTrigger" in text and "activityTrigger" in text
    assert "route orchestrators/{functionName}/{instanceId?}" in text
    assert "client durableClient in" in text
    assert "This app has no timer-triggered function." in text


async def test_timers_show_schedule_last_and_next_run_and_a_run_now_button(
    hub: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TICK_SCHEDULE", raising=False)
    app = load_app(APPS / "timers_v2")
    last = datetime(2026, 1, 1, tzinfo=UTC)
    following = datetime(2027, 1, 1, 0, 1, tzinfo=UTC)
    await hub.set_timer_status(
        "every_minute", TimerStatus(last=last, next=following, last_updated=last)
    )
    timers = FakeTimers()
    web_app = build_app(
        DurableClient(hub, app), app, rpc_base_url="http://x/", run_function=timers.run_now
    )
    async with asgi(web_app) as http:
        response = await http.get("/dashboard/functions")
    assert response.status_code == 200
    table = response.text.split('id="timers"', 1)[1].split("</table>", 1)[0]
    rows = {text_of(row).split(" ", 1)[0]: row for row in table.split("<tr>")[2:]}
    minute = text_of(rows["every_minute"])
    assert "0 * * * * *" in minute and "monitored" in minute
    assert "2026-01-01 00:00:00Z" in minute and "2027-01-01 00:01:00Z" in minute
    assert 'value="every_minute"' in rows["every_minute"]  # its run-now form
    # tick's schedule names an app setting that is not set: shown, and nothing to run.
    assert "not scheduled: app setting 'TICK_SCHEDULE' is not set" in text_of(rows["tick"])
    assert "Run now" not in rows["tick"]
    # starter is monitored (a yearly schedule) but has no status yet: it never ran, and its
    # next run comes from the schedule.
    assert "never" in text_of(rows["starter"]) and "-01-01 00:00:00Z" in text_of(rows["starter"])


async def test_without_the_timer_runner_there_is_no_run_now(hub: Store) -> None:
    app = load_app(APPS / "timers_v1")
    web_app = build_app(DurableClient(hub, app), app, rpc_base_url="http://x/")
    async with asgi(web_app) as http:
        text = text_of((await http.get("/dashboard/functions")).text)
    assert "not recorded (useMonitor is off)" in text  # Tick
    assert "BadSchedule" in text and "not scheduled:" in text
    assert "Run now needs the host's timer runner" in text


async def test_entities_are_listed_with_their_state(dash: Dash) -> None:
    now = utcnow()
    for key in ("k1", "k2"):
        await dash.store.create_instance(
            StartRequest(
                instance_id=f"@counter@{key}", name="counter", execution_id=key, created_at=now
            )
        )
    claimed = await dash.store.claim_episodes(
        Claim(owner="tests", now=now, lease_until=now + timedelta(minutes=1)), 10
    )
    work = next(w for w in claimed if w.instance.instance_id == "@counter@k1")
    for other in claimed:
        if other is not work:
            await dash.store.abandon_episode("tests", other)
    await dash.store.commit_episode(
        "tests",
        work,
        EpisodeOutcome(
            instance=replace(work.instance, status=Status.RUNNING, custom_status='{"count": 3}'),
            new_events=[m.event for m in work.messages],
        ),
    )
    await dash.client.start_new("chain", "not-an-entity")
    html = await dash.page("/dashboard/functions")
    entities = text_of(html.split('id="entities"', 1)[1])
    assert "counter k1" in entities and '{"count": 3}' in entities
    assert "counter k2" in entities and "none (not created yet, or deleted)" in entities
    assert "not-an-entity" not in entities
    assert "Entities (2)" in text_of(html)


async def test_pages_carry_a_strict_content_security_policy(dash: Dash) -> None:
    response = await dash.http.get("/dashboard/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    css = await dash.http.get("/dashboard/static/dashboard.css")
    assert css.status_code == 200 and "prefers-color-scheme: dark" in css.text
    js = await dash.http.get("/dashboard/static/dashboard.js")
    assert js.status_code == 200 and "confirm" in js.text
    redirect = await dash.http.get("/dashboard")
    assert redirect.status_code == 308 and redirect.headers["location"] == "/dashboard/"


async def test_an_unreadable_task_hub_is_a_503_page_not_a_traceback(dash: Dash) -> None:
    await dash.store.close()
    html = await dash.page("/dashboard/", status=503)
    assert "The task hub cannot be read" in text_of(html)


async def test_a_later_generation_says_so_and_shows_its_input(
    dash: Dash, e2e_app: FunctionApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DFHOST_E2E_STATE", str(tmp_path))
    engine = Engine(e2e_app, dash.store)
    await engine.start()
    try:
        iid = await dash.client.start_new("counter", "loop", '{"n": 0, "until": 3}')
        finished = await dash.client.wait_for_completion(iid, timeout=30)
    finally:
        await engine.stop()
    assert finished is not None and finished.status is Status.COMPLETED
    text = text_of(await dash.page("/dashboard/instance?id=loop"))
    assert "continued as new at" in text
    assert "dfhost keeps the current generation's history only" in text
    assert '"n": 2' in text  # the input the previous generation passed on
