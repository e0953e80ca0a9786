"""The dashboard's state-changing actions, dispatched from ONE place (`DashboardActions.run`),
so that request checks (CSRF tokens, keys: issue 11) go in one spot.

Every action goes through the `DurableClient`, as the management API's do, and ends in an
`Outcome`: an HTTP status (for callers asking for JSON), a one-line message for the user, and
the page to show next. Also here: the instance list's filter, which bulk actions share.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlencode

from dfhost.client import (
    DurableClient,
    InstanceExistsError,
    InstanceNotFoundError,
    UnknownOrchestratorError,
    check_filter,
)
from dfhost.history import TERMINAL_STATUSES, OrchestrationStatus, parse_statuses, parse_time
from dfhost.ids import InvalidArgumentError
from dfhost.store import DeliveryResult, InstanceQuery
from dfhost.wire import UnsafeJsonError, parse_json_input

__all__ = [
    "BULK_LIMIT",
    "BULK_STATUSES",
    "ActionError",
    "DashboardActions",
    "FilterError",
    "ListFilter",
    "Outcome",
    "instance_path",
]

RunFunction = Callable[[str], Awaitable[Literal["started", "not_found", "busy"]]]

BULK_LIMIT = 10_000
"""Instances one bulk request acts on at most (purge excepted), so a request stays short."""
_BULK_PAGE = 500

_UNFINISHED = (
    OrchestrationStatus.PENDING,
    OrchestrationStatus.RUNNING,
    OrchestrationStatus.CONTINUED_AS_NEW,
    OrchestrationStatus.SUSPENDED,
)
_FINISHED = tuple(s for s in OrchestrationStatus if s in TERMINAL_STATUSES)
BULK_STATUSES: dict[str, tuple[OrchestrationStatus, ...]] = {
    "terminate": _UNFINISHED,
    "suspend": (
        OrchestrationStatus.PENDING,
        OrchestrationStatus.RUNNING,
        OrchestrationStatus.CONTINUED_AS_NEW,
    ),
    "resume": (OrchestrationStatus.SUSPENDED,),
    "rewind": (OrchestrationStatus.FAILED,),
    "restart": tuple(OrchestrationStatus),
    "purge": _FINISHED,
}
"""The statuses each bulk action applies to; instances in others are left alone."""

_PAST = {
    "terminate": "Terminate",
    "suspend": "Suspend",
    "resume": "Resume",
    "rewind": "Rewind",
}


class FilterError(ValueError):
    """A list filter parameter is malformed (one line for the user)."""


class ActionError(Exception):
    """An action's input is malformed; answered 400 with this message."""


def instance_path(base: str, instance_id: str) -> str:
    return f"{base}/instance?{urlencode({'id': instance_id})}"


@dataclass(frozen=True, slots=True)
class ListFilter:
    """The instance list's filters, as kept in the URL (so a view can be shared)."""

    statuses: tuple[OrchestrationStatus, ...] = ()
    name: str = ""
    prefix: str = ""
    created_from: datetime | None = None
    created_to: datetime | None = None

    @classmethod
    def parse(cls, params: Iterable[tuple[str, str]]) -> ListFilter:
        values: dict[str, str] = {}
        texts: list[str] = []
        for key, value in params:
            if key == "status":
                texts.append(value)
            elif key in ("name", "prefix", "from", "to"):
                values[key] = value.strip()
        try:
            statuses = parse_statuses(texts, "status")
            check_filter(values.get("prefix"), values.get("name"))
        except ValueError as exc:
            raise FilterError(str(exc)) from None
        return cls(
            statuses=statuses,
            name=values.get("name", ""),
            prefix=values.get("prefix", ""),
            created_from=_time(values.get("from", ""), "from"),
            created_to=_time(values.get("to", ""), "to"),
        )

    @property
    def empty(self) -> bool:
        return self == ListFilter()

    def query(self, top: int = 100, continuation: str | None = None) -> InstanceQuery:
        return InstanceQuery(
            created_from=self.created_from,
            created_to=self.created_to,
            statuses=self.statuses,
            instance_id_prefix=self.prefix or None,
            name=self.name or None,
            top=top,
            continuation=continuation,
        )

    def params(self) -> list[tuple[str, str]]:
        """The URL query parameters (and hidden form fields) that reproduce this filter."""
        out = [("status", s.value) for s in self.statuses]
        out += [(k, v) for k, v in (("name", self.name), ("prefix", self.prefix)) if v]
        if self.created_from is not None:
            out.append(("from", _time_text(self.created_from)))
        if self.created_to is not None:
            out.append(("to", _time_text(self.created_to)))
        return out


