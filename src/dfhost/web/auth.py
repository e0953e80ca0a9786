"""Who may call what: keys as in Azure Functions, the dashboard's login, and browser guards.

With keys enforced (`dfhost start` on a non-loopback address, or `--require-keys`):
- HTTP triggers follow their `authLevel`: `anonymous` needs no key; `function` a key of that
  function, a host key or the master key; `admin` the master key. A key is sent as the
  `x-functions-key` header or the `code` query parameter.
- The management API (`/runtime/webhooks/durabletask/...`) needs the system key
  `durabletask_extension` or the master key; `/admin/...` the master key. Its OpenAPI document
  is public.
- The dashboard needs the master key, given once in a login form that sets an HttpOnly,
  SameSite=Strict cookie (signed with the master key, so it is valid on every host sharing
  that key and dies with a new master key; web/sessions.py), or sent as a key like above. Its
  forms carry a token bound to that cookie, checked on every action. Logging out (of this
  session, or everywhere) is recorded in the task hub, so it holds on every host.
- The app's own client bindings get an `rpcBaseUrl` whose path holds a random per-process
  token (`.../durabletask/rpc/TOKEN/`), which this guard accepts in place of a key: the SDK
  appends paths to that URL and cannot send headers, and a key of the app's would be one more
  secret handed to user code. The check-status URLs handed to callers carry no key at all:
  callers add their own (Azure puts the system key there, which gives every caller of a
  starter function the whole management API).

Always, whether keys are enforced or not:
- unsafe methods (POST, DELETE, ...) on the management API, `/admin` and the dashboard are
  refused when the browser says the request comes from another site (`Sec-Fetch-Site`, else
  an `Origin` that is not this host): a web page cannot drive a local host's API;
- on a loopback host without keys, requests whose `Host` is not a loopback name are refused,
  so DNS rebinding cannot turn a web page into a same-origin client of the local host.
Keys and tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from html import escape
from urllib.parse import parse_qs, quote, urlsplit

from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from dfhost.app.functions import Function
from dfhost.web.api import BASE_PATH
from dfhost.web.common import (
    BadRequestError,
    BodyTooLargeError,
    log_has_it,
    logged_error,
    read_body,
)
from dfhost.web.csrf import CSRF_FIELD, CSRF_SCOPE_KEY
from dfhost.web.dashboard import BASE as DASHBOARD
from dfhost.web.keys import KeySet
from dfhost.web.sessions import SESSION_SECONDS, Session, SessionBook, mac

__all__ = [
    "COOKIE",
    "RPC_PATH",
    "Access",
    "AccessGuard",
    "is_loopback_host",
    "login_routes",
]

log = logging.getLogger("dfhost")

RPC_PATH = f"{BASE_PATH}/rpc/"
KEY_HEADER = "x-functions-key"
COOKIE = "dfhost_session"
_LOGIN = f"{DASHBOARD}/login"
_LOGOUT = f"{DASHBOARD}/logout"
_PUBLIC = frozenset({f"{BASE_PATH}/openapi.json", _LOGIN, "/admin/host/ping"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def is_loopback_host(host: str) -> bool:
    """Whether an address or name given to `--host` (or a Host header's name) is loopback."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Access:
    """The access policy of one host."""

    keys: KeySet | None = None
    """None only when keys are not enforced."""
    enforce: bool = False
    loopback_only: bool = False
    """The host listens on loopback only: without keys, accept loopback Host names only."""
    rpc_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def __post_init__(self) -> None:
        if self.enforce and self.keys is None:
            raise ValueError("keys are required to enforce them")

    def rpc_base_url(self, origin: str) -> str:
        """The `rpcBaseUrl` for the app's client bindings (`origin` is loopback)."""
        if not self.enforce:
            return f"{origin}{BASE_PATH}/"
        return f"{origin}{RPC_PATH}{self.rpc_token}/"

    # --- keys ---------------------------------------------------------------------------
    def check_function(self, request: Request, function: Function) -> Response | None:
        """None if the request may call `function` (an HTTP trigger), else the refusal."""
        if not self.enforce or self.keys is None:
            return None
        level = str(function.trigger.settings.get("authLevel") or "function").lower()
        if level == "anonymous":
            return None
        if level == "admin":
            allowed, what = [self.keys.master], "the master key"
        else:
            allowed = self.keys.function_keys(function.name)
            what = f"a key of function '{function.name}', a host key or the master key"
        if _matches(presented_key(request), allowed):
            return None
        message = (
            f"Unauthorized: function '{function.name}' (authLevel '{level}') needs {what}, "
            f"sent as the {KEY_HEADER} header or the code query parameter."
        )
        return PlainTextResponse(message, 401)

    def session_cookie(self, now: float | None = None) -> str:
        assert self.keys is not None
        return Session.issue(self.keys.master, now)

    def session(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie holds, if signed with the master key and not expired (whether
        it was logged out is `SessionBook.revoked`)."""
        return None if self.keys is None else Session.of(cookie, self.keys.master, now)

    def valid_session(self, cookie: str | None, now: float | None = None) -> bool:
        return self.session(cookie, now) is not None


def presented_key(request: Request) -> str | None:
    key = request.headers.get(KEY_HEADER)
    if key is None:
        key = request.query_params.get("code")
    return key or None


def _matches(key: str | None, allowed: Iterable[str]) -> bool:
    if key is None:
        return False
    given = key.encode("utf-8", "surrogateescape")
    found = False
    for candidate in allowed:
        # No early exit: the time taken says nothing about which key (if any) matched.
        found |= hmac.compare_digest(given, candidate.encode("utf-8"))
    return found


class AccessGuard:
    """ASGI middleware applying an `Access` policy in front of the whole web app; `sessions`
    has the dashboard's logouts (None: a logout only drops the browser's cookie)."""

    def __init__(self, app: ASGIApp, access: Access, sessions: SessionBook | None = None) -> None:
        self.app = app
        self.access = access
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal, scope = await self._check(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _live(self, session: Session | None) -> bool:
        """Whether a signed session was not logged out (reads the store)."""
        if session is None:
            return False
        return self.sessions is None or not await self.sessions.revoked(session)

    async def _check(self, scope: Scope) -> tuple[Response | None, Scope]:
        access = self.access
        request = Request(scope)
        if access.loopback_only and not access.enforce:
            host = _host_name(request.headers.get("host", ""))
            if host and not is_loopback_host(host):
                message = (
                    f"Host '{host}' refused: this host listens on loopback without keys, so it "
                    "only answers loopback names (start it with --require-keys to serve others)."
                )
                return PlainTextResponse(message, 403), scope
        path: str = scope["path"]
        if path.startswith(RPC_PATH) and access.enforce:
            token, _, rest = path[len(RPC_PATH) :].partition("/")
            if not _matches(token, [access.rpc_token]):
                return _api_error(401, "Unauthorized: unknown RPC token."), scope
            return None, _rewritten(scope, f"{BASE_PATH}/{rest}", len(token))
        area = _area(path)
        if area == "app":
            return None, scope
        if scope["method"] not in _SAFE_METHODS and _cross_site(request):
            message = f"Cross-site {scope['method']} refused: send it from this host's own pages."
            if area == "dashboard":
                return PlainTextResponse(message, 403, headers=_HEADERS), scope
            return _api_error(403, message), scope
        if not access.enforce or access.keys is None or path in _PUBLIC:
            return None, scope
        keys = access.keys
        key = presented_key(request)
        if area == "admin":
            if _matches(key, [keys.master]):
                return None, scope
            return _api_error(401, "Unauthorized: /admin needs the master key."), scope
        if area == "management":
            if _matches(key, keys.system_keys()):
                return None, scope
            message = (
                "Unauthorized: the management API needs the system key 'durabletask_extension' "
                f"or the master key, sent as the {KEY_HEADER} header or the code query parameter."
            )
            return _api_error(401, message), scope
        # The dashboard.
        if path.startswith(f"{DASHBOARD}/static/") or path == _LOGOUT:
            return None, scope
        cookie = request.cookies.get(COOKIE)
        try:
            live = await self._live(access.session(cookie))
        except Exception as exc:
            incident = logged_error(log, "dfhost: dashboard session check: %s", exc)
            message = (
                "The dashboard cannot check your session: the task hub cannot be read; "
                f"{log_has_it(incident)}."
            )
            return PlainTextResponse(message, 503, headers=_HEADERS), scope
        if live:
            assert cookie is not None
            return None, {**scope, CSRF_SCOPE_KEY: csrf_of(keys.master, cookie)}
        if _matches(key, [keys.master]):
            return None, scope  # a script with the key: no browser, nothing to forge
        if scope["method"] in ("GET", "HEAD") and "json" not in request.headers.get("accept", ""):
            target = path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"{_LOGIN}?next={quote(target, safe='')}", 303), scope
        return PlainTextResponse("Unauthorized: log in to the dashboard first.", 401), scope


def csrf_of(master: str, cookie: str) -> str:
    """The form token of the session with this cookie."""
    return mac(master, "csrf", cookie)


def _area(path: str) -> str:
    if path == BASE_PATH or path.startswith(BASE_PATH + "/"):
        return "management"
    if path == "/admin" or path.startswith("/admin/"):
        return "admin"
    if path == DASHBOARD or path.startswith(DASHBOARD + "/"):
        return "dashboard"
    return "app"


def _host_name(header: str) -> str:
    header = header.strip()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def _cross_site(request: Request) -> bool:
    """What the browser says about where the request comes from; requests without those
    headers come from scripts, which a web page cannot forge."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site.strip().lower() not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return False
    if origin.strip().lower() == "null":
        return True
    netloc = urlsplit(origin.strip()).netloc.lower()
    return netloc != request.headers.get("host", "").strip().lower()


def _rewritten(scope: Scope, path: str, token_length: int) -> Scope:
    raw = scope.get("raw_path")
    prefix = RPC_PATH.encode()
    if isinstance(raw, bytes) and raw.startswith(prefix):
        new_raw = BASE_PATH.encode() + raw[len(prefix) + token_length :]
    else:
        new_raw = quote(path).encode()
    return {**scope, "path": path, "raw_path": new_raw, "dfhost.rpc": True}


def _api_error(status: int, message: str) -> Response:
    return JSONResponse({"Message": message, "ExceptionMessage": message}, status)


# --- the dashboard's login -------------------------------------------------------------------


def login_routes(access: Access, sessions: SessionBook | None = None) -> list[BaseRoute]:
    """`/dashboard/login` (GET: the form; POST: check the master key, set the cookie) and
    `/dashboard/logout` (POST; with `everywhere=1`, every session of the task hub), which
    `sessions` records so that the cookie is refused afterwards on every host."""

    async def login(request: Request) -> Response:
        target = _next(request.query_params.get("next"))
        if not access.enforce:
            return RedirectResponse(target, 303)
        if request.method == "GET":
            return _login_page(target, None, 200)
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if media_type != "application/x-www-form-urlencoded":
                raise BadRequestError("Log in with the form (application/x-www-form-urlencoded).")
            form = parse_qs((await read_body(request, 64 * 1024)).decode("utf-8", "replace"))
        except (BadRequestError, BodyTooLargeError) as exc:
            return _login_page(target, str(exc), 400)
        target = _next((form.get("next") or [target])[0])
        assert access.keys is not None
        if not _matches((form.get("key") or [""])[0] or None, [access.keys.master]):
            return _login_page(target, "That is not the master key.", 401)
        response = RedirectResponse(target, 303)
        response.set_cookie(
            COOKIE,
            access.session_cookie(),
            max_age=SESSION_SECONDS,
            path=DASHBOARD,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(request: Request) -> Response:
        cookie = request.cookies.get(COOKIE)
        session = access.session(cookie)
        if access.enforce and session is not None and cookie is not None:
            assert access.keys is not None
            try:
                form = parse_qs((await read_body(request, 64 * 1024)).decode("utf-8", "replace"))
            except (BadRequestError, BodyTooLargeError) as exc:
                return PlainTextResponse(str(exc), 400, headers=_HEADERS)
            token = (form.get(CSRF_FIELD) or [""])[0]
            if not _matches(token, [csrf_of(access.keys.master, cookie)]):
                message = "This logout form is not from this session: reload the page."
                return PlainTextResponse(message, 403, headers=_HEADERS)
            if sessions is not None:
                everywhere = (form.get("everywhere") or [""])[0] == "1"
                try:
                    await (sessions.revoke_all() if everywhere else sessions.revoke(session))
                except Exception as exc:
                    incident = logged_error(log, "dfhost: dashboard logout: %s", exc)
                    message = (
                        "The logout could not be recorded in the task hub; "
                        f"{log_has_it(incident)}. Try again."
                    )
                    return PlainTextResponse(message, 503, headers=_HEADERS)
        response = RedirectResponse(_LOGIN if access.enforce else f"{DASHBOARD}/", 303)
        response.delete_cookie(COOKIE, path=DASHBOARD, httponly=True, samesite="strict")
        return response

    return [
        Route(_LOGIN, login, methods=["GET", "POST"]),
        Route(_LOGOUT, logout, methods=["POST"]),
    ]


def _next(target: str | None) -> str:
    """Only a dashboard path: never a redirect to another site."""
    home = f"{DASHBOARD}/"
    if not target or not target.startswith(home) or target.startswith(_LOGIN):
        return home
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return home
    return target


def _login_page(target: str, error: str | None, status: int) -> Response:
    problem = f'<p class="flash err" role="alert">{escape(error)}</p>' if error else ""
    html = _LOGIN_HTML.format(
        base=DASHBOARD, action=_LOGIN, next=escape(target, quote=True), problem=problem
    )
    return HTMLResponse(html, status, headers=_HEADERS)


_LOGIN_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>Log in · dfhost</title>
<link rel="stylesheet" href="{base}/static/dashboard.css">
<link rel="icon" href="{base}/static/favicon.svg" type="image/svg+xml">
</head>
<body>
<header class="top"><span class="brand">dfhost</span></header>
<main>
<h1>Log in</h1>
{problem}
<form class="panel stack" method="post" action="{action}">
  <input type="hidden" name="next" value="{next}">
  <label>Master key <input type="password" name="key" autocomplete="current-password" required
    autofocus></label>
  <button type="submit">Log in</button>
</form>
<p class="note">The master key is in <code>keys.json</code> in the task hub's folder, or in
the <code>host.master</code> environment variable.</p>
</main>
</body>
</html>
"""
