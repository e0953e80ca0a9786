"""The task hub: the storage contract every backend implements, and `open_store`.

The store is the only channel between clients and engines. Its rules:

- An instance's inbox holds `Message`s (events on their way into its history). A timer is a
  message whose `visible_at` is its fire time, so timers survive restarts like any other work.
- `claim_episodes` leases instances that have visible messages; `commit_episode` applies one
  episode's whole outcome in ONE transaction and only while the lease is still held (fencing),
  so an episode's effects are recorded exactly once.
- Activity work items are leased too; completing one deletes it and enqueues its result message
  in one transaction, so a result is delivered at most once even if two hosts ran it.
- Timer-triggered functions have one record each: the latest occurrence claimed (so every
  occurrence runs once across hosts) and the run in progress (so runs never overlap).
- Time is always passed in (`now`), never read from the wall clock, so a virtual clock works.

`Store` is what every backend does; `InstanceHolder` is an optimisation only some offer.
`query` holds the instance listing every backend shares, `wakeup` the in-process wake-ups.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from dfhost.config import StorageProvider
from dfhost.history import TERMINAL_STATUSES, HistoryEvent, Instance, OrchestrationStatus
from dfhost.work import ActivityTask, EpisodeOutcome, EpisodeWork, Message, StartRequest

__all__ = [
    "Claim",
    "Completion",
    "DeliveryResult",
    "HubSummary",
    "InstanceHolder",
    "InstancePage",
    "InstanceQuery",
    "KnownHistory",
    "LeaseLostError",
    "Store",
    "StoreError",
    "TimerStatus",
    "app_store_url",
    "open_store",
]


class StoreError(Exception):
    """A store could not be opened or used (bad URL, unreadable file, schema too new)."""


class LeaseLostError(StoreError):
    """The lease on an episode was lost (expired and taken); its outcome was not written."""


KnownHistory = Mapping[str, tuple[str, int]]
"""instance id -> (execution id, n): the claimer holds that execution's first n history events,
so a claim may return the history from position n - 1 on (one overlapping event to check)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """A host asking for work: what is due at `now` may be leased to `owner` until
    `lease_until`. Claims of episodes (`claim_episodes`, `complete_activity`) may send only the
    history tail the host lacks, by `known`; the other claims ignore it."""

    owner: str
    now: datetime
    lease_until: datetime
    known: KnownHistory | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """An activity result that `complete_activity` recorded."""

    work: EpisodeWork | None = None
    """The episode that takes the result, leased in the same transaction, when the call asked
    with a `claim` and the instance could be leased; else None."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceQuery:
    """Filters for listing and purging instances; all optional."""

    created_from: datetime | None = None
    created_to: datetime | None = None
    statuses: Sequence[OrchestrationStatus] = ()
    instance_id_prefix: str | None = None
    name: str | None = None
    top: int = 100
    continuation: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InstancePage:
    """One page of instances, newest first by creation, and a token for the next page."""

    instances: list[Instance]
    continuation: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerStatus:
    """A timer-triggered function's schedule status (the Functions host's ScheduleStatus)."""

    last: datetime | None
    """When it last ran: the occurrence, or the time of a past-due or on-startup run; None
    before its first run."""
    next: datetime
    """The occurrence it waits for."""
    last_updated: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class HubSummary:
    """A task hub at a glance, for `dfhost status` and `/admin/metrics`."""

    instances: dict[tuple[str, OrchestrationStatus], int]
    """(orchestrator or entity name, status) -> how many instances; absent pairs are 0."""
    ready_messages: int
    """Inbox messages deliverable at `now`: episodes waiting to run (or running)."""
    ready_activities: int
    """Activity tasks no host holds a lease on: waiting to run."""
    running_activities: int | None
    """Activity tasks leased to a host; None when the backend cannot tell."""
    oldest_ready: datetime | None
    """Since when the longest-waiting ready message or activity has been ready (a message
    from its event's time, or its due time if later; an activity from its scheduling)."""
    next_timer: datetime | None
    """The earliest message not yet deliverable: a durable timer or a scheduled start."""
    live_hosts: int | None
    """Hosts working on the task hub now; None when the backend cannot tell."""


DeliveryResult = Literal["sent", "not_found", "gone"]


class Store(Protocol):
    """The task hub contract. All backends pass `tests/contract`.

    Its methods by job: lifecycle; clients (start, signal, read, list and purge instances);
    maintenance (retention, the startup report, status pages); episodes; activities;
    wake-ups; timer triggers. A backend may offer more (`InstanceHolder`).
    """

    url: str

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Open connections and create or migrate the schema."""

    async def close(self) -> None:
        """Release connections; idempotent."""

    async def open_host(self, owner: str, now: datetime) -> None:
        """Register a host that will claim work; make work abandoned by dead hosts (episode and
        activity leases, timer runs) claimable. Live hosts' work is left alone."""

    # --- clients -------------------------------------------------------------------------
    async def create_instance(self, request: StartRequest) -> bool:
        """Atomically create the instance unless an unfinished one has its id.

        A finished (Completed, Failed, Terminated, Canceled) instance with the id is replaced:
        its history, inbox and work are deleted. Returns False, changing nothing, when the id is
        taken by a Pending, Running, ContinuedAsNew or Suspended instance.
        """

    async def send_message(self, message: Message) -> DeliveryResult:
        """Enqueue a client message (event, terminate, ...) unless the instance is unknown or
        finished, checked in the same transaction.

        The one exception is an ExecutionRewound message: it is enqueued only for a Failed
        instance, and any other existing instance (running or finished) answers "gone".
        """

    async def get_instance(self, instance_id: str) -> Instance | None: ...

    async def get_history(self, instance_id: str) -> list[HistoryEvent]:
        """The current execution's history, in order; empty for unknown instances."""

    async def query_instances(self, query: InstanceQuery) -> InstancePage:
        """One page of the instances matching the filters (see `dfhost.store.query`)."""

    async def count_instances(self, query: InstanceQuery) -> int:
        """How many instances match the filters (`top` and `continuation` are ignored)."""

    async def purge_instance(self, instance_id: str) -> int:
        """Delete an instance with its history, inbox and work; returns 0 or 1."""

    async def purge_instances(self, query: InstanceQuery) -> int:
        """Delete every instance matching the filters (ignoring paging); returns the count."""

    # --- maintenance ---------------------------------------------------------------------
    async def purge_finished(
        self, status: OrchestrationStatus, finished_before: datetime, limit: int
    ) -> int:
        """Delete at most `limit` instances in `status` whose `last_updated_at` (the time they
        finished) is earlier than `finished_before`, with their history, inbox and work, in ONE
        short transaction; returns how many. Instances leased by an episode are skipped.

        Retention calls it in a loop until it returns less than `limit`, so that no single
        transaction holds the task hub for long. Raises ValueError for an unfinished status.
        """

    async def oldest_finished(self, status: OrchestrationStatus) -> datetime | None:
        """The earliest `last_updated_at` among instances in `status`, or None if there are
        none (retention sleeps until that plus the retention period)."""

    async def overdue_timers(self, now: datetime, limit: int) -> list[Message]:
        """Up to `limit` pending TimerFired messages due at or before `now`, earliest due
        first (`visible_at` set), for the startup report."""

    async def hub_summary(self, now: datetime) -> HubSummary:
        """Counts of the whole task hub at `now` (see `HubSummary`); one pass over the
        instances, inbox and activity tables, so call it for a status page, not per episode.
        Counts may be approximate on backends without transactions across tables."""

    # --- episodes ------------------------------------------------------------------------
    async def claim_episodes(self, claim: Claim, limit: int) -> list[EpisodeWork]:
        """Lease up to `limit` unlocked instances that have messages visible at `claim.now`.

        Each work item carries every message of that instance visible then, oldest first.
        Suspended instances are claimed only for messages that resume or terminate them.
        For instances in `claim.known`, the history may start at the position it allows
        (`EpisodeWork.history_start`); otherwise it is complete.
        """

    async def commit_episode(
        self,
        owner: str,
        work: EpisodeWork,
        outcome: EpisodeOutcome,
        *,
        lease_activities: tuple[datetime, int] | None = None,
    ) -> list[ActivityTask]:
        """Apply `outcome`, delete the messages of `work`, and release the lease, atomically.

        Raises `LeaseLostError`, writing nothing, if the lease was taken by another claim.
        With `lease_activities` = (until, limit), up to `limit` of the outcome's activity tasks
        are created already leased to `owner` until then, and returned for the caller to run
        at once (a backend may lease none); the others wait for `claim_activities`.
        """

    async def abandon_episode(
        self, owner: str, work: EpisodeWork, *, retry_at: datetime | None = None
    ) -> None:
        """Release the lease without consuming anything: claimable at once, or from
        `retry_at` on (by any host, this one included)."""

    # --- activities ----------------------------------------------------------------------
    async def claim_activities(self, claim: Claim, limit: int) -> list[ActivityTask]:
        """Lease up to `limit` activity tasks that are unclaimed or whose lease expired."""

    async def complete_activity(
        self, task: ActivityTask, result: Message, claim: Claim | None = None
    ) -> Completion | None:
        """Delete the task and enqueue its result in one transaction.

        Returns None, enqueuing nothing, if the task no longer exists (already completed by
        another claim, or dropped because its execution ended). With a `claim`, the same
        transaction leases the result's instance to `claim.owner` if it is unlocked and has
        messages visible at `claim.now`, and the `Completion` carries its work as
        `claim_episodes` would (a backend may always leave it None).
        """

    async def renew_activity_leases(
        self, owner: str, tasks: Sequence[ActivityTask], lease_until: datetime
    ) -> None:
        """Extend the leases of long-running activities this owner still holds."""

    # --- wake-ups ------------------------------------------------------------------------
    async def next_due_at(self, now: datetime) -> datetime | None:
        """The earliest time after `now` at which work becomes claimable (a timer falls due or
        a lease expires), or None. Work already due at `now` is not reported: it is either
        claimable now or locked by an episode whose commit will notify."""

    async def wait_for_work(self, until: datetime | None) -> None:
        """Return when new work may have been enqueued (by anyone this backend can hear), or at
        `until` (wall clock) at the latest; None waits for a notification only."""

    def notify(self) -> None:
        """Wake this process's waiters (after work was enqueued outside the store)."""

    def watch_finish(self, instance_id: str) -> asyncio.Future[None]:
        """A future resolved when this process commits the instance's end (Completed, Failed,
        Terminated), so that a client waiting for it answers at once. An end committed by
        another process does not resolve it: waiters poll too. Cancel it when done."""

    # --- timer triggers ------------------------------------------------------------------
    async def claim_timer_run(
        self, function: str, due_at: datetime | None, claim: Claim
    ) -> int | None:
        """Take the right to run the timer-triggered `function` once, among every host sharing
        the task hub; returns the run's token, or None.

        Atomically refuses (None; no visible change) when a run of `function` is in progress,
        i.e. claimed, not finished, and its lease not expired at `claim.now`, whoever holds it
        (this owner too); or when `due_at` is given and an occurrence at or after `due_at` was
        already claimed, so each occurrence runs once and never after a later one. Otherwise
        leases the run to `claim.owner` until `claim.lease_until` and, if `due_at` is given,
        records it as the latest claimed occurrence. `due_at` None (run on startup, run now)
        skips the occurrence check. A function's tokens increase with every successful claim.
        """

    async def renew_timer_run(
        self, function: str, owner: str, token: int, lease_until: datetime
    ) -> bool:
        """Extend the lease of a run `owner` holds with `token`; False if it holds it no more."""

    async def finish_timer_run(
        self, function: str, owner: str, token: int, status: TimerStatus | None
    ) -> bool:
        """End a run: release it and, if `status` is given, record it, in one transaction.

        Returns False, changing nothing, if `owner` no longer holds the run with `token`
        (it was freed as abandoned, and perhaps claimed again).
        """

    async def get_timer_status(self, function: str) -> TimerStatus | None:
        """The status last recorded for `function`, or None."""

    async def set_timer_status(self, function: str, status: TimerStatus) -> None:
        """Record `function`'s status (a host starting up initializes or corrects it); runs
        and claimed occurrences are left alone."""


@runtime_checkable
class InstanceHolder(Protocol):
    """A store that can hold an instance between two episodes (SQLite and PostgreSQL can): an
    optimisation the engine uses where `isinstance(store, InstanceHolder)`.

    An instance that waits for nothing but the one activity its episode leased to this host
    can stay leased to the host (held) while the activity runs here. Its next episode then
    takes the activity's result as it comes, unstored: no transaction records the result and
    none claims the instance; the episode's commit consumes the task. Backends without it
    release the instance at every commit, and the result's episode is leased by
    `complete_activity` with a `claim`.
    """

    async def commit_episode_holding(
        self,
        owner: str,
        work: EpisodeWork,
        outcome: EpisodeOutcome,
        *,
        lease_activities: tuple[datetime, int] | None = None,
        hold_until: datetime | None = None,
        completes: ActivityTask | None = None,
    ) -> list[ActivityTask]:
        """`Store.commit_episode`, with two more things in the same transaction.

        `hold_until`: the lease is kept (same token) until then instead of released, unless
        messages wait for the instance or the commit enqueued work (messages, starts,
        activities it did not lease); a claim takes the instance once the hold ends.
        `completes`: `work` is the episode of a held instance that takes this task's result,
        which `work.messages` carry unstored (no `message_id`); the task is deleted. Raises
        `LeaseLostError`, writing nothing, if the task is gone (another run completed it) or
        the instance was claimed after the hold ended.
        """


def require_same_instance(work: EpisodeWork, outcome: EpisodeOutcome) -> None:
    """ValueError unless `outcome` is for the instance `work` leased (every backend's check)."""
    if outcome.instance.instance_id != work.instance.instance_id:
        raise ValueError("an episode's outcome must be for the instance it claimed")


def require_finished(status: OrchestrationStatus) -> None:
    """ValueError unless `status` is a finished one (`purge_finished`'s check)."""
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"retention purges finished instances only, not {status.value}")


