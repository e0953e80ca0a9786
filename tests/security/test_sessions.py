"""Dashboard sessions end on the server: a logout refuses the cookie afterwards, on every host
sharing the task hub, and "log out everywhere" ends every session issued before it (issue 21,
item 8). Before, logging out only asked the browser to forget a cookie valid for 12 hours."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from dfhost.app.functions import FunctionApp
from dfhost.client import DurableClient
from dfhost.store import Store, open_store
from dfhost.web import build_app
from dfhost.web.auth import COOKIE, Access
from dfhost.web.sessions import Session, SessionBook
from tests.security.conftest import KEYS
from tests.web.conftest import asgi


@asynccontextmanager
async def host(store: Store, app: FunctionApp) -> AsyncIterator[httpx.AsyncClient]:
    """One host's web app (its own Access, as another process would have) with keys."""
    web_app = build_app(
        DurableClient(store, app),
        app,
        rpc_base_url="http://127.0.0.1:1/unused/",
        access=Access(keys=KEYS, enforce=True),
    )
    async with asgi(web_app, "http://dfhost.example") as http:
        yield http


async def login(http: httpx.AsyncClient) -> str:
    response = await http.post("/dashboard/login", data={"key": KEYS.master})
    assert response.status_code == 303, response.text
    cookie = response.cookies[COOKIE]
    http.cookies.clear()
    return cookie


async def send(
    http: httpx.AsyncClient, method: str, url: str, cookie: str, data: dict[str, str] | None = None
) -> httpx.Response:
    """A request with this cookie only (as a browser holding it would send it)."""
    http.cookies.clear()
    return await http.request(method, url, data=data, headers={"cookie": f"{COOKIE}={cookie}"})


async def page(http: httpx.AsyncClient, cookie: str) -> httpx.Response:
    """The dashboard's home with `cookie`: 200 in session, 303 to the login page if not."""
    return await send(http, "GET", "/dashboard/", cookie)


def csrf(response: httpx.Response) -> str:
    return response.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]


async def logout(http: httpx.AsyncClient, cookie: str, **fields: str) -> httpx.Response:
    token = csrf(await page(http, cookie))
    return await send(http, "POST", "/dashboard/logout", cookie, {"csrf": token, **fields})


async def test_logout_revokes_the_session_on_every_host_sharing_the_hub(
    tmp_path: Path, sec_app: FunctionApp
) -> None:
    url = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    one, two = open_store(url), open_store(url)
    await one.start()
    await two.start()
    try:
        async with host(one, sec_app) as a, host(two, sec_app) as b:
            mine, other = await login(a), await login(a)
            assert (await page(b, mine)).status_code == 200  # a shared master key: any host
            out = await logout(a, mine)
            assert out.status_code == 303 and out.headers["location"] == "/dashboard/login"
            assert COOKIE in out.headers["set-cookie"]  # the browser is told to forget it too
            for http in (a, b):
                refused = await page(http, mine)
                assert refused.status_code == 303, refused.text
                assert refused.headers["location"].startswith("/dashboard/login")
                assert (await page(http, other)).status_code == 200  # only that session
            # A form posted with the revoked cookie is refused, not run.
            action = await send(
                b, "POST", "/dashboard/actions", mine, {"action": "start", "name": "hello"}
            )
            assert action.status_code == 401
    finally:
        await one.close()
        await two.close()


async def test_log_out_everywhere_ends_every_earlier_session(
    hub: Store, sec_app: FunctionApp
) -> None:
    async with host(hub, sec_app) as a, host(hub, sec_app) as b:
        first, second = await login(a), await login(b)
        assert (await logout(b, second, everywhere="1")).status_code == 303
        for http in (a, b):
            for cookie in (first, second):
                assert (await page(http, cookie)).status_code == 303
        after = await login(a)
        assert (await page(b, after)).status_code == 200


async def test_a_logout_needs_the_sessions_form_token(hub: Store, sec_app: FunctionApp) -> None:
    async with host(hub, sec_app) as a:
        cookie = await login(a)
        forged = await send(
            a, "POST", "/dashboard/logout", cookie, {"csrf": "forged", "everywhere": "1"}
        )
        assert forged.status_code == 403
        assert (await page(a, cookie)).status_code == 200
        # Without a session there is nothing to revoke: the cookie is just dropped.
        a.cookies.clear()
        assert (await a.post("/dashboard/logout")).status_code == 303


async def test_revocations_are_checked_against_the_session_not_the_cookie_text(
    hub: Store,
) -> None:
    book = SessionBook(hub, clock=lambda: 2000.0)
    early = Session.of(Session.issue(KEYS.master, now=1000.0), KEYS.master, now=1500.0)
    late = Session.of(Session.issue(KEYS.master, now=3000.0), KEYS.master, now=3500.0)
    assert early is not None and late is not None
    assert not await book.revoked(early)
    await book.revoke_all()
    assert await book.revoked(early) and not await book.revoked(late)
    await book.revoke(late)
    assert await book.revoked(late)
    assert Session.of(late.cookie("another-master-key-0123"), KEYS.master, now=3500.0) is None
