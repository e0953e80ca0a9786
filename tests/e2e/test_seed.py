"""The user's app (`../shared/fixtures/seed_app`), run by `dfhost start` as the article does."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import SEED_APP, HostProcess, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def seed_host(tmp_path: Path, sdk_session: None) -> Iterator[HostProcess]:
    host = HostProcess(SEED_APP, f"sqlite:///{tmp_path / 'hub.sqlite3'}").start()
    yield host
    host.stop()


@pytest.fixture
def fast_seed_host(tmp_path: Path, sdk_session: None) -> Iterator[HostProcess]:
    """A copy of the seed app with its 1-minute timer and 5 s activity shortened."""
    app = tmp_path / "seed_app"
    shutil.copytree(SEED_APP, app, ignore=shutil.ignore_patterns(".dfhost", "__pycache__"))
    orchestrator = app / "durable-orchestrator" / "__init__.py"
    text = orchestrator.read_text(encoding="utf-8")
    assert text.count("timedelta(minutes=1)") == 2
    orchestrator.write_text(text.replace("timedelta(minutes=1)", "timedelta(seconds=1)"))
    activity = app / "durable-activity" / "__init__.py"
    activity.write_text(
        activity.read_text(encoding="utf-8").replace("time.sleep(5)", "time.sleep(0.1)")
    )
    host = HostProcess(app, f"sqlite:///{tmp_path / 'hub.sqlite3'}").start()
    yield host
    host.stop()


async def test_seed_app_starts_like_the_article(seed_host: HostProcess) -> None:
    async with httpx.AsyncClient(base_url=seed_host.origin) as http:
        response = await http.post("/api/orchestrators/durable-orchestrator")
        assert response.status_code == 202
        body = response.json()
        for key in ("id", "statusQueryGetUri", "sendEventPostUri", "terminatePostUri"):
            assert key in body
        status = await wait_until(
            lambda: http.get(body["statusQueryGetUri"]),
            lambda r: r.json()["runtimeStatus"] == "Running",
        )
        assert status.status_code == 202
    await wait_until(_async(lambda: seed_host.output), lambda out: "Activity " in out)
    assert "テスト中" in seed_host.output


async def test_seed_loop_logs_once_per_cycle_and_keeps_one_generation(
    fast_seed_host: HostProcess,
) -> None:
    host = fast_seed_host
    async with httpx.AsyncClient(base_url=host.origin) as http:
        body = (await http.post("/api/orchestrators/durable-orchestrator")).json()
        await wait_until(_async(lambda: host.output), lambda out: out.count("Activity ") >= 3, 30)
        status = (await http.get(body["statusQueryGetUri"], params={"showHistory": "true"})).json()
    assert status["runtimeStatus"] == "Running"
    history = status.get("historyEvents") or []
    assert [e["EventType"] for e in history].count("ExecutionStarted") == 1
    # Each cycle runs the activity once: its log line and its print appear once per cycle.
    activity_lines = [line for line in host.lines if "Activity " in line]
    prints = [line for line in host.lines if "テスト中" in line]
    assert abs(len(activity_lines) - len(prints)) <= 1
    for line in activity_lines:
        assert "durable-activity" in line


def _async(fn):  # type: ignore[no-untyped-def]
    async def probe():  # type: ignore[no-untyped-def]
        return fn()

    return probe