def default_store_url(app_dir: Path) -> str:
    """The embedded SQLite task hub inside the app folder."""
    return f"sqlite:///{(app_dir / '.dfhost' / 'taskhub.sqlite3').resolve()}"


def app_store_url(url: str | None, default: str, hub_name: str, storage: StorageProvider) -> str:
    """The task hub of an app: `url` (`--store`) if given, else the Azure Storage hub when
    host.json's `extensions.durableTask.storageProvider.type` is `azureStorage`, else
    `default`. An `azure` URL gets the app's hub name and host.json storageProvider settings
    (`storage`, an app's `settings.storage`; see `dfhost.store.azure.config`), a `postgresql`
    URL its hub name and takeover window (see `dfhost.store.postgres.config`), for what the URL
    does not say; other URLs are returned as they are."""
    from dfhost.store.azure import config as azure_config
    from dfhost.store.postgres import config as postgres_config

    resolved = azure_config.url_for_app(url, default, hub_name, storage)
    return postgres_config.url_for_app(resolved, hub_name, storage)


def open_store(url: str) -> Store:
    """Build the backend for `url` (`sqlite:///PATH`, `sqlite://:memory:`,
    `postgresql://USER@HOST:PORT/DB?hub=NAME`, `azure[:SETTING][?hub=NAME]`), not yet
    started."""
    if url.startswith("sqlite:"):
        from dfhost.store.sqlite.store import SqliteStore

        return SqliteStore(url)
    if url.startswith(("postgresql:", "postgres:")):
        try:
            from dfhost.store.postgres import PostgresStore
        except ImportError as exc:  # psycopg is an optional dependency
            raise StoreError(
                f"the PostgreSQL task hub needs psycopg ({exc}): pip install 'dfhost[postgres]'"
            ) from None
        return PostgresStore(url)
    if url == "azure" or url.startswith(("azure:", "azure?")):
        try:
            from dfhost.store.azure.store import AzureStore
        except ImportError as exc:  # the Azure SDKs are an optional dependency
            raise StoreError(
                f"the Azure Storage task hub needs the Azure SDKs ({exc}): "
                "pip install 'dfhost[azure]'"
            ) from None
        return AzureStore(url)
    scheme = url.split(":", 1)[0]
    raise StoreError(
        f"unsupported store URL {url!r}: scheme {scheme!r} is not available "
        "(supported: sqlite:///PATH, postgresql://USER@HOST:PORT/DB, azure[:SETTING])"
    )


def redact_url(url: str) -> str:
    """`url` with the password of its `user:password@` part shown as `***`, for printing."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
