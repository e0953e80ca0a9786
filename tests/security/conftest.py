"""Fixtures for the security tests: the security app, known keys, and its web app served in
process with keys enforced (or not)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from dfhost.app.functions import FunctionApp
from dfhost.app.loader import load_app
from dfhost.client import DurableClient
from dfhost.store import Store
from dfhost.web import build_app
from dfhost.web.auth import Access
from dfhost.web.keys import KeySet
from tests.web.conftest import asgi

APP_DIR = Path(__file__).resolve().parents[1] / "apps" / "security_v2"
BASE = "/runtime/webhooks/durabletask"

KEYS = KeySet(
    master="master-key-0123456789abcdef",
    host={"default": "host-key-0123456789abcdef"},
    system={"durabletask_extension": "system-key-0123456789abcdef"},
    functions={"member": {"default": "member-key-0123456789abcdef"}},
)
# A key of another function: it must not open `member`.
OTHER_FUNCTION_KEY = "boss-fn-key-0123456789abcdef"
KEYS_WITH_OTHER = KeySet(
    master=KEYS.master,
    host=KEYS.host,
    system=KEYS.system,
    functions={**KEYS.functions, "boss": {"default": OTHER_FUNCTION_KEY}},
)


@pytest.fixture(scope="session")
def sec_app() -> FunctionApp:
    app = load_app(APP_DIR)
    assert app.errors == [], app.errors
    return app


@pytest.fixture
def enforced_access() -> Access:
    return Access(keys=KEYS_WITH_OTHER, enforce=True)


@pytest.fixture
async def enforced(
    hub: Store, sec_app: FunctionApp, enforced_access: Access
) -> AsyncIterator[httpx.AsyncClient]:
    """The security app with keys enforced (no engine)."""
    web_app = build_app(
        DurableClient(hub, sec_app),
        sec_app,
        rpc_base_url="http://127.0.0.1:1/unused/",
        access=enforced_access,
    )
    async with asgi(web_app, "http://dfhost.example") as http:
        yield http


@pytest.fixture
async def open_host(hub: Store, sec_app: FunctionApp) -> AsyncIterator[httpx.AsyncClient]:
    """The security app as a loopback host serves it: no keys, loopback names only."""
    web_app = build_app(
        DurableClient(hub, sec_app),
        sec_app,
        rpc_base_url="http://127.0.0.1:1/unused/",
        access=Access(loopback_only=True),
    )
    async with asgi(web_app, "http://127.0.0.1:7071") as http:
        yield http
