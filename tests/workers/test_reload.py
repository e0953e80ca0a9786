"""`dfhost start --reload`: a change to the app's code is picked up by new worker processes
(and the host's orchestrators, HTTP and timer functions), an activity in flight finishes on
its old worker, and code that does not load leaves the previous code running."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import APPS, HostProcess, finished
from tests.waiting import eventually
from tests.workers.conftest import HostFactory
from tests.workers.test_workers import _children

pytestmark = pytest.mark.e2e


def _edit(source: Path, old: str, new: str) -> None:
    text = source.read_text()
    assert old in text
    source.write_text(text.replace(old, new))


async def _versions(host: HostProcess, gate: str = "") -> Any:
    client = host.client("ReloadHub")
    iid = await client.start_new("versions", None, gate)
    status = await finished(client, iid)
    assert status.runtime_status.value == "Completed", status.output
    return status.output


async def _reloads(host: HostProcess, count: int) -> None:
    await eventually(
        lambda: sum("dfhost: reloaded:" in line for line in host.lines) == count,
        timeout=30,
        what=f"reload {count}",
    )


@pytest.mark.parametrize("workers", ["1", "0"])
async def test_reload_switches_to_new_code_and_keeps_old_code_on_a_syntax_error(
    start_host: HostFactory, tmp_path: Path, workers: str
) -> None:
    app = tmp_path / "app"
    shutil.copytree(APPS / "reload_v2", app)
    source = app / "function_app.py"
    host = start_host("--reload", workers=workers, app=app)
    assert host.proc is not None
    host_pid = host.proc.pid
    first = await _versions(host)
    assert (first["orchestrator"], first["activity"]) == ("one", "one")

    _edit(source, 'VERSION = "one"', 'VERSION = "two"')
    await _reloads(host, 1)
    second = await _versions(host)
    assert (second["orchestrator"], second["activity"]) == ("two", "two")
    if workers == "0":  # in the host's process, which loaded the new code itself
        assert second["pid"] == first["pid"] == host_pid
    else:  # in a new worker, the old one gone
        assert second["pid"] != first["pid"]
        await eventually(lambda: _children(host_pid), lambda found: found == {second["pid"]})

    _edit(source, 'VERSION = "two"', 'VERSION = "three" +')
    await eventually(
        lambda: [line for line in host.lines if "still running the previous code" in line],
        timeout=30,
    )
    assert "SyntaxError" in host.output
    third = await _versions(host)
    assert (third["orchestrator"], third["activity"], third["pid"]) == (
        "two",
        "two",
        second["pid"],
    )


async def test_an_activity_in_flight_finishes_on_its_old_worker(
    start_host: HostFactory, tmp_path: Path, state: Path
) -> None:
    app = tmp_path / "app"
    shutil.copytree(APPS / "reload_v2", app)
    host = start_host("--reload", workers="1", app=app)
    assert host.proc is not None
    host_pid = host.proc.pid
    client = host.client("ReloadHub")
    iid = await client.start_new("versions", None, "gate")
    await eventually((state / "gate.pid").exists, timeout=20)
    old_worker = int((state / "gate.pid").read_text())

    _edit(app / "function_app.py", 'VERSION = "one"', 'VERSION = "two"')
    await _reloads(host, 1)
    assert len(_children(host_pid)) == 2  # the old worker still runs the activity
    (state / "gate").write_text("open")
    status = await finished(client, iid)
    assert status.output["activity"] == "one"
    assert status.output["pid"] == old_worker
    # Its episode after the reload ran the new orchestrator code.
    assert status.output["orchestrator"] == "two"
    await eventually(lambda: _children(host_pid), lambda found: old_worker not in found)
    after = await _versions(host)
    assert after["activity"] == "two"


_ADDED = """

@app.route(route="added", methods=["GET"])
def added(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(f"added {VERSION}")


@app.timer_trigger(schedule="0 0 0 1 1 *", arg_name="timer", run_on_startup=True)
def added_timer(timer: func.TimerRequest) -> None:
    (Path(os.environ["DFHOST_WORKERS_STATE"]) / "added_timer").write_text(VERSION)
"""

_EVENT = {
    "id": "e1",
    "topic": "/subscriptions/x/resourceGroups/y",
    "subject": "subject",
    "eventType": "My.Type",
    "eventTime": "2026-01-01T00:00:00Z",
    "data": {},
    "dataVersion": "1.0",
}


async def test_reload_switches_http_timer_and_event_functions(
    start_host: HostFactory, tmp_path: Path, state: Path
) -> None:
    app = tmp_path / "app"
    shutil.copytree(APPS / "reload_v2", app)
    source = app / "function_app.py"
    original = source.read_text()
    host = start_host("--reload", workers="0", app=app)

    def ran(name: str) -> str | None:
        path = state / name
        return path.read_text() if path.exists() else None

    async with httpx.AsyncClient(base_url=host.origin) as http:

        async def run_timer(name: str) -> int:
            return (await http.post(f"/admin/functions/{name}", json={"input": ""})).status_code

        async def send_event(name: str) -> int:
            response = await http.post(
                f"/runtime/webhooks/EventGrid?functionName={name}",
                json=[_EVENT],
                headers={"aeg-event-type": "Notification"},
            )
            return response.status_code

        assert (await http.get("/api/version")).text == "one"
        assert (await http.get("/api/added")).status_code == 404
        assert await run_timer("timer_version") == 202
        await eventually(lambda: ran("timer_version"), lambda text: text == "one")
        (state / "timer_version").unlink()
        assert await send_event("grid_version") == 202  # run before the answer
        assert ran("grid_version") == "one"

        # A changed HTTP function and timer, a new route and a new timer.
        source.write_text(original.replace('VERSION = "one"', 'VERSION = "two"') + _ADDED)
        await _reloads(host, 1)
        assert (await http.get("/api/version")).text == "two"
        assert (await http.get("/api/added")).text == "added two"
        await eventually(lambda: ran("added_timer"), lambda text: text == "two")  # runOnStartup
        assert await run_timer("timer_version") == 202
        await eventually(lambda: ran("timer_version"), lambda text: text == "two")
        assert await send_event("grid_version") == 202
        assert ran("grid_version") == "two"
        assert "host.json changed" not in host.output

        # Settings files only take effect at a restart; the reload says so.
        (app / "host.json").write_text((app / "host.json").read_text() + "\n")
        await _reloads(host, 2)
        assert "dfhost: host.json changed: restart dfhost for its settings to apply" in host.output

        # Removed again: the route and the timer are gone.
        source.write_text(original)
        await _reloads(host, 3)
        assert (await http.get("/api/added")).status_code == 404
        assert await run_timer("added_timer") == 404
        assert (await http.get("/api/version")).text == "one"
