"""The runtime: claim work from the task hub, run episodes and activities, commit the results.

One asyncio loop dispatches. Orchestrator episodes run the SDK's replay in a thread (so a slow
orchestrator can't stall the loop), sync activities in a thread pool sized by host.json, async
activities on the loop. The loop sleeps until the store reports new work or the next timer or
lease falls due: there is no polling interval, so a timer fires at its due time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TypeVar

from dfhost import metrics, telemetry
from dfhost.app.functions import Function, FunctionApp
from dfhost.history import (
    TERMINAL_STATUSES,
    EventType,
    HistoryEvent,
    Instance,
    OrchestrationStatus,
    utcnow,
)
from dfhost.orchestration import entities, limits, versioning
from dfhost.orchestration.episode import EpisodeInput, EpisodeResult, Failed, Running
from dfhost.orchestration.outcome import Replay, Rewind, Settled, failure, plan_episode
from dfhost.orchestration.session import SessionCache
from dfhost.runtime.remote import RemoteAbandoned, RemoteWorkers
from dfhost.runtime.retention import Retention, RetentionPolicy
from dfhost.runtime.shutdown import cancel_and_wait, finish_within
from dfhost.runtime.startup import report_startup
from dfhost.runtime.user_code import LocalCode, UserCode
from dfhost.store import Claim, InstanceHolder, LeaseLostError, Store, StoreError
from dfhost.work import ActivityTask, EpisodeOutcome, EpisodeWork, Message

__all__ = ["Engine", "WaitForWork"]

T = TypeVar("T")

log = logging.getLogger("dfhost.engine")

_HOLD = timedelta(milliseconds=50)
"""How long an instance stays leased to this host after an episode that scheduled one
activity here, so that the activity's result runs the next episode with no claim in between.
Other messages for the instance wait at most this long (they end the hold when they are
there at the commit); a result that comes later still uses the hold if nobody claimed since."""


@dataclass(slots=True, frozen=True)
class _Held:
    """An instance kept leased to this host (`_HOLD`) while its one activity runs here."""

    lease_token: int
    instance: Instance
    history: list[HistoryEvent]
    """Its execution's whole stored history."""


REJECT_RETRY = timedelta(seconds=10)
"""How long an instance whose version this host may not run is left unclaimed before any host
may claim it again (`versionFailureStrategy` Reject): at once, this host would claim it again
in a loop, and first, before the hosts that may run it heard of it."""


class _VersionRejected(Exception):
    """This host may not run the instance's version (orchestration/versioning.py)."""


WaitForWork = Callable[[datetime | None, bool], Awaitable[None]]
"""`(due, idle)`: what the dispatch loop awaits between claims instead of
`store.wait_for_work(due)`. `idle` says nothing is in flight and nothing was claimable at
`clock()`, so a virtual clock (`dfhost.testing`) may move time to `due` there."""


