"""The dashboard in a real browser: headless Chromium (Debian's package) against a `dfhost start`
subprocess that ran real orchestrations. Loads the list, filters it, follows a link to an
instance, terminates another from its page (accepting the confirmation), and saves
screenshots, light and dark, under the folder it prints ($DFHOST_ARTIFACTS or
tests/artifacts/dashboard).

A browser that cannot start fails the test: it is how the dashboard is verified.
"""

from __future__ import annotations

import functools
import operator
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import APPS, REPO, HostProcess
from tests.waiting import eventually

from .cdp import BrowserError, Chromium

pytestmark = pytest.mark.e2e

API = "/runtime/webhooks/durabletask"


@pytest.fixture
def artifacts(capsys: pytest.CaptureFixture[str]) -> Path:
    folder = Path(os.environ.get("DFHOST_ARTIFACTS") or REPO / "tests" / "artifacts") / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    with capsys.disabled():
        print(f"\ndashboard screenshots: {folder}")
    return folder


@pytest.fixture
def host(tmp_path: Path) -> Iterator[HostProcess]:
    state = tmp_path / "state"
    state.mkdir()
    process = HostProcess(
        APPS / "e2e_v2",
        f"sqlite:///{tmp_path / 'hub.sqlite3'}",
        env={"DFHOST_E2E_STATE": str(state)},
    ).start()
    yield process
    process.stop()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Chromium]:
    chromium = Chromium(tmp_path / "chromium-profile")
    try:
        await chromium.__aenter__()
    except BrowserError as exc:
        pytest.fail(f"headless Chromium could not be started: {exc}", pytrace=False)
    try:
        yield chromium
    finally:
        await chromium.close()


async def start(api: httpx.AsyncClient, name: str, instance_id: str, body: str = "") -> str:
    response = await api.post(
        f"{API}/orchestrators/{name}/{instance_id}",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 202, response.text
    return instance_id


async def status_of(api: httpx.AsyncClient, instance_id: str) -> str:
    response = await api.get(f"{API}/instances/{instance_id}")
    return str(response.json()["runtimeStatus"])


async def test_browse_filter_follow_and_terminate_in_chromium(
    host: HostProcess, browser: Chromium, artifacts: Path
) -> None:
    async with httpx.AsyncClient(base_url=host.origin, timeout=10) as api:
        await start(api, "chain", "chain-1")
        await start(api, "failing", "failing-1")
        await start(api, "parent", "parent-1")
        await start(api, "waiter", "hold-1")
        await start(api, "waiter", "hold-2")
        await start(api, "approval", "approval-1", '{"timeout": 600}')
        for done, status in (("chain-1", "Completed"), ("failing-1", "Failed")):
            await eventually(
                functools.partial(status_of, api, done),
                functools.partial(operator.eq, status),
                timeout=20,
                interval=0.1,
            )
        await eventually(
            lambda: status_of(api, "parent-1"), lambda s: s == "Completed", timeout=20, interval=0.1
        )
        await eventually(
            lambda: status_of(api, "hold-2"), lambda s: s == "Running", timeout=20, interval=0.1
        )

        page = await browser.new_page()
        # The list, after real orchestrations ran.
        await page.goto(f"{host.origin}/dashboard/")
        ids = await page.evaluate(
            "[...document.querySelectorAll('#instances td.id a')].map(a => a.textContent)"
        )
        assert {"chain-1", "failing-1", "parent-1", "hold-1", "hold-2"} <= set(ids)
        assert "Failed 1" in await page.text(".chips")
        await page.screenshot(artifacts / "01-list.png")

        # A filter, applied with the form, ends up in the address.
        await page.evaluate(
            "document.querySelector('input[name=status][value=Failed]').checked = true"
        )
        await page.navigating("document.querySelector('#apply-filter').click()")
        assert "status=Failed" in await page.url()
        ids = await page.evaluate(
            "[...document.querySelectorAll('#instances td.id a')].map(a => a.textContent)"
        )
        assert ids == ["failing-1"]
        await page.screenshot(artifacts / "02-filtered.png")

        # Its link leads to the instance, with the error and its stack.
        await page.navigating("document.querySelector('#instances td.id a').click()")
        assert (await page.url()).endswith("/dashboard/instance?id=failing-1")
        text = await page.text("main")
        assert "Failed" in text and "ValueError: kaboom" in text
        await page.screenshot(artifacts / "03-failed-instance.png")

        # What the activities logged, kept by the host that ran them, once each.
        await page.goto(f"{host.origin}/dashboard/instance?id=chain-1")
        logs = await page.text("table.logs")
        for city in ("Tokyo", "Seattle", "London"):
            assert logs.count(f"saying hello to {city}") == 1

        # Terminate a running instance from its page, confirming the dialog.
        await page.evaluate("document.querySelector('.goto input[name=id]').value = 'hold-1'")
        await page.navigating("document.querySelector('.goto button').click()")
        assert "Running" in await page.text("#status")
        await page.evaluate("document.querySelector('input[name=reason]').value = 'from the UI'")
        await page.navigating("document.querySelector('#terminate').click()")
        assert page.dialogs == ["Terminate hold-1?"]
        assert "Terminate requested for 'hold-1'." in await page.text(".flash")
        assert "flash=" not in await page.url()  # the message is not part of the address
        await eventually(
            lambda: status_of(api, "hold-1"), lambda s: s == "Terminated", timeout=20, interval=0.1
        )
        await page.goto(f"{host.origin}/dashboard/instance?id=hold-1")
        assert await page.text("#status") == "Terminated"
        assert '"from the UI"' in await page.text("main")
        await page.screenshot(artifacts / "04-terminated.png")
        assert await status_of(api, "hold-2") == "Running"

        # The timeline of real sub-orchestrations, and the functions page, in dark mode.
        await page.dark(True)
        await page.goto(f"{host.origin}/dashboard/instance?id=parent-1")
        drawn = "document.querySelectorAll('.tl-bar rect.k-suborchestration').length"
        assert await page.evaluate(drawn) == 2
        background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(21, 23, 26)"
        await page.screenshot(artifacts / "05-parent-timeline-dark.png")
        await page.goto(f"{host.origin}/dashboard/instance?id=approval-1")
        assert "timer #0 due" in await page.text("main")
        await page.screenshot(artifacts / "06-waiting-dark.png")
        await page.goto(f"{host.origin}/dashboard/functions")
        await page.screenshot(artifacts / "07-functions-dark.png")

        # The script ran under the Content-Security-Policy without a single error.
        assert page.errors == []
    assert sorted(p.name for p in artifacts.glob("*.png")) == [
        "01-list.png",
        "02-filtered.png",
        "03-failed-instance.png",
        "04-terminated.png",
        "05-parent-timeline-dark.png",
        "06-waiting-dark.png",
        "07-functions-dark.png",
    ]
