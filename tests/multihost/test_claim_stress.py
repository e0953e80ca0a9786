"""Many workers on separate connections race for one instance with leases short enough to
expire mid-episode: every raised event still lands in the history exactly once, history
positions never collide, and commits land in lease order."""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import replace
from datetime import timedelta

from dfhost.history import EventType, HistoryEvent, OrchestrationStatus, utcnow
from dfhost.store import Claim, LeaseLostError, Store, open_store
from dfhost.work import EpisodeOutcome, Message, StartRequest
from tests.waiting import eventually

EVENTS = 80
WORKERS = 8


async def test_interleaved_claims_never_commit_two_episodes_for_one_position(
    hub_url: str, client_store: Store
) -> None:
    seed = int(os.environ.get("DFHOST_STRESS_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    now = utcnow()
    await client_store.create_instance(
        StartRequest(instance_id="hot", name="Orch", execution_id="x1", created_at=now)
    )
    stores = [open_store(hub_url) for _ in range(WORKERS // 2)]
    for store in stores:
        await store.start()
    committed: list[int] = []
    lost = 0
    done = asyncio.Event()

    async def worker(store: Store, name: str) -> None:
        nonlocal lost
        while not done.is_set():
            lease = timedelta(seconds=rng.uniform(0.01, 0.08))
            now = utcnow()
            works = await store.claim_episodes(
                Claim(owner=name, now=now, lease_until=now + lease), 1
            )
            if not works:
                await store.wait_for_work(utcnow() + timedelta(seconds=0.02))
                continue
            [work] = works
            await asyncio.sleep(rng.uniform(0, 0.06))  # often longer than the lease
            marker = HistoryEvent(
                type=EventType.ORCHESTRATOR_STARTED, timestamp=utcnow(), name=f"{work.lease_token}"
            )
            outcome = EpisodeOutcome(
                instance=replace(work.instance, status=OrchestrationStatus.RUNNING),
                new_events=[marker, *(m.event for m in work.messages)],
            )
            try:
                await store.commit_episode(name, work, outcome)
            except LeaseLostError:
                lost += 1
            else:
                committed.append(work.lease_token)

    async def producer() -> None:
        for i in range(EVENTS):
            raised = HistoryEvent(type=EventType.EVENT_RAISED, timestamp=utcnow(), name=f"e{i}")
            sent = await client_store.send_message(Message(instance_id="hot", event=raised))
            assert sent == "sent"
            await asyncio.sleep(rng.uniform(0, 0.01))

    tasks = [asyncio.create_task(worker(stores[i % len(stores)], f"w{i}")) for i in range(WORKERS)]
    try:
        await producer()
        await eventually(
            lambda: client_store.get_history("hot"),
            lambda history: sum(e.type is EventType.EVENT_RAISED for e in history) == EVENTS,
            timeout=60,
        )
    finally:
        done.set()
        await asyncio.gather(*tasks)
        for store in stores:
            await store.close()

    history = await client_store.get_history("hot")
    names = [e.name for e in history if e.type is EventType.EVENT_RAISED]
    assert names == [f"e{i}" for i in range(EVENTS)], seed  # each once, in the order sent
    assert [e.type for e in history].count(EventType.EXECUTION_STARTED) == 1, seed
    # One marker per successful commit, in the order the leases were granted.
    tokens = [
        int(e.name if e.name is not None else -1)
        for e in history
        if e.type is EventType.ORCHESTRATOR_STARTED
    ]
    assert tokens == sorted(committed), seed
    assert tokens == sorted(set(tokens)), seed
    assert lost > 0, f"no lease was ever lost: the test did not interleave (seed {seed})"
