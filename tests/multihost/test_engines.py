"""Several engines in one process, each with its own connections, share one PostgreSQL hub:
they split the work, never hold one instance at the same time, and deliver each result once."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from dfhost.app.functions import FunctionApp
from dfhost.client import DurableClient
from dfhost.runtime.engine import Engine
from dfhost.store import Claim, LeaseLostError, Store, open_store
from dfhost.work import ActivityTask, EpisodeOutcome, EpisodeWork
from tests.multihost.ledger import (
    assert_recorded_once,
    chain_output,
    fanout_output,
    runs,
    start_many,
    wait_all_finished,
)


class EpisodeWatch:
    """Which owner holds which instance, as the engines see it.

    An episode is held from the moment its claim returns until its commit (or abandon) is
    called: the lease is released only inside that call, so a claim of the same instance that
    returns in between means two hosts ran it at once."""

    def __init__(self) -> None:
        self.held: dict[str, str] = {}
        self.overlaps: list[tuple[str, str, str]] = []
        self.episodes: Counter[str] = Counter()
        self.activities: Counter[str] = Counter()
        self.leases_lost = 0


class WatchedStore:
    """A store that reports claims and commits to an `EpisodeWatch`."""

    def __init__(self, store: Store, watch: EpisodeWatch) -> None:
        self._store = store
        self._watch = watch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def claim_episodes(self, claim: Claim, limit: int) -> list[EpisodeWork]:
        works = await self._store.claim_episodes(claim, limit)
        owner = claim.owner
        for work in works:
            instance_id = work.instance.instance_id
            if instance_id in self._watch.held:
                self._watch.overlaps.append((instance_id, self._watch.held[instance_id], owner))
            self._watch.held[instance_id] = owner
            self._watch.episodes[owner] += 1
        return works

    def _release(self, work: EpisodeWork) -> None:
        self._watch.held.pop(work.instance.instance_id, None)

    async def commit_episode(
        self, owner: str, work: EpisodeWork, outcome: EpisodeOutcome, **options: Any
    ) -> Any:
        self._release(work)
        try:
            leased = await self._store.commit_episode(owner, work, outcome, **options)
        except LeaseLostError:
            self._watch.leases_lost += 1
            raise
        # Activities a commit leases to its own host at once are that host's share too.
        self._watch.activities[owner] += len(leased or ())
        return leased

    async def commit_episode_holding(
        self, owner: str, work: EpisodeWork, outcome: EpisodeOutcome, **options: Any
    ) -> Any:
        """A commit that may keep the lease (a hold): the next episode of a held instance runs
        without a claim, so the watch counts the instance released here either way."""
        self._release(work)
        try:
            leased = await self._store.commit_episode_holding(  # type: ignore[attr-defined]
                owner, work, outcome, **options
            )
        except LeaseLostError:
            if options.get("completes") is None:  # a lapsed hold is not a lost lease
                self._watch.leases_lost += 1
            raise
        self._watch.activities[owner] += len(leased or ())
        return leased

    async def abandon_episode(
        self, owner: str, work: EpisodeWork, *, retry_at: datetime | None = None
    ) -> None:
        self._release(work)
        await self._store.abandon_episode(owner, work, retry_at=retry_at)

    async def claim_activities(self, claim: Claim, limit: int) -> list[ActivityTask]:
        tasks = await self._store.claim_activities(claim, limit)
        self._watch.activities[claim.owner] += len(tasks)
        return tasks


async def test_three_engines_share_fan_outs_and_chains(
    app: FunctionApp, hub_url: str, client_store: Store, state_dir: Path
) -> None:
    watch = EpisodeWatch()
    stores = [open_store(hub_url) for _ in range(3)]
    engines = [
        Engine(app, WatchedStore(store, watch), owner=f"engine-{i}")
        for i, store in enumerate(stores)
    ]
    for store in stores:
        await store.start()
    try:
        for engine in engines:
            await engine.start()
        specs = [("fanout", "wide", {"width": 150})]
        specs += [("fanout", f"fan-{i}", {"width": 5}) for i in range(20)]
        specs += [("chain", f"chain-{i}", {"start": i, "steps": 3}) for i in range(20)]
        await start_many(DurableClient(client_store, app), specs)
        await wait_all_finished(client_store, len(specs), timeout=60)
    finally:
        for engine in engines:
            await engine.stop()
        for store in stores:
            await store.close()

    for name, instance_id, spec in specs:
        instance = await client_store.get_instance(instance_id)
        assert instance is not None
        expected = (
            fanout_output(spec["width"])
            if name == "fanout"
            else chain_output(spec["start"], spec["steps"])
        )
        assert json.loads(instance.output or "null") == expected, instance_id
    await assert_recorded_once(client_store, [instance_id for _, instance_id, _ in specs])
    assert watch.overlaps == []
    assert watch.leases_lost == 0
    # The work really was shared.
    assert len(+watch.episodes) >= 2, watch.episodes
    assert len(+watch.activities) >= 2, watch.activities
    # With every host alive, no activity ran twice.
    started = Counter(run.key for run in runs(state_dir) if run.kind == "start")
    assert len(started) == 150 + 20 * 5 + 20 * 3
    assert set(started.values()) == {1}
