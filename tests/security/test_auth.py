"""Keys as Azure Functions has them: every authLevel, the management API's system key, the
master key for /admin, the app's own client over its RPC path, and the browser guards."""

from __future__ import annotations

import httpx
import pytest

from dfhost.app.functions import FunctionApp
from dfhost.client import DurableClient
from dfhost.store import InstanceQuery, Store
from dfhost.web import build_app
from dfhost.web.auth import Access
from tests.security.conftest import BASE, KEYS, OTHER_FUNCTION_KEY
from tests.web.conftest import asgi, live_server

MEMBER_KEY = KEYS.functions["member"]["default"]
HOST_KEY = KEYS.host["default"]
SYSTEM_KEY = KEYS.system["durabletask_extension"]
ALL_KEYS = (KEYS.master, HOST_KEY, SYSTEM_KEY, MEMBER_KEY, OTHER_FUNCTION_KEY)

# (path, key, may call)
TRIGGER_CASES = [
    ("/api/open", None, True),
    ("/api/open", "wrong-key-0123456789", True),
    ("/api/member", None, False),
    ("/api/member", "wrong-key-0123456789", False),
    ("/api/member", MEMBER_KEY, True),
    ("/api/member", HOST_KEY, True),
    ("/api/member", KEYS.master, True),
    ("/api/member", OTHER_FUNCTION_KEY, False),  # another function's key
    ("/api/member", SYSTEM_KEY, False),  # system keys open extensions only
    ("/api/member", MEMBER_KEY[:-1], False),
    ("/api/boss", None, False),
    ("/api/boss", HOST_KEY, False),
    ("/api/boss", OTHER_FUNCTION_KEY, False),  # its own function key: admin needs the master
    ("/api/boss", KEYS.master, True),
]


async def test_every_auth_level_accepts_and_refuses_by_key(enforced: httpx.AsyncClient) -> None:
    for path, key, allowed in TRIGGER_CASES:
        as_header = await enforced.get(path, headers={"x-functions-key": key} if key else {})
        as_code = await enforced.get(path, params={"code": key} if key else {})
        for response in (as_header, as_code):
            expected = 200 if allowed else 401
            assert response.status_code == expected, (path, key, response.text)
            if not allowed:
                assert "x-functions-key" in response.text  # says how to send a key


async def test_management_api_needs_the_system_or_master_key(
    enforced: httpx.AsyncClient, hub: Store
) -> None:
    for key in (None, HOST_KEY, MEMBER_KEY, "wrong-key-0123456789"):
        headers = {"x-functions-key": key} if key else {}
        response = await enforced.post(f"{BASE}/orchestrators/hello", headers=headers, json=1)
        assert response.status_code == 401, key
        assert "durabletask_extension" in response.json()["Message"]
        assert (await enforced.get(f"{BASE}/instances", headers=headers)).status_code == 401
        assert (await enforced.delete(f"{BASE}/instances/x", headers=headers)).status_code == 401
    assert (await hub.count_instances(InstanceQuery())) == 0  # nothing started
    for key in (SYSTEM_KEY, KEYS.master):
        started = await enforced.post(f"{BASE}/orchestrators/hello", params={"code": key}, json=1)
        assert started.status_code == 202, started.text
        # The check-status URLs carry no key: callers add their own.
        assert not any(k in started.text for k in ALL_KEYS)
        listed = await enforced.get(f"{BASE}/instances", headers={"x-functions-key": key})
        assert listed.status_code == 200
    assert (await hub.count_instances(InstanceQuery())) == 2
    # The API's description is public.
    document = await enforced.get(f"{BASE}/openapi.json")
    assert document.status_code == 200 and "/instances/{instanceId}" in document.json()["paths"]


