"""Timer-triggered functions: each runs at its schedule's occurrences, never overlapping.

One asyncio task per function sleeps until the next occurrence (no polling), then asks the
task hub for the right to run it (`Store.claim_timer_run`). The store grants each occurrence
once, and never while a run of the function is in progress on any host, so several hosts
sharing a task hub run every occurrence once, and an occurrence that falls due during a long
run is skipped (the host running it logs one line), as in Azure.

`useMonitor` (default: on for schedules firing at most once a minute, as in Azure; an explicit
setting wins) keeps the function's schedule status {Last, Next, LastUpdated} in the task hub.
A host starting after the recorded Next passed runs the function once with `past_due=True`,
not once per missed occurrence; `runOnStartup` runs it once at every host start otherwise.
`POST /admin/functions/{name}` runs it now (`run_now`), under the same no-overlap rule.
`use_app` switches to a reloaded app's timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal
from urllib.parse import urlsplit

from azure.functions.timer import TimerRequest

from dfhost import telemetry
from dfhost.app.bindings import OutBinding, invocation_arguments
from dfhost.app.functions import Function, FunctionApp
from dfhost.app.invoke import call_function
from dfhost.config import expand_app_settings
from dfhost.history import utcnow
from dfhost.logs import Invocation, log_invocation
from dfhost.runtime.schedule import Schedule, ScheduleError, parse_schedule, time_zone_named
from dfhost.runtime.shutdown import cancel_and_wait, finish_within
from dfhost.runtime.triggers.bindings_io import has_io, shared_io
from dfhost.runtime.triggers.invoker import log_function_exception
from dfhost.store import Claim, Store, TimerStatus
from dfhost.wire import client_binding

__all__ = ["RunNowResult", "TimerFunction", "TimerRunner"]

log = logging.getLogger("dfhost.timers")

RunNowResult = Literal["started", "not_found", "busy"]

# What the Functions host passes as the trigger's `Schedule` and as an unset `Last`.
_SCHEDULE_PAYLOAD = {"AdjustForDST": True}
_NEVER = "0001-01-01T00:00:00"
_MANUAL_REASON = "This function was programmatically called via the host APIs."


@dataclass(frozen=True, slots=True)
class TimerFunction:
    """A timer-triggered function with its parsed schedule and options."""

    function: Function
    schedule: Schedule
    run_on_startup: bool
    use_monitor: bool
    time_zone: tzinfo = UTC


@dataclass(slots=True)
class _Run:
    token: int
    task: asyncio.Task[None]
    fired_at: datetime


class TimerRunner:
    """Runs one host's timer-triggered functions until stopped.

    Schedules that cannot be used are listed in `problems` (one line each) and their
    functions are not scheduled; the others run.
    """

    def __init__(
        self,
        app: FunctionApp,
        store: Store,
        *,
        owner: str,
        rpc_base_url: str,
        clock: Callable[[], datetime] = utcnow,
        lease: timedelta = timedelta(minutes=5),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`owner` must be the host's (the Engine's) owner: the store frees a dead host's
        runs by it. `rpc_base_url` is what durableClient bindings get (see wire.py)."""
        self.app = app
        self.store = store
        self.owner = owner
        self.rpc_base_url = rpc_base_url
        self.clock = clock
        self.lease = lease
        self.env = os.environ if env is None else env
        self.problems: list[str] = []
        self.timers = self._prepare(app, self.env)
        self._running: dict[str, _Run] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._started = False
        self._stopping = False

    def _prepare(self, app: FunctionApp, env: Mapping[str, str]) -> dict[str, TimerFunction]:
        functions = app.of_kind("timer")
        try:
            time_zone = time_zone_named(env.get("WEBSITE_TIME_ZONE"))
        except ScheduleError as exc:
            if functions:
                names = ", ".join(repr(f.name) for f in functions)
                self.problems.append(f"{exc}; timer functions {names} are not scheduled")
            return {}
        timers: dict[str, TimerFunction] = {}
        for function in functions:
            settings = function.trigger.settings
            raw = str(settings.get("schedule") or "")
            try:
                schedule = parse_schedule(expand_app_settings(raw, env), time_zone)
            except KeyError as exc:
                self.problems.append(
                    f"timer {function.name!r}: schedule {raw!r} uses app setting "
                    f"{exc.args[0]!r}, which is not set; the function is not scheduled"
                )
                continue
            except ScheduleError as exc:
                self.problems.append(
                    f"timer {function.name!r}: {exc}; the function is not scheduled"
                )
                continue
            monitor = settings.get("useMonitor")
            timers[function.name] = TimerFunction(
                function=function,
                schedule=schedule,
                run_on_startup=_truthy(settings.get("runOnStartup")),
                use_monitor=schedule.monitor_by_default if monitor is None else _truthy(monitor),
                time_zone=time_zone,
            )
        return timers

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every timer in the background (a past-due or on-startup run comes first)."""
        self._started = True
        now = self.clock()
        for timer in self.timers.values():
            upcoming = timer.schedule.next_occurrence(now).astimezone(timer.time_zone)
            log.info(
                "dfhost: timer '%s' (%s, %s%s) next fires at %s",
                timer.function.name,
                timer.schedule.description,
                _zone_name(timer.time_zone),
                ", monitored" if timer.use_monitor else "",
                upcoming.isoformat(),
            )
            self._loops.append(
                asyncio.create_task(
                    self._schedule(timer), name=f"dfhost-timer-{timer.function.name}"
                )
            )
        if self.timers or self._running:
            self._loops.append(
                asyncio.create_task(self._renew_leases(), name="dfhost-timer-leases")
            )

    async def use_app(self, app: FunctionApp) -> None:
        """Schedule `app`'s timers instead (`dfhost start --reload`), as a host start would
        (`runOnStartup` runs again). Runs in progress finish on the code they started with;
        until they do, their function does not run again."""
        loops, self._loops = self._loops, []
        self.app = app
        self.problems = []
        self.timers = self._prepare(app, self.env)
        for problem in self.problems:
            log.error("dfhost: %s", problem)
        await cancel_and_wait(loops)
        if self._started and not self._stopping:
            await self.start()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop scheduling; let runs in progress finish for up to `grace` seconds.

        Runs still going then are cancelled without releasing their claim: a function
        running in a thread cannot be stopped, and releasing would let another host overlap
        it. The claim is freed when this host's process ends (or its lease expires).
        """
        self._stopping = True
        await cancel_and_wait(self._loops)
        self._loops.clear()
        await finish_within([run.task for run in self._running.values()], grace)

    async def run_now(self, name: str) -> RunNowResult:
        """Invoke a timer-triggered function once, now (the admin API's "run now")."""
        timer = self.timers.get(name) or next(
            (t for n, t in self.timers.items() if n.lower() == name.lower()), None
        )
        if timer is None:
            return "not_found"
        if self._stopping:
            return "busy"
        return await self._fire(timer, None, manual=True)

    # --- scheduling -----------------------------------------------------------------------

    async def _schedule(self, timer: TimerFunction) -> None:
        now = self.clock()
        missed = await self._check_status(timer, now) if timer.use_monitor else None
        if missed is not None:
            # Claimed as the last occurrence missed, so that hosts starting together catch up
            # once, and a run cut short by a crash still gets its catch-up after downtime.
            await self._fire(timer, _last_missed(timer.schedule, missed, now), past_due=True)
        elif timer.run_on_startup:
            await self._fire(timer, None)
        after = now
        while True:
            due = timer.schedule.next_occurrence(after)
            await self._sleep_until(due)
            # Late wake-ups (a suspended machine) skip the occurrences missed meanwhile.
            after = max(due, self.clock())
            await self._fire(timer, due)

    async def _sleep_until(self, due: datetime) -> None:
        # One sleep; again only if it ended early (the loop's clock is not the wall clock).
        delay = (due - self.clock()).total_seconds()
        while delay > 0:
            await asyncio.sleep(delay)
            delay = (due - self.clock()).total_seconds()

    async def _check_status(self, timer: TimerFunction, now: datetime) -> datetime | None:
        """The missed occurrence to catch up on, if the recorded Next passed while no host ran
        the function; else record a fresh status when there is none or it is stale."""
        name = timer.function.name
        try:
            status = await self.store.get_timer_status(name)
            if status is not None and _is_occurrence(timer.schedule, status.next):
                return status.next if now > status.next else None
            # Never recorded, or recorded for another schedule: start from now, as Azure does.
            fresh = TimerStatus(
                last=status.last if status else None,
                next=timer.schedule.next_occurrence(now),
                last_updated=now,
            )
            await self.store.set_timer_status(name, fresh)
        except Exception:
            log.exception("dfhost: timer '%s': could not read or record its schedule status", name)
        return None

    async def _fire(
        self,
        timer: TimerFunction,
        due_at: datetime | None,
        *,
        past_due: bool = False,
        manual: bool = False,
    ) -> RunNowResult:
        name = timer.function.name
        running = self._running.get(name)
        if running is not None:
            if due_at is not None:
                log.info(
                    "dfhost: timer '%s' skipped its %s occurrence: the run started at %s is "
                    "still going",
                    name,
                    due_at.astimezone(timer.time_zone).isoformat(),
                    running.fired_at.astimezone(timer.time_zone).isoformat(),
                )
            return "busy"
        now = self.clock()

        def start_run(token: int) -> None:
            task = asyncio.create_task(self._run(timer, token, due_at, now, past_due, manual))
            self._running[name] = _Run(token=token, task=task, fired_at=now)
            task.add_done_callback(lambda _: self._running.pop(name, None))

        claim = Claim(owner=self.owner, now=now, lease_until=now + self.lease)
        claiming = asyncio.ensure_future(self.store.claim_timer_run(name, due_at, claim))
        try:
            token = await asyncio.shield(claiming)
        except asyncio.CancelledError:
            # Stopped or reloaded mid-claim: a claim that commits all the same still runs
            # (stop waits for it); dropped, it would keep the function from running for
            # a whole lease.
            with contextlib.suppress(Exception):
                if (token := await claiming) is not None:
                    start_run(token)
            raise
        except Exception:
            log.exception("dfhost: timer '%s': could not reach the task hub", name)
            return "busy"
        if token is None:
            # Another host ran this occurrence, or is running the function right now.
            return "busy"
        start_run(token)
        return "started"

    async def _run(
        self,
        timer: TimerFunction,
        token: int,
        due_at: datetime | None,
        fired_at: datetime,
        past_due: bool,
        manual: bool,
    ) -> None:
        function = timer.function
        status = None
        if timer.use_monitor:
            try:
                status = await self.store.get_timer_status(function.name)
            except Exception:
                log.exception("dfhost: timer '%s': could not read its status", function.name)
        request = TimerRequest(
            past_due=past_due,
            schedule_status=None if status is None else _status_payload(status, timer.time_zone),
            schedule=dict(_SCHEDULE_PAYLOAD),
        )
        inv = Invocation(function=function.name)
        fired_text = fired_at.astimezone(timer.time_zone).isoformat()
        reason = _MANUAL_REASON if manual else f"Timer fired at {fired_text}"
        attributes: dict[str, str | bool] = {"faas.trigger": "timer", "dfhost.past_due": past_due}
        try:
            with (
                telemetry.run_span(f"timer_trigger:{function.name}", attributes),
                log_invocation(inv, reason),
            ):
                try:
                    kwargs, outputs = self._arguments(function, request, inv)
                    result = await call_function(function, kwargs)
                    if has_io(function):
                        io = shared_io(self.app.settings.triggers)
                        await io.deliver(function, outputs, result, {})
                except Exception as exc:
                    log_function_exception(function.name, exc)
                    raise
        except Exception:
            pass  # no retry: the next occurrence runs as scheduled, as in Azure
        new_status = None
        if timer.use_monitor and not manual:
            # Next is the occurrence that will really run next: any that fell due during this
            # run were skipped.
            finished = max(self.clock(), fired_at)
            next_due = timer.schedule.next_occurrence(finished)
            new_status = TimerStatus(last=fired_at, next=next_due, last_updated=finished)
        try:
            if not await self.store.finish_timer_run(function.name, self.owner, token, new_status):
                log.warning(
                    "dfhost: timer '%s': its run outlived its lease and was freed meanwhile",
                    function.name,
                )
        except Exception:
            log.exception("dfhost: timer '%s': could not record the end of its run", function.name)

    def _arguments(
        self, function: Function, request: TimerRequest, inv: Invocation
    ) -> tuple[dict[str, Any], dict[str, OutBinding]]:
        parts = urlsplit(self.rpc_base_url)
        starter = json.dumps(
            client_binding(
                origin=f"{parts.scheme}://{parts.netloc}",
                hub_name=self.app.settings.hub_name,
                rpc_base_url=self.rpc_base_url,
            )
        )
        return invocation_arguments(
            function, invocation_id=inv.id, trigger_value=request, client_starter=starter
        )

    async def _renew_leases(self) -> None:
        interval = max(1.0, self.lease.total_seconds() / 3)
        while True:
            await asyncio.sleep(interval)
            for name, run in list(self._running.items()):
                try:
                    await self.store.renew_timer_run(
                        name, self.owner, run.token, self.clock() + self.lease
                    )
                except Exception:
                    log.exception("dfhost: timer '%s': could not renew its run's lease", name)


def _last_missed(schedule: Schedule, first: datetime, now: datetime) -> datetime:
    """The last occurrence from `first` up to `now`; `now` itself if they are too many to
    walk (any instant after the occurrences missed claims the catch-up just as well)."""
    last = first
    for _ in range(10_000):
        following = schedule.next_occurrence(last)
        if following > now:
            return last
        last = following
    return now


def _is_occurrence(schedule: Schedule, moment: datetime) -> bool:
    return schedule.next_occurrence(moment - timedelta(microseconds=1)) == moment


def _status_payload(status: TimerStatus, zone: tzinfo) -> dict[str, str]:
    def text(moment: datetime | None) -> str:
        return _NEVER if moment is None else moment.astimezone(zone).isoformat()

    return {
        "Last": text(status.last),
        "Next": text(status.next),
        "LastUpdated": text(status.last_updated),
    }


def _zone_name(zone: tzinfo) -> str:
    return str(getattr(zone, "key", None) or zone.tzname(None) or zone)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return value is True or value == 1