def _time(text: str, field: str) -> datetime | None:
    if not text:
        return None
    try:
        return parse_time(text.replace(" ", "T", 1) if "T" not in text else text)
    except ValueError:
        raise FilterError(
            f"'{field}' {text!r} is not a date and time (e.g. 2026-01-31T14:00, UTC)"
        ) from None


def _time_text(value: datetime) -> str:
    """As a datetime-local input shows it (UTC, to the second)."""
    text = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return text[:-3] if text.endswith(":00") else text


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    """200, or the 4xx the management API would answer."""
    message: str
    location: str

    @property
    def ok(self) -> bool:
        return self.status < 400


class DashboardActions:
    """Runs the dashboard's actions; `run` is the one entry point."""

    def __init__(
        self,
        client: DurableClient,
        base: str,
        run_function: RunFunction | None = None,
    ) -> None:
        self.client = client
        self.base = base
        self.run_function = run_function

    async def run(self, form: Mapping[str, Sequence[str]], now: datetime) -> Outcome:
        """Do the action the form names (field `action`)."""
        fields = _Fields(form)
        action = fields.get("action")
        try:
            if action == "start":
                return await self._start(fields)
            if action == "raise":
                return await self._raise(fields)
            if action in ("terminate", "suspend", "resume", "rewind"):
                return await self._control(action, fields)
            if action == "restart":
                return await self._restart(fields)
            if action == "purge":
                return await self._purge(fields)
            if action == "run":
                return await self._run_function(fields)
            if action == "bulk":
                return await self._bulk(fields, now)
        except (ActionError, FilterError, InvalidArgumentError) as exc:
            instance_id = fields.get("instance_id")
            back = instance_path(self.base, instance_id) if instance_id else f"{self.base}/"
            return Outcome(400, str(exc), back)
        shown = (action or "")[:40]
        return Outcome(400, f"unknown action '{shown}'", f"{self.base}/")

    # --- one instance ----------------------------------------------------------------------
    async def _start(self, fields: _Fields) -> Outcome:
        name = fields.required("name", "an orchestrator name")
        instance_id = fields.get("instance_id") or None
        input_text = _json_field(fields.get("input"), "input")
        try:
            started = await self.client.start_new(name, instance_id, input_text)
        except (UnknownOrchestratorError, InvalidArgumentError) as exc:
            return Outcome(400, str(exc), f"{self.base}/")
        except InstanceExistsError as exc:
            return Outcome(409, str(exc), instance_path(self.base, exc.instance_id))
        return Outcome(200, f"Started '{started}' ({name}).", instance_path(self.base, started))

    async def _raise(self, fields: _Fields) -> Outcome:
        instance_id = fields.required("instance_id", "an instance id")
        event = fields.required("event_name", "an event name")
        data = _json_field(fields.get("event_data"), "event data")
        result = await self.client.raise_event(instance_id, event, data)
        return await self._delivered(result, instance_id, f"Raised event '{event}' on")

    async def _control(self, action: str, fields: _Fields) -> Outcome:
        instance_id = fields.required("instance_id", "an instance id")
        reason = fields.get("reason") or None
        if action == "rewind":
            try:
                result = await self.client.rewind(instance_id, reason)
            except UnknownOrchestratorError as exc:
                return Outcome(400, str(exc), instance_path(self.base, instance_id))
        else:
            call = {
                "terminate": self.client.terminate,
                "suspend": self.client.suspend,
                "resume": self.client.resume,
            }[action]
            result = await call(instance_id, reason)
        return await self._delivered(result, instance_id, f"{_PAST[action]} requested for")

    async def _delivered(self, result: DeliveryResult, instance_id: str, done: str) -> Outcome:
        here = instance_path(self.base, instance_id)
        if result == "sent":
            return Outcome(200, f"{done} '{instance_id}'.", here)
        if result == "not_found":
            return Outcome(404, f"No instance with ID '{instance_id}' found.", f"{self.base}/")
        instance = await self.client.get_status(instance_id)
        status = instance.status.value if instance is not None else "purged"
        return Outcome(
            410, f"Instance '{instance_id}' is {status}: the action does not apply to it.", here
        )

    async def _restart(self, fields: _Fields) -> Outcome:
        instance_id = fields.required("instance_id", "an instance id")
        new_id = fields.get("new_id") in ("on", "true", "1")
        here = instance_path(self.base, instance_id)
        try:
            restarted = await self.client.restart(instance_id, new_id)
        except InstanceNotFoundError as exc:
            return Outcome(404, str(exc), f"{self.base}/")
        except UnknownOrchestratorError as exc:
            return Outcome(400, str(exc), here)
        except InstanceExistsError as exc:
            return Outcome(409, f"{exc} Terminate it first, or restart with a new ID.", here)
        return Outcome(
            200, f"Restarted '{instance_id}' as '{restarted}'.", instance_path(self.base, restarted)
        )

    async def _purge(self, fields: _Fields) -> Outcome:
        instance_id = fields.required("instance_id", "an instance id")
        if await self.client.purge(instance_id) == 0:
            return Outcome(404, f"No instance with ID '{instance_id}' found.", f"{self.base}/")
        return Outcome(200, f"Purged '{instance_id}' and its history.", f"{self.base}/")

    async def _run_function(self, fields: _Fields) -> Outcome:
        name = fields.required("function", "a function name")
        here = f"{self.base}/functions"
        result = "not_found" if self.run_function is None else await self.run_function(name)
        if result == "started":
            return Outcome(200, f"Started timer function '{name}'.", here)
        if result == "busy":
            return Outcome(409, f"'{name}' is running already; it never runs twice at once.", here)
        return Outcome(404, f"No timer-triggered function named '{name}' runs here.", here)

    # --- bulk ------------------------------------------------------------------------------
    async def _bulk(self, fields: _Fields, now: datetime) -> Outcome:
        flt = ListFilter.parse(fields.items())
        back = f"{self.base}/?{urlencode(flt.params())}" if not flt.empty else f"{self.base}/"
        verb = fields.get("bulk")
        applicable = BULK_STATUSES.get(verb or "")
        if verb is None or applicable is None:
            raise ActionError(f"unknown bulk action '{(verb or '')[:40]}'")
        statuses = [s for s in (flt.statuses or applicable) if s in applicable]
        if not statuses:
            return Outcome(200, f"Bulk {verb} applies to none of the selected statuses.", back)
        # Only instances created before the page was shown: instances started meanwhile (and
        # restarts made by this very action) are not what the user confirmed.
        as_of = _time(fields.get("as_of") or "", "as_of") or now
        upper = as_of if flt.created_to is None else min(flt.created_to, as_of)
        query = replace(flt.query(top=_BULK_PAGE), statuses=tuple(statuses), created_to=upper)
        if verb == "purge":
            deleted = await self.client.purge_many(query)
            return Outcome(200, f"Purged {deleted} finished instance(s) and their history.", back)
        reason = fields.get("reason") or None
        done = skipped = 0
        failures: list[str] = []
        token: str | None = None
        while done + skipped + len(failures) < BULK_LIMIT:
            page = await self.client.query(replace(query, continuation=token))
            for instance in page.instances:
                try:
                    if await self._apply(verb, instance.instance_id, reason):
                        done += 1
                    else:
                        skipped += 1
                except (UnknownOrchestratorError, InstanceExistsError) as exc:
                    failures.append(str(exc))
            token = page.continuation
            if token is None:
                break
        message = f"Bulk {verb}: {done} instance(s)"
        if skipped:
            message += f", {skipped} skipped (changed status meanwhile)"
        if failures:
            message += f", {len(failures)} refused (first: {failures[0]})"
        if token is not None:
            message += f"; stopped after {BULK_LIMIT:,}: run it again for the rest"
        return Outcome(200 if not failures else 409, message + ".", back)

    async def _apply(self, verb: str, instance_id: str, reason: str | None) -> bool:
        if verb == "restart":
            try:
                await self.client.restart(instance_id, new_instance_id=True)
            except InstanceNotFoundError:
                return False
            return True
        if verb == "rewind":
            return await self.client.rewind(instance_id, reason) == "sent"
        call = {
            "terminate": self.client.terminate,
            "suspend": self.client.suspend,
            "resume": self.client.resume,
        }[verb]
        return await call(instance_id, reason) == "sent"


class _Fields:
    """Form fields; the first value of a name wins, repeated ones (status) stay readable."""

    def __init__(self, form: Mapping[str, Sequence[str]]) -> None:
        self._form = form

    def get(self, name: str) -> str | None:
        values = self._form.get(name)
        return values[0] if values else None

    def required(self, name: str, what: str) -> str:
        value = (self.get(name) or "").strip()
        if not value:
            raise ActionError(f"{what} is required")
        return value

    def items(self) -> list[tuple[str, str]]:
        return [(k, v) for k, values in self._form.items() for v in values]


def _json_field(text: str | None, what: str) -> str | None:
    """JSON text as typed, or None when empty; malformed JSON is refused with its position,
    JSON that could not be shown again (too deep) with the reason."""
    if text is None or not text.strip():
        return None
    try:
        parse_json_input(text, what)
    except UnsafeJsonError as exc:
        raise ActionError(str(exc)) from None
    return text.strip()
