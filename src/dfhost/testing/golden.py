"""Replaying recorded histories against the current code: golden-history tests
(`replay_history`) and `dfhost replay` before a deploy (`replay_instances`); the document
`dfhost history export` writes (`export_history`) and `replay_history` reads."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dfhost.history import (
    EventType,
    HistoryEvent,
    Instance,
    OrchestrationStatus,
    parse_time,
)
from dfhost.store import (
    InstanceQuery,
    Store,
    StoreError,
    default_store_url,
    open_store,
    redact_url,
)

if TYPE_CHECKING:
    from dfhost.app.functions import FunctionApp
    from dfhost.orchestration.episode import EpisodeResult, Pitfall


HISTORY_FORMAT = "dfhost-history/1"
"""The `format` of an exported history document."""


# --- replaying recorded histories -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """What replaying one instance's recorded history against the current code showed."""

    instance_id: str
    name: str
    status: str
    """Its runtime status when recorded."""
    error: str | None = None
    """Why the current code would break it (non-determinism, a crash), or None."""
    result: EpisodeResult | None = None
    pitfalls: list[Pitfall] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


def replay_events(
    app: FunctionApp, instance: Instance, history: Sequence[HistoryEvent]
) -> ReplayReport:
    """Replay one execution's recorded `history` through `app`'s orchestrator."""
    from dfhost.logs import Invocation, invocation
    from dfhost.orchestration import replay
    from dfhost.orchestration.episode import EpisodeInput, Failed

    status = instance.status.value
    if not history:  # not started yet: nothing recorded to contradict
        return ReplayReport(instance.instance_id, instance.name, status)
    function = app.orchestrator(instance.name)
    if function is None:
        missing = f"its orchestrator '{instance.name}' is not in this app (renamed or removed?)"
        return ReplayReport(instance.instance_id, instance.name, status, missing)
    # One episode with nothing new: every recorded event is replayed and checked, and the
    # replay is deterministic (its time is the last recorded one).
    started = HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=history[-1].timestamp)
    episode = EpisodeInput.of(instance, list(history), [started])
    inv = Invocation(function.name, instance_id=instance.instance_id, replaying=replay.is_replaying)
    # What replayed code prints is not news (and would garble `dfhost replay`'s report).
    with invocation(inv), contextlib.redirect_stdout(io.StringIO()):
        result = replay.run_episode(function.orchestrator_function, episode, function.input_type)
    error: str | None = None
    outcome = result.outcome
    recorded_failure = any(e.status is OrchestrationStatus.FAILED for e in history)
    if isinstance(outcome, Failed) and not recorded_failure:
        error = outcome.message.split("\n", 1)[0]
    return ReplayReport(
        instance.instance_id, instance.name, status, error, result, list(result.pitfalls)
    )


def replay_history(app_dir: str | Path, file: str | Path) -> ReplayReport:
    """Replay an exported history (`dfhost history export`) against the app in `app_dir`.

    For golden-history tests: `assert replay_history(APP, "golden/order.json").ok`.
    """
    from dfhost.app.loader import load_app

    instance, history = read_history(file)
    return replay_events(load_app(app_dir), instance, history)


async def replay_instances(
    app_dir: str | Path,
    store_url: str | None = None,
    *,
    instance_id: str | None = None,
    name: str | None = None,
    everything: bool = False,
) -> list[ReplayReport]:
    """Replay the current execution of stored instances against the app in `app_dir`:
    unfinished ones (Pending, Running, Suspended) unless `everything`. Entities are skipped.
    `store_url` defaults to the hub `dfhost start APP_DIR` uses."""
    from dfhost.app.loader import load_app
    from dfhost.store import app_store_url

    app = load_app(app_dir)
    settings = app.settings
    store_url = app_store_url(
        store_url, default_store_url(Path(app_dir)), settings.hub_name, settings.storage
    )
    store = open_store(store_url)
    await store.start()
    try:
        if instance_id is not None:
            found = await store.get_instance(instance_id)
            if found is None:
                raise LookupError(f"no instance '{instance_id}' in {redact_url(store_url)}")
            instances = [found]
        else:
            instances = await _query_all(store, name, everything)
        reports = []
        for instance in instances:
            if instance.instance_id.startswith("@"):
                continue  # an entity: it has no orchestrator code to replay
            try:
                history = await store.get_history(instance.instance_id)
            except (StoreError, ValueError) as exc:
                reports.append(
                    ReplayReport(
                        instance.instance_id,
                        instance.name,
                        instance.status.value,
                        f"its history cannot be read: {exc}",
                    )
                )
                continue
            reports.append(replay_events(app, instance, history))
        return reports
    finally:
        await store.close()


async def _query_all(store: Store, name: str | None, everything: bool) -> list[Instance]:
    statuses = () if everything else _UNFINISHED
    query = InstanceQuery(statuses=statuses, name=name, top=1000)
    found: list[Instance] = []
    while True:
        page = await store.query_instances(query)
        found.extend(page.instances)
        if page.continuation is None:
            return found
        query = replace(query, continuation=page.continuation)


_UNFINISHED = (
    OrchestrationStatus.PENDING,
    OrchestrationStatus.RUNNING,
    OrchestrationStatus.SUSPENDED,
    OrchestrationStatus.CONTINUED_AS_NEW,
)


# --- the exported history document ------------------------------------------------------------


def history_document(instance: Instance, history: Sequence[HistoryEvent]) -> dict[str, Any]:
    """An instance's current execution as `dfhost history export` writes it (dfhost's own
    storage form, so that it replays exactly)."""
    return {
        "format": HISTORY_FORMAT,
        "instanceId": instance.instance_id,
        "executionId": instance.execution_id,
        "name": instance.name,
        "version": instance.version,
        "runtimeStatus": instance.status.value,
        "input": instance.input,
        "parentInstanceId": instance.parent_instance_id,
        "createdTime": instance.created_at.isoformat(),
        "lastUpdatedTime": instance.last_updated_at.isoformat(),
        "history": [e.to_dict() for e in history],
    }


def read_history(file: str | Path) -> tuple[Instance, list[HistoryEvent]]:
    """Read an exported history; raises ValueError naming the file and what is wrong."""
    path = Path(file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != HISTORY_FORMAT:
        raise ValueError(
            f"{path} is not a history exported by `dfhost history export` "
            f"(expected format {HISTORY_FORMAT!r})"
        )
    try:
        history = [HistoryEvent.from_dict(e) for e in data["history"]]
        instance = Instance(
            instance_id=str(data["instanceId"]),
            name=str(data["name"]),
            execution_id=str(data["executionId"]),
            status=OrchestrationStatus(data["runtimeStatus"]),
            created_at=parse_time(data["createdTime"]),
            last_updated_at=parse_time(data["lastUpdatedTime"]),
            version=data.get("version"),
            input=data.get("input"),
            parent_instance_id=data.get("parentInstanceId"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: malformed history document: {exc}") from None
    return instance, history


async def export_history(store_url: str, instance_id: str) -> dict[str, Any]:
    """The history document of a stored instance's current execution."""
    store = open_store(store_url)
    await store.start()
    try:
        instance = await store.get_instance(instance_id)
        if instance is None:
            raise LookupError(f"no instance '{instance_id}' in {redact_url(store_url)}")
        return history_document(instance, await store.get_history(instance_id))
    finally:
        await store.close()