class Engine:
    """Runs one host's share of a task hub's work until stopped."""

    def __init__(
        self,
        app: FunctionApp,
        store: Store,
        *,
        owner: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        lease: timedelta = timedelta(minutes=5),
        retention: RetentionPolicy | None = None,
        wait: WaitForWork | None = None,
        inline_orchestrators: bool = False,
        workers: UserCode | None = None,
        remote: RemoteWorkers | None = None,
    ) -> None:
        self.app = app
        self.remote = remote
        """Workers that run the orchestrators and activities the app does not have
        (`dfhost.grpc`); None: those fail as unknown."""
        self.store = store
        self._holder = store if isinstance(store, InstanceHolder) else None
        """The store, if it can hold an instance between episodes (`_HOLD`)."""
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.clock = clock
        self.lease = lease
        # Incremental episodes are on unless host.json asks for Azure's default of full
        # replays; both give the same results (tests/unit/test_replay_equivalence.py).
        sessions = SessionCache() if app.settings.extended_sessions else None
        self.max_episodes = max(1, app.settings.max_concurrent_orchestrators)
        self.max_activities = max(1, app.settings.max_concurrent_activities)
        self.limits = app.settings.limits
        self._episodes: set[asyncio.Task[None]] = set()
        self._held: dict[str, _Held] = {}
        self._activities: dict[asyncio.Task[None], ActivityTask] = {}
        # Whether the last claim may have left work behind for want of capacity: only then
        # must finishing work wake the dispatch loop (work that arrives wakes it anyway).
        self._more_episodes = True
        self._more_activities = True
        self._local = LocalCode(
            app,
            lambda: self.clock(),
            activity_threads=self.max_activities,
            episode_threads=min(4, self.max_episodes),
            sessions=sessions,
            # A test host runs orchestrator and entity code on the event loop's thread: its
            # episodes take microseconds and nothing else waits on the loop.
            inline=inline_orchestrators,
        )
        self.workers = workers
        """Where activities and entity operations run, if not in this process
        (`dfhost.runtime.workers.WorkerPool`); the engine does not close it."""
        self._user_code: UserCode = self._local if workers is None else workers
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._renew_task: asyncio.Task[None] | None = None
        self.retention = None if retention is None else Retention(store, retention, clock)
        self._retention_task: asyncio.Task[None] | None = None
        self._wait = wait
        self._warned: set[tuple[str, str]] = set()
        """(orchestrator, pitfall kind) pairs already logged: one line each is enough."""
        self._rejected: set[str] = set()
        """Instances whose rejection was logged (once each)."""

    @property
    def sessions(self) -> SessionCache | None:
        """The sessions of the instances whose episodes ran here lately (incremental
        replay); None: every episode replays its whole history."""
        return self._local.sessions

    @sessions.setter
    def sessions(self, sessions: SessionCache | None) -> None:
        self._local.sessions = sessions

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Register as a host and start dispatching in the background."""
        await self.store.open_host(self.owner, self.clock())
        try:
            await report_startup(self.app, self.store, self.clock(), orphans=self.remote is None)
        except Exception:  # a report is not worth refusing to start over
            log.exception("dfhost: could not list orphaned instances and overdue timers")
        self._loop_task = asyncio.create_task(self._dispatch_loop(), name="dfhost-dispatch")
        self._renew_task = asyncio.create_task(self._renew_leases(), name="dfhost-leases")
        if self.retention is not None:
            self._retention_task = asyncio.create_task(
                self.retention.run(), name="dfhost-retention"
            )

    def use_app(self, app: FunctionApp) -> None:
        """Run `app`'s orchestrators (and, without worker processes, its activities and
        entities) from now on: `dfhost start --reload`. A session of the old code is not
        reused (`SessionCache.take` checks the function), so running orchestrations replay on
        the new code, and a change that breaks their replay fails them as non-deterministic."""
        self.app = app
        self._local.use_app(app)

    def running_activities(self) -> list[str]:
        """The names of the activities this host is running now, one per execution."""
        return [task.name for task in self._activities.values()]

    def running_episodes(self) -> int:
        """How many episodes this host is running or committing now."""
        return len(self._episodes)

    async def drain(self, grace: float | None = None) -> bool:
        """Stop claiming and wait until the episodes and activities in flight have finished
        and their results are recorded, for up to `grace` seconds (None: as long as they
        take); whether they all did. Leases are still renewed meanwhile, so work that
        outlasts them is not taken over by another host while it runs here. What is left
        keeps running: `stop` cancels it."""
        self._stopping = True
        self.store.notify()
        if self.remote is not None:
            self.remote.release()
        await cancel_and_wait((self._loop_task, self._retention_task))
        loop = asyncio.get_running_loop()
        deadline = None if grace is None else loop.time() + grace
        # A loop, not one wait: an episode committing now may still lease activities it
        # scheduled, and those are waited for too.
        while pending := [*self._episodes, *self._activities]:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return False
            done, _ = await asyncio.wait(pending, timeout=left)
            if not done:
                return False
        return True

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, let in-flight work finish for up to `grace` seconds, then cancel it.

        Cancelled work is not lost: its leases are released when the store is closed (on
        PostgreSQL and Azure Storage another host takes it at once) or reopened (SQLite), or
        when they expire, and it runs again.
        """
        self._stopping = True
        self.store.notify()
        await cancel_and_wait((self._loop_task, self._renew_task, self._retention_task))
        await finish_within([*self._episodes, *self._activities], grace)
        await self._local.close()

    # --- dispatch -------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while not self._stopping:
            try:
                due = await self._claim_work(self.clock())
            except asyncio.CancelledError:
                raise
            except Exception:
                # A store outage must not kill the host: log once per failure and retry.
                log.exception("dfhost: could not reach the task hub; retrying in 1 s")
                await asyncio.sleep(1.0)
                continue
            if self._wait is None:
                await self.store.wait_for_work(due)
            else:
                await self._wait(due, not self._episodes and not self._activities)

    async def _claim_work(self, now: datetime) -> datetime | None:
        """Claim what this host has room for; returns when work comes due next.

        The due time is for the claims' `now`: for a later one, a timer or lease that came due
        in between would be neither claimed nor waited for. The three queries go out together,
        so a store that batches transactions (SQLite) answers them with one.
        """
        episode_room = self.max_episodes - len(self._episodes)
        activity_room = self.max_activities - len(self._activities)
        known = None if self.sessions is None else self.sessions.known()
        until = now + self.lease
        # A virtual clock moves only when nothing is in flight: it asks for the due time after.
        ask_due = self._wait is None
        works, tasks, due = await asyncio.gather(
            self.store.claim_episodes(
                Claim(owner=self.owner, now=now, lease_until=until, known=known), episode_room
            ),
            self.store.claim_activities(
                Claim(owner=self.owner, now=now, lease_until=until), activity_room
            ),
            self.store.next_due_at(now) if ask_due else _nothing(),
            return_exceptions=True,
        )
        # What one claim leased runs even if the other failed: it would wait out its lease.
        # `_more_*` change only once a claim answers: work finishing while it is in flight
        # must not ask for yet another round unless this one fills every free slot (with
        # one completion a millisecond, that made the rounds back to back).
        if not isinstance(works, BaseException):
            self._more_episodes = len(works) >= episode_room
            for work in works:
                self._start_episode(work)
        if not isinstance(tasks, BaseException):
            self._more_activities = len(tasks) >= activity_room
            for task in tasks:
                self._start_activity(task)
        for outcome in (works, tasks, due):
            if isinstance(outcome, BaseException):
                raise outcome
        assert not isinstance(due, BaseException)
        if not ask_due and not self._episodes and not self._activities:
            due = await self.store.next_due_at(now)
        return due

    def _start_episode(self, work: EpisodeWork, completes: ActivityTask | None = None) -> None:
        task: asyncio.Task[None] = asyncio.create_task(self._run_episode(work, completes))
        self._episodes.add(task)
        task.add_done_callback(self._episode_done)

    def _episode_done(self, task: asyncio.Task[None]) -> None:
        self._episodes.discard(task)
        if self._more_episodes or self._idle_matters():
            self.store.notify()  # capacity is free again: claim what was left behind

    def _start_activity(self, activity: ActivityTask) -> None:
        task = asyncio.create_task(self._run_activity(activity))
        self._activities[task] = activity
        task.add_done_callback(self._activity_done)

    def _activity_done(self, task: asyncio.Task[None]) -> None:
        self._activities.pop(task, None)
        if self._more_activities or self._idle_matters():
            self.store.notify()

    def _idle_matters(self) -> bool:
        """A virtual clock moves only once nothing is in flight: it must hear when that is."""
        return self._wait is not None and not self._episodes and not self._activities

    async def _renew_leases(self) -> None:
        interval = max(1.0, self.lease.total_seconds() / 3)
        while True:
            await asyncio.sleep(interval)
            if self._activities:
                try:
                    await self.store.renew_activity_leases(
                        self.owner, list(self._activities.values()), self.clock() + self.lease
                    )
                except Exception:
                    log.exception("dfhost: could not renew activity leases")

    # --- episodes -------------------------------------------------------------------------

    async def _run_episode(self, work: EpisodeWork, completes: ActivityTask | None = None) -> None:
        """Run and commit one episode; `completes`: the activity whose result `work` carries
        unstored, on an instance this host held (`_HOLD`)."""
        started_ns = time.time_ns()
        try:
            consumed, outcome = await self._episode_outcome(work)
        except (RemoteAbandoned, _VersionRejected) as exc:
            retry_at = self.clock() + REJECT_RETRY if isinstance(exc, _VersionRejected) else None
            with contextlib.suppress(StoreError):
                await self.store.abandon_episode(self.owner, work, retry_at=retry_at)
            if completes is not None:  # the result it carried unstored must not be lost
                await self._record_result(completes, work.messages[0])
            return
        except Exception as exc:  # a dfhost bug: fail the instance rather than spin on it
            log.exception("dfhost: internal error in an episode of %s", work.instance.instance_id)
            consumed = work
            outcome = failure(
                work, self.clock(), f"dfhost internal error: {exc!r}", traceback.format_exc()
            )
        # The activities it schedules are leased to this host in the commit, up to its free
        # capacity, and start at once: no claim round between an episode and its work.
        free = 0 if self._stopping else self.max_activities - len(self._activities)
        lease = (self.clock() + self.lease, free) if free > 0 and outcome.activities else None
        outcome = telemetry.link_outgoing(consumed, outcome)
        hold_until = self.clock() + _HOLD if lease and self._may_hold(consumed, outcome) else None
        committing = time.perf_counter()
        try:
            if self._holder is not None:
                leased = await self._holder.commit_episode_holding(
                    self.owner,
                    consumed,
                    outcome,
                    lease_activities=lease,
                    hold_until=hold_until,
                    completes=completes,
                )
            else:
                leased = await self.store.commit_episode(
                    self.owner, consumed, outcome, lease_activities=lease
                )
        except StoreError as exc:
            iid = work.instance.instance_id
            if self.sessions is not None:
                self.sessions.forget(iid)
            lost = isinstance(exc, LeaseLostError)
            if not lost:
                # Nothing was written; the episode runs again once the task hub answers (at
                # once if the lease can be released, else when it expires).
                log.exception("dfhost: could not commit an episode of %s", iid)
                with contextlib.suppress(StoreError):
                    await self.store.abandon_episode(self.owner, work)
            if completes is not None:
                # The hold was taken over, or another run recorded the result: record it the
                # ordinary way (which does nothing in the second case).
                await self._record_result(completes, work.messages[0])
            elif lost:
                metrics.episode_done(work.instance.name, "lease_lost", _since(started_ns))
                log.warning(
                    "dfhost: lost the lease on %s; its episode will run again elsewhere", iid
                )
            return
        now = self.clock()
        metrics.episode_done(
            work.instance.name,
            outcome.instance.status.value,
            _since(started_ns),
            commit_seconds=time.perf_counter() - committing,
            consumed=[m.event for m in consumed.messages],
            now=now,
        )
        telemetry.episode_done(consumed, outcome, started_ns=started_ns, now=now, host=self.owner)
        _log_lifecycle(consumed, outcome)
        if hold_until is not None and len(leased) == 1:
            history = [*consumed.history, *outcome.new_events]
            self._held[outcome.instance.instance_id] = _Held(
                consumed.lease_token, outcome.instance, history
            )
        for activity in leased:
            self._start_activity(activity)

    def _may_hold(self, work: EpisodeWork, outcome: EpisodeOutcome) -> bool:
        """Whether to keep the instance leased after this commit (`_HOLD`): it waits for
        nothing but the one activity it schedules, and its session stays cached here (or a
        remote worker runs it, which is sent the whole history anyway)."""
        iid = outcome.instance.instance_id
        # A worker's orchestrator needs no session here: the held history is all it is sent.
        remote = self.remote is not None and self.app.orchestrator(outcome.instance.name) is None
        cached = self.sessions is not None and self.sessions.held(iid) is not None
        return (
            self._holder is not None
            and (remote or cached)
            and len(outcome.activities) == 1
            and not outcome.messages
            and not outcome.starts
            and not outcome.reset_history
            and not work.history_start
            and outcome.instance.status is OrchestrationStatus.RUNNING
        )

    async def _whole_history(self, work: EpisodeWork) -> EpisodeWork:
        """`work` with its execution's whole history: a claim given `known` sends only the
        tail, and the session holds the rest (or, evicted meanwhile, the store does)."""
        if not work.history_start:
            return work
        iid = work.instance.instance_id
        past = None
        if self.sessions is not None:
            past = self.sessions.past(iid, work.history, work.history_start)
        if past is None:
            past = await self.store.get_history(iid)
        return replace(work, history=past, history_start=0)

    async def _episode_outcome(self, work: EpisodeWork) -> tuple[EpisodeWork, EpisodeOutcome]:
        """(what the episode consumes, what it commits)."""
        work = await self._whole_history(work)
        entity = entities.EntityId.parse(work.instance.instance_id)
        if entity is not None:
            # The locks decide which operations run now; the rest wait in the entity's queue.
            # Every inbox message is consumed: what did not run is in the stored queue.
            now = self.clock()
            plan = entities.schedule(entity, work, now)
            runnable = replace(work, messages=plan.operations)
            if self.remote is not None and self.app.entity(entity.name) is None:
                ran, outcome = await self.remote.run_entity_batch(entity, runnable, now)
            else:
                ran, outcome = runnable, await self._run_entity_batch(entity, runnable)
            return work, plan.finish(outcome, len(ran.messages), now)
        consumed, outcome = await self._orchestration_outcome(work)
        iid = work.instance.instance_id
        if work.instance.status in TERMINAL_STATUSES:
            # A lock granted after its orchestration ended goes back at once.
            releases = entities.late_grant_releases(
                iid, work.history, consumed.messages, self.clock()
            )
        elif outcome.drop_pending_work:
            # An execution that ends holding entity locks (terminated, or failed by dfhost
            # rather than its orchestrator) releases them, as the SDKs do when it ends itself.
            ended = [*work.history, *outcome.new_events]
            releases = entities.unreleased_locks(iid, ended, self.clock())
        else:
            releases = []
        if releases:
            outcome = replace(outcome, messages=[*outcome.messages, *releases])
        return consumed, outcome

    async def _orchestration_outcome(self, work: EpisodeWork) -> tuple[EpisodeWork, EpisodeOutcome]:
        """`_episode_outcome` of an orchestration, before the releases of its entity locks."""
        inst = work.instance
        now = self.clock()
        function = self.app.orchestrator(inst.name)
        remote = self.remote if function is None else None
        known = function is not None or remote is not None
        step = plan_episode(work, now, orchestrator_known=known)
        if isinstance(step, Settled):
            if step.warning is not None:
                log.warning("dfhost: %s", step.warning)
            if step.error is not None:
                log.error("dfhost: %s", step.error)
            return step.consumed, step.outcome
        version = self.app.settings.default_version
        if remote is not None:
            return work, await self._remote_outcome(remote, step)
        assert function is not None
        if (refused := self._check_version(work, now)) is not None:
            return work, refused
        if isinstance(step, Rewind):
            reason = step.rewound.reason or "no reason"
            log.info("dfhost: rewinding %s (%s)", inst.instance_id, reason)
            result = await self._replay(function, step.episode)
            children: dict[str, Instance | None] = {}
            if isinstance(result.outcome, Running):
                for child in step.children:
                    children[child] = await self.store.get_instance(child)
            return work, step.outcome(result, children, default_version=version)
        result = await self._replay(function, step.episode)
        size = step.history_length(result)
        problem = limits.episode_problem(self.limits, inst.name, size, result, self.app)
        if problem is not None:
            if self.sessions is not None:
                self.sessions.forget(inst.instance_id)
            return work, failure(work, now, problem.message, problem.details)
        return work, step.outcome(result, default_version=version)

    def _check_version(self, work: EpisodeWork, now: datetime) -> EpisodeOutcome | None:
        """The failure of an instance this host may not run (`versionFailureStrategy` Fail);
        raises `_VersionRejected` to leave it to another host (Reject); None: it may run."""
        settings = self.app.settings
        inst = work.instance
        why = versioning.mismatch(inst.version, settings.default_version, settings.version_match)
        if why is None:
            return None
        if settings.version_failure == "Fail":
            log.error("dfhost: orchestration %s fails: %s", inst.instance_id, why)
            return failure(work, now, why, None)
        if inst.instance_id not in self._rejected:
            if len(self._rejected) >= 10_000:  # a bound, not a cache: a line more is harmless
                self._rejected.clear()
            self._rejected.add(inst.instance_id)
            log.warning(
                "dfhost: orchestration %s is left for another host: %s "
                "(versionMatchStrategy %s; claimable again every %.0f s)",
                inst.instance_id,
                why,
                settings.version_match,
                REJECT_RETRY.total_seconds(),
            )
        raise _VersionRejected(why)

    async def _remote_outcome(self, remote: RemoteWorkers, step: Replay | Rewind) -> EpisodeOutcome:
        """A remote worker's episode, committed like a replay's."""
        episode = step.episode
        if isinstance(step, Replay) and step.markers:
            # A Durable Task worker keeps suspended itself: it must see the resume too.
            started, *inbound = episode.new
            episode = replace(episode, new=[started, *step.markers, *inbound])
        decided = await remote.run_episode(episode)
        version = self.app.settings.default_version
        if isinstance(step, Rewind):
            children: dict[str, Instance | None] = {}
            if isinstance(decided.result.outcome, Running):
                for child in step.children:
                    children[child] = await self.store.get_instance(child)
            outcome = step.outcome(decided.result, children, default_version=version)
        else:
            outcome = step.outcome(decided.result, default_version=version)
        if not decided.messages and not decided.starts:
            return outcome
        return replace(
            outcome,
            messages=[*outcome.messages, *decided.messages],
            starts=[*outcome.starts, *decided.starts],
        )

    async def _replay(self, function: Function, episode: EpisodeInput) -> EpisodeResult:
        result = await self._local.run_episode(function, episode)
        metrics.episode_replayed(result.replayed, result.cached)
        if isinstance(result.outcome, Failed):
            log.error(
                "Orchestration '%s' (%s) failed: %s",
                function.name,
                episode.instance_id,
                result.outcome.message,
            )
        for pitfall in result.pitfalls:
            if pitfall.every_time or (function.name, pitfall.kind) not in self._warned:
                self._warned.add((function.name, pitfall.kind))
                log.warning("dfhost: %s", pitfall.message)
        return result

    async def _run_entity_batch(
        self, entity: entities.EntityId, work: EpisodeWork
    ) -> EpisodeOutcome:
        return await self._user_code.run_entity_batch(entity, work, self.clock())

    # --- activities -----------------------------------------------------------------------

    async def _run_activity(self, task: ActivityTask) -> None:
        started_ns = time.time_ns()
        try:
            if telemetry.enabled():
                async with telemetry.activity_span(task, self.store.get_history) as traced:
                    event = await self._activity_event(task)
                    traced(event)
            else:  # the span's context manager alone costs more than a trivial activity
                event = await self._activity_event(task)
        except RemoteAbandoned:
            return  # its lease ends with this host, and it runs again elsewhere or later
        metrics.activity_done(task.name, event.type is EventType.TASK_COMPLETED, _since(started_ns))
        result = Message(instance_id=task.instance_id, execution_id=task.execution_id, event=event)
        held = self._held.pop(task.instance_id, None)
        if (
            held is not None
            and held.instance.execution_id == task.execution_id
            and not self._stopping
            and len(self._episodes) < self.max_episodes
        ):
            work = EpisodeWork(
                instance=held.instance,
                history=held.history,
                messages=[result],
                lease_token=held.lease_token,
            )
            self._start_episode(work, completes=task)
            return
        await self._record_result(task, result)

    async def _activity_event(self, task: ActivityTask) -> HistoryEvent:
        if self.remote is not None and self.app.activity(task.name) is None:
            return await self.remote.run_activity(task)
        return await self._user_code.run_activity(task)

    async def _record_result(self, task: ActivityTask, result: Message) -> None:
        """Store an activity's result; run the episode that takes it at once if it can be
        leased in the same transaction."""
        try:
            if self._stopping or len(self._episodes) >= self.max_episodes:
                await self.store.complete_activity(task, result)
                return
            # The episode that takes the result is leased in the same transaction and runs
            # at once, unless another host or episode holds the instance.
            now = self.clock()
            known = None if self.sessions is None else self.sessions.known()
            claim = Claim(owner=self.owner, now=now, lease_until=now + self.lease, known=known)
            done = await self.store.complete_activity(task, result, claim)
        except Exception:
            log.exception("dfhost: could not record the result of activity '%s'", task.name)
            return
        if done is not None and done.work is not None:
            self._start_episode(done.work)


