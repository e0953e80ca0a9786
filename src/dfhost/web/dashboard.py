"""The dashboard at `/dashboard/`: instances, one instance, functions and entities, and actions.

Server-rendered HTML (Jinja2, autoescaped), one stylesheet and one small script, no build step
and nothing fetched from elsewhere, so it works offline. It reads and acts only through the
`DurableClient`, like the management API; its access control is web/auth.py's (the master
key, through a login form, when keys are enforced). State-changing requests are POSTs
dispatched in `dashboard_actions`, each checked for its form token (web/csrf.py).

Pages are addressed by query parameters (`instance?id=...`), so any instance id works in a URL
and every filter can be shared as a link. A strict Content-Security-Policy (no inline script or
style) backs up the escaping: even markup that slipped through could not run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from dfhost import __version__
from dfhost.app.functions import Function, FunctionApp
from dfhost.client import DurableClient
from dfhost.config import expand_app_settings
from dfhost.history import (
    TERMINAL_STATUSES,
    EventType,
    HistoryEvent,
    Instance,
    OrchestrationStatus,
    utcnow,
)
from dfhost.ids import InvalidArgumentError
from dfhost.logs import keep_instance_logs
from dfhost.orchestration.limits import PayloadTooLargeError
from dfhost.runtime.schedule import ScheduleError, parse_schedule, time_zone_named
from dfhost.runtime.triggers.stats import TRIGGER_STATS
from dfhost.store import InstancePage, StoreError
from dfhost.web.common import (
    BadRequestError,
    BodyTooLargeError,
    json_bytes,
    log_has_it,
    logged_error,
    read_body,
)
from dfhost.web.csrf import ForbiddenError, check_csrf, csrf_token
from dfhost.web.dashboard_actions import (
    BULK_LIMIT,
    BULK_STATUSES,
    DashboardActions,
    FilterError,
    ListFilter,
    RunFunction,
    instance_path,
)
from dfhost.web.timeline import (
    WIDTH,
    build_timeline,
    duration_text,
    history_rows,
    started_event,
)
from dfhost.wire import MAX_JSON_DEPTH, api_status, json_too_deep

__all__ = ["BASE", "Dashboard"]

BASE = "/dashboard"
PAGE_SIZES = (20, 50, 100, 200)
REFRESH_CHOICES = (0, 2, 5, 15, 60)
HISTORY_PAGE = 100
ENTITY_PAGE = 50
_JSON_SHOWN = 20_000
"""Characters of a payload shown inline; the history download has all of it."""

log = logging.getLogger("dfhost")

_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

Endpoint = Callable[[Request], Awaitable[Response]]


class _Flashes:
    """One-time messages shown after an action's redirect, kept here rather than in the URL
    so that a link cannot make the dashboard say something it did not."""

    def __init__(self, size: int = 200) -> None:
        self._size = size
        self._items: OrderedDict[str, tuple[bool, str]] = OrderedDict()

    def put(self, ok: bool, message: str) -> str:
        token = secrets.token_urlsafe(8)
        self._items[token] = (ok, message)
        while len(self._items) > self._size:
            self._items.popitem(last=False)
        return token

    def take(self, token: str | None) -> tuple[bool, str] | None:
        return None if not token else self._items.pop(token, None)


@dataclass(frozen=True, slots=True)
class _TimerView:
    function: Function
    schedule_text: str
    description: str | None
    problem: str | None
    time_zone: str
    use_monitor: bool
    run_on_startup: bool
    last: datetime | None
    next: datetime | None


class Dashboard:
    """The dashboard's routes for one task hub and app; mount them at `BASE`."""

    def __init__(
        self,
        client: DurableClient,
        app: FunctionApp,
        *,
        run_function: RunFunction | None = None,
        max_body_bytes: int = 10 * 1024 * 1024,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.client = client
        self.app = app
        self.clock = clock
        self.max_body_bytes = max_body_bytes
        self.can_run_functions = run_function is not None
        self.actions = DashboardActions(client, BASE, run_function)
        self.flashes = _Flashes()
        self.logs = keep_instance_logs()
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(
            time=_time_text,
            ms=_ms_text,
            ago=self._ago,
            duration=duration_text,
            pretty=_pretty,
            iurl=lambda instance_id: instance_path(BASE, instance_id),
            status_class=lambda status: f"st-{str(status).lower()}",
            num=lambda n: f"{n:,}",
            source=self._source,
        )
        self.templates.globals.update(base=BASE, version=__version__, hub=app.settings.hub_name)

    def routes(self) -> list[BaseRoute]:
        def route(path: str, endpoint: Endpoint, methods: list[str] | None = None) -> Route:
            return Route(path, self._guarded(endpoint), methods=methods or ["GET"])

        return [
            route("/", self.list_page),
            route("/instance", self.instance_page),
            route("/instance/history.json", self.history_json),
            route("/functions", self.functions_page),
            route("/go", self.go),
            route("/actions", self.act, ["POST"]),
            Mount("/static", StaticFiles(directory=Path(__file__).parent / "static")),
        ]

    # --- instance list ---------------------------------------------------------------------
    async def list_page(self, request: Request) -> Response:
        params = request.query_params
        error: str | None = None
        try:
            flt = ListFilter.parse(params.multi_items())
        except FilterError as exc:
            flt, error = ListFilter(), str(exc)
        filter_error = error is not None
        top = _choice(params.get("top"), PAGE_SIZES, 50)
        refresh = _choice(params.get("refresh"), REFRESH_CHOICES, 0)
        after = params.get("after") or None
        page_number = max(1, _int(params.get("page"), 1)) if after else 1
        counts = await self.client.count_by_status(flt.query())
        if filter_error:
            page = InstancePage(instances=[], continuation=None)
        else:
            try:
                page = await self.client.query(flt.query(top=top, continuation=after))
            except StoreError:
                if after is None:
                    raise
                error = "That page link is no longer valid (bad continuation token): page 1."
                page = await self.client.query(flt.query(top=top))
                after, page_number = None, 1
        selected = flt.statuses or tuple(OrchestrationStatus)
        total = 0 if filter_error else sum(counts[s] for s in selected)
        keep = [("top", str(top))] if top != 50 else []
        keep += [("refresh", str(refresh))] if refresh else []
        filtered = flt.params()
        status_links = []
        for status in OrchestrationStatus:
            others = [p for p in filtered if p[0] != "status"]
            status_links.append(
                (status, counts[status], _url("/", [("status", status.value), *others, *keep]))
            )
        bulk = [
            (verb, sum(counts[s] for s in applicable if s in selected))
            for verb, applicable in BULK_STATUSES.items()
        ]
        next_url = None
        if page.continuation is not None:
            next_url = _url(
                "/",
                [*filtered, *keep, ("after", page.continuation), ("page", str(page_number + 1))],
            )
        first_row = (page_number - 1) * top + 1
        return self._render(
            request,
            "instances.html",
            status=400 if filter_error else 200,
            filter=flt,
            filter_params=filtered,
            error=error,
            instances=page.instances,
            counts=counts,
            total=total,
            status_links=status_links,
            all_url=_url("/", [p for p in filtered if p[0] != "status"] + keep),
            clear_url=_url("/", keep),
            first_url=_url("/", [*filtered, *keep]) if after else None,
            next_url=next_url,
            first_row=first_row,
            last_row=first_row + len(page.instances) - 1,
            top=top,
            page_sizes=PAGE_SIZES,
            refresh=refresh,
            refresh_choices=REFRESH_CHOICES,
            bulk=bulk,
            bulk_limit=BULK_LIMIT,
            as_of=self.clock().isoformat(),
            orchestrators=sorted(f.name for f in self.app.of_kind("orchestrator")),
            statuses=list(OrchestrationStatus),
        )

    # --- one instance ----------------------------------------------------------------------
    async def instance_page(self, request: Request) -> Response:
        instance_id = request.query_params.get("id", "")
        instance = await self.client.get_status(instance_id) if instance_id else None
        if instance is None:
            return self._render(
                request, "missing.html", status=404, instance_id=instance_id, refresh=0
            )
        history: list[HistoryEvent] = []
        history_error = None
        try:
            history = await self.client.get_history(instance_id)
        except StoreError as exc:
            incident = logged_error(log, "dfhost: dashboard: history of %s: %s", instance_id, exc)
            history_error = f"it cannot be read; {log_has_it(incident)}"
        now = self.clock()
        timeline = build_timeline(instance, history, now)
        rows = history_rows(history)
        type_filter = request.query_params.get("htype", "")
        present = sorted({row.type_name for row in rows})
        if type_filter == "failures":
            rows = [r for r in rows if r.failed]
        elif type_filter:
            rows = [r for r in rows if r.type_name == type_filter]
        pages = max(1, math.ceil(len(rows) / HISTORY_PAGE))
        hpage = min(max(1, _int(request.query_params.get("hpage"), 1)), pages)
        shown = rows[(hpage - 1) * HISTORY_PAGE : hpage * HISTORY_PAGE]

        def history_url(page: int, kind: str = type_filter) -> str:
            return _url("/instance", [("id", instance_id), ("htype", kind), ("hpage", str(page))])

        started = started_event(history)
        children = [
            (e.instance_id, e.name)
            for e in history
            if e.type is EventType.SUB_ORCHESTRATION_CREATED and e.instance_id
        ]
        unfinished = instance.status not in TERMINAL_STATUSES
        return self._render(
            request,
            "instance.html",
            instance=instance,
            started=started,
            later_generation=started is not None
            and started.timestamp - instance.created_at > timedelta(milliseconds=1),
            history_error=history_error,
            history_count=len(history),
            timeline=timeline,
            width=WIDTH,
            rows=shown,
            row_count=len(rows),
            present_types=present,
            type_filter=type_filter,
            hpage=hpage,
            hpages=pages,
            history_url=history_url,
            children=children,
            error=_failure(instance) if instance.status is OrchestrationStatus.FAILED else None,
            unknown_orchestrator=not self.app.runs_orchestrator(instance.name),
            unfinished=unfinished,
            logs=self.logs.lines(instance_id),
            refresh=_choice(request.query_params.get("refresh"), REFRESH_CHOICES, 0),
            refresh_choices=REFRESH_CHOICES,
            kind_labels=_KIND_LABELS,
            now=now,
        )

    async def history_json(self, request: Request) -> Response:
        instance_id = request.query_params.get("id", "")
        instance = await self.client.get_status(instance_id) if instance_id else None
        if instance is None:
            return JSONResponse({"error": f"No instance with ID '{instance_id}' found."}, 404)
        history = await self.client.get_history(instance_id)
        body = {
            "instance": api_status(instance),
            "executionId": instance.execution_id,
            "history": [e.to_dict() for e in history],
        }
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", instance_id)[:80]
        return Response(
            json_bytes(body, indent=1),
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="history-{safe}.json"'},
        )

    async def go(self, request: Request) -> Response:
        """Jump to an instance by id; an id that is not one lists the ids starting with it."""
        instance_id = request.query_params.get("id", "").strip()
        if instance_id and await self.client.get_status(instance_id) is not None:
            return RedirectResponse(instance_path(BASE, instance_id), 303)
        return RedirectResponse(_url("/", [("prefix", instance_id)] if instance_id else []), 303)

    # --- functions and entities ------------------------------------------------------------
    async def functions_page(self, request: Request) -> Response:
        functions = sorted(self.app.functions.values(), key=lambda f: (_KIND_ORDER[f.kind], f.name))
        timers = [await self._timer_view(f) for f in functions if f.kind == "timer"]
        after = request.query_params.get("after") or None
        entity_query = ListFilter(prefix="@").query(top=ENTITY_PAGE, continuation=after)
        try:
            entities = await self.client.query(entity_query)
        except StoreError:
            entities = await self.client.query(ListFilter(prefix="@").query(top=ENTITY_PAGE))
            after = None
        return self._render(
            request,
            "functions.html",
            functions=functions,
            timers=timers,
            triggered=[f for f in functions if f.kind in _TRIGGERED_KINDS],
            trigger_stats=TRIGGER_STATS.snapshot(),
            can_run=self.can_run_functions,
            load_errors=self.app.errors,
            entities=[(i, *_entity_parts(i), i.custom_status) for i in entities.instances],
            entity_count=await self.client.count(entity_query),
            entities_next=_url("/functions", [("after", entities.continuation)])
            if entities.continuation
            else None,
            entities_first=_url("/functions", []) if after else None,
            refresh=0,
        )

    async def _timer_view(self, function: Function) -> _TimerView:
        # Parsed as TimerRunner parses it: the runner is not reachable from here, and the
        # stored schedule status is read through the client like everything else.
        raw = str(function.trigger.settings.get("schedule") or "")
        zone_name = os.environ.get("WEBSITE_TIME_ZONE") or "UTC"
        description = problem = None
        next_run: datetime | None = None
        try:
            schedule = parse_schedule(expand_app_settings(raw), time_zone_named(zone_name))
            description = schedule.description
            next_run = schedule.next_occurrence(self.clock())
            monitor_default = schedule.monitor_by_default
        except KeyError as exc:
            problem, monitor_default = f"app setting {exc.args[0]!r} is not set", False
        except ScheduleError as exc:
            problem, monitor_default = str(exc), False
        setting = function.trigger.settings.get("useMonitor")
        use_monitor = monitor_default if setting is None else _truthy(setting)
        status = await self.client.timer_status(function.name)
        return _TimerView(
            function=function,
            schedule_text=raw,
            description=description,
            problem=problem,
            time_zone=zone_name,
            use_monitor=use_monitor,
            run_on_startup=_truthy(function.trigger.settings.get("runOnStartup")),
            last=status.last if status is not None and use_monitor else None,
            next=status.next if status is not None and use_monitor else next_run,
        )

    # --- actions ---------------------------------------------------------------------------
    async def act(self, request: Request) -> Response:
        """The one entry point of every state-changing request (see dashboard_actions)."""
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/x-www-form-urlencoded":
            raise BadRequestError(
                "Actions are HTML form posts (application/x-www-form-urlencoded)."
            )
        body = await read_body(request, self.max_body_bytes)
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise BadRequestError("The form is not valid UTF-8.") from None
        check_csrf(request, form)
        outcome = await self.actions.run(form, self.clock())
        if outcome.ok:
            log.info("dfhost: dashboard: %s", outcome.message)
        if "application/json" in request.headers.get("accept", ""):
            body_json = {"ok": outcome.ok, "message": outcome.message, "location": outcome.location}
            return JSONResponse(body_json, outcome.status, headers=_HEADERS)
        token = self.flashes.put(outcome.ok, outcome.message)
        separator = "&" if "?" in outcome.location else "?"
        return RedirectResponse(f"{outcome.location}{separator}flash={token}", 303)

    # --- plumbing --------------------------------------------------------------------------
    def _render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> Response:
        flash = self.flashes.take(request.query_params.get("flash"))
        html = self.templates.get_template(template).render(
            flash=flash, path=request.url.path, csrf=csrf_token(request), **context
        )
        # An unpaired surrogate (stored by user code) has no UTF-8: show it escaped.
        return HTMLResponse(html.encode("utf-8", "backslashreplace"), status, headers=_HEADERS)

    def _source(self, path: str) -> str:
        """A function's file, relative to the app's folder when it is inside."""
        try:
            return str(Path(path).resolve().relative_to(self.app.root.resolve()))
        except (ValueError, OSError):
            return path

    def _ago(self, moment: datetime) -> str:
        delta = self.clock() - moment
        if delta < timedelta(0):
            return "in " + duration_text(-delta)
        return duration_text(delta) + " ago"

    def _guarded(self, endpoint: Endpoint) -> Endpoint:
        async def guarded(request: Request) -> Response:
            try:
                return await endpoint(request)
            except (BadRequestError, InvalidArgumentError) as exc:
                return self._problem(request, 400, str(exc))
            except (BodyTooLargeError, PayloadTooLargeError) as exc:
                return self._problem(request, 413, str(exc))
            except ForbiddenError as exc:
                return self._problem(request, 403, str(exc))
            except StoreError as exc:
                # The store's message names its URL (user, host, database): the log only.
                incident = logged_error(log, "dfhost: dashboard %s: %s", request.url.path, exc)
                message = f"The task hub cannot be read; {log_has_it(incident)}."
                return self._problem(request, 503, message)
            except Exception:
                incident = logged_error(
                    log,
                    "dfhost: dashboard %s %s failed",
                    request.method,
                    request.url.path,
                    trace=True,
                )
                return self._problem(request, 500, f"Something went wrong; {log_has_it(incident)}.")

        return guarded

    def _problem(self, request: Request, status: int, message: str) -> Response:
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"ok": False, "message": message}, status, headers=_HEADERS)
        return self._render(request, "problem.html", status=status, message=message, refresh=0)


