"""Fixtures for the dashboard: the e2e test app served in process (no engine) over a SQLite
task hub, instances finished by hand, and helpers to post the dashboard's forms."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Literal

import httpx
import pytest

from dfhost.app.functions import FunctionApp
from dfhost.app.loader import load_app
from dfhost.client import DurableClient
from dfhost.store import Store
from dfhost.web import build_app
from tests.web.conftest import asgi

APPS = Path(__file__).resolve().parents[1] / "apps"
FORM = {"content-type": "application/x-www-form-urlencoded"}
JSON = {**FORM, "accept": "application/json"}

RunResult = Literal["started", "not_found", "busy"]


@dataclass
class FakeTimers:
    """Stands in for `TimerRunner.run_now`."""

    result: RunResult = "started"
    calls: list[str] = field(default_factory=list)

    async def run_now(self, name: str) -> RunResult:
        self.calls.append(name)
        return self.result


@dataclass
class Dash:
    http: httpx.AsyncClient
    client: DurableClient
    store: Store
    timers: FakeTimers

    async def page(self, url: str, status: int = 200) -> str:
        response = await self.http.get(url)
        assert response.status_code == status, (url, response.status_code, response.text[:2000])
        return response.text

    async def act(self, **fields: str) -> httpx.Response:
        """Post an action form as the browser does and return the 303."""
        response = await self.http.post("/dashboard/actions", data=fields, headers=FORM)
        assert response.status_code == 303, response.text
        return response

    async def act_json(self, expected: int, /, **fields: str) -> str:
        """Post an action asking for JSON; check the status and return the message."""
        response = await self.http.post("/dashboard/actions", data=fields, headers=JSON)
        body = response.json()
        assert response.status_code == expected, body
        assert body["ok"] is (expected < 400)
        message: str = body["message"]
        return message

    async def follow(self, response: httpx.Response) -> str:
        """The page an action's redirect leads to, with its one-time message."""
        return await self.page(response.headers["location"])


@pytest.fixture
def e2e_app() -> FunctionApp:
    app = load_app(APPS / "e2e_v2")
    assert app.errors == []
    return app


@pytest.fixture
async def dash(hub: Store, e2e_app: FunctionApp) -> AsyncIterator[Dash]:
    client = DurableClient(hub, e2e_app)
    timers = FakeTimers()
    web_app = build_app(
        client, e2e_app, rpc_base_url="http://127.0.0.1:1/unused/", run_function=timers.run_now
    )
    async with asgi(web_app) as http:
        yield Dash(http, client, hub, timers)


def text_of(html: str) -> str:
    """The page's text, tags removed and entities decoded (whitespace collapsed)."""
    without_tags = re.sub(r"<[^>]+>", " ", html)
    return " ".join(unescape(without_tags).split())


def flash_of(html: str) -> str:
    found = re.search(r'<div class="flash (ok|err)"[^>]*>(.*?)</div>', html, re.S)
    assert found, "no one-time message on the page"
    return f"{found.group(1)}: {unescape(found.group(2)).strip()}"


def instance_links(html: str) -> list[str]:
    """Instance ids linked from the list table, in order."""
    table = html.split('id="instances"', 1)[1].split("</table>", 1)[0]
    return [unescape(m) for m in re.findall(r'<td class="id"><a href="[^"]+">([^<]*)</a>', table)]


def history_table(html: str) -> str:
    """The text of the instance page's history table."""
    return text_of(html.split('class="history"', 1)[1].split("</table>", 1)[0])
