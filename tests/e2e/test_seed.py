"""The user's app (`../shared/fixtures/seed_app`), run by `dfhost start` as the article does.

Its eternal loop (1-minute timers) runs on virtual time in tests/testing/test_seed.py."""

from __future__ import annotations

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
    await wait_until(_async(lambda: seed_host.output), lambda out: "テスト中" in out)
    # The activity's log line and its print, tagged with the function and instance.
    tag = f"durable-activity ({body['id']}): "
    assert any(tag in line and "Activity " in line for line in seed_host.lines)
    assert any(line.endswith(f"{tag}テスト中") for line in seed_host.lines)


def _async(fn):  # type: ignore[no-untyped-def]
    async def probe():  # type: ignore[no-untyped-def]
        return fn()

    return probe