async def test_admin_needs_the_master_key(enforced: httpx.AsyncClient) -> None:
    for key in (None, HOST_KEY, SYSTEM_KEY):
        headers = {"x-functions-key": key} if key else {}
        assert (await enforced.get("/admin/host/status", headers=headers)).status_code == 401
        response = await enforced.post("/admin/functions/tick", headers=headers, json={})
        assert response.status_code == 401
    status = await enforced.get("/admin/host/status", headers={"x-functions-key": KEYS.master})
    assert status.status_code == 503  # allowed in; not Running without a lifespan
    assert (await enforced.get("/admin/host/ping")).status_code == 200


async def test_rpc_path_takes_the_hosts_token_and_nothing_else(
    enforced: httpx.AsyncClient, enforced_access: Access
) -> None:
    good = f"{BASE}/rpc/{enforced_access.rpc_token}/instances"
    assert (await enforced.get(good)).status_code == 200
    bad = f"{BASE}/rpc/{enforced_access.rpc_token[:-1]}x/instances"
    assert (await enforced.get(bad)).status_code == 401
    assert (await enforced.get(f"{BASE}/rpc//instances")).status_code == 401
    # A key is no RPC token.
    assert (await enforced.get(f"{BASE}/rpc/{KEYS.master}/instances")).status_code == 401


async def test_the_apps_own_client_works_under_keys_without_handing_them_out(
    hub: Store, sec_app: FunctionApp, enforced_access: Access
) -> None:
    web_app = build_app(
        DurableClient(hub, sec_app), sec_app, rpc_base_url="http://x/", access=enforced_access
    )
    async with live_server(web_app) as origin:
        web_app.state.dfhost.rpc_base_url = enforced_access.rpc_base_url(origin)
        async with httpx.AsyncClient(base_url=origin) as http:
            # The starter is anonymous; its SDK client reaches the management API by RPC.
            started = await http.post("/api/start/hello", json="hi")
            assert started.status_code == 202, started.text
            assert not any(k in started.text for k in ALL_KEYS)
            assert enforced_access.rpc_token not in started.text
            status_url = started.json()["statusQueryGetUri"]
            assert (await http.get(status_url)).status_code == 401
            keyed = await http.get(status_url, headers={"x-functions-key": SYSTEM_KEY})
            assert keyed.status_code == 202
            assert keyed.json()["input"] == "hi"


async def test_dashboard_login_cookie_and_csrf(enforced: httpx.AsyncClient) -> None:
    page = await enforced.get("/dashboard/?status=Running")
    assert page.status_code == 303
    assert page.headers["location"].startswith("/dashboard/login?next=")
    assert (
        await enforced.get("/dashboard/functions", headers={"accept": "application/json"})
    ).status_code == 401
    form = await enforced.get(page.headers["location"])
    assert form.status_code == 200 and 'name="key"' in form.text
    wrong = await enforced.post("/dashboard/login", data={"key": HOST_KEY, "next": "/dashboard/"})
    assert wrong.status_code == 401 and "dfhost_session" not in wrong.headers.get("set-cookie", "")
    # An open redirect is not on offer.
    login = await enforced.post(
        "/dashboard/login", data={"key": KEYS.master, "next": "//evil.example/x"}
    )
    assert login.status_code == 303 and login.headers["location"] == "/dashboard/"
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/dashboard" in cookie
    assert KEYS.master.lower() not in cookie

    listing = await enforced.get("/dashboard/")
    assert listing.status_code == 200 and "Log out" in listing.text
    token = listing.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    assert token

    action = {"action": "start", "name": "hello", "instance_id": "from-dashboard", "input": "1"}
    forged = await enforced.post("/dashboard/actions", data=action)  # no token
    assert forged.status_code == 403 and "csrf" in forged.text
    stale = await enforced.post("/dashboard/actions", data={**action, "csrf": token + "x"})
    assert stale.status_code == 403
    cross = await enforced.post(
        "/dashboard/actions",
        data={**action, "csrf": token},
        headers={"origin": "https://evil.example"},
    )
    assert cross.status_code == 403
    fetched = await enforced.post(
        "/dashboard/actions",
        data={**action, "csrf": token},
        headers={"sec-fetch-site": "cross-site"},
    )
    assert fetched.status_code == 403
    ok = await enforced.post(
        "/dashboard/actions",
        data={**action, "csrf": token},
        headers={"origin": "http://dfhost.example", "sec-fetch-site": "same-origin"},
    )
    assert ok.status_code == 303 and "flash=" in ok.headers["location"]
    instance = await enforced.get(f"{BASE}/instances/from-dashboard", params={"code": SYSTEM_KEY})
    assert instance.status_code == 202

    # A forged or expired cookie is no session.
    enforced.cookies.set("dfhost_session", "99999999999.forged", path="/dashboard")
    assert (await enforced.get("/dashboard/")).status_code == 303
    enforced.cookies.clear()
    # Scripts may use the master key directly.
    scripted = await enforced.get("/dashboard/", headers={"x-functions-key": KEYS.master})
    assert scripted.status_code == 200


