"""The dashboard's Functions page lists the message-triggered functions with what they listen
to, this host's counts and the last error, and `/admin/metrics` counts their executions."""

from __future__ import annotations

import re
from html import unescape

from dfhost.app.loader import load_app
from dfhost.client import DurableClient
from dfhost.runtime.triggers.stats import TRIGGER_STATS
from dfhost.store import Store
from dfhost.web import build_app
from tests.e2e.harness import APPS
from tests.web.conftest import asgi


def text_of(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


async def test_the_functions_page_shows_trigger_counts_and_the_last_error(hub: Store) -> None:
    app = load_app(APPS / "triggers_v2")
    for error in (None, None, "ValueError: refusing fail-1"):
        TRIGGER_STATS.started("from_queue", "queueTrigger")
        TRIGGER_STATS.finished("from_queue", "queueTrigger", 0.01, error)
    TRIGGER_STATS.poisoned("from_queue", "queueTrigger")
    web_app = build_app(DurableClient(hub, app), app, rpc_base_url="http://x/")
    async with asgi(web_app) as http:
        page = await http.get("/dashboard/functions")
        metrics = await http.get("/admin/metrics")
    assert page.status_code == 200
    table = page.text.split('id="triggers"', 1)[1].split("</table>", 1)[0]
    rows = {text_of(row).split(" ", 1)[0]: text_of(row) for row in table.split("<tr>")[2:]}
    assert set(rows) == {"from_queue", "from_blob"}
    queue = rows["from_queue"]
    assert queue.startswith("from_queue queueTrigger %IN_QUEUE%")
    assert "ValueError: refusing fail-1" in queue
    counts = re.search(r"%IN_QUEUE% (\d+) (\d+) (\d+) (\d+)", queue)
    assert counts is not None
    succeeded, failed, given_up, running = map(int, counts.groups())
    assert (failed, given_up, running) >= (1, 1, 0) and succeeded >= 2
    assert rows["from_blob"].startswith("from_blob blobTrigger %IN_CONTAINER%/{name}.txt 0 0 0 0")
    assert re.search(
        r'dfhost_trigger_executions_total\{function="from_queue",result="failed",'
        r'trigger="queueTrigger"\} [1-9]',
        metrics.text,
    )
