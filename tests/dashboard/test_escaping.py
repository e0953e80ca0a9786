"""Hostile instance ids, names, inputs, outputs, events and reasons are shown as text on every
page: nothing a caller stored can become markup or script in the dashboard."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from markupsafe import escape

from dfhost.history import EventType, HistoryEvent, OrchestrationStatus, utcnow
from dfhost.work import StartRequest
from tests.web.conftest import finish

from .conftest import Dash, flash_of

# Instance ids may hold anything but / \ # ? and control characters.
HOSTILE_ID = "<img src=x onerror=alert(1)>\"'&amp;<svg onload=alert(2)>"
SCRIPT = "</pre></textarea><script>alert(3)</script>"
MARKERS = ("<img src=x", "<svg onload", "<script>alert", "</textarea><script")


def assert_inert(html: str) -> None:
    for marker in MARKERS:
        assert marker not in html, f"unescaped {marker!r} in the page"


async def test_hostile_ids_and_payloads_are_escaped_on_every_page(dash: Dash) -> None:
    await dash.client.start_new("waiter", HOSTILE_ID, json.dumps(SCRIPT))
    now = utcnow()
    events = [
        HistoryEvent(type=EventType.EVENT_RAISED, timestamp=now, name=SCRIPT, input='"x"'),
        HistoryEvent(
            type=EventType.SUB_ORCHESTRATION_CREATED,
            timestamp=now,
            event_id=0,
            name=SCRIPT,
            instance_id=HOSTILE_ID + "-kid",
        ),
        HistoryEvent(
            type=EventType.TASK_FAILED,
            timestamp=now,
            task_scheduled_id=0,
            reason=SCRIPT,
            details=SCRIPT,
        ),
    ]
    await finish(dash.store, HOSTILE_ID, OrchestrationStatus.FAILED, json.dumps(SCRIPT), events)
    await dash.store.create_instance(
        StartRequest(
            instance_id=f"@{HOSTILE_ID}@{HOSTILE_ID}",
            name=SCRIPT,
            execution_id="e",
            created_at=now,
            input=json.dumps({"state": SCRIPT}),
        )
    )
    query = urlencode({"id": HOSTILE_ID})
    pages = [
        "/dashboard/",
        f"/dashboard/?{urlencode({'prefix': HOSTILE_ID, 'name': SCRIPT})}",
        f"/dashboard/instance?{query}",
        f"/dashboard/instance?{query}&htype=failures",
        f"/dashboard/instance?{urlencode({'id': SCRIPT})}",  # a 404 naming it
        "/dashboard/functions",
    ]
    for url in pages:
        response = await dash.http.get(url)
        assert response.status_code in (200, 404), url
        assert_inert(response.text)
    instance_page = (await dash.http.get(f"/dashboard/instance?{query}")).text
    assert str(escape(HOSTILE_ID)) in instance_page
    assert str(escape(SCRIPT)) in instance_page
    # Links to it carry the id percent-encoded.
    list_page = (await dash.http.get("/dashboard/")).text
    assert f'href="/dashboard/instance?{escape(query)}"' in list_page


async def test_hostile_action_input_is_escaped_in_the_message(dash: Dash) -> None:
    response = await dash.act(action="terminate", instance_id=HOSTILE_ID, reason=SCRIPT)
    html = await dash.follow(response)
    assert_inert(html)
    assert flash_of(html) == f"err: No instance with ID '{HOSTILE_ID}' found."
    response = await dash.act(action="start", name=SCRIPT)
    html = await dash.follow(response)
    assert_inert(html)
    assert SCRIPT in flash_of(html)


async def test_the_history_download_names_a_safe_file(dash: Dash) -> None:
    await dash.client.start_new("chain", 'a"b;c\r\nd'.replace("\r\n", "_"))
    response = await dash.http.get("/dashboard/instance/history.json", params={"id": 'a"b;c_d'})
    assert response.headers["content-disposition"] == 'attachment; filename="history-a_b_c_d.json"'
