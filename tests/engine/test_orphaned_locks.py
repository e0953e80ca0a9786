"""`DurableClient.release_orphaned_locks` (the Durable Task protocol's CleanEntityStorage) on
a SQLite hub: a lock whose holder no longer runs is released; one whose holder runs is kept."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from dfhost.client import DurableClient
from dfhost.history import utcnow
from dfhost.orchestration.entities import (
    EntityId,
    Release,
    SchedulerState,
    creation_request,
)
from dfhost.store import Claim, Store
from dfhost.work import StartRequest


async def _locked_entity(store: Store, key: str, holder: str) -> EntityId:
    entity = EntityId("counter", key)
    locks = SchedulerState(holder).stored()
    assert await store.create_instance(replace(creation_request(entity, utcnow()), input=locks))
    return entity


async def test_locks_of_orchestrations_that_no_longer_run_are_released(store: Store) -> None:
    now = utcnow()
    running = StartRequest(instance_id="alive", name="orch", execution_id="e", created_at=now)
    assert await store.create_instance(running)
    orphaned = await _locked_entity(store, "orphaned", "gone")
    kept = await _locked_entity(store, "kept", "alive")

    client = DurableClient(store)
    assert await client.release_orphaned_locks() == (1, None)

    claim = Claim(owner="test", now=utcnow(), lease_until=utcnow() + timedelta(minutes=1))
    inboxes = {
        work.instance.instance_id: [m.event for m in work.messages]
        for work in await store.claim_episodes(claim, 10)
    }
    releases = [Release.from_event(e) for e in inboxes[orphaned.instance_id]]
    assert Release("", "gone") in releases
    assert all(Release.from_event(e) is None for e in inboxes[kept.instance_id])
