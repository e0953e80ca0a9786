"""The README's quick start: `dfhost start examples/eternal_timer` and a POST to its HTTP
starter, as a newcomer does it.

Its eternal loop (1-minute timers) runs on virtual time in tests/testing/test_example_loop.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import EXAMPLE_APP, HostProcess
from tests.waiting import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture
def example_host(tmp_path: Path, sdk_session: None) -> Iterator[HostProcess]:
    # The activity's 5 s of work, shortened (local.settings.json's value; the environment wins).
    env = {"WORK_SECONDS": "0.2"}
    host = HostProcess(EXAMPLE_APP, f"sqlite:///{tmp_path / 'hub.sqlite3'}", env).start()
    yield host
    host.stop()


async def test_the_quick_start_loops_on_exact_timers(example_host: HostProcess) -> None:
    async with httpx.AsyncClient(base_url=example_host.origin) as http:
        response = await http.post(
            "/api/orchestrators/durable-orchestrator", json={"interval_seconds": 1}
        )
        assert response.status_code == 202
        body = response.json()
        for key in ("id", "statusQueryGetUri", "sendEventPostUri", "terminatePostUri"):
            assert key in body
        status = await eventually(
            lambda: http.get(body["statusQueryGetUri"]),
            lambda r: r.json()["runtimeStatus"] == "Running",
            timeout=20,
        )
        assert status.status_code == 202
        # Three cycles: each the activity, then a 1-second durable timer, then continue_as_new.
        await eventually(
            lambda: example_host.output,
            lambda out: out.count("working on cleanup") >= 3,
            timeout=30,
        )
        final = (await http.get(body["statusQueryGetUri"], params={"showHistory": "true"})).json()
    # The activity's log line and its print, tagged with the function and instance; the
    # orchestrator's line once per cycle, not once per replay.
    tag = f"durable-activity ({body['id']}): "
    assert any(tag in line and "Activity cleanup started at" in line for line in example_host.lines)
    assert any(line.endswith(f"{tag}working on cleanup ...") for line in example_host.lines)
    cycles = [line for line in example_host.lines if "Cycle starts at" in line]
    works = [line for line in example_host.lines if line.endswith(f"{tag}working on cleanup ...")]
    assert len(cycles) - len(works) in (0, 1)
    # Only the current generation is kept.
    assert final["runtimeStatus"] == "Running"
    events = [e["EventType"] for e in final["historyEvents"]]
    assert events.count("ExecutionStarted") == 1