_KIND_LABELS = {
    "execution": "orchestr.",
    "activity": "activity",
    "timer": "timer",
    "suborchestration": "sub-orch.",
    "event": "event",
    "suspended": "suspended",
    "idle": "idle",
}
_KIND_ORDER = {"orchestrator": 0, "activity": 1, "entity": 2, "timer": 3, "http": 4, "other": 6}
_TRIGGERED_KINDS = ("queue", "blob", "rabbitmq", "redis", "eventgrid")
_KIND_ORDER.update(dict.fromkeys(_TRIGGERED_KINDS, 5))


def _url(path: str, params: Iterable[tuple[str, str]]) -> str:
    query = urlencode([(k, v) for k, v in params if v != ""])
    return f"{BASE}{path}{'?' + query if query else ''}"


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _choice(text: str | None, choices: Sequence[int], default: int) -> int:
    value = _int(text, default)
    return value if value in choices else default


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return value is True or value == 1


def _time_text(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.strftime("%Y-%m-%d %H:%M:%S") + "Z"


def _ms_text(moment: datetime) -> str:
    return moment.strftime("%H:%M:%S.%f")[:-3]


def _pretty(text: str | None, limit: int = _JSON_SHOWN) -> str:
    """JSON text indented for reading; text that isn't JSON as it is; long text cut."""
    if text is None:
        return "(none)"
    if json_too_deep(text):
        return f"(nested more than {MAX_JSON_DEPTH} levels deep: shown as stored)\n" + _cut(
            text, limit
        )
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        shown = text
    else:
        # A multi-line string (an error with its traceback) reads better unescaped.
        multiline = isinstance(value, str) and "\n" in value
        shown = value if multiline else json.dumps(value, indent=2, ensure_ascii=False)
    return _cut(shown, limit)


def _cut(shown: str, limit: int) -> str:
    if len(shown) > limit:
        more = len(shown) - limit
        shown = f"{shown[:limit]}\n… ({more:,} more characters: download the history)"
    return shown


def _failure(instance: Instance) -> tuple[str, str | None]:
    """(message, stack) of a Failed instance: its output is the message as a JSON string."""
    message = instance.output or ""
    if message.startswith('"'):  # a JSON string: no nesting to fear
        try:
            value = json.loads(message)
            if isinstance(value, str):
                message = value
        except ValueError:
            pass
    return message, instance.failure_details


def _entity_parts(instance: Instance) -> tuple[str, str]:
    """(entity name, key) of an `@name@key` instance id."""
    name, _, key = instance.instance_id[1:].partition("@")
    return name, key