def test_sessions_expire_and_die_with_the_master_key(enforced_access: Access) -> None:
    cookie = enforced_access.session_cookie(now=1000.0)
    assert enforced_access.valid_session(cookie, now=1001.0)
    assert not enforced_access.valid_session(cookie, now=1000.0 + 13 * 3600)
    other = Access(keys=type(KEYS)(master="another-master-key-0123456"), enforce=True)
    assert not other.valid_session(cookie, now=1001.0)


async def test_loopback_host_without_keys_refuses_cross_site_and_rebinding(
    open_host: httpx.AsyncClient, hub: Store
) -> None:
    # No keys on loopback: the function-level trigger is open, as with `func start`.
    assert (await open_host.get("/api/member")).status_code == 200
    evil = {"origin": "https://evil.example"}
    start = await open_host.post(f"{BASE}/orchestrators/hello", json=1, headers=evil)
    assert start.status_code == 403
    null_origin = await open_host.post(f"{BASE}/instances/x/terminate", headers={"origin": "null"})
    assert null_origin.status_code == 403
    action = {"action": "start", "name": "hello", "instance_id": "forged", "input": ""}
    forged = await open_host.post(
        "/dashboard/actions", data=action, headers={"sec-fetch-site": "cross-site"}
    )
    assert forged.status_code == 403
    assert (await hub.count_instances(InstanceQuery())) == 0
    # DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends Host: evil.example.
    rebound = await open_host.get(f"{BASE}/instances", headers={"host": "evil.example:7071"})
    assert rebound.status_code == 403 and "--require-keys" in rebound.text
    for host in ("localhost:7071", "127.0.0.1", "[::1]:7071"):
        assert (await open_host.get(f"{BASE}/instances", headers={"host": host})).status_code == 200
    # Same-origin and script requests go through.
    same = await open_host.post(
        f"{BASE}/orchestrators/hello", json=1, headers={"origin": "http://127.0.0.1:7071"}
    )
    assert same.status_code == 202
    assert (await open_host.post(f"{BASE}/orchestrators/hello", json=1)).status_code == 202


async def test_default_app_enforces_nothing_but_cross_site_checks(
    hub: Store, sec_app: FunctionApp
) -> None:
    web_app = build_app(DurableClient(hub, sec_app), sec_app, rpc_base_url="http://x/")
    async with asgi(web_app, "http://anything.example") as http:
        assert (await http.get("/api/boss")).status_code == 200
        assert (await http.get(f"{BASE}/instances")).status_code == 200
        cross = await http.post(
            f"{BASE}/orchestrators/hello", json=1, headers={"sec-fetch-site": "same-site"}
        )
        assert cross.status_code == 403


@pytest.mark.parametrize("level", ["anonymous", "function", "admin"])
def test_auth_levels_cover_the_apps_functions(sec_app: FunctionApp, level: str) -> None:
    levels = {str(f.trigger.settings.get("authLevel")).lower() for f in sec_app.of_kind("http")}
    assert level in levels
