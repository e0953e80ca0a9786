"""`dfhost start --reload`: a change to the app's code is picked up by new worker processes
(and the host's orchestrators), an activity in flight finishes on its old worker, and code
that does not load leaves the previous code running."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

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