async def _nothing() -> None:
    return None


_LIFECYCLE_VERBS = {
    EventType.EXECUTION_TERMINATED: "terminated",
    EventType.EXECUTION_SUSPENDED: "suspended",
    EventType.EXECUTION_RESUMED: "resumed",
}


def _log_lifecycle(work: EpisodeWork, outcome: EpisodeOutcome) -> None:
    """One console line per terminate, suspend or resume this host applied: from the HTTP
    API, the dashboard or another process, it is otherwise invisible here."""
    inst = outcome.instance
    for message in work.messages:
        event = message.event
        verb = _LIFECYCLE_VERBS.get(event.type)
        if verb is None:
            continue
        if event.type is EventType.EXECUTION_TERMINATED:
            if inst.status is not OrchestrationStatus.TERMINATED:
                continue  # it had already finished: nothing was terminated
            reason = _terminate_reason(event.input)
        else:
            reason = event.reason
        because = f": {reason}" if reason else ""
        log.info("dfhost: %s (%s) %s%s", inst.name, inst.instance_id, verb, because)


def _terminate_reason(text: str | None) -> str | None:
    try:
        reason = json.loads(text) if text else None
    except ValueError:
        return text
    return reason if isinstance(reason, str) else None


def _since(started_ns: int) -> float:
    return (time.time_ns() - started_ns) / 1e9
